"""The experiment suites' pieces (configs/experiments/*.py are thin files calling them): arguments, presets.

A suite is a ConfigDict:
  name, title            the results' heading
  column_key, columns    the config argument a table column sets, and its values (frames=7, frames=16)
  seeds                  every run of the table is trained with each seed; cells are mean +- std over seeds
  rows                   tuple of dict(key, name, config, args, stage, per_column, search): `config` is a recipe
                         file, `args` its config arguments (the column's and the suite's are added), `stage` the
                         stage whose test accuracy the cell reports; per_column False: the run does not depend on
                         the column (trained once, shown in every column); search: hyperparameter space or None
  args, overrides        config arguments and (dotted key, value) overrides of every run ('stages.*.epochs': all)
  data_dir               '' = the recipe configs' data_dir; synthetic_preset: generate that synthetic set there
                         (W/data when data_dir is '') if it is not built
  protocol               train / test splits of the table; val: the validation subject taken out of train for
                         hyperparameter selection (test is never read during selection)
  selection              seeds (of the validation runs), sets per searched row, sampler 'random' | 'grid',
                         seed (of the random sampler)
  diff                   (row key, row key): per-class accuracy difference drawn and listed
  cam                    rows and clip ids of the CAM comparison drawn at the end (rows () = none)
  notes                  footnotes printed under the table
"""
import ml_collections

from ego_jax import recipes

ARGS = dict(seeds=3, data="gtea61", preset="reference", rows="all", sets=3, search="random", val="S4",
            selection_seeds=1, data_dir="")
CHOICES = dict(data=("gtea61", "synthetic"), preset=("reference", "quickstart"), search=("random", "grid"))
# preset=quickstart: the quickstart's sizes and data, frame columns of its scale, and few epochs.
QUICKSTART_COLUMNS = (3, 5)
QUICKSTART_EPOCHS = 2


def parse_args(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'preset=quickstart,seeds=1' -> ConfigDict of ARGS (overridden by `defaults`, then by `arg`)."""
    args = recipes.parse_args(arg, spec=ARGS, choices=CHOICES,
                                    example="configs/experiments/step1.py:preset=quickstart,seeds=1", **defaults)
    if args.seeds < 1 or args.sets < 1 or args.selection_seeds < 1:
        raise ValueError(f"suite arguments seeds, sets, selection_seeds must be >= 1; got {args}")
    return args


def suite(args, *, name: str, title: str, rows: list[dict], diff: tuple, notes: list[str],
          cam_rows=(), cam_clips=()) -> ml_collections.ConfigDict:
    """The suite ConfigDict (see the module doc) for parsed `args`; rows=a+b keeps those rows only."""
    keys = [r["key"] for r in rows]
    wanted = keys if args.rows == "all" else args.rows.split("+")
    unknown = sorted(set(wanted) - set(keys))
    if unknown:
        raise ValueError(f"suite argument rows={args.rows!r}: unknown rows {unknown}; this suite has {'+'.join(keys)}")
    s = ml_collections.ConfigDict()
    s.name = name
    s.title = title if args.data == "gtea61" and args.preset == "reference" else title.replace(
        "GTEA61", f"synthetic data ({args.preset if args.preset == 'quickstart' else 'small'} preset)")
    s.column_key = "frames"
    s.columns = (7, 16)
    s.seeds = tuple(range(args.seeds))
    s.rows = tuple(dict(r, search=r.get("search")) for r in rows if r["key"] in wanted)
    s.args = f"data={args.data}"
    s.overrides = ()
    s.data_dir = args.data_dir
    s.synthetic_preset = ""
    train = ("S1", "S3", "S4")
    if args.val not in train:
        raise ValueError(f"suite argument val={args.val!r}: the validation subject must be a training subject "
                         f"{train} (never the test subject S2)")
    s.protocol = dict(train="+".join(train), test="S2", val=args.val)
    s.selection = dict(seeds=tuple(range(args.selection_seeds)), sets=args.sets, sampler=args.search, seed=0)
    s.diff = tuple(d for d in diff if d in wanted) if all(d in wanted for d in diff) else ()
    s.cam = dict(rows=tuple(r for r in cam_rows if r in wanted), clips=tuple(cam_clips))
    s.notes = tuple(notes)
    if args.preset == "quickstart":
        s.args = ",".join(f"{k}={v}" for k, v in recipes.QUICKSTART_ARGS.items() if k != "stage1_backbone")
        # stage1_backbone=train only where there is an RGB stage 1 (the flow recipe refuses the argument)
        s.rows = tuple(dict(r, args=",".join(filter(None, [r["args"], "stage1_backbone=train"])))
                       if "rgb_stage1" in recipes.from_file(r["config"]).recipe else r for r in s.rows)
        s.columns = QUICKSTART_COLUMNS
        s.overrides = tuple(recipes.QUICKSTART_SIZES.items()) + (("stages.*.epochs", QUICKSTART_EPOCHS),)
        s.synthetic_preset = "quickstart"
        s.notes = s.notes + (f"preset=quickstart: synthetic quickstart data (6 classes), the quickstart's sizes "
                             f"(configs/quickstart.py), {QUICKSTART_EPOCHS} epochs per stage, frame columns "
                             f"{QUICKSTART_COLUMNS}: a smoke test of the machinery, not a result.",)
    elif args.data == "synthetic":
        s.synthetic_preset = "small"
    return s


# Test clips of the CAM comparisons (subject S2): GTEA61 actions with a clear moving object, and the quickstart's.
CAM_CLIPS = dict(reference=("S2/take_bread/1", "S2/open_coffee/1", "S2/pour_water,cup/1"),
                 quickstart=("S2/open_honey/1", "S2/take_jam/1"))
