"""The two-stream recipe shrunk to run end to end on 2 CPU cores in minutes: synthetic data, from scratch.

DRAFT
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, frames=5, data="synthetic", init="scratch", stage1_backbone="train")
    c = common.base(args)
    c.model.depth, c.model.width = 18, 8
    c.data.update(dict(crop=64, resize=80, stack=3, flow_eval_stacks=3, worker_count=0))
    c.batch_size = c.eval_batch_size = 8
    c.log_every_steps, c.eval_every_epochs, c.checkpoint_every_epochs = 10, 10, 10
    stages = dict(rgb_stage1=common.rgb_stage1(c, attention=True), rgb_stage2=common.rgb_stage2(c, attention=True),
                  flow=common.flow(c), joint=common.joint(c))
    for stage, epochs, milestones in (("rgb_stage1", 40, (30,)), ("rgb_stage2", 30, (20,)), ("flow", 100, (70,))):
        stages[stage]["epochs"] = epochs
        stages[stage]["optimizer"]["schedule"]["milestones"] = milestones
    stages["joint"]["epochs"] = 30
    return common.finish(c, args, stages)
