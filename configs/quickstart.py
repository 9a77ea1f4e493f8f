"""The two-stream recipe shrunk to run end to end on 2 CPU cores in minutes: synthetic data, from scratch.

Same stages, filters, BN modes and optimisers as configs/two_stream.py; tiny ResNet-18 (width 8), 32 px,
3 frames, 2-frame flow stacks, batch 8, 20-30 epochs per stage with the milestones scaled to the short runs.
Without ImageNet weights the RGB stages keep the reference's frozen (random) backbone, so the RGB stream
learns little here. 61 classes x 3 training clips is too hard for minutes of CPU training; a synthetic set
of a few classes with more clips (make_synthetic.py --classes ... --clips_per_class 4) shows the streams learning.
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, frames=3, data="synthetic", init="scratch")
    c = common.base(args)
    c.model.depth, c.model.width = 18, 8
    c.data.update(dict(crop=32, resize=36, stack=2, flow_eval_stacks=2, worker_count=0))
    c.batch_size = c.eval_batch_size = 8
    c.log_every_steps, c.eval_every_epochs, c.checkpoint_every_epochs = 10, 5, 5
    stages = dict(rgb_stage1=common.rgb_stage1(c, attention=True), rgb_stage2=common.rgb_stage2(c, attention=True),
                  flow=common.flow(c), joint=common.joint(c))
    for stage, epochs, milestones in (("rgb_stage1", 30, (20,)), ("rgb_stage2", 20, (15,)), ("flow", 30, (20,))):
        stages[stage]["epochs"] = epochs
        stages[stage]["optimizer"]["schedule"]["milestones"] = milestones
    stages["joint"]["epochs"] = 20
    return common.finish(c, args, stages)
