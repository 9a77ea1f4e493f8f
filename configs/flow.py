"""Warp-flow stream alone: ResNet-34 on 5 stacked x/y flow frames.

configs/flow.py[:data=gtea61|synthetic,seed=0,init=imagenet|scratch]
"""

from ego_jax import recipes


def get_config(arg=None):
    args = recipes.parse_args(arg)
    c = recipes.base(args)
    return recipes.finish(c, args, dict(flow=recipes.flow(c)))
