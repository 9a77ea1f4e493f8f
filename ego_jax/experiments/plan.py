"""A suite (configs/experiments/*.py) as runs: which recipe config, with which arguments and overrides, where.

A run is one recipe trained with one seed on one protocol split (fold): a table run (train on the fold's training
part, test on its test part) or a validation run of a hyperparameter set (train on the fold's fit part, score on
its val part). Its workdir W/runs/<row>/<column>/[fold<k>/]<name> holds one symlink per stage into the shared
store W/stages/<stage_key> (ego_jax.specs.identity + the report fields: the test split, ...), so a stage needed by
several runs is trained once. A suite of one fold (protocol=fixed) has no fold level in its run paths.
"""

import dataclasses
import hashlib
import itertools
import json
import logging
import os

import numpy as np

from ego_jax import recipes, specs
from ego_jax.data import datasets
from ego_jax.experiments.suite import SuiteSpec
from ego_jax.specs import RunSpec
from ego_jax.train import paths

TABLE, VALIDATION = "table", "validation"


def stage_fields(run: RunSpec, stage: str) -> dict:
    """What a stored stage's results depend on: its identity (trained parameters) and what its eval.json reads."""
    return dict(identity=specs.identity(run, stage), report=specs.report(run, stage))


def key_of(stage: str, fields: dict) -> str:
    """'<stage>-<12 hex digits>': the stage name (for people browsing W/stages) and a hash of its fields."""
    text = json.dumps(fields, sort_keys=True)
    return f"{stage}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def stage_key(run: RunSpec, stage: str) -> str:
    """The store key of `stage` of a run (key_of its stage_fields)."""
    return key_of(stage, stage_fields(run, stage))


FIELDS = "identity.json"  # W/stages/<key>/identity.json: the stage_fields its key hashes


def _fields(path: str) -> dict:
    """A store directory's identity.json, normalised (None values dropped)."""
    return specs.normalise(
        paths.read_json(
            path,
            "it records which stage the directory holds: move the directory "
            "out of the store (its stage then trains again)",
        )
    )


def stale_keys(workdir: str) -> dict[str, str]:
    """{old: new} store directories whose key an earlier ego_jax computed (None values included in the hash)."""
    store, stale = os.path.join(workdir, "stages"), {}
    for key in sorted(os.listdir(store)) if os.path.isdir(store) else []:
        fields = os.path.join(store, key, FIELDS)
        if os.path.exists(fields):
            new = key_of(key.rpartition("-")[0], _fields(fields))
            if new != key:
                stale[key] = new
    return stale


def rekey_command(workdir: str) -> str:
    return f"python scripts/experiment.py --workdir {workdir} --rekey"


def rekey(workdir: str) -> dict[str, str]:
    """Rename the store's stale directories to their keys (identity.json normalised) -> {old: new}.

    The runs' links are pointed at the new names by the next run of the suite (runner.link_stages).
    """
    stale = stale_keys(workdir)
    store = os.path.join(workdir, "stages")
    taken = [new for new in stale.values() if os.path.lexists(os.path.join(store, new))]
    if taken:
        raise FileExistsError(
            f"{store}: {taken} exist already beside the stale directories they replace (a run of "
            "this ego_jax started them over); move them away, then rerun " + rekey_command(workdir)
        )
    for old, new in stale.items():
        path = os.path.join(store, old, FIELDS)
        paths.write_json(path, _fields(path))
        os.rename(os.path.join(store, old), os.path.join(store, new))
        logging.info("re-keyed %s -> %s", old, new)
    return stale


@dataclasses.dataclass(frozen=True)
class Run:
    """One recipe x seed of a suite; `spec` is the complete run it trains."""

    row: str
    column: int | None  # None: the run does not depend on the column (shown in every column)
    seed: int
    phase: str  # TABLE | VALIDATION
    set_index: int | None  # hyperparameter set of a searched row, else None
    fold: int  # the protocol split (datasets.protocol) it trains and tests on
    path: str  # run workdir relative to the suite workdir
    args: str  # config arguments of the recipe file
    spec: RunSpec = dataclasses.field(compare=False, repr=False)


def search_sets(space, sets: int, sampler: str, seed: int) -> list[dict]:
    """Hyperparameter sets of a space ((dotted key, values), ...): -> [{key: value}], set 0 = first values.

    sampler 'grid': every combination (sets ignored). 'random': set 0, then each hyperparameter runs through its
    other values in a random order (seeded) before repeating, so every one of them takes min(sets, len(values))
    distinct values; a set equal to an earlier one is replaced by a random new combination.
    """
    keys = [k for k, _ in space]
    sizes = [len(values) for _, values in space]
    grid = list(itertools.product(*(range(n) for n in sizes)))
    if sampler != "grid" and sets > len(grid):
        raise ValueError(
            f"sets={sets} hyperparameter sets asked for, but the space has only {len(grid)} "
            f"combinations; use search=grid or fewer sets"
        )
    if sampler == "grid":
        chosen = grid
    else:
        rng = np.random.default_rng(seed)
        cycles = [[int(i) for i in 1 + rng.permutation(n - 1)] + [0] for n in sizes]
        chosen = [grid[0]]
        for i in range(sets - 1):
            combo = tuple(c[i % len(c)] for c in cycles)
            while combo in chosen:
                combo = grid[int(rng.integers(len(grid)))]
            chosen.append(combo)
    return [{k: values[j] for k, (_, values), j in zip(keys, space, combo)} for combo in chosen]


class Plan:
    """The runs of `suite` in `workdir` (data paths resolved) and their stage identities."""

    def __init__(self, suite: SuiteSpec, workdir: str):
        self.suite, self.workdir = suite, workdir
        self.rows = {r.key: r for r in suite.rows}
        if suite.data_dir:
            self.data_dir = os.path.abspath(suite.data_dir)
        else:
            self.data_dir = os.path.join(workdir, "data", "tfds") if suite.synthetic_preset else ""
        self.manual_dir = os.path.join(os.path.dirname(self.data_dir), "manual") if self.data_dir else ""

    def columns(self, row) -> list:
        return list(self.suite.columns) if row.per_column else [None]

    def sets(self, row) -> list[dict]:
        """The hyperparameter sets of a searched row ([{}] for a row without search)."""
        if not row.search:
            return [{}]
        sel = self.suite.selection
        return search_sets(row.search, sel.sets, sel.sampler, sel.seed)

    def fold(self, split: int) -> datasets.Protocol:
        return next(f for f in self.suite.folds if f.split == split)

    def run(
        self,
        row_key: str,
        column,
        seed: int,
        *,
        phase: str = TABLE,
        set_index: int | None = None,
        fold: int | None = None,
    ) -> Run:
        """The run of a row, column, seed and fold (default: the first) (with set `set_index` of a searched row)."""
        row, s = self.rows[row_key], self.suite
        p = self.fold(s.folds[0].split if fold is None else fold)
        args = ",".join(
            filter(
                None, [row.args, s.args, f"seed={seed}"] + ([f"{s.column_key}={column}"] if column is not None else [])
            )
        )
        config = recipes.from_file(row.config, args)
        recipes.override(config, dict(s.overrides))
        if self.data_dir:
            recipes.override(config, {"data.data_dir": self.data_dir, "data.manual_dir": self.manual_dir})
        if phase == VALIDATION:
            splits = {"data.train_split": p.fit, "data.test_split": p.val}
        else:
            splits = {"data.train_split": p.train, "data.test_split": p.test}
        recipes.override(config, splits)
        if set_index is not None:
            recipes.override(config, self.sets(row)[set_index])
        col = "any" if column is None else f"{s.column_key}{column}"
        name = f"seed{seed}" if phase == TABLE else f"val-set{set_index}-seed{seed}"
        if len(s.folds) > 1:
            name = os.path.join(f"fold{p.split}", name)
        return Run(
            row_key,
            column,
            seed,
            phase,
            set_index,
            p.split,
            os.path.join("runs", row_key, col, name),
            args,
            RunSpec.from_config(config),
        )

    def folds(self) -> list[int]:
        return [f.split for f in self.suite.folds]

    def validation_runs(self) -> list[Run]:
        """Every validation run: searched rows x columns x folds x hyperparameter sets x selection seeds."""
        return [
            self.run(r.key, col, seed, phase=VALIDATION, set_index=k, fold=fold)
            for r in self.suite.rows
            if r.search
            for col in self.columns(r)
            for fold in self.folds()
            for k in range(len(self.sets(r)))
            for seed in self.suite.selection.seeds
        ]

    def table_runs(self, chosen: dict) -> list[Run]:
        """Every table run; chosen[(row, column, fold)] = the selected set index of a searched row."""
        return [
            self.run(r.key, col, seed, set_index=chosen[(r.key, col, fold)] if r.search else None, fold=fold)
            for r in self.suite.rows
            for col in self.columns(r)
            for fold in self.folds()
            for seed in self.suite.seeds
        ]
