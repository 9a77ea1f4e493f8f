"""grain input pipelines of Ego-RNN: clips of a GTEA61 source -> (global) batches of uint8 frames.

A loader is a grain MapDataset over training steps: step g of epoch e = g // steps_per_epoch takes
global positions [b * B, (b + 1) * B) of the epoch's order (a permutation drawn from (seed, e) when
training); each process reads only its rows of that global batch (the rows its devices hold in
`sharding`), so processes read disjoint examples and a global batch does not depend on the process
or worker count. Every random choice of an example derives from (seed, epoch, example index).
Positions past the end of an epoch (eval, or drop_remainder=False) are padding with mask False.
"""

import dataclasses
import functools
import os
import signal
import sys
import threading
import time

import cv2
import grain
import jax
import numpy as np
from absl import flags

from ego_jax.data import decode, sampling, transforms
from ego_jax.data.clip_spec import LOADERS, ClipSpec, features  # noqa: F401  (re-exported: pipeline.ClipSpec)


def _frames(example, key: str, where: str):
    try:
        frames = example[key]
    except KeyError:
        raise KeyError(
            f"{where} has no {key!r} frames (keys: {sorted(example)}); build the dataset with a config that "
            f"includes {key!r}, or pick a loader that does not need it"
        ) from None
    if len(frames) == 0:
        raise ValueError(f"{where} has no {key!r} frames")
    return frames


def _decoded(frames, indices, decoder, key: str, where: str) -> dict[int, np.ndarray]:
    """{i: decoded frame i} for the distinct sampled indices (short clips sample a frame several times)."""
    return {int(i): decoder(frames[i], f"{where} {key}[{i}]") for i in np.unique(indices)}


def flow_indices(num_frames: int, spec: ClipSpec, rng: np.random.Generator | None = None) -> np.ndarray:
    """0-based flow frames `spec` reads of a clip with num_frames flow frames: (stack,) for one stack (train: a
    random start drawn from rng; eval: the centre one), (k, stack) for k = spec.eval_stacks > 1 eval stacks."""
    if spec.train:
        starts = np.array(sampling.flow_start_train(num_frames, spec.stack, rng))
    elif spec.eval_stacks == 1:
        starts = np.array(sampling.flow_start_test(num_frames, spec.stack))
    else:
        starts = sampling.flow_starts_eval(num_frames, spec.stack, spec.eval_stacks)
    return sampling.stack_indices(starts, num_frames, spec.stack)


def load_clip(
    example, spec: ClipSpec, rng: np.random.Generator | None, where: str = "example"
) -> dict[str, np.ndarray]:
    """Decodes the sampled frames of one example and transforms them -> per-example arrays of `spec.shapes()`.

    `rng` (train only) draws, in this order: the flow stack start, then the spatial transform.
    """
    out = {"label": np.int32(example["label"]), "mask": np.True_}
    decoded = {}  # key -> (indices, {index: frame})
    if spec.uses_rgb:
        rgb = _frames(example, "rgb", where)
        idx = sampling.rgb_indices(len(rgb), spec.frames, spec.rgb_endpoint)
        decoded["rgb"] = idx, _decoded(rgb, idx, decode.decode_rgb, "rgb", where)
        if spec.ms_grid is not None:
            mmaps = _frames(example, "mmaps", where)
            if len(mmaps) != len(rgb):
                raise ValueError(f"{where}: {len(mmaps)} motion maps for {len(rgb)} RGB frames; rebuild the dataset")
            decoded["mmaps"] = idx, _decoded(mmaps, idx, decode.decode_gray, "mmaps", where)
    if spec.uses_flow:
        flow_x, flow_y = _frames(example, "flow_x", where), _frames(example, "flow_y", where)
        n = len(flow_x)
        if len(flow_y) != n:
            raise ValueError(f"{where}: {n} flow_x frames but {len(flow_y)} flow_y frames; rebuild the dataset")
        idx = flow_indices(n, spec, rng)
        decoded["flow_x"] = idx, _decoded(flow_x, idx, decode.decode_gray, "flow_x", where)
        decoded["flow_y"] = idx, _decoded(flow_y, idx, decode.decode_gray, "flow_y", where)

    # One spatial transform for the whole clip, so every decoded frame must have the same size.
    sizes = {(key, i): img.shape[:2] for key, (_, imgs) in decoded.items() for i, img in imgs.items()}
    (height, width), first = next(iter(sizes.values())), next(iter(sizes))
    for (key, i), size in sizes.items():
        if size != (height, width):
            raise ValueError(
                f"{where}: {key}[{i}] is {size[0]}x{size[1]} but {first[0]}[{first[1]}] is "
                f"{height}x{width}; all frames and modalities of a clip must have one size"
            )
    if spec.train:
        spatial = transforms.train_spatial(rng, height, width, resize=spec.resize, crop=spec.crop)
    else:
        spatial = transforms.eval_spatial(height, width, resize=spec.resize, crop=spec.crop)

    def transformed(key, fn):
        idx, imgs = decoded[key]
        return idx, {i: fn(img) for i, img in imgs.items()}

    if spec.uses_rgb:
        idx, frames = transformed("rgb", lambda img: transforms.apply(img, spatial, method=spec.method))
        out["rgb"] = np.stack([frames[i] for i in idx])
    if spec.ms_grid is not None:
        idx, targets = transformed(
            "mmaps", lambda m: transforms.motion_target(m, spatial, spec.ms_grid, spec.ms_threshold)
        )
        out["ms_target"] = np.stack([targets[i] for i in idx])
    if spec.uses_flow:
        idx, xs = transformed("flow_x", lambda img: transforms.apply_flow_x(img, spatial, method=spec.method))
        _, ys = transformed("flow_y", lambda img: transforms.apply(img, spatial, method=spec.method))

        def flow_stack(row):
            # Channels interleave x1, y1, x2, y2, ... as the flow stem expects.
            return np.stack([c for i in row for c in (xs[i], ys[i])], axis=-1)

        out["flow"] = np.stack([flow_stack(row) for row in idx]) if idx.ndim == 2 else flow_stack(idx)
    return out


def _local_rows(sharding, global_batch_size: int) -> tuple[int, ...]:
    """The rows of a global batch this process holds, ascending (all rows without sharding).

    Any device order of the mesh works: with several blocks (a mesh that interleaves processes) the rows are the
    blocks in ascending order, the layout jax.make_array_from_process_local_data expects.
    """
    if sharding is None:
        if jax.process_count() > 1:
            raise ValueError("multi-process loading needs `sharding` (e.g. NamedSharding(mesh, P('data')))")
        return tuple(range(global_batch_size))
    try:
        index_map = sharding.addressable_devices_indices_map((global_batch_size,))
    except (ValueError, IndexError) as e:
        raise ValueError(
            f"cannot split a batch of {global_batch_size} with {sharding}: the sharding must split only the batch "
            f"axis (e.g. NamedSharding(mesh, P('data'))), into equal parts ({e})"
        ) from e
    return tuple(sorted({row for ix in index_map.values() for row in range(*ix[0].indices(global_batch_size))}))


@dataclasses.dataclass(frozen=True)
class _StepBatch:
    """Global step -> this process's rows of that step's batch (runs in grain workers)."""

    source: object
    spec: ClipSpec
    seed: int
    global_batch_size: int
    steps_per_epoch: int
    rows: tuple[int, ...]
    shuffle: bool

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        epoch, b = divmod(step, self.steps_per_epoch)
        n = len(self.source)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        examples = []
        for pos in (b * self.global_batch_size + row for row in self.rows):
            if pos >= n:
                examples.append(self.spec.padding())
                continue
            index = int(order[pos])
            rng = np.random.default_rng([self.seed, epoch, index]) if self.spec.train else None
            try:
                example = self.source[index]
            except Exception as e:  # noqa: BLE001  (array_record/riegeli raise several types on damaged files)
                raise OSError(
                    f"cannot read {where_in(self.source, index)}: {type(e).__name__}: {e}. The dataset "
                    "build is damaged: rebuild it (scripts/build_dataset.py into a fresh --data_dir)"
                ) from e
            clip = load_clip(example, self.spec, rng, where=f"example {index}")
            examples.append(clip | {"index": np.int32(index)})
        return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def where_in(source, index: int) -> str:
    """'example 5 of split S1+S3 (file .../gtea61-S3.array_record-00000-of-00001, record 1)', as far as known."""
    split = getattr(source, "split", None)
    text = f"example {index}" + (f" of split {split}" if split else "")
    # tfds' ArrayRecordDataSource keeps its files in read instructions (not public API: used only if present).
    first = 0
    for ins in getattr(getattr(source, "data_source", None), "_read_instructions", None) or ():
        count = ins.end - ins.start
        if index < first + count:
            return f"{text} (file {ins.filename}, record {ins.start + index - first})"
        first += count
    return text


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)  # the main process is gone (even SIGKILL): a worker alone only holds memory


def _worker_init(worker_index: int, worker_count: int, *, parent: int) -> None:
    del worker_index, worker_count
    # Each worker is one process per core; OpenCV's own thread pool would oversubscribe the cores.
    cv2.setNumThreads(1)
    # Ctrl-C reaches the whole process group: the main process decides (save and stop), not the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Die with the main process `parent` (its pid passed in: it may die while this worker still starts). Not
    # prctl(PR_SET_PDEATHSIG): it fires when the *thread* that started the worker ends, and grain starts
    # workers from short-lived threads.
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


class Loader:
    """Iterable of batches; each iteration starts at `start_step`. `steps_per_epoch`, `num_steps` (None: endless).

    keep_workers (finite loaders): iterations share one grain iterator over the loader's steps repeated, taking
    len(loader) batches each, so worker processes start once (a periodic evaluation), not per iteration; close()
    stops them. An iteration left before its end stops them too, and the next one starts over.
    """

    def __init__(
        self,
        dataset: grain.MapDataset,
        *,
        steps_per_epoch,
        num_steps,
        worker_count,
        read_threads,
        sharding,
        keep_workers: bool = False,
    ):
        if keep_workers and num_steps is None:
            raise ValueError("keep_workers needs a finite loader (num_epochs set): an endless one is iterated once")
        self.steps_per_epoch = steps_per_epoch
        self.num_steps = num_steps
        self._dataset = dataset
        self._worker_count = worker_count
        self._read_threads = read_threads
        self._sharding = sharding
        self._keep_workers = keep_workers
        self._kept = None  # keep_workers: the shared iterator, at the start of an iteration

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("an endless loader (num_epochs=None) has no length")
        return len(self._dataset)

    def _grain_iterator(self, dataset: grain.MapDataset):
        ds = dataset.to_iter_dataset(
            grain.ReadOptions(num_threads=self._read_threads, prefetch_buffer_size=self._read_threads)
        )
        if self._worker_count > 0:
            if not flags.FLAGS.is_parsed():
                # grain's workers read its absl flags; outside absl.app (notebooks, pytest) keep their defaults.
                flags.FLAGS.mark_as_parsed()
            ds = ds.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self._worker_count),
                worker_init_fn=functools.partial(_worker_init, parent=os.getpid()),
            )
        return iter(ds)

    def _placed(self, batch):
        return batch if self._sharding is None else jax.make_array_from_process_local_data(self._sharding, batch)

    def __iter__(self):
        if self._keep_workers:
            yield from self._kept_iteration()
            return
        it = self._grain_iterator(self._dataset)
        try:
            for batch in it:
                yield self._placed(batch)
        finally:
            if hasattr(it, "close"):
                it.close()

    def _kept_iteration(self):
        if self._kept is None:
            # The steps repeated: after len(self) batches the iterator is at the start again.
            self._kept = self._grain_iterator(self._dataset.repeat())
        taken = 0
        try:
            while taken < len(self):
                batch = next(self._kept)
                taken += 1
                yield self._placed(batch)
        finally:
            if taken < len(self):
                self.close()

    def close(self) -> None:
        """Stops the worker processes kept between iterations (keep_workers); the next iteration starts new ones."""
        if self._kept is not None and hasattr(self._kept, "close"):
            self._kept.close()
        self._kept = None


def make_loader(
    source,
    *,
    loader: str = "rgb",
    train: bool,
    frames: int = 16,
    stack: int = 5,
    crop: int = 224,
    resize: int = 256,
    ms_grid: tuple[int, int] | None = None,
    ms_threshold: float | None = None,
    eval_stacks: int = 1,
    method: str = "pil",
    rgb_endpoint: bool = False,
    **loading,
) -> Loader:
    """Batches of clips from `source` (tfds data source or any sequence of example dicts).

    The per-clip arguments are ClipSpec's; `loading` holds build_loader's keywords: global_batch_size (required),
    seed, start_step, num_epochs, worker_count, sharding, drop_remainder, read_threads, keep_workers.

    Batch keys (B = global_batch_size, S = crop; numpy on the host, or global jax.Arrays laid out by `sharding`):
      'rgb' uint8 (B, T, S, S, 3)                      loaders rgb, two_stream
      'flow' uint8 (B, S, S, 2*stack), x1 y1 x2 y2 ...  loaders flow, two_stream; eval with eval_stacks=k>1:
                                                        (B, k, S, S, 2*stack)
      'ms_target' float32 (B, T, h, w)                  when ms_grid=(h, w): moving fraction, {0, 1} with ms_threshold
      'label' int32 (B,), 'mask' bool (B,) False on padding, 'index' int32 (B,) source index (-1 on padding).
    Train: random crop/flip and flow stack per clip, epochs reshuffled, remainder dropped. Eval: centre crop, centre
    flow stack (eval_stacks=1) or k evenly spread stacks, last batch padded. num_epochs None: train endless, eval 1.
    `sharding` must shard only the batch axis (e.g. NamedSharding(mesh, P('data'))); each process then reads only
    the rows its devices hold (required with several processes). `method`: resize method ('pil' = reference, 'cv2'
    faster, see transforms). `read_threads`: threads per process (each worker, or the main process when
    worker_count=0), each building one batch. len(loader) = steps left from start_step (finite loaders only).
    worker_count > 0 starts grain worker processes with 'spawn' on every iteration (once, for a finite loader with
    keep_workers=True, until loader.close(); see Loader): a script must guard its entry point with
    `if __name__ == "__main__":`.
    """
    spec = ClipSpec(
        loader,
        train,
        frames,
        stack,
        crop,
        resize,
        None if ms_grid is None else tuple(ms_grid),
        ms_threshold,
        eval_stacks,
        method,
        rgb_endpoint,
    )
    return build_loader(source, spec, **loading)


def build_loader(
    source,
    spec: ClipSpec,
    *,
    global_batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    num_epochs: int | None = None,
    worker_count: int = 0,
    sharding=None,
    drop_remainder: bool | None = None,
    read_threads: int = 1,
    keep_workers: bool = False,
) -> Loader:
    """make_loader with the per-clip arguments given as one ClipSpec (spec.train: train or eval loader)."""
    train = spec.train
    n = len(source)
    if n == 0:
        raise ValueError("the source has no examples; check the split and data_dir")
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
    drop_remainder = train if drop_remainder is None else drop_remainder
    steps_per_epoch = n // global_batch_size if drop_remainder else -(-n // global_batch_size)
    if steps_per_epoch == 0:
        raise ValueError(
            f"{n} examples make no full batch of {global_batch_size}; lower global_batch_size "
            "or pass drop_remainder=False"
        )
    if num_epochs is None and not train:
        num_epochs = 1
    num_steps = None if num_epochs is None else steps_per_epoch * num_epochs
    stop = sys.maxsize if num_steps is None else num_steps
    if not 0 <= start_step <= stop:
        raise ValueError(f"start_step {start_step} is outside the loader's {num_steps} steps")
    rows = _local_rows(sharding, global_batch_size)
    batcher = _StepBatch(source, spec, seed, global_batch_size, steps_per_epoch, rows, shuffle=train)
    dataset = grain.MapDataset.range(start_step, stop).map(batcher)
    return Loader(
        dataset,
        steps_per_epoch=steps_per_epoch,
        num_steps=num_steps,
        worker_count=worker_count,
        read_threads=read_threads,
        sharding=sharding,
        keep_workers=keep_workers,
    )
