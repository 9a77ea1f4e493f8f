"""Motion segmentation study: RGB attention stage 2 without MS head vs + MS classification vs + MS regression.

  python scripts/experiment.py --suite configs/experiments/ms.py[:seeds=3,sets=3,search=random|grid,val=S4,
      selection_seeds=1,data=gtea61|synthetic,preset=reference|quickstart] --workdir W [--dry_run]

For each MS method and frame count, `sets` hyperparameter sets of the space below (set 0 = the reference
values, the first of each list; the others drawn at random without repetition, or the whole grid) are trained
on the training subjects without the validation subject (S1+S3 with val=S4) and scored on it; the best set
is retrained on S1+S3+S4 with every seed and tested on S2. The test subject is never read during selection.
The baseline has no searched hyperparameter (the reference stage 2). Stage 1 is the attention stage 1 for all.
"""

from ego_jax.experiments import suite

S2 = "stages.rgb_stage2."
# Hyperparameters searched for both methods (values from sparnet.md "Hyperparameters that were searched").
SHARED = (
    (S2 + "loss.ms_alpha", (1.0, 0.5, 5.0)),  # MS loss weight
    (S2 + "optimizer.lr", (1e-4, 5e-4)),  # stage-2 learning rate
    (S2 + "model.kwargs.ms_head.tap", ("layer4", "layer4_raw", "attended")),
)  # features the head reads
SEARCH = dict(
    ms_cls=SHARED + (("data.ms_threshold", (0.01, 0.0, 0.4)),),  # a cell moves above this fraction (0: any)
    ms_reg=SHARED + ((S2 + "loss.ms_reg_loss", ("mse", "smooth_l1", "l1")),),
)


def get_config(arg=None):
    args = suite.parse_args(arg)
    rows = [
        dict(key="baseline", name="attention, no MS (baseline)", config="configs/attention.py"),
        dict(key="ms_cls", name="+ MS classification", config="configs/ms_cls.py", search=SEARCH["ms_cls"]),
        dict(key="ms_reg", name="+ MS regression", config="configs/ms_reg.py", search=SEARCH["ms_reg"]),
    ]
    notes = [
        "Hyperparameters: chosen per method and frame count on the validation subject (table below); the "
        "chosen set is retrained with every seed on all training subjects. Baseline: the reference stage 2.",
        f"Search ({'every combination' if args.search == 'grid' else f'{args.sets} sets, seeded random'} per "
        "method and frame count; set 0 = the reference, the first value of each list): "
        + "; ".join(
            f"{key}: " + ", ".join(f"{k.removeprefix(S2)} {list(v)}" for k, v in space) for key, space in SEARCH.items()
        )
        + ".",
    ]
    return suite.suite(
        args,
        name="ms",
        title="Motion segmentation (SparNet) on GTEA61 (test subject S2)",
        rows=rows,
        diff=("baseline", "ms_cls"),
        notes=notes,
        cam_rows=("baseline", "ms_cls", "ms_reg"),
        cam_clips=suite.CAM_CLIPS[args.preset],
    )
