"""Stand-ins for the video releases (EGTEA Gaze+, GTEA71, GTEA Gaze+) and for your own folder of videos: small trees
with each release's layout, annotation syntax and real encoded videos, so every builder runs end to end without the
data.

Each class of a stand-in is one of synthetic.py's verb (motion) x item (appearance) actions rendered with a
shaking camera over a subject's table; the same pixels are written as an H.264 video (PyAV) and, with
`extracted=True`, as the authors' per-clip layout (frames/, flow_x/, flow_y/ JPEG; flow = the rendering's true
camera-compensated motion, 128 = none), which a builder reads instead of extracting from the video.
Release quirks on request: clips listed but not downloaded, unlisted videos and stray files, clips of 1-4
frames, a truncated (corrupt) frame or video, and for the GTEA family lines that are no action or no class.
"""

import dataclasses
import shutil
from pathlib import Path

import av
import cv2
import numpy as np

from ego_jax.data import synthetic
from ego_jax.data.egtea.annotations import COUNTS
from ego_jax.data.gtea_gaze.classes import CLASSES as GAZE_CLASSES
from ego_jax.data.manual_dir import AUTHORS_FOLDERS, AUTHORS_NAMES

_MARKER = ".ego_jax_standin"  # a folder holding it may be replaced by the next call
FPS = 24
_VERBS, _ITEMS = tuple(synthetic.VERBS), tuple(synthetic.ITEMS)
# GTEA Gaze+ label pairs (as a label file writes them) of some of the 44 classes, and an action of none of them.
GAZE_ACTIONS = {
    "open_fridge": ("open", ("fridge",)),
    "turnon_tap": ("turn on", ("tap",)),
    "take_spoonForkKnife_cupPlateBowl": ("take", ("fork", "bowl")),
    "cut_tomato_spoonForkKnife": ("cut", ("tomato", "knife")),
}
GAZE_OTHER = ("wash", ("hand",))
GTEA_ACTIONS = (("take", ("bread",)), ("open", ("coffee",)), ("pour", ("honey", "bread")), ("close", ("jam",)))


@dataclasses.dataclass(frozen=True)
class StandIn:
    """What was written: the clips a build should hold (id -> label), and the quirks' files."""

    root: Path
    labels: dict[str, int]
    missing: tuple[str, ...] = ()  # listed in the annotations, neither video nor frames written
    stray: tuple[Path, ...] = ()
    corrupt: tuple[Path, ...] = ()


def _fresh(root) -> Path:
    return synthetic.fresh_folder(root, _MARKER, "ego_jax.data.standins")


def render(seed: int, subject: int, label: int, instance: int, n: int, size) -> dict[str, np.ndarray]:
    """Frames of class `label`'s action (verb label % 10 of synthetic.VERBS moving item label % 16) by `subject`."""
    margin = int(np.ceil(0.04 * size[1])) + 2
    table, gain = synthetic.subject_look(seed, subject, size, margin)
    rng = np.random.default_rng([seed, subject, label, instance, 7])
    items = (_ITEMS[label % len(_ITEMS)], _ITEMS[(label + 5) % len(_ITEMS)])
    return synthetic.render_action(_VERBS[label % len(_VERBS)], items, n, size, rng, table, gain, margin)


def write_video(path: Path, rgb: np.ndarray, fps: int = FPS) -> None:
    """(n, H, W, 3) uint8 RGB -> an H.264 file (yuv420p: H and W even)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "ultrafast"})
        stream.height, stream.width, stream.pix_fmt = rgb.shape[1], rgb.shape[2], "yuv420p"
        for img in rgb:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        out.mux(stream.encode())


def write_extracted(root: Path, clip_id: str, frames: dict[str, np.ndarray]) -> list[Path]:
    """The clip's frames and flow in the authors' layout under `root` (JPEG, as dense_flow writes) -> the files."""
    written = []
    for mod, folder in AUTHORS_FOLDERS.items():
        (root / folder / clip_id).mkdir(parents=True, exist_ok=True)
        for k, img in enumerate(frames[mod]):
            path = root / folder / clip_id / AUTHORS_NAMES[mod].format(k + 1)
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if mod == "rgb" else img
            path.write_bytes(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
            written.append(path)
    return written


def _lengths(rng, count: int, short: int, low: int, high: int) -> list[int]:
    lengths = [int(x) for x in rng.integers(low, high + 1, count)]
    for i in rng.choice(count, size=min(short, count), replace=False):
        lengths[int(i)] = 1 + int(i) % 4
    return lengths


def _corrupt(files: list[Path], k: int, rng) -> tuple[Path, ...]:
    bad = [files[int(i)] for i in rng.choice(len(files), size=min(k, len(files)), replace=False)]
    for f in bad:
        f.write_bytes(f.read_bytes()[: max(16, f.stat().st_size // 3)])
    return tuple(bad)


def make_egtea(
    root,
    *,
    classes: int = 3,
    participants: int = 3,
    clips_per_class: int = 2,
    size=(48, 64),
    frames=(6, 10),
    seed: int = 0,
    extracted: bool = True,
    missing: int = 0,
    stray: bool = False,
    short_clips: int = 0,
    corrupt: int = 0,
    corrupt_videos: int = 0,
) -> StandIn:
    """An EGTEA Gaze+ tree: action_annotation/ (106 actions, 19 verbs, 51 nouns, 3 train/test splits) and
    cropped_clips/<session>/<clip>.mp4 for `classes` actions x participants x clips_per_class.

    Split k tests every clip whose position (in id order) is k - 1 mod 3 and trains on the others."""
    root = _fresh(root)
    ann = root / "action_annotation"
    ann.mkdir()
    verbs = [f"{v.capitalize()}{i // len(_VERBS) or ''}" for i, v in enumerate(_VERBS * 2)][: COUNTS["verb"]]
    nouns = [f"{n}{i // len(_ITEMS) or ''}" for i, n in enumerate(_ITEMS * 4)][: COUNTS["noun"]]
    actions = [(i % COUNTS["verb"], i % COUNTS["noun"]) for i in range(COUNTS["action"])]
    (ann / "verb_idx.txt").write_text("".join(f"{v} {i + 1}\n" for i, v in enumerate(verbs)))
    (ann / "noun_idx.txt").write_text("".join(f"{n} {i + 1}\n" for i, n in enumerate(nouns)))
    (ann / "action_idx.txt").write_text(
        "".join(f"{verbs[v]} {nouns[n].replace('_', ' ')} {i + 1}\n" for i, (v, n) in enumerate(actions))
    )
    rng = np.random.default_rng([seed, 1])
    jobs = [(p, c, i) for p in range(participants) for c in range(classes) for i in range(clips_per_class)]
    lengths = _lengths(rng, len(jobs), short_clips, *frames)
    names, written = {}, []
    for (p, c, i), n in zip(jobs, lengths):
        session = f"P{p + 1:02d}-R{i + 1:02d}-PastaSalad"
        start = 1000 * (c + 1) + 40 * i
        name = f"{session}-{start * 1000 // FPS}-{(start + n - 1) * 1000 // FPS}-F{start:06d}-F{start + n - 1:06d}"
        names[name] = c
        f = render(seed, p, c, i, n, size)
        write_video(root / "cropped_clips" / session / f"{name}.mp4", f["rgb"])
        if extracted:
            written += write_extracted(root, name, f)
    order = sorted(names)
    gone = tuple(order[int(i)] for i in rng.choice(len(order), size=min(missing, len(order)), replace=False))
    for name in gone:
        (root / "cropped_clips" / "-".join(name.split("-")[:3]) / f"{name}.mp4").unlink()
        for folder in AUTHORS_FOLDERS.values():
            shutil.rmtree(root / folder / name, ignore_errors=True)
    written = [w for w in written if not any(g in str(w) for g in gone)]
    for k in (1, 2, 3):
        for part, keep in (("train", lambda j, k=k: j % 3 != k - 1), ("test", lambda j, k=k: j % 3 == k - 1)):
            lines = [
                f"{name} {names[name] + 1} {actions[names[name]][0] + 1} {actions[names[name]][1] + 1}\n"
                for j, name in enumerate(order)
                if keep(j)
            ]
            (ann / f"{part}_split{k}.txt").write_text("".join(lines))
    strays = []
    if stray:
        clip = (
            root
            / "cropped_clips"
            / f"P{participants + 1:02d}-R01-Pizza"
            / f"P{participants + 1:02d}-R01-Pizza-1000-2000-F000024-F000048.mp4"
        )
        write_video(clip, render(seed, 0, 0, 99, 4, size)["rgb"])  # a video no split lists
        some = next((root / "cropped_clips").iterdir())
        strays = [clip, some / ".DS_Store", some / "copy(1).txt"]
        strays[1].write_bytes(b"\x00\x00\x00\x01Bud1")
        strays[2].write_text("not a clip\n")
    bad = _corrupt([w for w in written if w.parent.parent.name == "frames"], corrupt, rng) if corrupt else ()
    if corrupt_videos:
        videos = sorted(
            root / "cropped_clips" / "-".join(n.split("-")[:3]) / f"{n}.mp4" for n in order if n not in gone
        )
        bad += _corrupt(videos, corrupt_videos, rng)
    return StandIn(root, {n: c for n, c in names.items() if n not in gone}, gone, tuple(strays), bad)


def _make_gtea_family(
    root,
    *,
    label_folder: str,
    videos: list[tuple[str, int]],
    actions: list,
    classes: list[int],
    other,
    label_of,
    size=(48, 64),
    frames=(6, 10),
    seed: int = 0,
    extracted: bool = True,
    short_clips: int = 0,
    corrupt: int = 0,
) -> StandIn:
    """Videos (stem, subject index) each holding one action of every class (plus `other`, an action outside the
    classes) separated by idle frames, one label file each."""
    root = _fresh(root)
    rng = np.random.default_rng([seed, 2])
    lengths = iter(_lengths(rng, len(videos) * (len(classes) + 1), short_clips, *frames))
    labels, written = {}, []
    for stem, subject in videos:
        rgb, lines, t = [], [], 1
        for c in [*classes, None]:
            n = next(lengths)
            f = render(seed, subject, 15 if c is None else c, 0, n, size)
            idle = render(seed, subject, 0, 50 + t, 3, size)["rgb"]
            rgb += [idle, f["rgb"]]
            first, last = t + 3, t + 2 + n
            verb, objects = other if c is None else actions[c]
            lines.append(f"<{verb}><{','.join(objects)}> ({first}-{last})\n")
            if c is not None:
                labels[f"{stem}/{first}-{last}"] = label_of(c)
                if extracted:
                    written += write_extracted(root, f"{stem}/{first}-{last}", f)
            t = last + 1
        write_video(root / "videos" / f"{stem}.mp4", np.concatenate(rgb))
        (root / label_folder).mkdir(exist_ok=True)
        (root / label_folder / f"{stem}.txt").write_text("".join(lines) + "\n")
    bad = _corrupt([w for w in written if w.parts[-4] == "frames"], corrupt, rng) if corrupt else ()
    return StandIn(root, labels, corrupt=bad)


def make_gtea71(root, *, classes: int = 3, subjects=("S1", "S2", "S3", "S4"), **options) -> StandIn:
    """A GTEA tree: labels/S<k>_Cheese_C1.txt and videos/S<k>_Cheese_C1.mp4 per subject, each video one action of
    each of `classes` GTEA classes plus a stir<cup> (excluded from GTEA71).
    options: size, frames, seed, extracted, short_clips, corrupt, as make_egtea's."""
    names = sorted(f"{v}_{','.join(o)}" for v, o in GTEA_ACTIONS[:classes])
    return _make_gtea_family(
        root,
        label_folder="labels",
        videos=[(f"{s}_Cheese_C1", int(s[1]) - 1) for s in subjects],
        actions=list(GTEA_ACTIONS),
        classes=list(range(classes)),
        other=("stir", ("cup",)),
        label_of=lambda c: names.index(f"{GTEA_ACTIONS[c][0]}_{','.join(GTEA_ACTIONS[c][1])}"),
        **options,
    )


def make_gtea_gaze(root, *, classes: int = 3, subjects=("Ahmad", "Alireza", "Carlos"), **options) -> StandIn:
    """A GTEA Gaze+ tree: labels_cleaned/<Subject>_Pizza.txt and videos/<Subject>_Pizza.mp4, each video one action
    of each of `classes` of the 44 classes plus one action of none of them.
    options: size, frames, seed, extracted, short_clips, corrupt, as make_egtea's."""
    chosen = list(GAZE_ACTIONS)[:classes]
    return _make_gtea_family(
        root,
        label_folder="labels_cleaned",
        videos=[(f"{s}_Pizza", i) for i, s in enumerate(subjects)],
        actions=[GAZE_ACTIONS[c] for c in chosen],
        classes=list(range(classes)),
        other=GAZE_OTHER,
        label_of=lambda c: GAZE_CLASSES.index(chosen[c]),
        **options,
    )


def folder_class(label: int) -> str:
    """The name of make_folder's class `label` (its verb and moving item, as render draws them)."""
    return f"{_VERBS[label % len(_VERBS)]}_{_ITEMS[label % len(_ITEMS)]}"


def make_folder(
    root, *, classes: int = 3, videos_per_class: int = 4, size=(48, 64), frames=(6, 10), seed: int = 0
) -> StandIn:
    """Your own labelled videos as torchvision's folder datasets hold them: <class>/<video>.mp4 for `classes`
    classes (folder_class names) x videos_per_class H.264 videos, each by one of 4 subjects."""
    root = _fresh(root)
    rng = np.random.default_rng([seed, 3])
    lengths = iter(_lengths(rng, classes * videos_per_class, 0, *frames))
    labels = {}
    for c in range(classes):
        for i in range(videos_per_class):
            clip = f"{folder_class(c)}/video_{i:03d}"
            write_video(root / f"{clip}.mp4", render(seed, i % 4, c, i, next(lengths), size)["rgb"])
            labels[clip] = c
    return StandIn(root, labels)


MAKERS = {"egtea": make_egtea, "gtea71": make_gtea71, "gtea_gaze": make_gtea_gaze}
