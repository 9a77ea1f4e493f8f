"""Ego-RNN ablation without attention: ConvLSTM on layer4 features, RGB stage 1 -> stage 2.

configs/convlstm.py[:frames=7|16|25,data=gtea61|synthetic,seed=0,init=imagenet|scratch]
"""

from ego_jax import recipes


def get_config(arg=None):
    return recipes.rgb_recipe(arg, attention=False)
