"""Ego-RNN + self-supervised motion segmentation, classification head (moving/static per cell; sparnet.md).

Stage 1 is the attention stage 1; stage 2 adds the MS head on layer4 (before attention), loss CE + 1.0 * MS.
configs/ms_cls.py[:frames=7|16|25,data=gtea61|synthetic,seed=0,init=imagenet|scratch]
"""

from ego_jax import recipes


def get_config(arg=None):
    return recipes.rgb_recipe(arg, attention=True, ms_head=dict(kind="cls", tap="layer4", hidden=100))
