"""Warp-flow stream alone: ResNet-34 on 5 stacked x/y flow frames.

configs/flow.py[:data=gtea61|synthetic,seed=0,init=imagenet|scratch]
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg)
    c = common.base(args)
    return common.finish(c, args, dict(flow=common.flow(c)))
