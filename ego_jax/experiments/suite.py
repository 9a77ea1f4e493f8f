"""The experiment suites' pieces (configs/experiments/*.py are thin files calling them): arguments, presets, and
`SuiteSpec`, the typed frozen suite the runner reads (`SuiteSpec.from_config(suite)`, where a suite run starts).

A suite is a ConfigDict:
  name, title            the results' heading
  column_key, columns    the config argument a table column sets, and its values (frames=7, frames=16)
  seeds                  every run of the table is trained with each seed; cells are mean +- std over seeds
  rows                   tuple of dict(key, name, config, args, stage, per_column, search): `config` is a recipe
                         file, `args` its config arguments (the column's and the suite's are added), `stage` the
                         stage whose test accuracy the cell reports; per_column False: the run does not depend on
                         the column (trained once, shown in every column); search: hyperparameter space or None.
                         A suite file names key, name, config and what differs from RowSpec's defaults (args '',
                         stage 'rgb_stage2', per_column True, search None); `suite` fills in the rest
  args, overrides        config arguments and (dotted key, value) overrides of every run ('stages.*.epochs': all)
  data_dir               '' = the recipe configs' data_dir; synthetic_preset: generate that synthetic set there
                         (W/data when data_dir is '') if it is not built
  protocol               name ('fixed': one protocol split; 'folds': every split, cells = mean over folds and seeds)
  folds                  per protocol split: dict(split, train, test, fit, val) (ego_jax.data.datasets.protocol):
                         train / test of the table runs; validation runs train on fit and score on val, a part of
                         train (the test part is never read during selection); selection is made per fold
  published              {row key: (number %, source)}: the paper's published result for this dataset and protocol
  selection              seeds (of the validation runs), sets per searched row, sampler 'random' | 'grid',
                         seed (of the random sampler)
  diff                   (row key, row key): per-class accuracy difference drawn and listed
  cam                    rows and clip ids of the CAM comparison drawn at the end (rows () = none)
  notes                  footnotes printed under the table
"""

import dataclasses
from collections.abc import Mapping

import ml_collections
from flax.core import FrozenDict

from ego_jax import recipes
from ego_jax.data import datasets

# protocol: 'fixed' (alias s2: one protocol split, `split`, 0 = the dataset's default) or 'folds' (aliases 4fold,
# 3split, loso: every protocol split of the dataset, as the papers' means); val: the validation subject of a fixed
# split ('' = the last training subject: S4 for GTEA61's S2).
ARGS = dict(
    seeds=3,
    data="gtea61",
    preset="reference",
    rows="all",
    sets=3,
    search="random",
    val="",
    selection_seeds=1,
    data_dir="",
    protocol="fixed",
    split=0,
)
CHOICES = dict(
    data=datasets.NAMES,
    preset=("reference", "quickstart"),
    search=("random", "grid"),
    protocol=("fixed", "s2", "folds", "4fold", "3split", "loso"),
)
# The papers' published numbers (top-1 %) a suite shows beside its rows: (dataset, protocol) -> {row: (value, source)}.
EGO_RNN = "Ego-RNN paper (Sudhakaran & Lanz, BMVC 2018)"
PUBLISHED = {
    ("gtea61", "fixed"): {"two_stream": (77.59, EGO_RNN + ", fixed split S2 (best of several runs, ego-rnn issue 3)")},
    ("gtea61", "folds"): {"two_stream": (79.0, EGO_RNN + ", mean of the 4 leave-one-subject-out folds")},
    ("gtea71", "folds"): {"two_stream": (77.0, EGO_RNN + ", GTEA71")},
    ("egtea", "folds"): {"two_stream": (60.76, EGO_RNN + ", EGTEA Gaze+ mean of 3 splits")},
    ("egtea", "fixed", 1): {"two_stream": (62.2, EGO_RNN + ", EGTEA Gaze+ split 1 (as listed for arXiv 1807.11794)")},
}
# preset=quickstart: the quickstart's sizes and data, frame columns of its scale, and few epochs.
QUICKSTART_COLUMNS = (3, 5)
QUICKSTART_EPOCHS = 2


def parse_args(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'preset=quickstart,seeds=1' -> ConfigDict of ARGS (overridden by `defaults`, then by `arg`)."""
    args = recipes.parse_args(
        arg, spec=ARGS, choices=CHOICES, example="configs/experiments/step1.py:preset=quickstart,seeds=1", **defaults
    )
    if args.seeds < 1 or args.sets < 1 or args.selection_seeds < 1:
        raise ValueError(f"suite arguments seeds, sets, selection_seeds must be >= 1; got {args}")
    return args


def suite(
    args, *, name: str, title: str, rows: list[dict], diff: tuple, notes: list[str], cam_rows=(), cam_clips=()
) -> ml_collections.ConfigDict:
    """The suite ConfigDict (see the module doc) for parsed `args`; rows=a+b keeps those rows only."""
    keys = [r["key"] for r in rows]
    wanted = keys if args.rows == "all" else args.rows.split("+")
    unknown = sorted(set(wanted) - set(keys))
    if unknown:
        raise ValueError(f"suite argument rows={args.rows!r}: unknown rows {unknown}; this suite has {'+'.join(keys)}")
    s = ml_collections.ConfigDict()
    s.name = name
    stand_in = args.data == "synthetic" or (args.data == "gtea61" and args.preset == "quickstart")
    protocol = "folds" if args.protocol in ("folds", "4fold", "3split", "loso") else "fixed"
    folds = datasets.folds(args.data) if protocol == "folds" else (args.split or datasets.DEFAULT_SPLIT[args.data],)
    if protocol == "folds" and args.val:
        raise ValueError(
            "suite argument val: a fold's validation subject is the dataset's rule (datasets.protocol); "
            "val= applies to protocol=fixed only"
        )
    s.folds = tuple(datasets.protocol(args.data, k, args.val).as_dict() for k in folds)
    where = f"test {s.folds[0]['test']}" if protocol == "fixed" else f"mean of {len(folds)} protocol splits"
    data_name = {"gtea61": "GTEA61", "gtea71": "GTEA71", "gtea_gaze": "GTEA Gaze+", "egtea": "EGTEA Gaze+"}
    dataset = (
        f"synthetic data ({args.preset if args.preset == 'quickstart' else 'small'} preset)"
        if stand_in
        else data_name[args.data]
    )
    s.title = title.replace("GTEA61", dataset).replace("test subject S2", where)
    key = (args.data, protocol) if protocol == "folds" or args.data != "egtea" else (args.data, protocol, folds[0])
    published = (
        {} if stand_in or (args.data == "gtea61" and protocol == "fixed" and folds[0] != 2) else PUBLISHED.get(key, {})
    )
    s.published = {k: v for k, v in published.items() if k in wanted}
    s.column_key = "frames"
    s.columns = (7, 16)
    s.seeds = tuple(range(args.seeds))
    s.rows = tuple(dataclasses.asdict(RowSpec(**r)) for r in rows if r["key"] in wanted)
    s.args = f"data={args.data}"
    s.protocol = protocol
    s.overrides = ()
    s.data_dir = args.data_dir
    s.synthetic_preset = ""
    s.selection = dict(seeds=tuple(range(args.selection_seeds)), sets=args.sets, sampler=args.search, seed=0)
    s.diff = tuple(d for d in diff if d in wanted) if all(d in wanted for d in diff) else ()
    s.cam = dict(rows=tuple(r for r in cam_rows if r in wanted), clips=tuple(cam_clips))
    s.notes = tuple(notes)
    if args.preset == "quickstart":
        # The quickstart's synthetic data, unless another dataset (a stand-in in the tests) is named.
        data = dict(recipes.QUICKSTART_ARGS, **({} if args.data == "gtea61" else {"data": args.data}))
        s.args = ",".join(f"{k}={v}" for k, v in data.items() if k != "stage1_backbone")
        # stage1_backbone=train only where there is an RGB stage 1 (the flow recipe refuses the argument)
        s.rows = tuple(
            dict(r, args=",".join(filter(None, [r["args"], "stage1_backbone=train"])))
            if "rgb_stage1" in recipes.from_file(r["config"]).recipe
            else r
            for r in s.rows
        )
        s.columns = QUICKSTART_COLUMNS
        s.overrides = tuple(recipes.QUICKSTART_SIZES.items()) + (("stages.*.epochs", QUICKSTART_EPOCHS),)
        s.synthetic_preset = "quickstart" if args.data in ("gtea61", "synthetic") else ""
        data = "synthetic quickstart data (6 classes)" if stand_in else args.data
        s.notes = s.notes + (
            f"preset=quickstart: {data}, "
            f"the quickstart's sizes "
            f"(configs/quickstart.py), {QUICKSTART_EPOCHS} epochs per stage, frame columns "
            f"{QUICKSTART_COLUMNS}: a smoke test of the machinery, not a result.",
        )
    elif args.data == "synthetic":
        s.synthetic_preset = "small"
    return s


# Test clips of the CAM comparisons (subject S2): GTEA61 actions with a clear moving object, and the quickstart's.
CAM_CLIPS = dict(
    reference=("S2/take_bread/1", "S2/open_coffee/1", "S2/pour_water,cup/1"),
    quickstart=("S2/open_honey/1", "S2/take_jam/1"),
)


@dataclasses.dataclass(frozen=True)
class RowSpec:
    """A row of the table: a recipe file with its arguments, and the stage whose test accuracy its cells report."""

    key: str
    name: str
    config: str  # recipe config file (relative to the working directory)
    args: str = ""  # its config arguments (the column's and the suite's are added)
    stage: str = "rgb_stage2"  # most rows report the RGB stream's last stage
    per_column: bool = True  # False: trained once, shown in every column
    search: tuple | None = None  # hyperparameter space ((dotted key, values), ...), or None

    def __post_init__(self):
        if self.search is not None:
            object.__setattr__(self, "search", tuple((k, tuple(v)) for k, v in self.search))


@dataclasses.dataclass(frozen=True)
class SelectionSpec:
    """Hyperparameter selection: validation seeds, sets per searched row, sampler 'random' | 'grid' and its seed."""

    seeds: tuple[int, ...]  # of the validation runs
    sets: int  # hyperparameter sets per searched row
    sampler: str
    seed: int  # of the random sampler


@dataclasses.dataclass(frozen=True)
class CamSpec:
    """Rows and clip ids of the CAM comparison drawn at the end (rows () = none)."""

    rows: tuple[str, ...]
    clips: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SuiteSpec:
    """A suite (see the module doc), typed and frozen; `from_config` reads the suite ConfigDict."""

    name: str
    title: str  # the results' heading
    column_key: str  # the config argument a column sets ('frames')
    columns: tuple  # its values
    seeds: tuple[int, ...]  # every table run is trained with each
    rows: tuple[RowSpec, ...]
    args: str  # config arguments of every run
    protocol: str  # 'fixed' | 'folds'
    folds: tuple[datasets.Protocol, ...]
    published: Mapping[str, tuple]  # {row key: (number %, source)}
    overrides: tuple[tuple[str, object], ...]
    data_dir: str
    synthetic_preset: str
    selection: SelectionSpec
    diff: tuple[str, ...]
    cam: CamSpec
    notes: tuple[str, ...]

    def __post_init__(self):
        keys = [r.key for r in self.rows]
        unknown = sorted({*self.diff, *self.cam.rows} - set(keys))
        problems = [f"suite rows {keys}: a row key appears twice"] if len(set(keys)) != len(keys) else []
        problems += [f"suite diff {self.diff} / cam rows {self.cam.rows}: unknown rows {unknown}"] if unknown else []
        if self.selection.sampler not in ("random", "grid"):
            problems.append(f"suite selection.sampler={self.selection.sampler!r}: expected 'random' or 'grid'")
        if not self.seeds or not self.folds:
            problems.append(f"suite seeds {self.seeds} and folds {self.folds}: expected at least one of each")
        if problems:
            raise ValueError("suite problems:\n  " + "\n  ".join(problems))

    def row(self, key: str) -> RowSpec:
        return next(r for r in self.rows if r.key == key)

    @classmethod
    def from_config(cls, suite) -> "SuiteSpec":
        """A suite ConfigDict (or its to_dict) -> SuiteSpec."""
        d = dict(suite.to_dict() if hasattr(suite, "to_dict") else suite)
        return cls(
            **{
                **d,
                "columns": tuple(d["columns"]),
                "seeds": tuple(d["seeds"]),
                "rows": tuple(RowSpec(**r) for r in d["rows"]),
                "folds": tuple(datasets.Protocol(**f) for f in d["folds"]),
                "published": FrozenDict({k: tuple(v) for k, v in d["published"].items()}),
                "overrides": tuple((k, v) for k, v in d["overrides"]),
                "selection": SelectionSpec(**{**d["selection"], "seeds": tuple(d["selection"]["seeds"])}),
                "diff": tuple(d["diff"]),
                "cam": CamSpec(tuple(d["cam"]["rows"]), tuple(d["cam"]["clips"])),
                "notes": tuple(d["notes"]),
            }
        )
