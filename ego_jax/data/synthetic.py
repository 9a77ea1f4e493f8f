"""Synthetic GTEA61: a generated release in the course layout, learnable only from appearance AND motion.

Every class is verb x object, as in GTEA61 (`pour_mustard,hotdog,bread` = pour x mustard with a
hotdog and bread on the table). The first item of the object moves; the others lie still.
- Objects differ in appearance: each item has its own colour and one of 7 shapes.
- Verbs differ in motion: 7 straight directions and 3 oscillations (vertical, horizontal, circular).
So appearance alone cannot tell `open_coffee` from `close_coffee`, motion alone cannot tell
`take_jam` from `take_tea` (and only partly from the silhouette), and both together separate all 61.
- Subjects differ in table colour, texture and lighting; the camera shakes (a smoothed random walk).
- Flow is the release's "warp" flow, i.e. camera-compensated: the moving item's true displacement
  from frame k to k+1, encoded as 128 + 127 * d / (FLOW_RANGE * W), plus a small smooth residual;
  the motion map is the moving item's pixels in frame k ({0, 255}).
Files match the real release: RGB PNG (3 channels), flow PNG as 3 identical channels, maps mode L.
Everything derives from `seed`; a clip depends only on (seed, subject, class, instance), so a
subset of classes gives the same clips as the full set.
"""

import concurrent.futures
import dataclasses
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ego_jax.data.gtea61.classes import CLASSES

SUBJECTS = ("S1", "S2", "S3", "S4")
_MARKER = ".synthetic_gtea61"  # a folder holding it may be replaced by the next call
FLOW_RANGE = 0.1  # displacement (fraction of the width) that saturates the flow encoding
VIDEO_FPS = 15  # layout 'video'

# (H, W), length scale, longest clip, clips per (subject, class): 'real' draws from the release's histogram;
# classes: the default class subset (all 61 if absent).
PRESETS = {
    "tiny": dict(size=(48, 80), length_scale=0.25, max_len=24, clips=1),
    "small": dict(size=(96, 160), length_scale=0.5, max_len=96, clips=1),
    # 3 objects of one shape (discs told apart by colour only) x 2 verbs (up; left, whose mirror image is no class
    # here, so the reference's flip augmentation keeps labels unambiguous); near-square frames so the reference's
    # corner crops keep the moving item in view. Flow alone sees the verb, RGB frames the object.
    "quickstart": dict(
        size=(80, 96),
        length_scale=0.5,
        max_len=96,
        clips=6,
        classes=("take_coffee", "take_honey", "take_jam", "open_coffee", "open_honey", "open_jam"),
    ),
    "full": dict(size=(256, 455), length_scale=1.0, max_len=645, clips="real"),
}
# The release: log clip length ~ Normal(3.594, 0.746) clipped to [5, 645] frames (median 34);
# clips per (subject, class) {1: 122, 2: 71, 3: 27, 4: 16, 5: 4, 7: 4} over the 244 pairs.
_LOG_LEN = (3.594, 0.746)
_MIN_LEN = 5
_CLIP_COUNTS = ((1, 122), (2, 71), (3, 27), (4, 16), (5, 4), (7, 4))
_SHORT_LENGTHS = (1, 2, 3, 4)

# item -> (RGB colour, shape)
ITEMS = {
    "bread": ((214, 170, 108), "rect"),
    "cheese": ((250, 215, 40), "tri"),
    "chocolate": ((92, 52, 30), "rect"),
    "coffee": ((50, 30, 20), "disc"),
    "cup": ((245, 245, 245), "ring"),
    "honey": ((235, 150, 15), "disc"),
    "hotdog": ((190, 70, 55), "ellipse"),
    "jam": ((140, 25, 100), "disc"),
    "ketchup": ((225, 25, 25), "tall"),
    "mayonnaise": ((250, 245, 195), "tall"),
    "mustard": ((185, 200, 20), "tall"),
    "peanut": ((165, 100, 45), "ellipse"),
    "spoon": ((150, 155, 175), "thin"),
    "sugar": ((170, 205, 255), "rect"),
    "tea": ((40, 135, 60), "tri"),
    "water": ((30, 100, 230), "thin"),
}

# verb -> ('line', unit direction (x, y)) or ('osc', (ax, ay, period in frames, phase of y in periods))
VERBS = {
    "take": ("line", (0.0, -1.0)),
    "put": ("line", (0.0, 1.0)),
    "open": ("line", (-1.0, 0.0)),
    "close": ("line", (1.0, 0.0)),
    "pour": ("line", (-0.7071, 0.7071)),
    "scoop": ("line", (0.7071, -0.7071)),
    "fold": ("line", (-0.7071, -0.7071)),
    "shake": ("osc", (0.0, 0.05, 4, 0.0)),
    "spread": ("osc", (0.07, 0.0, 10, 0.0)),
    "stir": ("osc", (0.05, 0.05, 8, 0.25)),
}


def verb_object(class_name: str) -> tuple[str, tuple[str, ...]]:
    """'pour_mustard,hotdog,bread' -> ('pour', ('mustard', 'hotdog', 'bread'))."""
    verb, obj = class_name.split("_", 1)
    return verb, tuple(obj.split(","))


@dataclasses.dataclass(frozen=True)
class SyntheticClip:
    clip_id: str
    num_frames: int
    first_map_missing: bool


@dataclasses.dataclass(frozen=True)
class Synthetic:
    """What was written: clips (sorted by id), stray non-frame files, corrupted frame files."""

    root: Path
    clips: tuple[SyntheticClip, ...]
    stray: tuple[Path, ...]
    corrupt: tuple[Path, ...]


@dataclasses.dataclass(frozen=True)
class _Job:
    subject: int
    label: int
    instance: int
    num_frames: int
    drop_first_map: bool


def _clip_counts(rng, preset, clips_per_class):
    if clips_per_class is not None:
        return clips_per_class
    if PRESETS[preset]["clips"] != "real":
        return PRESETS[preset]["clips"]
    values, weights = zip(*_CLIP_COUNTS)
    return int(rng.choice(values, p=np.asarray(weights) / sum(weights)))


def _clip_length(rng, preset):
    p = PRESETS[preset]
    n = math.exp(rng.normal(*_LOG_LEN)) * p["length_scale"]
    return int(np.clip(round(n), _MIN_LEN, p["max_len"]))


def subject_look(seed: int, subject: int, size: tuple[int, int], margin: int):
    """Table (background) of one subject, larger than a frame by `margin` for the shake; and its lighting."""
    rng = np.random.default_rng([seed, subject, 1_000_003])
    h, w = size[0] + 2 * margin, size[1] + 2 * margin
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(70, 170, 3)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(3, 9) / w
    stripes = np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)))
    grad = (x / w - 0.5) * rng.uniform(-40, 40) + (y / h - 0.5) * rng.uniform(-40, 40)
    grain = rng.normal(0, 6, (h, w)).astype(np.float32)
    table = base + (18 * stripes + grad + grain)[..., None] * rng.uniform(0.6, 1.0, 3)
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.92, 1.08, 3)  # brightness and colour cast
    return np.clip(table, 0, 255).astype(np.uint8), gain.astype(np.float32)


def _draw(img, shape, centre, r, colour, aa):
    """Draws one item (filled, anti-aliased for frames, hard-edged for masks) at sub-pixel precision."""
    s = 16  # 4 fractional bits
    cx, cy = centre
    line = cv2.LINE_AA if aa else cv2.LINE_8
    c = (int(round(cx * s)), int(round(cy * s)))
    if shape == "disc":
        cv2.circle(img, c, int(r * s), colour, -1, line, shift=4)
    elif shape == "ring":
        cv2.circle(img, c, int(0.8 * r * s), colour, max(1, int(round(r * 0.45))), line, shift=4)
    elif shape == "ellipse":
        cv2.ellipse(img, c, (int(1.4 * r * s), int(0.6 * r * s)), 0, 0, 360, colour, -1, line, shift=4)
    else:
        half = {"rect": (1.2, 0.8), "tall": (0.55, 1.3), "thin": (0.25, 1.5), "tri": None}[shape]
        if half is None:
            pts = [(0, -1.1 * r), (1.1 * r, 0.8 * r), (-1.1 * r, 0.8 * r)]
        else:
            hx, hy = half[0] * r, half[1] * r
            pts = [(-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)]
        poly = np.array([[(cx + px) * s, (cy + py) * s] for px, py in pts], np.int32)
        cv2.fillConvexPoly(img, poly, colour, line, shift=4)


def _trajectory(verb, n, size, rng):
    """Positions (n + 1, 2) in pixels, centred on the origin: frame k moves by p[k] - p[k-1]."""
    h, w = size
    kind, param = VERBS[verb]
    t = np.arange(n + 1, dtype=np.float64)
    if kind == "line":
        # About a third of the frame over the clip, slower for short clips so the flow never saturates.
        step = np.asarray(param) * (w, h) * 0.35 * rng.uniform(0.8, 1.2) / max(n, 1)
        step *= min(1.0, 0.8 * FLOW_RANGE * w / np.abs(step).max())
        return (t - n / 2)[:, None] * step
    ax, ay, period, phase = param
    period *= rng.uniform(0.9, 1.1)
    x = ax * w * np.sin(2 * np.pi * t / period)
    y = ay * w * np.sin(2 * np.pi * (t / period + phase))
    return np.stack([x, y], -1)


def _render_clip(job: _Job, seed: int, size, table, gain, margin):
    """Frames of one clip: rgb (n, H, W, 3), flow_x / flow_y (n, H, W), maps (n, H, W), all uint8."""
    verb, items = verb_object(CLASSES[job.label])
    rng = np.random.default_rng([seed, job.subject, job.label, job.instance])
    return render_action(verb, items, job.num_frames, size, rng, table, gain, margin)


def render_action(verb: str, items, n: int, size, rng, table, gain, margin) -> dict[str, np.ndarray]:
    """`verb` (VERBS) moving items[0] (ITEMS) among the other items on `table` for n frames, the camera shaking.

    -> rgb (n, H, W, 3), flow_x / flow_y (n, H, W) camera-compensated flow, mmaps (n, H, W), all uint8.
    table, gain, margin: a subject's look (subject_look); rng draws every other choice.
    """
    h, w = size
    hc, wc = table.shape[:2]
    r = 0.12 * h * rng.uniform(0.85, 1.15)
    jitter = lambda c: tuple(int(np.clip(v + rng.integers(-12, 13), 0, 255)) for v in c)  # noqa: E731
    mover = ITEMS[items[0]][1], jitter(ITEMS[items[0]][0])
    props = [
        (ITEMS[i][1], jitter(ITEMS[i][0]), (margin + rng.uniform(0.15, 0.85) * w, margin + rng.uniform(0.2, 0.8) * h))
        for i in items[1:]
    ]
    centre = (margin + w * rng.uniform(0.42, 0.58), margin + h * rng.uniform(0.42, 0.58))
    path = _trajectory(verb, n, size, rng) + centre
    scene = table.copy()
    for shape, colour, centre in props:
        _draw(scene, shape, centre, r, colour, aa=True)
    shake = np.zeros(2)
    frames = {
        k: np.empty((n, h, w) + ((3,) if k == "rgb" else ()), np.uint8) for k in ("rgb", "flow_x", "flow_y", "mmaps")
    }
    scale = 127.0 / (FLOW_RANGE * w)
    for k in range(n):
        shake = 0.8 * shake + rng.normal(0, 0.006 * w, 2)
        img, mask = scene.copy(), np.zeros((hc, wc), np.uint8)
        _draw(img, mover[0], path[k], r, mover[1], aa=True)
        _draw(mask, mover[0], path[k], r, 255, aa=False)
        moving = mask > 0
        d = path[k + 1] - path[k]
        warp = np.float32([[1, 0, -margin + shake[0]], [0, 1, -margin + shake[1]]])
        rgb = cv2.warpAffine(img, warp, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        light = gain * rng.uniform(0.97, 1.03)  # flicker
        noise = rng.standard_normal((h, w, 3), dtype=np.float32) * 2.0
        frames["rgb"][k] = np.clip(rgb * light + noise, 0, 255).astype(np.uint8)
        frames["mmaps"][k] = cv2.warpAffine(mask, warp, (w, h), flags=cv2.INTER_NEAREST)
        # Smooth residual of the camera compensation (real warp flow is smooth, and compresses like it).
        residual = [cv2.resize(rng.normal(0, 0.6, (h // 8 + 2, w // 8 + 2)).astype(np.float32), (w, h)) for _ in "xy"]
        for axis, key in enumerate(("flow_x", "flow_y")):
            flow = np.where(moving, np.float32(128 + scale * d[axis]), np.float32(128))
            flow = cv2.warpAffine(flow, warp, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
            flow += residual[axis]
            frames[key][k] = np.clip(np.round(flow), 0, 255).astype(np.uint8)
    return frames


def _write(path: Path, img: np.ndarray, ext: str):
    path.write_bytes(cv2.imencode(ext, img, [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])[1].tobytes())


def _clip_dirs(root: Path, layout: str, rgb_folder: str, clip_id: str) -> dict[str, tuple[Path, str]]:
    """modality -> (folder, file name pattern with one {} for the frame number; a video's name has none)."""
    if layout == "video":
        subject_class, instance = clip_id.rsplit("/", 1)
        return {"rgb": (root / subject_class, f"{instance}.mp4")}
    if layout == "authors":
        return {
            "rgb": (root / "frames" / clip_id, "image_{:05d}.jpg"),
            "flow_x": (root / "flow_x" / clip_id, "flow_x_{:05d}.jpg"),
            "flow_y": (root / "flow_y" / clip_id, "flow_y_{:05d}.jpg"),
        }
    return {
        "rgb": (root / rgb_folder / clip_id / "rgb", "rgb{:04d}.png"),
        "mmaps": (root / rgb_folder / clip_id / "mmaps", "map{:04d}.png"),
        "flow_x": (root / "flow_x_processed" / clip_id, "flow_x_{:05d}.png"),
        "flow_y": (root / "flow_y_processed" / clip_id, "flow_y_{:05d}.png"),
    }


def _make_clip(job: _Job, root: Path, seed: int, size, margin, layout, rgb_folder, skip):
    table, gain = subject_look(seed, job.subject, size, margin)
    frames = _render_clip(job, seed, size, table, gain, margin)
    clip_id = f"{SUBJECTS[job.subject]}/{CLASSES[job.label]}/{job.instance}"
    for mod, (folder, name) in _clip_dirs(root, layout, rgb_folder, clip_id).items():
        if mod == skip:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if layout == "video":
            from ego_jax.data import video  # noqa: PLC0415  (PyAV only for videos: hosts without it build the rest)

            video.write_video(folder / name, frames["rgb"], fps=VIDEO_FPS)
            continue
        for k, img in enumerate(frames[mod]):
            if mod == "mmaps" and k == 0 and job.drop_first_map:
                continue
            if mod == "rgb":
                img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
            elif mod != "mmaps":
                img = np.repeat(img[..., None], 3, -1)  # the release stores flow as 3 identical channels
            _write(folder / name.format(k + 1), img, Path(name).suffix)


class _Serial:
    """In-process stand-in for an executor (workers=1)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, *iterables):
        return map(fn, *iterables)


def fresh_folder(root, marker: str, writer: str) -> Path:
    """`root` emptied (or created) for a generated tree (make_synthetic's, the stand-ins'), holding the file
    `marker`; a non-empty folder without it, which `writer` did not leave, is refused rather than replaced."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not (root / marker).exists():
            raise FileExistsError(
                f"{root} is not empty and was not written by {writer}: refusing to replace it "
                "(it could be a real download). Choose a new or empty folder."
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / marker).write_text(f"written by {writer}; replaced by its next call\n")
    return root


def make_synthetic(
    root,
    *,
    preset: str = "tiny",
    seed: int = 0,
    classes: Sequence[str] | None = None,
    subjects: Sequence[str] = SUBJECTS,
    clips_per_class: int | None = None,
    size: tuple[int, int] | None = None,
    layout: str = "course",
    rgb_folder: str = "processed_frames2",
    missing_first_maps: int = 0,
    ds_store: bool = False,
    duplicates: int = 0,
    short_clips: int = 0,
    corrupt: int = 0,
    missing_modality: str | None = None,
    workers: int = 1,
) -> Synthetic:
    """Writes a GTEA61-layout tree under `root` (new, empty, or written by this function) and says what it wrote.

    preset: 'tiny' (80x48, ~9 frames, tests), 'small' (160x96, ~17 frames), 'quickstart' (96x80, ~17 frames,
      6 classes x 6 clips per subject: configs/quickstart.py) or 'full' (455x256, release-like lengths and clips
      per class, benchmarks); size (H, W) overrides its size.
    classes / subjects / clips_per_class (per subject): restrict the tree (classes default: the preset's, or all).
    layout: 'course' (PNG; rgb_folder 'processed_frames2' or 'processed_frames'), 'authors' (JPEG, no maps) or
      'video' (the raw material: one H.264 video per clip, <root>/<S>/<class>/<instance>.mp4, RGB only, for
      scripts/extract_flow.py; even frame sizes only; corrupt truncates whole videos).
    Quirks of the release: missing_first_maps (clips without map0001), ds_store (.DS_Store in every
    folder), duplicates (clips with a copied frame named like flow_x_00007(1).png), short_clips (clips
    of 1-4 frames). Faults: corrupt (truncated frame files), missing_modality ('rgb', 'flow_x',
    'flow_y' or 'mmaps' folders not written).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    if layout not in ("course", "authors", "video"):
        raise ValueError(f"unknown layout {layout!r}: expected 'course', 'authors' or 'video'")
    size = tuple(size or PRESETS[preset]["size"])
    if layout == "video" and (size[0] % 2 or size[1] % 2 or duplicates or missing_modality is not None):
        raise ValueError(
            f"layout 'video' writes H.264 videos: it needs an even frame size (got {size}) and has "
            "no duplicate frames or missing modalities"
        )
    unknown = [c for c in (classes or ()) if c not in CLASSES] + [s for s in subjects if s not in SUBJECTS]
    if unknown:
        raise ValueError(f"unknown classes/subjects {unknown}: expected names from CLASSES and {SUBJECTS}")
    root = fresh_folder(root, _MARKER, "ego_jax.data.synthetic.make_synthetic")
    margin = int(math.ceil(0.04 * size[1])) + 2
    classes = classes or PRESETS[preset].get("classes")
    labels = sorted(CLASSES.index(c) for c in classes) if classes else range(len(CLASSES))

    jobs = []
    for s in sorted(SUBJECTS.index(x) for x in subjects):
        for c in labels:
            rng = np.random.default_rng([seed, s, c, 0])
            for inst in range(1, _clip_counts(rng, preset, clips_per_class) + 1):
                n = _clip_length(np.random.default_rng([seed, s, c, inst, 1]), preset)
                jobs.append(_Job(s, c, inst, n, False))
    quirks = np.random.default_rng([seed, 424242])
    pick = lambda k, pool: sorted(quirks.choice(len(pool), size=min(k, len(pool)), replace=False))  # noqa: E731
    for i, j in enumerate(pick(short_clips, jobs)):
        jobs[j] = dataclasses.replace(jobs[j], num_frames=_SHORT_LENGTHS[i % len(_SHORT_LENGTHS)])
    if layout == "course":
        can_drop = [j for j, job in enumerate(jobs) if job.num_frames >= 2]
        for j in pick(missing_first_maps, can_drop):
            jobs[can_drop[j]] = dataclasses.replace(jobs[can_drop[j]], drop_first_map=True)

    args = (root, seed, size, margin, layout, rgb_folder, missing_modality)
    with concurrent.futures.ProcessPoolExecutor(workers) if workers > 1 else _Serial() as pool:
        list(pool.map(_make_clip, jobs, *[[a] * len(jobs) for a in args]))

    clip_ids = [f"{SUBJECTS[j.subject]}/{CLASSES[j.label]}/{j.instance}" for j in jobs]
    dirs = [_clip_dirs(root, layout, rgb_folder, cid) for cid in clip_ids]
    stray = []
    for j in pick(duplicates, jobs):
        mod = quirks.choice([m for m in dirs[j] if m != missing_modality])
        folder, name = dirs[j][mod]
        src = folder / name.format(int(quirks.integers(1, jobs[j].num_frames + 1)))
        dup = src.with_name(f"{src.stem}(1){src.suffix}")
        shutil.copyfile(src, dup)
        stray.append(dup)
    bad = []
    for j in pick(corrupt, jobs):
        mod = quirks.choice([m for m in dirs[j] if m != missing_modality and m != "mmaps"])
        folder, name = dirs[j][mod]
        f = folder / name.format(int(quirks.integers(1, jobs[j].num_frames + 1)))
        f.write_bytes(f.read_bytes()[: max(16, f.stat().st_size // 3)])
        bad.append(f)
    if ds_store:
        for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(32))
            stray.append(folder / ".DS_Store")
    clips = tuple(
        sorted(
            (SyntheticClip(cid, j.num_frames, j.drop_first_map) for cid, j in zip(clip_ids, jobs)),
            key=lambda c: c.clip_id,
        )
    )
    return Synthetic(root, clips, tuple(stray), tuple(bad))
