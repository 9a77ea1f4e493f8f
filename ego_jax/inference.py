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

import av
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from ego_jax import streams
from ego_jax.data import clip_files, decode, flow, pipeline, video
from ego_jax.data.clip_spec import ClipSpec, features as loader_features
from ego_jax.specs import RunSpec
from ego_jax.train import evaluate, loaders, paths, sharding, workdir as workdir_lib

log = logging.getLogger(__name__)
# Model outputs carried per clip besides the logits and probabilities (those the model has).
MAPS = ("feature", "attention", "ms")


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("protocol", "kind", "dtype"))
def predict_step(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    batch: Mapping[str, jax.Array],
    *,
    protocol: str,
    kind: str,
    dtype=jnp.float32,
) -> dict[str, jax.Array]:
    """(graphdef, state) of a stream model, uint8 batch -> evaluate.protocol_outputs + 'probs' (B, C) softmax.

    Compiled once per (model, protocol, input shapes): the loader pads every batch to the same size.
    """
    model = nnx.merge(graphdef, state)
    model.eval()  # on this traced copy only
    out = evaluate.protocol_outputs(protocol, {protocol: model}, batch, kinds={protocol: kind}, dtype=dtype)
    return dict(out, probs=jax.nn.softmax(out["logits"], axis=-1))


class Subset(Sequence):
    """The examples of `source` at `indices`, in that order; `ids` their clip ids."""

    def __init__(self, source, indices: Sequence[int], ids: Sequence[str]):
        self._source, self._indices, self.ids = source, list(indices), list(ids)
        self.split = getattr(source, "split", None)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> dict:
        return self._source[self._indices[index]]


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


def clip_ids(source) -> list[str]:
    """The clip ids of `source`: its `ids`, else each example's clip_id (its index where it has none)."""
    ids = getattr(source, "ids", None)
    return list(ids) if ids is not None else [_example_id(source[i], i) for i in range(len(source))]


@dataclasses.dataclass
class Predictor:
    """A model with its stream kind, class names and the evaluation's clip preprocessing (`spec`).

    Call it on one clip, `predict` a source of clips, or `video` a file. Each clip gives a dict: clip (id),
    index, logits (C,), probs (C,), top [(class name, probability)] best first, label (the true class name, for a
    labelled clip), and what the model outputs:
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
    # How flow is computed from frames (videos): default dense_flow's warp TV-L1 (GTEA61's flow) at the frame size
    # the evaluation resizes to (flow is in pixels of that size).
    flow_spec: flow.FlowSpec = None

    def __post_init__(self):
        self.mesh = self.mesh or sharding.make_mesh(jax.local_devices())
        sharding.check_batch_size(self.batch_size, self.mesh, "batch_size")
        stream = streams.get(self.kind)
        self.protocol = stream.protocol
        self.inputs = tuple(stream.inputs)
        self.flow_spec = self.flow_spec or flow.FlowSpec(short_side=self.spec.resize)
        # Parameters replicated over the mesh once, not per batch.
        nnx.update(self.model, sharding.replicate(nnx.state(self.model), self.mesh))

    @property
    def features(self) -> tuple[str, ...]:
        """Example keys a clip needs: 'rgb' and/or 'flow_x', 'flow_y' (sequences of frames, encoded or uint8)."""
        return loader_features(self.spec.loader)

    def predict(self, source, *, top: int = 5, frames: bool = False) -> Iterator[dict]:
        """Clips of `source` (a built split, or a sequence of example dicts holding self.features and optionally
        clip_id and label) -> one dict per clip (see the class), in source order, batched over the devices."""
        if len(source) == 0:
            return
        loader = pipeline.build_loader(
            _Unlabelled(source),
            self.spec,
            global_batch_size=self.batch_size,
            num_epochs=1,
            worker_count=self.worker_count,
            sharding=sharding.batch_sharding(self.mesh),
        )
        graphdef, state = nnx.split(self.model)
        ids = getattr(source, "ids", None)
        for batch in loader:
            out = predict_step(
                graphdef,
                state,
                {key: batch[key] for key in self.inputs},
                protocol=self.protocol,
                kind=self.kind,
                dtype=jnp.dtype(self.dtype),
            )
            out, mask, index, label = jax.tree.map(np.asarray, (out, batch["mask"], batch["index"], batch["label"]))
            shown = np.asarray(batch["rgb"]) if frames and "rgb" in batch else None
            for row in np.flatnonzero(mask):
                i = int(index[row])
                clip = {
                    "clip": ids[i] if ids is not None else _example_id(source[i], i),
                    "index": i,
                    "logits": out["logits"][row],
                    "probs": out["probs"][row],
                    "top": self.top(out["probs"][row], top),
                }
                clip.update({key: out[key][row] for key in MAPS if key in out})
                if label[row] >= 0:  # a labelled clip (a dataset split): its true class
                    clip["label"] = self.class_names[label[row]]
                if shown is not None:
                    clip["frames"] = shown[row]
                yield clip

    def __call__(self, rgb=None, *, flow_x=None, flow_y=None, top: int = 5, frames: bool = False) -> dict:
        """One clip: rgb (N, H, W, 3) uint8 RGB frames and/or flow_x, flow_y (N, H, W) uint8 (dense_flow's
        encoding, 128 = no motion) -> the clip's dict (see the class). Flow not given is computed from the frames
        (from_frames)."""
        example = {
            key: list(value)
            for key, value in (("rgb", rgb), ("flow_x", flow_x), ("flow_y", flow_y))
            if value is not None
        }
        if "flow_x" in self.features and "flow_x" not in example and "rgb" in example:
            example = self.from_frames(example["rgb"])
        missing = [key for key in self.features if key not in example]
        if missing:
            raise ValueError(f"a {self.kind} model reads {list(self.features)}; missing {missing}")
        return next(self.predict([example], top=top, frames=frames))

    def files(self, path) -> clip_files.FileSource:
        """The clips at `path` (a video file, frame folder, the authors' layout, or a folder of these) as a source
        of this model's inputs; flow the clips have no files for is computed from their frames."""
        return clip_files.FileSource(
            clip_files.find_clips(path, self.features), self.features, from_frames=self.from_frames
        )

    def from_frames(self, frames: Sequence) -> dict:
        """RGB frames of one clip (uint8 arrays or encoded) -> the example this model reads.

        An RGB stream reads the frames as they are. A model reading flow reads what a build of the clip holds
        (ego_jax.data.flow.extract_clip: dense_flow's layout): frames resized to flow_spec.short_side, frames 2..T
        and the quantised flow of the T - 1 consecutive pairs, of which only the pairs its flow stacks read are
        computed.
        """
        if "flow_x" not in self.features:
            return {"rgb": frames}
        frames = [video.resize_short_side(decode.decode_rgb(f), self.flow_spec.short_side) for f in frames]
        if len(frames) < 2:
            raise clip_files.ClipFilesError(
                f"a clip of {len(frames)} frame has no flow: a {self.kind} model needs at least 2 frames"
            )
        n = len(frames) - 1
        pairs = np.unique(pipeline.flow_indices(n, self.spec))
        gray = flow.gray(np.stack(frames))
        # Each pair exactly as in the whole clip's flow (flow.clip_flow): dense_flow's quirk matches every pair's
        # keypoints against the clip's first frame.
        fields, _ = flow.pairs_flow(gray[pairs], gray[pairs + 1], self.flow_spec, first_frames=[gray[0]] * len(pairs))
        images = flow.quantise(fields, self.flow_spec.bound)
        return {
            "rgb": frames[1:],
            "flow_x": _Pairs(n, pairs, images[..., 0]),
            "flow_y": _Pairs(n, pairs, images[..., 1]),
        }

    def video(
        self,
        path,
        *,
        window: float | None = None,
        stride: float | None = None,
        fps: float | None = None,
        top: int = 5,
        frames: bool = False,
    ) -> Iterator[dict]:
        """A video file or frame folder -> one clip dict for the whole of it or, with `window` (seconds), one per
        window of that length every `stride` seconds (default: window), with its start and end (s).

        The video is decoded once, streaming: only the frames of the windows not yet predicted are held. A video
        shorter than one window is one window. fps: frame rate of a frame folder (a video's own by default).
        """
        if window is None:
            yield from self.predict(self.files(path), top=top, frames=frames)
            return
        stride = stride or window
        if window <= 0 or stride <= 0:
            raise ValueError(f"window={window} and stride={stride} must be > 0 seconds")
        fps = fps or _frame_rate(path)
        length, step = max(1, round(window * fps)), max(1, round(stride * fps))
        name = epath.Path(path).stem
        buffer, offset, start, pending = [], 0, 0, []  # buffer[i] is frame offset + i

        def example(first, count):
            frames_ = buffer[first - offset : first - offset + count]
            out = {"clip_id": f"{name}@{first / fps:.2f}s", "start": first / fps, "end": (first + count) / fps}
            return {**out, **self.from_frames(frames_)}

        def flush():
            times = {e["clip_id"]: (e["start"], e["end"]) for e in pending}
            for clip in self.predict(_Examples(pending), top=top, frames=frames):
                clip["start"], clip["end"] = times[clip["clip"]]
                yield clip
            pending.clear()

        for n, frame in enumerate(video.iter_frames(path)):
            buffer.append(frame)
            while start + length <= n + 1:
                pending.append(example(start, length))
                start += step
                if len(pending) == self.batch_size:
                    yield from flush()
            if start > offset:  # frames before the next window's start are no longer needed
                del buffer[: start - offset]
                offset = start
        if start == 0 and buffer:  # shorter than one window: the whole video
            pending.append(example(0, len(buffer)))
        yield from flush()

    def top(self, probs: np.ndarray, k: int) -> list[tuple[str, float]]:
        """(C,) probabilities -> the k best (class name, probability), best first."""
        best = np.argsort(-probs, kind="stable")[:k]
        return [(self.class_names[c], float(probs[c])) for c in best]


class _Examples(Sequence):
    """In-memory examples with their clip ids as `ids`."""

    def __init__(self, examples: Sequence[dict]):
        self._examples, self.ids, self.split = list(examples), [e["clip_id"] for e in examples], None

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, index: int) -> dict:
        return self._examples[index]


def _frame_rate(path) -> float:
    """A video file's average frame rate; a frame folder has none (fps must be given)."""
    path = epath.Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a frame folder: give its frame rate (fps) to cut it into windows of seconds")
    with av.open(str(path)) as container:
        return float(container.streams.video[0].average_rate)


class _Pairs(Sequence):
    """Quantised flow images of a clip's n pairs, of which those at `pairs` were computed (the sampled ones)."""

    def __init__(self, n: int, pairs: np.ndarray, images: np.ndarray):
        self._n, self._images = n, dict(zip(pairs.tolist(), images))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k: int) -> np.ndarray:
        if k not in self._images:
            raise IndexError(f"flow of pair {k} was not computed (only the sampled pairs {sorted(self._images)})")
        return self._images[k]


def input_source(predictor: Predictor, text: str, run: RunSpec | None = None):
    """A command's --input -> a source of clips: 'split:NAME' (a split of the run's dataset) or
    'split:NAME:ID,ID' (those clips of it), else a path (Predictor.files: videos, frame folders, the authors'
    layout)."""
    if not text.startswith("split:"):
        return predictor.files(text)
    if run is None:
        raise ValueError(
            f"--input {text}: a dataset split needs the config of a workdir (a reference checkpoint "
            "has none): pass a path instead"
        )
    _, split, wanted = (text.split(":", 2) + [""])[:3]
    source = loaders.load_split(run.data, split)
    ids = clip_ids(source)
    if not wanted:
        return Subset(source, range(len(source)), ids)
    wanted = [c for c in wanted.split(",") if c]
    unknown = [c for c in wanted if c not in ids]
    if unknown:
        raise ValueError(f"--input {text}: clips {unknown} are not in split {split}; its clips look like {ids[:3]}")
    return Subset(source, [ids.index(c) for c in wanted], wanted)


def _example_id(example, index: int) -> str:
    return workdir_lib.clip_id(example) if "clip_id" in example else str(index)


def load(
    workdir,
    stage: str | None = None,
    *,
    run: RunSpec | None = None,
    allow_unfinished: bool = False,
    batch_size: int | None = None,
    worker_count: int = 0,
) -> Predictor:
    """A stage of a trained workdir -> its Predictor (the stage's final checkpoint, as evaluate.py loads it).

    run: the run's specs (default: the workdir's config.json); stage: default the recipe's last;
    allow_unfinished: the newest good checkpoint of a stage still training. batch_size: default the run's
    eval_batch_size, rounded up to a multiple of the local device count.
    """
    workdir = paths.absolute(workdir)
    run = loaders.resolve_classes(run or workdir_lib.workdir_run(workdir))
    model, meta = workdir_lib.load_stage_model(run, workdir, stage, allow_unfinished=allow_unfinished)
    protocol = streams.get(meta["kind"]).protocol
    spec = run.data.clip_spec(
        evaluate.protocol_loader(protocol, {protocol: meta["kind"]}),
        train=False,
        eval_stacks=evaluate.flow_stacks(protocol, run.data.flow_eval_stacks),
    )
    devices = jax.local_device_count()
    batch_size = -(-(batch_size or run.eval_batch_size) // devices) * devices
    return Predictor(
        model,
        meta["kind"],
        spec,
        loaders.class_names(run),
        dtype=jnp.dtype(run.dtype),
        batch_size=batch_size,
        worker_count=worker_count,
        info=dict(meta, workdir=str(workdir)),
    )


def from_reference(
    path,
    kind: str,
    *,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    model_kwargs: Mapping | None = None,
    frames: int = 25,
    crop: int = 224,
    resize: int = 256,
    stack: int = 5,
    flow_stacks: int = 5,
    rgb_endpoint: bool = False,
    batch_size: int | None = None,
) -> Predictor:
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
    spec = ClipSpec(
        evaluate.protocol_loader(protocol, {protocol: kind}),
        False,
        frames=frames,
        stack=stack,
        crop=crop,
        resize=resize,
        eval_stacks=flow_stacks if protocol == "flow" else 1,
        rgb_endpoint=rgb_endpoint,
    )
    devices = jax.local_device_count()
    log.info("reference %s checkpoint %s: %d classes", kind, path, len(class_names))
    return Predictor(
        model,
        kind,
        spec,
        list(class_names),
        batch_size=batch_size or devices,
        info={"kind": kind, "checkpoint": str(epath.Path(path))},
    )


FEATURE_KEYS = ("clip", "feature", "logits", "prediction", "label")


def extract_features(predictor: Predictor, source, out, *, save_every: int = 64, progress: bool = True) -> dict:
    """Feature, logits and predicted class of every clip of `source` -> the .npz file `out`; -> its arrays.

    out holds clip (N,) ids, feature (N, F), logits (N, C), prediction (N,) class index, label (N,) true class
    index (-1: unknown), class_names (C,), and stage, step, kind (what predicted). Resumable: every `save_every`
    clips the rows so far go to <out>.partial.npz (written whole), and a rerun with the same predictor and clips
    starts after them; the partial file is removed once `out` is written. progress: a tqdm bar on stderr.
    """
    out = epath.Path(out)
    partial = out.parent / (out.stem + ".partial.npz")
    ids = clip_ids(source)
    meta = {
        "stage": str(predictor.info.get("stage", "")),
        "step": str(predictor.info.get("step", "")),
        "kind": predictor.kind,
    }
    rows = {key: [] for key in FEATURE_KEYS}
    if partial.exists():
        with np.load(partial) as saved:
            if all(str(saved[k]) == v for k, v in meta.items()) and set(saved["clip"]) <= set(ids):
                rows = {key: list(saved[key]) for key in FEATURE_KEYS}
                log.info("resuming %s: %d of %d clips done", out, len(rows["clip"]), len(ids))
            else:
                log.warning("%s is from another model or other clips: starting over", partial)
    done = set(rows["clip"])
    todo = [i for i, clip in enumerate(ids) if clip not in done]

    def save(path):
        arrays = {key: np.asarray(value) for key, value in rows.items()}
        arrays["clip"] = np.asarray(rows["clip"], dtype=str)
        tmp = path.parent / (path.stem + ".tmp.npz")
        with tmp.open("wb") as f:
            np.savez(
                f,
                class_names=np.asarray(predictor.class_names, dtype=str),
                **{k: np.asarray(v) for k, v in meta.items()},
                **arrays,
            )
        tmp.replace(path)

    with tqdm.tqdm(total=len(ids), initial=len(done), unit="clip", disable=not progress) as bar:
        for n, clip in enumerate(predictor.predict(Subset(source, todo, [ids[i] for i in todo])), 1):
            rows["clip"].append(clip["clip"])
            rows["feature"].append(np.asarray(clip["feature"], np.float32))
            rows["logits"].append(np.asarray(clip["logits"], np.float32))
            rows["prediction"].append(int(np.argmax(clip["logits"])))
            rows["label"].append(predictor.class_names.index(clip["label"]) if "label" in clip else -1)
            bar.update(1)
            if n % save_every == 0:
                save(partial)
    order = np.argsort([ids.index(c) for c in rows["clip"]], kind="stable")  # source order
    rows = {key: [value[i] for i in order] for key, value in rows.items()}
    save(out)
    if partial.exists():
        partial.unlink()
    with np.load(out) as saved:
        return {key: saved[key] for key in saved.files}
