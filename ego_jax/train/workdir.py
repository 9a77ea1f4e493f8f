"""A training workdir read back and scored: its recorded run (W/config.json), a stage's model at its final
checkpoint, and `evaluate_workdir`, which scores a stage with an evaluation protocol (ego_jax.train.evaluate) and
writes W/<stage>/eval/: metrics.json, confusion.json, confusion.png, predictions.jsonl, curves.png.
"""

import json
from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from etils import epath

from ego_jax import streams
from ego_jax.specs import RunSpec
from ego_jax.train import checkpoint, distributed, evaluate, loaders, paths, sharding, workdir_lock
from ego_jax.train.stage import build_model
from ego_jax.viz import charts


def write_report(
    outdir: str | epath.Path,
    confusion: np.ndarray,
    class_names: Sequence[str],
    meta: Mapping | None = None,
    *,
    all_classes: bool = False,
) -> dict:
    """Writes outdir/{metrics.json, confusion.json, confusion.png}; returns the metrics dict (summary + meta).

    confusion.png shows the classes that occur in the split or among the predictions (all_classes: every
    class); confusion.json always holds the whole matrix.
    """
    outdir = paths.absolute(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    metrics = {**(meta or {}), **evaluate.summarize(confusion, class_names)}
    paths.write_atomic(outdir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    paths.write_atomic(
        outdir / "confusion.json",
        json.dumps(
            {
                "rows": "true",
                "columns": "predicted",
                "classes": list(class_names),
                "matrix": np.asarray(confusion).astype(int).tolist(),
            }
        )
        + "\n",
    )
    title = f"{metrics.get('protocol', '')} accuracy {100 * metrics['accuracy']:.2f}% (n={metrics['num_examples']})"
    confusion = np.asarray(confusion)
    shown = np.ones(len(class_names), bool) if all_classes else charts.present_classes(confusion)
    charts.save(
        charts.confusion_matrix(
            confusion[np.ix_(shown, shown)], [n for n, s in zip(class_names, shown) if s], title=title
        ),
        outdir / "confusion.png",
    )
    return metrics


def clip_id(example) -> str:
    """An example's 'clip_id' as text (tfds stores bytes)."""
    value = example["clip_id"]
    return value.decode() if isinstance(value, bytes) else str(value)


def write_predictions(path: str | epath.Path, source, clips: Mapping[str, np.ndarray]) -> None:
    """One JSON line per evaluated clip of `source` (evaluate(per_clip=True)'s arrays): clip id, source index, label,
    predicted class and the logits, in loader order (written whole or not at all)."""
    rows = [
        json.dumps(
            {
                "clip": clip_id(source[int(i)]),
                "index": int(i),
                "label": int(label),
                "prediction": int(np.argmax(logits)),
                "logits": logits.tolist(),
            }
        )
        for i, label, logits in zip(clips["index"], clips["label"], clips["logits"])
    ]
    paths.write_atomic(epath.Path(path), "".join(row + "\n" for row in rows))


def workdir_run(workdir) -> RunSpec:
    """The run a workdir was trained with (W/config.json, written by train.py and experiment.py)."""
    path = paths.absolute(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --config (the config {workdir} was trained with)")
    return RunSpec.from_config(paths.read_json(path, "pass --config (the config the workdir was trained with)"))


def stage_of(run: RunSpec, stage: str | None) -> str:
    """`stage` (default: the recipe's last) once the run is known to define it."""
    stage = stage or run.recipe[-1]
    run.stage(stage)
    return stage


def load_stage_model(run: RunSpec, workdir: str | epath.Path, stage: str, *, allow_unfinished: bool = False):
    """Stage `stage` of the run with its final checkpoint from W/<stage>/checkpoints -> (model, meta).

    Read-only. The final checkpoint is the step W/<stage>/DONE names; best-epoch selection on the test subject is
    deliberately not offered. The whole model state is restored (replicated over this process's devices),
    whatever device count wrote it; its digest and finiteness are verified. allow_unfinished evaluates the newest
    good checkpoint instead, finished or not. meta: stage, kind, step (the one really evaluated), finished (that
    step is the stage's final one).
    """
    run = loaders.resolve_classes(run)
    stage = stage_of(run, stage)
    stage_dir = paths.absolute(workdir) / stage
    done = stage_dir / "DONE"
    # One answer for all processes: process 0 reads DONE.
    final = distributed.from_process_0(
        paths.read_done(stage_dir).get("step", -1) if distributed.is_writer() and done.exists() else -1
    )
    final = None if final < 0 else final
    if final is None and not allow_unfinished:
        running = workdir_lock.holder(str(workdir))
        raise FileNotFoundError(
            f"stage {stage!r} is not finished in {workdir} (no {done}): train it first "
            f"(scripts/train.py with the same --config and --workdir), or pass "
            f"--allow_unfinished to evaluate its newest good checkpoint"
            + (f"; it is training now ({workdir_lock.describe(running)})" if running else "")
        )
    ckpt_dir = stage_dir / "checkpoints"
    try:
        tree, step = checkpoint.restore_state(str(ckpt_dir), step=None if allow_unfinished else final)
    except checkpoint.BadCheckpoint as e:
        raise checkpoint.BadCheckpoint(
            f"{e}\nRerun scripts/train.py with the same --config and --workdir (it "
            f"trains stage {stage!r} again from its newest good checkpoint), or pass "
            f"--allow_unfinished to evaluate that one"
        ) from None
    model = build_model(run, stage)
    checkpoint.load_model_tree(model, tree, f"checkpoint {ckpt_dir} step {step} of stage {stage!r}")
    model.eval()
    return model, {"stage": stage, "kind": run.stage(stage).model.kind, "step": step, "finished": step == final}


def _last_stage_scored_by(run: RunSpec, role: str) -> str:
    stages = [name for name in run.recipe if run.stage(name).model.stream.protocol == role]
    if not stages:
        kinds = [s.kind for s in streams.scoring(role)]
        raise ValueError(
            f"late_fusion needs a {role} stage (model kind {' or '.join(map(repr, kinds))}); the recipe "
            f"has {[(n, run.stage(n).model.kind) for n in run.recipe]}: pass --{role}_stage"
        )
    return stages[-1]


def evaluate_workdir(
    run: RunSpec,
    workdir: str | epath.Path,
    *,
    stage: str | None = None,
    protocol: str | None = None,
    rgb_stage: str | None = None,
    flow_stage: str | None = None,
    fusion_stacks: int = 10,
    flow_weight: float = 0.5,
    split: str | None = None,
    allow_unfinished: bool = False,
    all_classes: bool = False,
) -> dict:
    """Evaluates a trained stage of `workdir` with `protocol`; writes <workdir>/<stage>/eval/ -> metrics dict.

    stage: default the recipe's last; protocol: default the stage's own (its stream's, ego_jax.streams).
    late_fusion combines rgb_stage and flow_stage (default: the recipe's last rgb / flow protocol stages) and writes
    <workdir>/late_fusion/eval/. The flow protocol averages run.data.flow_eval_stacks stacks.
    """
    workdir = paths.absolute(workdir)
    run = loaders.resolve_classes(run)
    stage = stage_of(run, stage)
    protocol = protocol or run.stage(stage).model.stream.protocol
    if protocol not in evaluate.PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {evaluate.PROTOCOLS}")
    if protocol == "late_fusion":
        given = {"rgb": rgb_stage, "flow": flow_stage}
        names = {role: given[role] or _last_stage_scored_by(run, role) for role in evaluate.MODELS[protocol]}
        out_name = "late_fusion"
    else:
        names = {protocol: stage}
        out_name = stage
    models, checkpoints, kinds = {}, {}, {}
    for role, name in names.items():
        kinds[role] = kind = run.stage(name).model.kind
        own = run.stage(name).model.stream.protocol
        if own != role:
            raise ValueError(
                f"protocol {protocol!r} needs a {role} model for {role!r}, but stage {name!r} is a "
                f"{kind} model (evaluate it with --protocol {own})"
            )
        models[role], checkpoints[name] = load_stage_model(run, workdir, name, allow_unfinished=allow_unfinished)

    mesh = sharding.make_mesh()
    sharding.check_batch_size(run.eval_batch_size, mesh, "eval_batch_size")
    split = split or run.data.test_split
    source = loaders.test_source(run, split)
    loader = loaders.eval_loader(run, source, protocol, mesh=mesh, kinds=kinds, fusion_stacks=fusion_stacks)
    confusion, clips = evaluate.evaluate(
        loader,
        protocol,
        models,
        run.num_classes,
        kinds=kinds,
        flow_weight=flow_weight,
        dtype=jnp.dtype(run.dtype),
        per_clip=True,
    )

    class_names = loaders.class_names(run)
    finished = all(m["finished"] for m in checkpoints.values())
    meta = {
        "protocol": protocol,
        "split": split,
        "checkpoint": "final" if finished else "unfinished",
        "finished": finished,
        "steps": {name: m["step"] for name, m in checkpoints.items()},
        "stages": checkpoints,
        "frames": run.data.frames,
        "crop": run.data.crop,
    }
    if "flow" in evaluate.protocol_inputs(protocol, kinds):
        meta["flow_stacks"] = evaluate.flow_stacks(protocol, run.data.flow_eval_stacks, fusion_stacks)
    if protocol == "late_fusion":
        meta["flow_weight"] = flow_weight
    outdir = workdir / out_name / "eval"
    if not distributed.is_writer():  # one writer of the shared workdir
        return {**meta, **evaluate.summarize(confusion, class_names), "outdir": str(outdir)}
    metrics = write_report(outdir, confusion, class_names, meta, all_classes=all_classes)
    write_predictions(outdir / "predictions.jsonl", source, clips)
    history = workdir / out_name / "metrics.jsonl"
    if history.exists():
        records = charts.read_metrics(history)
        keys = [k for k in charts.numeric_keys(records, "step") if k != "epoch"]
        if keys:
            charts.save(charts.curves(records, keys=keys), outdir / "curves.png")
    return {**metrics, "outdir": str(outdir)}
