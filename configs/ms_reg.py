"""Ego-RNN + self-supervised motion segmentation, regression head (moving fraction per cell, sigmoid + MSE).

configs/ms_reg.py[:frames=7|16|25,data=gtea61|synthetic,seed=0,init=imagenet|scratch]
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg)
    c = common.base(args)
    head = dict(kind="reg", tap="layer4", hidden=100)
    return common.finish(c, args, dict(rgb_stage1=common.rgb_stage1(c, attention=True),
                                 rgb_stage2=common.rgb_stage2(c, attention=True, ms_head=head, ms_reg_loss="mse")))
