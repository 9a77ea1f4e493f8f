"""Ego-RNN evaluation protocols: RGB single clip, flow k-stack average, joint two-stream, late fusion.

`evaluate(batches, protocol, models, num_classes)` runs one jitted step per batch that turns the
uint8 batch into logits the protocol's way and accumulates a (C, C) confusion matrix of the
unpadded examples; `summarize` and `write_report` turn it into accuracy, per-class accuracy and
files. The model-free pieces (`average_over_stacks`, `late_fusion`, `confusion_matrix`) are pure.
"""
import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from ego_jax import streams
from ego_jax.specs import RunSpec
from ego_jax.train import checkpoint, distributed, loaders, paths, sharding, workdir_lock
from ego_jax.train.stage import build_model
from ego_jax.viz import plots

PROTOCOLS = ("rgb", "flow", "joint", "late_fusion")
# The roles (keys of `models`) each protocol reads. A single-model protocol's role is its own name, filled by a
# stream kind whose table entry (ego_jax.streams) names that protocol; late_fusion combines an rgb and a flow one.
MODELS = {"rgb": ("rgb",), "flow": ("flow",), "joint": ("joint",), "late_fusion": ("rgb", "flow")}
# Loader kind of the multi-model protocols (a single-model protocol reads its stream's own loader).
FUSION_LOADER = {"late_fusion": "two_stream"}


def average_over_stacks(outputs_fn: Callable[[jax.Array], jax.Array | dict], flow: jax.Array):
    """flow (B, k, S, S, 2*stack) [or (B, S, S, 2*stack), k=1] -> outputs_fn's (B, ...) arrays (or dict of them: logits,
    feature) averaged over the k stacks.

    The k stacks go through `outputs_fn` as one batch of B*k, so the model runs once, not k times.
    """
    if flow.ndim == 4:
        return outputs_fn(flow)
    if flow.ndim != 5:
        raise ValueError(f"average_over_stacks: expected flow (B, k, S, S, 2*stack) or (B, S, S, 2*stack), "
                         f"got {flow.shape}")
    batch, k = flow.shape[:2]
    outputs = outputs_fn(flow.reshape(batch * k, *flow.shape[2:]))
    return jax.tree.map(lambda x: x.reshape(batch, k, *x.shape[1:]).mean(axis=1), outputs)


def late_fusion(flow_logits: jax.Array, rgb_logits: jax.Array, flow_weight: float = 0.5) -> jax.Array:
    """(B, C) flow and RGB logits -> flow_weight * flow + (1 - flow_weight) * rgb, (B, C)."""
    return flow_weight * flow_logits + (1.0 - flow_weight) * rgb_logits


def confusion_matrix(labels: jax.Array, predictions: jax.Array, mask: jax.Array, num_classes: int) -> jax.Array:
    """labels, predictions (B,) int, mask (B,) bool -> (C, C) int32 counts, rows true class, columns predicted.

    Examples with mask False (eval padding) add nothing.
    """
    counts = jnp.zeros((num_classes, num_classes), jnp.int32)
    return counts.at[labels, predictions].add(mask.astype(jnp.int32), mode="drop")


def _single_stack(protocol: str, flow: jax.Array) -> jax.Array:
    if flow.ndim == 5:
        if flow.shape[1] != 1:
            raise ValueError(
                f"{protocol} protocol: expected one centre flow stack, got {flow.shape[1]} stacks (flow {flow.shape}); "
                "build the loader with eval_stacks=1"
            )
        return flow[:, 0]
    return flow


def role_kinds(protocol: str, kinds: Mapping[str, str] | None = None) -> dict[str, str]:
    """{role: stream kind} of `protocol`'s models: `kinds`, else the first registered kind scored by the role."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    kinds = dict(kinds or {})
    for role in MODELS[protocol]:
        if role not in kinds:
            kinds[role] = streams.scoring(role)[0].kind
    return {role: kinds[role] for role in MODELS[protocol]}


def protocol_inputs(protocol: str, kinds: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Batch keys `protocol` reads: its streams' inputs (ego_jax.streams)."""
    return tuple(dict.fromkeys(key for kind in role_kinds(protocol, kinds).values()
                               for key in streams.get(kind).inputs))


def protocol_loader(protocol: str, kinds: Mapping[str, str] | None = None) -> str:
    """Pipeline loader kind of `protocol`: its stream's own loader, or FUSION_LOADER for a multi-model protocol."""
    kinds = role_kinds(protocol, kinds)
    return FUSION_LOADER.get(protocol) or streams.get(kinds[protocol]).loader


def protocol_outputs(protocol: str, models: Mapping[str, nnx.Module], batch: Mapping[str, jax.Array],
                     *, kinds: Mapping[str, str] | None = None, flow_weight: float = 0.5,
                     dtype=jnp.float32) -> dict[str, jax.Array]:
    """uint8 batch -> `protocol`'s outputs ('rgb', 'flow', 'joint', 'late_fusion'); call inside jit.

    -> dict with 'logits' (B, C) float32 and, for a single-model protocol, the model's other array outputs as it
    returns them ('feature' (B, F); 'attention' (B, T, h, w) and 'ms' (B, T, h, w, K) where the model has them).
    models: one per role of the protocol (MODELS[protocol]); kinds: each role's stream kind (default: ego_rnn for
    'rgb', flow for 'flow', two_stream for 'joint'), whose table entry normalises the inputs and calls the model.
    The flow protocol averages the outputs over the flow stacks; the others read one centre stack.
    dtype: compute dtype the normalised inputs are cast to (the models' `dtype`).
    """
    kinds = role_kinds(protocol, kinds)

    def outputs(role, inputs):
        out = streams.get(kinds[role]).forward(models[role], inputs, dtype)
        return {key: value.astype(jnp.float32) if key == "logits" else value
                for key, value in out.items() if value is not None}

    def stack_mean(role):
        return average_over_stacks(lambda flow: outputs(role, {**batch, "flow": flow}), batch["flow"])

    if protocol == "flow":
        return stack_mean("flow")
    if protocol == "late_fusion":
        return {"logits": late_fusion(stack_mean("flow")["logits"], outputs("rgb", batch)["logits"], flow_weight)}
    one_stack = {**batch, "flow": _single_stack(protocol, batch["flow"])} if "flow" in batch else batch
    return outputs(protocol, one_stack)


def protocol_logits(protocol: str, models: Mapping[str, nnx.Module], batch: Mapping[str, jax.Array],
                    *, kinds: Mapping[str, str] | None = None, flow_weight: float = 0.5,
                    dtype=jnp.float32) -> jax.Array:
    """uint8 batch -> (B, C) float32 logits of `protocol` (protocol_outputs' 'logits'); call inside jit."""
    return protocol_outputs(protocol, models, batch, kinds=kinds, flow_weight=flow_weight, dtype=dtype)["logits"]


@functools.partial(jax.jit, static_argnums=(0,),
                   static_argnames=("protocol", "kinds", "num_classes", "flow_weight", "dtype"))
def eval_step(graphdef: nnx.GraphDef, state: nnx.State, batch: Mapping[str, jax.Array], *, protocol: str,
              kinds: tuple[tuple[str, str], ...], num_classes: int, flow_weight: float = 0.5,
              dtype=jnp.float32) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(graphdef, state) of the models dict, one batch -> ((C, C) int32 confusion, count) of its unpadded examples,
    and the batch's (B, C) float32 logits.

    kinds: ((role, stream kind), ...). Jitted once per (graphdef, protocol, kinds, shapes): periodic evaluation in
    the train loop does not recompile.
    """
    models = nnx.merge(graphdef, state)
    # Eval mode on this traced copy only: the caller's modules keep their training modes.
    for module in models.values():
        module.eval()
    logits = protocol_logits(protocol, models, batch, kinds=dict(kinds), flow_weight=flow_weight, dtype=dtype)
    confusion = confusion_matrix(batch["label"], jnp.argmax(logits, axis=-1), batch["mask"], num_classes)
    return confusion, jnp.sum(batch["mask"], dtype=jnp.int32), logits


def _host(x) -> np.ndarray:
    """A (global, possibly multi-process) array -> numpy on every process."""
    if jax.process_count() > 1 and isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def evaluate(batches: Iterable[Mapping[str, np.ndarray | jax.Array]], protocol: str,
             models: Mapping[str, nnx.Module], num_classes: int, *, kinds: Mapping[str, str] | None = None,
             flow_weight: float = 0.5, dtype=jnp.float32, per_clip: bool = False):
    """Runs `protocol` over eval batches (loader dicts with 'label', 'mask' and the inputs) -> (C, C) int64 confusion.

    kinds: {role: stream kind} of the models (see protocol_logits). Batches may be numpy or global (sharded)
    jax.Arrays; with sharded batches, pass models whose state is replicated over the same mesh. A batch without
    'mask' counts every example. Counts stay on the devices until the end (no host sync per batch).
    per_clip: -> (confusion, dict(index (N,) int64, label (N,) int64, logits (N, C) float32)) of the N unpadded
    examples in loader order; index is the batch's 'index' (the source index; running position without one).
    """
    kinds = role_kinds(protocol, kinds)
    missing = [name for name in MODELS[protocol] if name not in models]
    if missing:
        raise ValueError(f"protocol {protocol!r} needs models {MODELS[protocol]}, missing {missing}")
    graphdef, state = nnx.split({name: models[name] for name in MODELS[protocol]})
    needed = protocol_inputs(protocol, kinds) + ("label",)
    total = expected = None
    clips = []  # per_clip: (index, label, mask, logits) of each batch, on the devices until the end
    position = 0
    for n, batch in enumerate(batches):
        absent = [key for key in needed if key not in batch]
        if absent:
            raise ValueError(f"evaluate: batch {n} lacks {absent} needed by protocol {protocol!r}; build the loader "
                             f"with kind={protocol_loader(protocol, kinds)!r} and eval_stacks as flow_stacks() says")
        inputs = {key: batch[key] for key in needed}
        inputs["mask"] = batch["mask"] if "mask" in batch else np.ones(np.shape(batch["label"]), bool)
        counts, count, logits = eval_step(graphdef, state, inputs, protocol=protocol, kinds=tuple(kinds.items()),
                                          num_classes=num_classes, flow_weight=flow_weight, dtype=jnp.dtype(dtype))
        if per_clip:
            size = np.shape(batch["label"])[0]
            index = batch["index"] if "index" in batch else np.arange(position, position + size)
            clips.append((index, inputs["label"], inputs["mask"], logits))
            position += size
        total, expected = (counts, count) if total is None else (total + counts, expected + count)
    if total is None:
        raise ValueError("evaluate: the loader yielded no batches (empty test split?)")
    confusion, expected = np.asarray(total, np.int64), int(expected)
    if confusion.sum() != expected:
        raise ValueError(f"evaluate: {expected - confusion.sum()} unpadded examples have labels outside "
                         f"[0, {num_classes}); does the dataset match num_classes={num_classes}?")
    if not per_clip:
        return confusion
    index, label, mask, logits = (np.concatenate([_host(c[i]) for c in clips]) for i in range(4))
    return confusion, {"index": index[mask].astype(np.int64), "label": label[mask].astype(np.int64),
                       "logits": logits[mask].astype(np.float32)}


def summarize(confusion: np.ndarray, class_names: Sequence[str]) -> dict:
    """(C, C) confusion -> dict: accuracy, num_examples, num_correct, mean_class_accuracy, per_class_accuracy.

    per_class_accuracy maps class name -> recall, or None for classes absent from the evaluated split
    (mean_class_accuracy averages the present ones).
    """
    confusion = np.asarray(confusion)
    if confusion.shape != (len(class_names),) * 2:
        raise ValueError(f"summarize: confusion {confusion.shape} does not match {len(class_names)} class names")
    support = confusion.sum(axis=1)
    correct = np.diag(confusion)
    total = int(support.sum())
    per_class = {name: (float(c / s) if s else None) for name, c, s in zip(class_names, correct, support)}
    present = [v for v in per_class.values() if v is not None]
    return {
        "accuracy": float(correct.sum() / total) if total else float("nan"),
        "num_examples": total,
        "num_correct": int(correct.sum()),
        "mean_class_accuracy": float(np.mean(present)) if present else float("nan"),
        "per_class_accuracy": per_class,
        "per_class_support": {name: int(s) for name, s in zip(class_names, support)},
    }


def write_report(outdir: str | epath.Path, confusion: np.ndarray, class_names: Sequence[str],
                 meta: Mapping | None = None, *, all_classes: bool = False) -> dict:
    """Writes outdir/{metrics.json, confusion.json, confusion.png}; returns the metrics dict (summary + meta).

    confusion.png shows the classes that occur in the split or among the predictions (all_classes: every
    class); confusion.json always holds the whole matrix.
    """
    outdir = paths.absolute(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    metrics = {**(meta or {}), **summarize(confusion, class_names)}
    (outdir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (outdir / "confusion.json").write_text(json.dumps(
        {"rows": "true", "columns": "predicted", "classes": list(class_names),
         "matrix": np.asarray(confusion).astype(int).tolist()}) + "\n")
    title = f"{metrics.get('protocol', '')} accuracy {100 * metrics['accuracy']:.2f}% (n={metrics['num_examples']})"
    confusion = np.asarray(confusion)
    shown = np.ones(len(class_names), bool) if all_classes else (confusion.sum(0) + confusion.sum(1)) > 0
    plots.write_png(outdir / "confusion.png", plots.confusion_image(
        confusion[np.ix_(shown, shown)], [n for n, s in zip(class_names, shown) if s], title=title))
    return metrics


def clip_id(example) -> str:
    """An example's 'clip_id' as text (tfds stores bytes)."""
    value = example["clip_id"]
    return value.decode() if isinstance(value, bytes) else str(value)


def write_predictions(path: str | epath.Path, source, clips: Mapping[str, np.ndarray]) -> None:
    """One JSON line per evaluated clip of `source` (evaluate(per_clip=True)'s arrays): clip id, source index, label,
    predicted class and the logits, in loader order (written whole or not at all)."""
    rows = [json.dumps({"clip": clip_id(source[int(i)]), "index": int(i), "label": int(label),
                        "prediction": int(np.argmax(logits)), "logits": logits.tolist()})
            for i, label, logits in zip(clips["index"], clips["label"], clips["logits"])]
    paths.write_atomic(epath.Path(path), "".join(row + "\n" for row in rows))


def workdir_run(workdir) -> RunSpec:
    """The run a workdir was trained with (W/config.json, written by train.py and experiment.py)."""
    path = paths.absolute(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --config (the config {workdir} was trained with)")
    return RunSpec.from_config(json.loads(path.read_text()))


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
    stage = stage_of(run, stage)
    stage_dir = paths.absolute(workdir) / stage
    done = stage_dir / "DONE"
    # One answer for all processes: process 0 reads DONE.
    final = distributed.from_process_0(json.loads(done.read_text()).get("step", -1)
                                       if distributed.is_writer() and done.exists() else -1)
    final = None if final < 0 else final
    if final is None and not allow_unfinished:
        running = workdir_lock.holder(str(workdir))
        raise FileNotFoundError(f"stage {stage!r} is not finished in {workdir} (no {done}): train it first "
                                f"(scripts/train.py with the same --config and --workdir), or pass "
                                f"--allow_unfinished to evaluate its newest good checkpoint"
                                + (f"; it is training now ({workdir_lock.describe(running)})" if running else ""))
    ckpt_dir = stage_dir / "checkpoints"
    try:
        tree, step = checkpoint.restore_state(str(ckpt_dir), step=None if allow_unfinished else final)
    except checkpoint.BadCheckpoint as e:
        raise checkpoint.BadCheckpoint(f"{e}\nRerun scripts/train.py with the same --config and --workdir (it "
                                       f"trains stage {stage!r} again from its newest good checkpoint), or pass "
                                       f"--allow_unfinished to evaluate that one") from None
    model = build_model(run, stage)
    checkpoint.load_model_tree(model, tree, f"checkpoint {ckpt_dir} step {step} of stage {stage!r}")
    model.eval()
    return model, {"stage": stage, "kind": run.stage(stage).model.kind, "step": step, "finished": step == final}


def _last_stage_scored_by(run: RunSpec, role: str) -> str:
    stages = [name for name in run.recipe if run.stage(name).model.stream.protocol == role]
    if not stages:
        kinds = [s.kind for s in streams.scoring(role)]
        raise ValueError(f"late_fusion needs a {role} stage (model kind {' or '.join(map(repr, kinds))}); the recipe "
                         f"has {[(n, run.stage(n).model.kind) for n in run.recipe]}: pass --{role}_stage")
    return stages[-1]


def test_source(run: RunSpec, split: str | None = None):
    """The run's test split (or `split`) of gtea61 as a random-access source; a clear error if not built."""
    return loaders.load_split(run.data, split or run.data.test_split)


def flow_stacks(run: RunSpec, protocol: str, fusion_stacks: int = 10) -> int:
    """Flow stacks per clip of `protocol`: run.data.flow_eval_stacks (flow), fusion_stacks (late_fusion), else 1."""
    return {"flow": run.data.flow_eval_stacks, "late_fusion": fusion_stacks}.get(protocol, 1)


def make_eval_loader(run: RunSpec, source, protocol: str, *, mesh, kinds: Mapping[str, str] | None = None,
                     fusion_stacks: int = 10, keep_workers: bool = False):
    """The run's padded one-epoch loader of `source` for `protocol` (and its roles' stream `kinds`), batches
    sharded over mesh's 'data' axis. keep_workers: for an evaluation repeated during training (close() it)."""
    return loaders.eval_loader(run, source, protocol_loader(protocol, kinds),
                               eval_stacks=flow_stacks(run, protocol, fusion_stacks), mesh=mesh,
                               keep_workers=keep_workers)


def evaluate_workdir(run: RunSpec, workdir: str | epath.Path, *, stage: str | None = None, protocol: str | None = None,
                     rgb_stage: str | None = None, flow_stage: str | None = None, fusion_stacks: int = 10,
                     flow_weight: float = 0.5, split: str | None = None, allow_unfinished: bool = False,
                     all_classes: bool = False) -> dict:
    """Evaluates a trained stage of `workdir` with `protocol`; writes <workdir>/<stage>/eval/ -> metrics dict.

    stage: default the recipe's last; protocol: default the stage's own (its stream's, ego_jax.streams).
    late_fusion combines rgb_stage and flow_stage (default: the recipe's last rgb / flow protocol stages) and writes
    <workdir>/late_fusion/eval/. The flow protocol averages run.data.flow_eval_stacks stacks.
    """
    workdir = paths.absolute(workdir)
    stage = stage_of(run, stage)
    protocol = protocol or run.stage(stage).model.stream.protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    if protocol == "late_fusion":
        given = {"rgb": rgb_stage, "flow": flow_stage}
        names = {role: given[role] or _last_stage_scored_by(run, role) for role in MODELS[protocol]}
        out_name = "late_fusion"
    else:
        names = {protocol: stage}
        out_name = stage
    models, checkpoints, kinds = {}, {}, {}
    for role, name in names.items():
        kinds[role] = kind = run.stage(name).model.kind
        own = run.stage(name).model.stream.protocol
        if own != role:
            raise ValueError(f"protocol {protocol!r} needs a {role} model for {role!r}, but stage {name!r} is a "
                             f"{kind} model (evaluate it with --protocol {own})")
        models[role], checkpoints[name] = load_stage_model(run, workdir, name, allow_unfinished=allow_unfinished)

    mesh = sharding.make_mesh()
    sharding.check_batch_size(run.eval_batch_size, mesh, "eval_batch_size")
    split = split or run.data.test_split
    source = test_source(run, split)
    loader = make_eval_loader(run, source, protocol, mesh=mesh, kinds=kinds, fusion_stacks=fusion_stacks)
    confusion, clips = evaluate(loader, protocol, models, run.num_classes, kinds=kinds, flow_weight=flow_weight,
                                dtype=jnp.dtype(run.dtype), per_clip=True)

    class_names = loaders.class_names(run.num_classes)
    finished = all(m["finished"] for m in checkpoints.values())
    meta = {"protocol": protocol, "split": split, "checkpoint": "final" if finished else "unfinished",
            "finished": finished, "steps": {name: m["step"] for name, m in checkpoints.items()}, "stages": checkpoints,
            "frames": run.data.frames, "crop": run.data.crop}
    if "flow" in protocol_inputs(protocol, kinds):
        meta["flow_stacks"] = flow_stacks(run, protocol, fusion_stacks)
    if protocol == "late_fusion":
        meta["flow_weight"] = flow_weight
    outdir = workdir / out_name / "eval"
    if not distributed.is_writer():  # one writer of the shared workdir
        return {**meta, **summarize(confusion, class_names), "outdir": str(outdir)}
    metrics = write_report(outdir, confusion, class_names, meta, all_classes=all_classes)
    write_predictions(outdir / "predictions.jsonl", source, clips)
    history = workdir / out_name / "metrics.jsonl"
    if history.exists():
        records = plots.read_metrics(history)
        keys = [k for k in plots.numeric_keys(records, "step") if k != "epoch"]
        if keys:
            plots.write_png(outdir / "curves.png", plots.curves_image(records, keys=keys))
    return {**metrics, "outdir": str(outdir)}
