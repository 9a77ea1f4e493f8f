"""Ego-RNN ablation without attention: ConvLSTM on layer4 features, RGB stage 1 -> stage 2.

configs/convlstm.py[:frames=7|16|25,data=gtea61|synthetic,seed=0,init=imagenet|scratch]
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg)
    c = common.base(args)
    return common.finish(c, args, dict(rgb_stage1=common.rgb_stage1(c, attention=False),
                                 rgb_stage2=common.rgb_stage2(c, attention=False)))
