"""A suite's runs in TensorBoard's HParams dashboard: every run's hyperparameters and final metrics.

W/hparams/ holds the experiment (which hyperparameters and metrics there are) and one session per run,
W/hparams/<phase>/<row>/<column>/<run>/; `tensorboard --logdir W` shows them beside the stages' curves
(W/stages/*). A session's hyperparameters: row, column, seed, hyperparameter set, the searched values, and every
config value that differs between the suite's runs (paths aside). Sessions of one row, column and set form one
group, so the dashboard aggregates their seeds. Written with tensorboard's own hparams summaries and event
writer (no TensorFlow), by process 0 alone (report.write).
"""

import json
import os
import shutil

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from ego_jax.train import paths
from ego_jax.viz import charts

FOLDER = "hparams"
METRICS = {
    "test/accuracy": "test accuracy (%)",
    "val/accuracy": "validation accuracy (%)",
    "train/loss": "final train loss (mean of the last log window)",
    "train/wall_s": "training time (s)",
}


def _flat(tree, prefix="") -> dict:
    """Nested config dict -> {'a.b.c': value}; lists and other non-scalars as text."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return out


def _final_loss(stage_dir: str) -> float | None:
    """The last train/loss logged in a stage's metrics.jsonl, if any."""
    path = os.path.join(stage_dir, "metrics.jsonl")
    losses = [r["train/loss"] for r in charts.read_metrics(path) if "train/loss" in r] if os.path.exists(path) else []
    return losses[-1] if losses else None


def sessions(p, out: dict) -> list[dict]:
    """Every run of the suite (validation and table) -> dict(path, group, hparams, metrics)."""
    w, key, rows = p.workdir, p.suite.column_key, p.rows
    runs = [
        dict(
            phase="validation",
            row=v["row"],
            column=v["column"],
            seed=seed,
            set=v["set"],
            path=path,
            accuracy=acc,
            metric="val/accuracy",
        )
        for v in out["validation"]
        for seed, path, acc in zip(p.suite.selection.seeds, v["workdirs"], v["accuracies"])
    ]
    runs += [
        dict(
            phase="table",
            row=r["row"],
            column=r["column"],
            seed=r["seed"],
            set=r["set"],
            path=r["workdir"],
            accuracy=r["accuracy"],
            metric="test/accuracy",
            stages=r["stages"],
        )
        for r in out["runs"]
    ]
    configs = [
        _flat(
            paths.read_json(
                os.path.join(w, r["path"], "config.json"), "delete it and rerun the suite (which writes it again)"
            )
        )
        for r in runs
    ]
    shared = set.intersection(*(set(c) for c in configs))
    varying = sorted(k for k in shared if not k.endswith("_dir") and len({json.dumps(c[k]) for c in configs}) > 1)
    result = []
    for r, config in zip(runs, configs):
        row = rows[r["row"]]
        column = "any" if r["column"] is None else str(r["column"])
        searched = p.sets(row)[r["set"]] if r["set"] is not None else {}
        values = {
            "row": r["row"],
            key: column,
            "seed": r["seed"],
            "phase": r["phase"],
            "set": -1 if r["set"] is None else r["set"],
        }
        values.update({k: config[k] for k in varying})
        values.update(_flat(searched))
        stage_dir = os.path.join(w, r["path"], row.stage)
        metrics = {
            r["metric"]: 100 * r["accuracy"],
            "train/loss": _final_loss(stage_dir),
            "train/wall_s": sum(s["wall_s"] or 0.0 for s in r.get("stages", {}).values()) or None,
        }
        result.append(
            dict(
                path=os.path.join(r["phase"], os.path.relpath(r["path"], "runs")),
                group=f"{r['phase']}/{r['row']}/{column}/set{values['set']}",
                hparams=values,
                metrics={k: v for k, v in metrics.items() if v is not None},
            )
        )
    return result


def _domain(values: list):
    """A Discrete domain of the values when they share one type (the dashboard's filter), else None."""
    kinds = {type(v) for v in values}
    if len(kinds) != 1:
        return None
    return hp.Discrete(sorted(set(values)))


def _write(logdir: str, summaries: list) -> None:
    writer = EventFileWriter(logdir)
    for step, summary in summaries:
        writer.add_event(event_pb2.Event(step=step, summary=summary))
    writer.close()


def write(p, out: dict) -> str:
    """(Re)writes W/hparams from tabulate()'s results -> its path."""
    root = os.path.join(p.workdir, FOLDER)
    shutil.rmtree(root, ignore_errors=True)  # a rerun rewrites every session once
    found = sessions(p, out)
    names = list(dict.fromkeys(k for s in found for k in s["hparams"]))
    params = [hp.HParam(n, _domain([s["hparams"][n] for s in found if n in s["hparams"]])) for n in names]
    metrics = [
        hp.Metric(tag, display_name=text) for tag, text in METRICS.items() if any(tag in s["metrics"] for s in found)
    ]
    _write(root, [(0, hp.hparams_config_pb(params, metrics))])
    for s in found:
        scalars = [
            (0, summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v)]))
            for t, v in s["metrics"].items()
        ]
        _write(os.path.join(root, s["path"]), [(0, hp.hparams_pb(s["hparams"], trial_id=s["group"]))] + scalars)
    return root
