"""A suite's results: W/results.md (the table, footnotes, validation table), W/results.json, bar chart PNGs."""

import datetime
import importlib.metadata
import logging
import os
import shutil
import subprocess

import jax
import numpy as np

from ego_jax.experiments import hparams
from ego_jax.train import evaluate, paths
from ego_jax.viz import charts

VECTOR = ("svg", "pdf")  # beside each PNG, for papers


def _git_commit() -> str:
    """HEAD of the checkout ego_jax runs from ('+ local changes' when dirty), or 'unknown' outside git."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(
            ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" + local changes" if dirty else "")


def cell(runs: list[dict]) -> dict:
    """The table runs of one cell -> mean, std (over seeds, ddof 1; None for one seed), n, accuracies, wall_s.

    wall_s sums the training time of every distinct stage the cell's runs use (a stage shared with another
    cell counts in both).
    """
    accs = [r["accuracy"] for r in runs]
    stages = {s["identity"]: s["wall_s"] or 0.0 for r in runs for s in r["stages"].values()}
    out = dict(
        mean=float(np.mean(accs)),
        std=float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
        n=len(accs),
        accuracies=accs,
        seeds=[r["seed"] for r in runs],
        workdirs=[r["workdir"] for r in runs],
        wall_s=float(sum(stages.values())),
    )
    folds = sorted({r.get("fold") for r in runs if r.get("fold") is not None})
    if len(folds) > 1:  # the mean is over folds and seeds; each fold's own runs
        out["folds"] = {
            k: dict(
                mean=float(np.mean([r["accuracy"] for r in runs if r["fold"] == k])),
                accuracies=[r["accuracy"] for r in runs if r["fold"] == k],
            )
            for k in folds
        }
    return out


def _fmt(c: dict) -> str:
    if c["std"] is None:
        return f"{100 * c['mean']:.1f} (1 seed)"
    return f"{100 * c['mean']:.1f} ± {100 * c['std']:.1f} ({c['n']} seeds)"


def _hp(hp: dict) -> str:
    return ", ".join(f"{k.removeprefix('stages.rgb_stage2.')}={v}" for k, v in hp.items()) or "(reference)"


def device() -> str:
    """'4 x NVIDIA H100 (gpu)': this process's devices."""
    return f"{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})"


def tabulate(
    p, results: list[dict], validation: list[dict], *, class_names: list[str], wall_s: float, jobs: dict | None = None
) -> dict:
    """Table-run results (runner.result_of + row, column, seed, workdir) -> the results dict that write() writes.

    class_names: of the suite's dataset (loaders.class_names), keys of each run's per-class accuracy.

    jobs: {executor: description, jobs: executors.summary(...)} when the stages ran as jobs; the device is theirs.
    """
    s = p.suite
    for r in results:
        r["per_class_accuracy"] = evaluate.summarize(np.asarray(r.pop("confusion")), class_names)["per_class_accuracy"]
    columns = list(s.columns)
    rows = []
    for row in s.rows:
        cells = {
            col: cell([r for r in results if r["row"] == row.key and r["column"] in (col, None)]) for col in columns
        }
        # {column: set}, or with several folds {column: {fold: set}} (each fold selects on its own validation part)
        chosen = {
            col: {
                r["fold"]: r["set"]
                for r in results
                if r["row"] == row.key and r["column"] == col and r["set"] is not None
            }
            or None
            for col in columns
        }
        if len(s.folds) == 1:
            chosen = {col: next(iter(c.values())) if c else None for col, c in chosen.items()}
        published = s.published.get(row.key)
        rows.append(
            dict(
                key=row.key,
                name=row.name,
                stage=row.stage,
                config=row.config,
                per_column=row.per_column,
                cells=cells,
                published=None if published is None else dict(value=published[0], source=published[1]),
                chosen_set={c: k for c, k in chosen.items() if k is not None},
            )
        )
    diff = _per_class_diff(s, results, columns) if s.diff else {}
    meta = dict(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        ego_jax=importlib.metadata.version("ego_jax"),
        commit=_git_commit(),
        device=("; ".join(sorted({d for j in jobs["jobs"] for d in j["devices"]})) or "?") if jobs else device(),
        data=f"{s.args} ({p.data_dir or 'the configs data_dir'})",
        protocol=s.protocol,
        folds=[f.as_dict() for f in s.folds],
        wall_s=wall_s,
    )
    return dict(
        suite=s.name,
        title=s.title,
        column_key=s.column_key,
        columns=columns,
        seeds=list(s.seeds),
        notes=list(s.notes),
        rows=rows,
        validation=validation,
        per_class_diff=diff,
        runs=results,
        meta=meta,
        jobs=jobs,
    )


OUTPUTS = (
    "results.json",
    "results.md",
    *(f"{chart}.{ext}" for chart in ("results", "per_class_diff") for ext in ("png", *VECTOR)),
    hparams.FOLDER,
)


def remove(p) -> None:
    """Delete what write() made in the suite's workdir (a run recomputes it at its end)."""
    for name in OUTPUTS:
        path = os.path.join(p.workdir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        else:
            continue
        logging.info("removed %s (recomputed at the end of this run)", path)


def write(p, out: dict) -> None:
    """W/results.json, results.md, results.{png,svg,pdf}, (with a diff) per_class_diff.{png,svg,pdf} and W/hparams
    (TensorBoard's HParams dashboard) of tabulate()'s results."""
    s, w, columns, diff = p.suite, p.workdir, out["columns"], out["per_class_diff"]
    paths.write_json(os.path.join(w, "results.json"), out)
    groups = [f"{c} {s.column_key}" for c in columns]
    # The paper's number (one per row, whatever the frame count) marked at each of the row's bars.
    bars = {
        r["name"]: dict(
            points=[[100 * a for a in r["cells"][c]["accuracies"]] for c in columns],
            published=[r["published"]["value"]] * len(columns) if r.get("published") else None,
        )
        for r in out["rows"]
    }
    charts.save(
        charts.accuracy_bars(
            groups,
            bars,
            title=s.title,
            published_label="published (see results.md)",
            ylabel=f"test accuracy (%), mean ± sample std over seeds {out['seeds']}",
        ),
        os.path.join(w, "results.png"),
        vector=VECTOR,
    )
    if diff:
        names = list(out["runs"][0]["per_class_accuracy"])
        present = [k for k in names if any(diff["columns"][c].get(k) is not None for c in columns)]
        charts.save(
            charts.differences(
                present,
                {g: [100 * _nan(diff["columns"][c].get(k)) for k in present] for g, c in zip(groups, columns)},
                title=f"per-class test accuracy: {diff['b']} minus {diff['a']} (mean over seeds)",
            ),
            os.path.join(w, "per_class_diff.png"),
            vector=VECTOR,
        )
    paths.write_atomic(os.path.join(w, "results.md"), markdown(out))
    hparams.write(p, out)


def _nan(x):
    return float("nan") if x is None else x


def _per_class_diff(s, results, columns) -> dict:
    """Mean over seeds of per-class accuracy, row b minus row a (s.diff = (a, b)), per column; classes in test."""
    a, b = s.diff
    out = dict(a=a, b=b, columns={})
    for col in columns:
        means = {}
        for key in (a, b):
            runs = [r["per_class_accuracy"] for r in results if r["row"] == key and r["column"] in (col, None)]
            means[key] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if runs[0][k] is not None}
        out["columns"][col] = {k: means[b][k] - means[a][k] for k in means[a]}
    return out


def markdown(out: dict) -> str:
    """results.md: title, the table (rows x columns, mean ± std (n seeds)), footnotes, wall times, extras."""
    cols, key = out["columns"], out["column_key"]
    published = [r for r in out["rows"] if r.get("published")]
    ref = " published |" if published else ""
    lines = [
        f"# {out['title']}",
        "",
        "| | " + " | ".join(f"{c} {key}" for c in cols) + f" |{ref}",
        "|---|" + "---|" * len(cols) + ("---|" if published else ""),
    ]
    lines += [
        f"| {r['name']} | "
        + " | ".join(_fmt(r["cells"][c]) for c in cols)
        + " |"
        + (f" {r['published']['value']:.2f} |" if r.get("published") else " |" if published else "")
        for r in out["rows"]
    ]
    m = out["meta"]
    folds = m["folds"]
    if len(folds) == 1:
        lines += [
            "",
            "Test accuracy (%) of the final epoch, mean ± sample std over seeds "
            f"{out['seeds']}; train {folds[0]['train']}, test {folds[0]['test']}.",
        ]
    else:
        lines += [
            "",
            f"Test accuracy (%) of the final epoch, mean over the {len(folds)} protocol splits and seeds "
            f"{out['seeds']} (± sample std over all those runs); per split: "
            + "; ".join(f"split {f['split']} train {f['train']} test {f['test']}" for f in folds)
            + ".",
        ]
        lines += [
            f"- Per split ({r['name']}): "
            + "; ".join(
                f"{c} {key}: " + ", ".join(f"{k} {100 * v['mean']:.1f}" for k, v in r["cells"][c]["folds"].items())
                for c in cols
                if "folds" in r["cells"][c]
            )
            for r in out["rows"]
        ]
    lines += [
        f"- Published ({r['name']}): {r['published']['value']:.2f}, {r['published']['source']}." for r in published
    ]
    lines += [f"- {n}" for n in out.get("notes", [])]
    lines += [
        f"- Data: {m['data']}. Date: {m['date']}. ego_jax {m['ego_jax']}, commit {m['commit']}. "
        f"Device: {m['device']}. Suite wall time this session: {m['wall_s']:.0f} s."
    ]
    searched = [r for r in out["rows"] if r["chosen_set"]]
    if searched:
        lines.append(
            "- Chosen hyperparameter sets (on the validation subject, see below): "
            + "; ".join(
                f"{r['name']} {c} {key}: set {k}"
                if not isinstance(k, dict)
                else f"{r['name']} {c} {key}: " + ", ".join(f"set {v} (split {f})" for f, v in k.items())
                for r in searched
                for c, k in r["chosen_set"].items()
            )
            + "."
        )
    lines += [
        "",
        "Wall time per cell (s; training time of every stage the cell's runs use, a shared stage counted "
        "in each cell using it):",
        "",
        "| | " + " | ".join(f"{c} {key}" for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    lines += [
        f"| {r['name']} | " + " | ".join(f"{r['cells'][c]['wall_s']:.0f}" for c in cols) + " |" for r in out["rows"]
    ]
    if out.get("jobs"):
        jobs = out["jobs"]
        lines += [
            "",
            f"Stage jobs ({jobs['executor']}; records and logs in W/jobs/; wall time summed over a job's "
            "runs, a requeued job runs again):",
            "",
            "| stage | job ids | runs | wall (s) | log |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {j['name']} | {', '.join(j['job_ids'])} | {j['attempts']} | {j['wall_s']:.0f} | {j['log']} |"
            for j in jobs["jobs"]
        ]
    diff = out["per_class_diff"]
    if diff:
        lines += [
            "",
            f"Per-class accuracy, {diff['b']} minus {diff['a']} (mean over seeds; classes of the test "
            "subject; largest changes first; per_class_diff.png):",
            "",
        ]
        for c in cols:
            ranked = sorted(diff["columns"][c].items(), key=lambda kv: -abs(kv[1]))
            shown = [f"{k} {100 * v:+.0f}" for k, v in ranked if v][:12]
            lines.append(f"- {c} {key}: " + (", ".join(shown) if shown else "no class differs"))
    if out["validation"]:
        val = out["validation"][0]["split"]
        lines += [
            "",
            f"Validation (hyperparameter selection; trained without {val}, scored on {val}; the test subject "
            "is not read):",
            "",
            "| row | column | set | hyperparameters | validation accuracy | chosen |",
            "|---|---|---|---|---|---|",
        ]
        names = {r["key"]: r["name"] for r in out["rows"]}
        for v in out["validation"]:
            acc = ", ".join(f"{100 * a:.1f}" for a in v["accuracies"])
            fold = f" (split {v['fold']})" if len(folds) > 1 else ""
            lines.append(
                f"| {names[v['row']]} | {v['column']} {key}{fold} | {v['set']} | "
                f"{_hp(v['hyperparameters'])} | "
                f"{acc} | {'yes' if v['chosen'] else ''} |"
            )
    return "\n".join(lines) + "\n"
