"""Ego-RNN evaluation protocols: RGB single clip, flow k-stack average, joint two-stream, late fusion.

`evaluate(batches, protocol, models, num_classes)` runs one jitted step per batch that turns the
uint8 batch into logits the protocol's way and accumulates a (C, C) confusion matrix of the
unpadded examples; `summarize` turns it into accuracy and per-class accuracy. Nothing here reads or writes
files: a workdir's stages are evaluated, and their reports written, by ego_jax.train.workdir. The model-free
pieces (`average_over_stacks`, `late_fusion`, `confusion_matrix`) are pure.
"""

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from ego_jax import streams

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
        raise ValueError(
            f"average_over_stacks: expected flow (B, k, S, S, 2*stack) or (B, S, S, 2*stack), got {flow.shape}"
        )
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
    return tuple(
        dict.fromkeys(key for kind in role_kinds(protocol, kinds).values() for key in streams.get(kind).inputs)
    )


def protocol_loader(protocol: str, kinds: Mapping[str, str] | None = None) -> str:
    """Pipeline loader kind of `protocol`: its stream's own loader, or FUSION_LOADER for a multi-model protocol."""
    kinds = role_kinds(protocol, kinds)
    return FUSION_LOADER.get(protocol) or streams.get(kinds[protocol]).loader


def flow_stacks(protocol: str, flow_eval_stacks: int, fusion_stacks: int = 10) -> int:
    """Flow stacks per clip of `protocol`: flow_eval_stacks (flow), fusion_stacks (late_fusion), else 1."""
    return {"flow": flow_eval_stacks, "late_fusion": fusion_stacks}.get(protocol, 1)


def protocol_outputs(
    protocol: str,
    models: Mapping[str, nnx.Module],
    batch: Mapping[str, jax.Array],
    *,
    kinds: Mapping[str, str] | None = None,
    flow_weight: float = 0.5,
    dtype=jnp.float32,
) -> dict[str, jax.Array]:
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
        return {
            key: value.astype(jnp.float32) if key == "logits" else value
            for key, value in out.items()
            if value is not None
        }

    def stack_mean(role):
        return average_over_stacks(lambda flow: outputs(role, {**batch, "flow": flow}), batch["flow"])

    if protocol == "flow":
        return stack_mean("flow")
    if protocol == "late_fusion":
        return {"logits": late_fusion(stack_mean("flow")["logits"], outputs("rgb", batch)["logits"], flow_weight)}
    one_stack = {**batch, "flow": _single_stack(protocol, batch["flow"])} if "flow" in batch else batch
    return outputs(protocol, one_stack)


@functools.partial(
    jax.jit, static_argnums=(0,), static_argnames=("protocol", "kinds", "num_classes", "flow_weight", "dtype")
)
def eval_step(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    batch: Mapping[str, jax.Array],
    *,
    protocol: str,
    kinds: tuple[tuple[str, str], ...],
    num_classes: int,
    flow_weight: float = 0.5,
    dtype=jnp.float32,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(graphdef, state) of the models dict, one batch -> ((C, C) int32 confusion, count) of its unpadded examples,
    and the batch's (B, C) float32 logits.

    kinds: ((role, stream kind), ...). Jitted once per (graphdef, protocol, kinds, shapes): periodic evaluation in
    the train loop does not recompile.
    """
    models = nnx.merge(graphdef, state)
    # Eval mode on this traced copy only: the caller's modules keep their training modes.
    for module in models.values():
        module.eval()
    outputs = protocol_outputs(protocol, models, batch, kinds=dict(kinds), flow_weight=flow_weight, dtype=dtype)
    logits = outputs["logits"]
    confusion = confusion_matrix(batch["label"], jnp.argmax(logits, axis=-1), batch["mask"], num_classes)
    return confusion, jnp.sum(batch["mask"], dtype=jnp.int32), logits


def _host(x) -> np.ndarray:
    """A (global, possibly multi-process) array -> numpy on every process."""
    if jax.process_count() > 1 and isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def evaluate(
    batches: Iterable[Mapping[str, np.ndarray | jax.Array]],
    protocol: str,
    models: Mapping[str, nnx.Module],
    num_classes: int,
    *,
    kinds: Mapping[str, str] | None = None,
    flow_weight: float = 0.5,
    dtype=jnp.float32,
    per_clip: bool = False,
):
    """Runs `protocol` over eval batches (loader dicts with 'label', 'mask' and the inputs) -> (C, C) int64 confusion.

    kinds: {role: stream kind} of the models (see protocol_outputs). Batches may be numpy or global (sharded)
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
            raise ValueError(
                f"evaluate: batch {n} lacks {absent} needed by protocol {protocol!r}; build the loader "
                f"with kind={protocol_loader(protocol, kinds)!r} and eval_stacks as flow_stacks() says"
            )
        inputs = {key: batch[key] for key in needed}
        inputs["mask"] = batch["mask"] if "mask" in batch else np.ones(np.shape(batch["label"]), bool)
        counts, count, logits = eval_step(
            graphdef,
            state,
            inputs,
            protocol=protocol,
            kinds=tuple(kinds.items()),
            num_classes=num_classes,
            flow_weight=flow_weight,
            dtype=jnp.dtype(dtype),
        )
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
        raise ValueError(
            f"evaluate: {expected - confusion.sum()} unpadded examples have labels outside "
            f"[0, {num_classes}); does the dataset match num_classes={num_classes}?"
        )
    if not per_clip:
        return confusion
    index, label, mask, logits = (np.concatenate([_host(c[i]) for c in clips]) for i in range(4))
    return confusion, {
        "index": index[mask].astype(np.int64),
        "label": label[mask].astype(np.int64),
        "logits": logits[mask].astype(np.float32),
    }


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
