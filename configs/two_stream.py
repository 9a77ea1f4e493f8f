"""Full Ego-RNN: RGB stage 1 -> RGB stage 2, flow, then joint two-stream training.

configs/two_stream.py[:frames=7|16|25,data=gtea61|synthetic|egtea|gtea71|gtea_gaze,split=K,seed=0,
                      init=imagenet|scratch,rgb=ego_rnn|lsta]

rgb=lsta: the RGB stream is LSTA (configs/lsta.py's two stages and frame sampling) instead of Ego-RNN's, joint-trained
with the same flow stream by the same joint stage (an ego_jax combination: the paper's two-stream LSTA fuses the
streams inside the cell, code the authors did not publish).
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, rgb="ego_rnn")
    c = common.base(args)
    if args.rgb == "lsta":
        common.lsta_data(c)
        rgb = dict(rgb_stage1=common.lsta_stage1(c), rgb_stage2=common.lsta_stage2(c))
    else:
        rgb = dict(rgb_stage1=common.rgb_stage1(c, attention=True), rgb_stage2=common.rgb_stage2(c, attention=True))
    return common.finish(c, args, dict(rgb, flow=common.flow(c), joint=common.joint(c, rgb=args.rgb)))
