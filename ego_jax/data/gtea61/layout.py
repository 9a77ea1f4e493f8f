"""Finding GTEA61 clips in a manual folder: the course PNG layout and the authors' JPEG layout.

Course release (PNG):
  processed_frames2/<S>/<class>/<inst>/rgb/rgb0001.png, .../mmaps/map0001.png  (or processed_frames/)
  flow_x_processed/<S>/<class>/<inst>/flow_x_00001.png, flow_y_processed/... flow_y_00001.png
Authors' release (JPEG, no motion maps):
  frames/<S>/<class>/<inst>/image_00001.jpg, flow_x/<S>/.../flow_x_00001.jpg, flow_y/...

Only the folder structure is checked here (every problem is found before anything is written);
the frames themselves are decoded and checked by the builder.
"""

import dataclasses
import difflib
import logging
from pathlib import Path

from ego_jax.data.gtea61.classes import CLASSES
from ego_jax.data.manual_dir import (
    FrameCountError,
    LayoutError,
    MissingModalityError,
    UnknownClassError,
    contiguous,
    describe,
    dirs,
    numbered_frames,
)

MODALITIES = ("rgb", "flow_x", "flow_y", "mmaps")
SUBJECTS = ("S1", "S2", "S3", "S4")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Source:
    """Where one modality lives: top folder names to try, sub-folder inside a clip, file pattern."""

    tops: tuple[str, ...]
    sub: str
    pattern: str
    example: str


LAYOUTS = {
    "course": {
        "rgb": _Source(("processed_frames2", "processed_frames"), "rgb", r"rgb(\d+)\.png", "rgb0001.png"),
        "mmaps": _Source(("processed_frames2", "processed_frames"), "mmaps", r"map(\d+)\.png", "map0001.png"),
        "flow_x": _Source(("flow_x_processed",), "", r"flow_x_(\d+)\.png", "flow_x_00001.png"),
        "flow_y": _Source(("flow_y_processed",), "", r"flow_y_(\d+)\.png", "flow_y_00001.png"),
    },
    "authors": {
        "rgb": _Source(("frames",), "", r"image_(\d+)\.(?:jpe?g|png)", "image_00001.jpg"),
        "flow_x": _Source(("flow_x",), "", r"flow_x_(\d+)\.(?:jpe?g|png)", "flow_x_00001.jpg"),
        "flow_y": _Source(("flow_y",), "", r"flow_y_(\d+)\.(?:jpe?g|png)", "flow_y_00001.jpg"),
    },
}


@dataclasses.dataclass(frozen=True)
class Clip:
    """One clip: frame files per modality in frame order (maps aligned to RGB, gaps filled)."""

    subject: str
    class_name: str
    instance: str
    files: dict[str, tuple[Path, ...]]
    maps_filled: int

    @property
    def clip_id(self) -> str:
        return f"{self.subject}/{self.class_name}/{self.instance}"

    @property
    def num_frames(self) -> int:
        return len(next(iter(self.files.values())))


def find_layout(root: Path) -> tuple[str, Path]:
    """Returns (layout name, release folder): `root` itself or its single sub-folder holding a layout."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"manual folder {root} does not exist: put the GTEA61 download there or pass --manual_dir")

    def layout_of(folder):
        return next(
            (
                name
                for name, sources in LAYOUTS.items()
                if any((folder / top).is_dir() for s in sources.values() for top in s.tops)
            ),
            None,
        )

    if layout_of(root):
        return layout_of(root), root
    found = [(layout_of(sub), sub) for sub in dirs(root) if layout_of(sub)]
    if len(found) == 1:
        return found[0]
    if found:
        raise LayoutError(
            f"several GTEA61 releases in {root}: {', '.join(str(f) for _, f in found)}; "
            "pass the one to build as the manual folder"
        )
    raise LayoutError(
        f"no GTEA61 layout found in {root} (it holds: {describe(root)}). Expected the course release "
        "(processed_frames2/ or processed_frames/, flow_x_processed/, flow_y_processed/) or the authors' "
        "release (frames/, flow_x/, flow_y/), either directly in this folder or in one sub-folder of it."
    )


def _suggest_configs(available: set[str], configs: dict[str, tuple[str, ...]]) -> str:
    fits = [name for name, mods in configs.items() if set(mods) <= available]
    return f"use a config whose modalities you have: {', '.join(fits)}" if fits else "no config fits these folders"


def _fill_maps(found: dict[int, Path], folder: Path, n: int) -> tuple[tuple[Path, ...], int]:
    """Maps for frames 1..n; a missing one takes the nearest existing map (the earlier on ties)."""
    beyond = sorted(k for k in found if not 1 <= k <= n)
    if beyond:
        raise FrameCountError(
            f"motion maps {[found[k].name for k in beyond[:5]]} in {folder} have no RGB frame: the clip has {n} RGB "
            "frames and maps must be numbered within 1..N like their frames"
        )
    have = sorted(found)
    files = tuple(found[min(have, key=lambda k: (abs(k - i), k))] for i in range(1, n + 1))
    return files, n - len(have)


def scan(root: Path, modalities: tuple[str, ...], configs: dict[str, tuple[str, ...]]) -> list[Clip]:
    """Every clip of the release under `root` with the given modalities, sorted by clip id."""
    layout, base = find_layout(root)
    sources = LAYOUTS[layout]
    available = set()
    tops = {}
    for mod, src in sources.items():
        top = next((base / t for t in src.tops if (base / t).is_dir()), None)
        if top is not None and (not src.sub or any(top.glob(f"*/*/*/{src.sub}"))):
            available.add(mod)
            tops[mod] = top
    for mod in modalities:
        if mod not in available:
            src = sources.get(mod)
            where = (
                f"{base}/{src.tops[0]}/<S>/<class>/<inst>/{src.sub + '/' if src.sub else ''}{src.example}"
                if src
                else f"the {layout} layout has no {mod}"
            )
            raise MissingModalityError(
                f"{mod} not found in {base} ({layout} layout): expected {where}. "
                f"{_suggest_configs(available, configs)}."
            )

    clips: dict[tuple[str, str, str], dict[str, Path]] = {}
    for mod in modalities:
        for subject in dirs(tops[mod]):
            if subject.name not in SUBJECTS:
                raise LayoutError(f"unexpected folder {subject}: expected subject folders {', '.join(SUBJECTS)}")
            for cls in dirs(subject):
                if cls.name not in CLASSES:
                    close = difflib.get_close_matches(cls.name, CLASSES, n=3)
                    raise UnknownClassError(
                        f"unknown class folder {cls}: class folders must be one of the 61 GTEA61 class names "
                        f"(ego_jax.data.gtea61.CLASSES){'; did you mean ' + ' or '.join(close) if close else ''}. "
                        "Rename or remove it."
                    )
                for inst in dirs(cls):
                    if not inst.name.isdigit():
                        raise LayoutError(f"unexpected folder {inst}: expected clip folders named 1, 2, 3, ...")
                    clips.setdefault((subject.name, cls.name, inst.name), {})[mod] = inst

    result, ignored = [], []
    for key in sorted(clips, key=lambda k: (k[0], CLASSES.index(k[1]), int(k[2]))):
        clip_id = "/".join(key)
        files, maps_filled, counts = {}, 0, {}
        for mod in modalities:
            src = sources[mod]
            inst = clips[key].get(mod)
            folder = inst / src.sub if inst is not None and src.sub else inst
            if folder is None or not folder.is_dir():
                expected = tops[mod] / clip_id / src.sub
                raise MissingModalityError(
                    f"clip {clip_id} has no {mod} folder {expected} although other modalities have this clip "
                    "(partial download?). Restore it, or build a config without this modality."
                )
            found = numbered_frames(folder, src.pattern, mod, ignored)
            if not found:
                raise FrameCountError(f"no {mod} frames in {folder}: expected files named like {src.example}")
            if mod == "mmaps":
                maps = (found, folder)
            else:
                files[mod] = contiguous(found, folder, mod)
                counts[mod] = (len(files[mod]), folder)
        n = next(iter(counts.values()))[0]
        if len({c for c, _ in counts.values()}) > 1:
            detail = "; ".join(f"{m}: {c} in {f}" for m, (c, f) in counts.items())
            raise FrameCountError(
                f"clip {clip_id}: frame counts disagree between modalities ({detail}); GTEA61 has one flow x/y "
                "frame per RGB frame. Re-download this clip, or build a config without the incomplete modality."
            )
        if "mmaps" in modalities:
            files["mmaps"], maps_filled = _fill_maps(*maps, n)
        result.append(Clip(*key, files={m: files[m] for m in modalities}, maps_filled=maps_filled))
    if not result:
        raise LayoutError(f"no clips found in {base}: expected <modality folder>/<S>/<class>/<inst>/ folders")
    if ignored:
        others = sorted({f.name for f in ignored if f.name != ".DS_Store"})
        log.info(
            "%d clips in %s; ignored %d files that are not frames (.DS_Store%s)",
            len(result),
            base,
            len(ignored),
            ", " + ", ".join(others[:5]) + (" ..." if len(others) > 5 else "") if others else "",
        )
    return result
