"""Ego-RNN + self-supervised motion segmentation, regression head (moving fraction per cell, sigmoid + MSE).

configs/ms_reg.py[:frames=7|16|25,data=gtea61|synthetic,seed=0,init=imagenet|scratch]
"""

from ego_jax import recipes


def get_config(arg=None):
    return recipes.rgb_recipe(
        arg, attention=True, ms_head=dict(kind="reg", tap="layer4", hidden=100), ms_reg_loss="mse"
    )
