"""The two-stream recipe shrunk to run end to end on 2 CPU cores in minutes: synthetic data, from scratch.

Same stages, filters, BN modes and optimisers as configs/two_stream.py; tiny ResNet-18, 32 px, 3 frames,
a few epochs each (the schedules' milestones are scaled to the short runs).
"""
from configs import common


def get_config(arg=None):
    c = common.base(common.parse_args(arg, frames=3, data="synthetic", init="scratch"))
    c.model.depth, c.model.width = 18, 8
    c.data.update(dict(crop=32, resize=36, stack=2, flow_eval_stacks=2, worker_count=0))
    c.batch_size = c.eval_batch_size = 8
    c.log_every_steps, c.eval_every_epochs, c.checkpoint_every_epochs = 5, 2, 2
    stages = dict(rgb_stage1=common.rgb_stage1(c, attention=True), rgb_stage2=common.rgb_stage2(c, attention=True),
                  flow=common.flow(c), joint=common.joint(c))
    for stage, epochs, milestones in (("rgb_stage1", 6, (4,)), ("rgb_stage2", 4, (3,)), ("flow", 6, (4,))):
        stages[stage].update(epochs=epochs)
        stages[stage]["optimizer"]["schedule"]["milestones"] = milestones
    stages["joint"]["epochs"] = 4
    return common.finish(c, stages)
