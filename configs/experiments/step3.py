"""The course's Step 3: our own variation against the baseline and LSTA, 7 and 16 frames, seeds.

  python scripts/experiment.py --suite configs/experiments/step3.py[:seeds=3,data=gtea61|synthetic,
      preset=reference|quickstart,rows=attention+lsta+ms_cls+motion_guided] --workdir W [--dry_run]

Rows (each cell: test accuracy on S2 of the row's RGB stage 2, trained on S1+S3+S4, mean +- std over seeds):
Ego-RNN attention (the baseline), LSTA (configs/lsta.py), Ego-RNN + MS classification, and ego_jax's
motion-guided attention (configs/motion_guided.py). The MS row is the motion-guided model with w held at 0,
so the per-class difference drawn is motion-guided minus MS: what the guide alone adds. Ego-RNN's rows share
one stage 1 (trained once per seed and frame count); LSTA has its own.
"""

from ego_jax.experiments import suite

GUIDE_NOTE = (
    "Motion-guided attention: softmax(CAM + w * log p(moving)), p from the MS classification head on "
    "layer4, w learned from 0 at its own lr (ego_jax/recipes.py MOTION_GUIDE_LR), the MS prediction "
    "detached from the action loss (ego_jax/models/motion_guided.py). Its stage 2 starts exactly as the "
    "MS row's; the two differ only by w."
)


def get_config(arg=None):
    args = suite.parse_args(arg)
    rows = [
        dict(key="attention", name="Ego-RNN attention (baseline)", config="configs/attention.py"),
        dict(key="lsta", name="LSTA", config="configs/lsta.py"),
        dict(key="ms_cls", name="Ego-RNN + MS classification (w = 0)", config="configs/ms_cls.py"),
        dict(key="motion_guided", name="motion-guided attention (ours)", config="configs/motion_guided.py"),
    ]
    return suite.suite(
        args,
        name="step3",
        title="Step 3: motion-guided attention vs Ego-RNN and LSTA on GTEA61 (test subject S2)",
        rows=rows,
        diff=("ms_cls", "motion_guided"),
        notes=[GUIDE_NOTE],
        cam_rows=("attention", "ms_cls", "motion_guided"),
        cam_clips=suite.CAM_CLIPS[args.preset],
    )
