"""Full Ego-RNN: RGB stage 1 -> RGB stage 2, flow, then joint two-stream training.

configs/two_stream.py[:frames=7|16|25,data=gtea61|synthetic,seed=0,init=imagenet|scratch]
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg)
    c = common.base(args)
    return common.finish(c, args, dict(rgb_stage1=common.rgb_stage1(c, attention=True),
                                 rgb_stage2=common.rgb_stage2(c, attention=True),
                                 flow=common.flow(c), joint=common.joint(c)))
