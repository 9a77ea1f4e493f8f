"""Flow of a whole folder of clips into the authors' layout: listing, sharding, CPU workers or accelerator batches.

  sources = list_sources("videos/")                        # every video (recursively) and frame folder, by name
  summary = extract_all(shard(sources, 0, 4), "OUT", spec, workers=8)   # this machine's quarter

Clip names are the sources' paths relative to the input, without extension (videos/S1/take_jam/1.mp4 ->
S1/take_jam/1). `shard(sources, i, n)` is every n-th clip from the i-th of the name-sorted list: n machines
(a SLURM job array, several hosts) split a dataset with no coordination, since a clip's files depend on the clip
alone. With the opencv backend clips run in `workers` processes; with the jax backend the pairs of consecutive
clips of one frame size fill device calls of exactly `batch` pairs (the run's last call fewer), so a frame size
compiles once or twice, while `workers` threads decode ahead, fit homographies and encode images.
A source that cannot be read is reported and skipped; the others go on.
"""

import collections
import concurrent.futures
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ego_jax.data import video
from ego_jax.data.flow import warp
from ego_jax.data.flow.clip import (
    ClipResult,
    FlowSpec,
    done,
    extract_clip,
    gray,
    pairs_flow,
    write_clip,
)


@dataclasses.dataclass(frozen=True)
class Source:
    """One clip to extract: its name in the output (may hold '/') and its video file or frame folder."""

    clip: str
    path: Path


@dataclasses.dataclass
class Summary:
    """What a run did: clips extracted, clips already done, (clip, reason) of the sources that failed."""

    extracted: list[ClipResult] = dataclasses.field(default_factory=list)
    skipped: list[ClipResult] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def pairs(self) -> int:
        return sum(r.pairs for r in self.extracted)


def list_sources(root, out=None) -> list[Source]:
    """Every video file under `root` (recursively) and every folder directly holding frames, sorted by clip name;
    `root` itself may be one video or one frame folder. Paths under `out` (the output folder) are left out."""
    root = Path(root)
    if root.is_file():
        if not video.is_video(root):
            raise video.VideoError(f"{root} is not a video: expected one of {', '.join(video.VIDEO_EXTENSIONS)}")
        return [Source(root.stem, root)]
    if not root.is_dir():
        raise video.VideoError(f"{root} does not exist: expected a video, a folder of videos or of frame folders")
    if video.image_files(root):
        return [Source(root.name, root)]
    out = Path(out).resolve() if out else None
    found = []
    for folder, dirs, files in os.walk(root):
        folder = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (folder / d).resolve() != out)
        name = folder.relative_to(root).as_posix()
        if folder != root and any(Path(f).suffix.lower() in video.IMAGE_EXTENSIONS for f in files):
            found.append(Source(name, folder))
        found += [
            Source((folder / f).relative_to(root).with_suffix("").as_posix(), folder / f)
            for f in sorted(files)
            if video.is_video(f) and not f.startswith(".")
        ]
    clashes = [c for c, k in collections.Counter(s.clip for s in found).items() if k > 1]
    if clashes:
        raise video.VideoError(
            f"several sources in {root} would be clip {clashes[0]} "
            f"({', '.join(str(s.path) for s in found if s.clip == clashes[0])}): rename one"
        )
    if not found:
        raise video.VideoError(f"no videos ({', '.join(video.VIDEO_EXTENSIONS)}) or frame folders under {root}")
    return sorted(found, key=lambda s: s.clip)


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r}: expected I/N, e.g. 0/4 (the first of 4 shards)") from None
    if not 0 <= index < count:
        raise ValueError(f"shard {text!r}: expected 0 <= I < N")
    return index, count


def shard(sources: Sequence[Source], index: int, count: int) -> list[Source]:
    """Every count-th source from the index-th: shards 0..count-1 cover the sources once."""
    return list(sources[index::count])


def _extract_one(source: Source, out, spec: FlowSpec, batch: int):
    try:
        return source, extract_clip(source.path, out, source.clip, spec=spec, batch=batch)
    except video.VideoError as e:
        return source, str(e)


def _limit_threads(threads: int):
    import cv2

    cv2.setNumThreads(threads)


def _with_processes(todo, out, spec, batch, workers) -> Iterator[tuple[Source, ClipResult | str]]:
    if workers <= 1:
        yield from (_extract_one(s, out, spec, batch) for s in todo)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn: a forked child of a process that started JAX's or OpenCV's threads can hang
    with concurrent.futures.ProcessPoolExecutor(
        workers, multiprocessing.get_context("spawn"), _limit_threads, (threads,)
    ) as pool:
        futures = [pool.submit(_extract_one, s, out, spec, batch) for s in todo]
        for future in concurrent.futures.as_completed(futures):
            yield future.result()


@dataclasses.dataclass
class _Clip:
    """A decoded clip whose pairs are queued for device batches."""

    source: Source
    frames: np.ndarray
    gray: np.ndarray
    reference: warp.Features | None
    fields: list = dataclasses.field(default_factory=list)
    cameras: list = dataclasses.field(default_factory=list)


def _with_batches(todo, out, spec, batch, workers) -> Iterator[tuple[Source, ClipResult | str]]:
    queue = collections.deque()  # (clip, pair index): every call but the last gets exactly `batch` pairs

    def compute(n):
        chunk = [queue.popleft() for _ in range(n)]
        prev = np.stack([c.gray[k] for c, k in chunk])
        next_ = np.stack([c.gray[k + 1] for c, k in chunk])
        fields, cameras = pairs_flow(
            prev, next_, spec, first_frames=[c.reference for c, _ in chunk], batch=batch, workers=workers
        )
        for i, (c, _) in enumerate(chunk):
            c.fields.append(fields[i])
            c.cameras.append(None if cameras is None else cameras[i])
            if len(c.fields) == len(c.frames) - 1:
                used = None if cameras is None else sum(cam.used for cam in c.cameras)
                write_clip(
                    out,
                    c.source.clip,
                    c.frames,
                    np.stack(c.fields),
                    spec,
                    workers=workers,
                    extra={"homographies": used},
                )
                yield c.source, ClipResult(c.source.clip, len(c.fields), homographies=used)

    def drain():
        while queue:
            yield from compute(min(batch, len(queue)))

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        ahead, pending = iter(todo), collections.deque()

        def read_next():
            source = next(ahead, None)
            if source is not None:
                pending.append((source, pool.submit(video.read_frames, source.path, spec.short_side)))

        for _ in range(max(2, workers)):
            read_next()
        while pending:
            source, future = pending.popleft()
            read_next()
            try:
                frames = future.result()
                if len(frames) < 2:
                    raise video.VideoError(f"{source.path} has 1 frame: flow needs at least 2 consecutive frames")
            except video.VideoError as e:
                yield source, str(e)
                continue
            if queue and frames.shape[1:] != queue[0][0].frames.shape[1:]:
                yield from drain()  # a batch holds one frame size
            g = gray(frames)
            reference = warp.Features.of(g[0]) if spec.method == "warp_tvl1" and spec.quirks else None
            clip = _Clip(source, frames, g, reference)
            queue.extend((clip, k) for k in range(len(frames) - 1))
            while len(queue) >= batch:
                yield from compute(batch)
        yield from drain()


def extract_all(
    sources: Sequence[Source],
    out,
    spec: FlowSpec,
    *,
    batch: int = 32,
    workers: int = 1,
    progress: Callable[[Source, ClipResult | str], None] | None = None,
) -> Summary:
    """Extracts every source not already done in `out` (FlowSpecMismatch before any work if one was done with
    another spec); `progress` is called for each clip with its result (skipped ones first) or why it failed."""
    start, summary, todo = time.time(), Summary(), []
    for source in sources:
        if done(out, source.clip, spec):
            summary.skipped.append(ClipResult(source.clip, 0, skipped=True))
        else:
            todo.append(source)
    for result in summary.skipped:
        if progress:
            progress(Source(result.clip, Path(out)), result)
    run = _with_processes if spec.backend == "opencv" else _with_batches
    for source, result in run(todo, Path(out), spec, batch, workers):
        if isinstance(result, str):
            summary.failed.append((source.clip, result))
        else:
            summary.extracted.append(result)
        if progress:
            progress(source, result)
    summary.seconds = time.time() - start
    return summary
