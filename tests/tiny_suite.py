"""configs/experiments/step1.py at the tests' tiny sizes, as a suite file scripts/experiment.py loads.

  python scripts/experiment.py --suite tests/tiny_suite.py:data_dir=D,rows=convlstm,seeds=1 --workdir W

ResNet-18 width 4, 32 px crops, 1 epoch per stage, one frame column (2 frames) on top of preset=quickstart.
"""

from configs.experiments import step1

TINY = (
    ("model.width", 4),
    ("data.crop", 32),
    ("data.resize", 36),
    ("data.stack", 2),
    ("data.flow_eval_stacks", 2),
    ("batch_size", 4),
    ("eval_batch_size", 4),
    ("stages.*.epochs", 1),
)


def get_config(arg=None):
    s = step1.get_config("preset=quickstart" + (f",{arg}" if arg else ""))
    s.overrides = s.overrides + TINY
    s.columns = (2,)
    return s
