"""A trained stage (or a reference checkpoint) -> predictions, CAM attention maps, MS maps and features.

    predictor = inference.load("workdir/two_stream_16", "joint")
    out = predictor(frames)                         # one clip: (N, H, W, 3) uint8 RGB frames [+ flow]
    for out in predictor.predict(source): ...       # every clip of a built split or a list of examples, batched
    outs = predictor.video("clip.mp4")              # a video file (or frame folder), whole or in windows

Nothing here preprocesses or runs a model its own way: clips are sampled, cropped and stacked by the evaluation's
loader (ego_jax.data.pipeline with the ClipSpec of the stage's protocol, specs.DataSpec.clip_spec) and the model runs
through the protocol (train.evaluate.protocol_outputs), so on a clip of a built dataset the logits are the ones
scripts/evaluate.py computes (tested). Batches are sharded over all local devices; one compiled function per
input shape.
"""
import dataclasses
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from ego_jax import streams
from ego_jax.data.clip_spec import ClipSpec, features
from ego_jax.data.pipeline import build_loader
from ego_jax.specs import RunSpec
from ego_jax.train import evaluate, loaders, paths, sharding
from ego_jax.train import workdir as workdir_lib

log = logging.getLogger(__name__)
# Model outputs carried per clip besides the logits and probabilities (those the model has).
MAPS = ("feature", "attention", "ms")


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("protocol", "kind", "dtype"))
def predict_step(graphdef: nnx.GraphDef, state: nnx.State, batch: Mapping[str, jax.Array], *, protocol: str,
                 kind: str, dtype=jnp.float32) -> dict[str, jax.Array]:
    """(graphdef, state) of a stream model, uint8 batch -> evaluate.protocol_outputs + 'probs' (B, C) softmax.

    Compiled once per (model, protocol, input shapes): the loader pads every batch to the same size.
    """
    model = nnx.merge(graphdef, state)
    model.eval()  # on this traced copy only
    out = evaluate.protocol_outputs(protocol, {protocol: model}, batch, kinds={protocol: kind}, dtype=dtype)
    return dict(out, probs=jax.nn.softmax(out["logits"], axis=-1))


class _Unlabelled(Sequence):
    """`source` with label -1 where an example has none (the loader reads a label; user clips have none)."""

    def __init__(self, source):
        self._source = source
        self.split = getattr(source, "split", None)  # named in the loader's read errors

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        example = self._source[index]
        return example if "label" in example else {**example, "label": -1}


def clip_ids(source) -> Sequence[str] | None:
    """`source.ids` when the source names its clips without reading them, else None (read from each example)."""
    return getattr(source, "ids", None)


@dataclasses.dataclass
class Predictor:
    """A model with its stream kind, class names and the evaluation's clip preprocessing (`spec`).

    Call it on one clip, `predict` a source of clips, or `video` a file. Each clip gives a dict: clip (id),
    index, logits (C,), probs (C,), top [(class name, probability)] best first, and what the model outputs:
    feature (F,) (the pooled c_T of an RGB stream, the flow stream's pooled layer4, the two-stream concatenation;
    the flow protocol averages it over its stacks like the logits), attention (T, h, w) CAM, ms (T, h, w, K)
    motion map; with frames=True also the (T, S, S, 3) uint8 frames the model saw.
    """

    model: nnx.Module
    kind: str  # stream kind (ego_jax.streams)
    spec: ClipSpec  # the evaluation's sampling, crop and flow stacks
    class_names: Sequence[str]
    dtype: object = jnp.float32
    batch_size: int = 8  # clips per batch, a multiple of the local device count
    worker_count: int = 0  # grain worker processes decoding clips (0: in this process)
    info: dict = dataclasses.field(default_factory=dict)  # stage, step, finished, workdir or checkpoint
    mesh: Mesh = None

    def __post_init__(self):
        self.mesh = self.mesh or sharding.make_mesh(jax.local_devices())
        sharding.check_batch_size(self.batch_size, self.mesh, "batch_size")
        stream = streams.get(self.kind)
        self.protocol = stream.protocol
        self.inputs = tuple(stream.inputs)
        # Parameters replicated over the mesh once, not per batch.
        nnx.update(self.model, sharding.replicate(nnx.state(self.model), self.mesh))

    @property
    def features(self) -> tuple[str, ...]:
        """Example keys a clip needs: 'rgb' and/or 'flow_x', 'flow_y' (sequences of frames, encoded or uint8)."""
        return features(self.spec.loader)

    def predict(self, source, *, top: int = 5, frames: bool = False) -> Iterator[dict]:
        """Clips of `source` (a built split, or a sequence of example dicts holding self.features and optionally
        clip_id and label) -> one dict per clip (see the class), in source order, batched over the devices."""
        if len(source) == 0:
            return
        loader = build_loader(_Unlabelled(source), self.spec, global_batch_size=self.batch_size, num_epochs=1,
                              worker_count=self.worker_count, sharding=sharding.batch_sharding(self.mesh))
        graphdef, state = nnx.split(self.model)
        ids = clip_ids(source)
        for batch in loader:
            out = predict_step(graphdef, state, {key: batch[key] for key in self.inputs}, protocol=self.protocol,
                               kind=self.kind, dtype=jnp.dtype(self.dtype))
            out, mask, index = jax.tree.map(np.asarray, (out, batch["mask"], batch["index"]))
            shown = np.asarray(batch["rgb"]) if frames and "rgb" in batch else None
            for row in np.flatnonzero(mask):
                i = int(index[row])
                clip = {"clip": ids[i] if ids is not None else _example_id(source[i], i), "index": i,
                        "logits": out["logits"][row], "probs": out["probs"][row],
                        "top": self.top(out["probs"][row], top)}
                clip.update({key: out[key][row] for key in MAPS if key in out})
                if shown is not None:
                    clip["frames"] = shown[row]
                yield clip

    def __call__(self, rgb=None, *, flow_x=None, flow_y=None, top: int = 5, frames: bool = False) -> dict:
        """One clip: rgb (N, H, W, 3) uint8 RGB frames and/or flow_x, flow_y (N, H, W) uint8 (the release's
        encoding, 128 = no motion), as the stream needs -> the clip's dict (see the class)."""
        example = {key: list(value) for key, value in (("rgb", rgb), ("flow_x", flow_x), ("flow_y", flow_y))
                   if value is not None}
        missing = [key for key in self.features if key not in example]
        if missing:
            raise ValueError(f"a {self.kind} model reads {list(self.features)}; missing {missing} (flow from RGB "
                             "frames: Predictor.video computes it)")
        return next(self.predict([example], top=top, frames=frames))

    def top(self, probs: np.ndarray, k: int) -> list[tuple[str, float]]:
        """(C,) probabilities -> the k best (class name, probability), best first."""
        best = np.argsort(-probs, kind="stable")[:k]
        return [(self.class_names[c], float(probs[c])) for c in best]


def _example_id(example, index: int) -> str:
    return workdir_lib.clip_id(example) if "clip_id" in example else str(index)


def load(workdir, stage: str | None = None, *, run: RunSpec | None = None, allow_unfinished: bool = False,
         batch_size: int | None = None, worker_count: int = 0) -> Predictor:
    """A stage of a trained workdir -> its Predictor (the stage's final checkpoint, as evaluate.py loads it).

    run: the run's specs (default: the workdir's config.json); stage: default the recipe's last;
    allow_unfinished: the newest good checkpoint of a stage still training. batch_size: default the run's
    eval_batch_size, rounded up to a multiple of the local device count.
    """
    workdir = paths.absolute(workdir)
    run = run or workdir_lib.workdir_run(workdir)
    model, meta = workdir_lib.load_stage_model(run, workdir, stage, allow_unfinished=allow_unfinished)
    protocol = streams.get(meta["kind"]).protocol
    spec = run.data.clip_spec(evaluate.protocol_loader(protocol, {protocol: meta["kind"]}), train=False,
                              eval_stacks=evaluate.flow_stacks(protocol, run.data.flow_eval_stacks))
    devices = jax.local_device_count()
    batch_size = -(-(batch_size or run.eval_batch_size) // devices) * devices
    return Predictor(model, meta["kind"], spec, loaders.class_names(run.num_classes), dtype=jnp.dtype(run.dtype),
                     batch_size=batch_size, worker_count=worker_count, info=dict(meta, workdir=str(workdir)))


def from_reference(path, kind: str, *, class_names: Sequence[str] | None = None, num_classes: int | None = None,
                   model_kwargs: Mapping | None = None, frames: int = 25, crop: int = 224, resize: int = 256,
                   stack: int = 5, flow_stacks: int = 5, rgb_endpoint: bool = False,
                   batch_size: int | None = None) -> Predictor:
    """One of the authors' released checkpoints (a .pth state dict, read with torch) -> its Predictor.

    kind: the stream kind ('ego_rnn', 'flow', 'two_stream', 'lsta'); model_kwargs: the model's arguments (default:
    the reference architecture, ResNet-34 width 64); class_names default GTEA61's 61 classes (num_classes alone:
    '0'..'C-1'). The preprocessing is the reference evaluation's: frames, crop, resize, flow stack and stacks
    averaged by the flow protocol (rgb_endpoint=True for LSTA's frame sampling).
    """
    from ego_jax.convert.reference import load_reference  # (lazily: torch)
    from ego_jax.data.gtea61.classes import CLASSES

    if class_names is None:
        class_names = CLASSES if num_classes in (None, len(CLASSES)) else [str(i) for i in range(num_classes)]
    stream = streams.get(kind)
    model = stream.build(len(class_names), dict(model_kwargs or {}), dtype=jnp.float32, rngs=nnx.Rngs(0), crop=crop)
    load_reference(model, path)
    protocol = stream.protocol
    spec = ClipSpec(evaluate.protocol_loader(protocol, {protocol: kind}), False, frames=frames, stack=stack,
                    crop=crop, resize=resize, eval_stacks=flow_stacks if protocol == "flow" else 1,
                    rgb_endpoint=rgb_endpoint)
    devices = jax.local_device_count()
    log.info("reference %s checkpoint %s: %d classes", kind, path, len(class_names))
    return Predictor(model, kind, spec, list(class_names), batch_size=batch_size or devices,
                     info={"kind": kind, "checkpoint": str(epath.Path(path))})
