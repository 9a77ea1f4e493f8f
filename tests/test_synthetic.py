"""The synthetic GTEA61 generator: release formats, determinism, true motion, class design, quirks."""

import re

import cv2
import numpy as np
import pytest
from PIL import Image

from ego_jax.data.gtea61.classes import CLASSES
from ego_jax.data.synthetic import FLOW_RANGE, ITEMS, PRESETS, VERBS, make_synthetic, verb_object


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _clip(root, clip_id):
    """Maps (n, H, W) bool and flow (n, H, W, 2) in pixels of one course-layout clip, read with OpenCV."""
    rgb = sorted((root / "processed_frames2" / clip_id / "rgb").glob("rgb*.png"))
    n = len(rgb)
    read = lambda p: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)  # noqa: E731
    maps = np.stack([read(root / "processed_frames2" / clip_id / "mmaps" / f"map{k:04d}.png") for k in range(1, n + 1)])
    flow = np.stack(
        [
            np.stack([read(root / f"flow_{a}_processed" / clip_id / f"flow_{a}_{k:05d}.png") for a in "xy"], -1)
            for k in range(1, n + 1)
        ]
    )
    colour = np.stack([cv2.imread(str(p))[..., ::-1] for p in rgb])
    return maps > 0, (flow.astype(np.float64) - 128) * FLOW_RANGE * maps.shape[2] / 127, colour


def test_release_formats(tmp_path):
    syn = make_synthetic(tmp_path, classes=["take_jam"], subjects=["S1"])
    (clip,) = syn.clips
    d = tmp_path / "processed_frames2" / clip.clip_id
    rgb, mmap = Image.open(d / "rgb" / "rgb0001.png"), Image.open(d / "mmaps" / "map0001.png")
    flow = Image.open(tmp_path / "flow_x_processed" / clip.clip_id / "flow_x_00001.png")
    assert (rgb.mode, rgb.size) == ("RGB", (80, 48))
    assert mmap.mode == "L" and set(np.unique(np.asarray(mmap)).tolist()) == {0, 255}
    f = np.asarray(flow)
    assert flow.mode == "RGB" and (f[..., 0] == f[..., 1]).all() and (f[..., 0] == f[..., 2]).all()
    names = sorted(p.name for p in d.joinpath("rgb").iterdir())
    assert names == [f"rgb{k:04d}.png" for k in range(1, clip.num_frames + 1)]


def test_deterministic_and_subset_stable(tmp_path):
    kw = dict(classes=["take_jam", "open_jam"], subjects=["S1"], seed=5)
    a = _files(make_synthetic(tmp_path / "a", **kw).root)
    assert a == _files(make_synthetic(tmp_path / "b", **kw).root)
    bigger = _files(
        make_synthetic(tmp_path / "c", classes=["take_jam", "open_jam", "take_tea"], subjects=["S1", "S2"], seed=5).root
    )
    assert {k: bigger[k] for k in a} == a
    other = _files(make_synthetic(tmp_path / "d", **{**kw, "seed": 6}).root)
    assert other.keys() != a.keys() or other != a


def test_never_replaces_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "GTEA61" / "processed_frames2").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="refusing to replace"):
        make_synthetic(tmp_path / "GTEA61", classes=["take_jam"], subjects=["S1"])
    assert (tmp_path / "GTEA61" / "processed_frames2").is_dir()
    first = make_synthetic(tmp_path / "syn", classes=["take_jam"], subjects=["S1"])
    again = make_synthetic(tmp_path / "syn", classes=["open_jam"], subjects=["S1"])
    assert not (first.root / "processed_frames2" / first.clips[0].clip_id).exists()
    assert (again.root / "processed_frames2" / again.clips[0].clip_id).is_dir()


def test_clip_lengths_like_the_release_scaled(tmp_path):
    lengths = [c.num_frames for c in make_synthetic(tmp_path, subjects=["S1"]).clips]
    # The release: median 34, min 5; 'tiny' scales lengths by 1/4 and caps them at 24.
    assert min(lengths) >= 5 and max(lengths) <= 24 and 6 <= np.median(lengths) <= 12
    assert len(set(lengths)) > 5


@pytest.mark.parametrize("name", ["close_jam", "take_tea", "pour_honey,cup", "shake_tea,cup", "stir_spoon,cup"])
def test_flow_is_the_motion_of_the_mapped_pixels(tmp_path, name):
    syn = make_synthetic(tmp_path, classes=[name], subjects=["S3"], clips_per_class=2)
    for clip in syn.clips:
        maps, flow, _ = _clip(tmp_path, clip.clip_id)
        moving = np.abs(flow).max(-1) > 3 * FLOW_RANGE * maps.shape[2] / 127
        fast = np.abs(flow[maps]).max() > 0.5
        if fast:  # the pixels whose flow differs from 128 are exactly the motion map
            assert (moving == maps).all()
        centroid = np.stack([np.argwhere(m).mean(0)[::-1] for m in maps])
        mean_flow = np.stack([f[m].mean(0) for f, m in zip(flow, maps)])
        # Map centroids move by the flow, up to the camera shake (flow is camera-compensated).
        err = np.abs(np.diff(centroid, axis=0) - mean_flow[:-1]).max(-1)
        assert np.median(err) < 1.5, (clip, err)


def test_flow_never_saturates(tmp_path):
    """Saturated flow (0 or 255) would not be the true motion; short clips move fastest."""
    one_per_verb = sorted({verb_object(c)[0]: c for c in CLASSES}.values())
    make_synthetic(tmp_path, classes=one_per_verb, subjects=["S1"], short_clips=4, seed=1)
    values = np.concatenate([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).ravel() for p in tmp_path.rglob("flow_*.png")])
    assert 0 < values.min() and values.max() < 255


def test_appearance_and_motion_each_separate_part_of_the_classes(tmp_path):
    """take_jam / open_jam share the object, take_jam / take_tea the verb."""
    syn = make_synthetic(tmp_path, classes=["take_jam", "open_jam", "take_tea"], subjects=["S2"], clips_per_class=2)
    colour, motion = {}, {}
    for clip in syn.clips:
        maps, flow, rgb = _clip(tmp_path, clip.clip_id)
        name = clip.clip_id.split("/")[1]
        colour.setdefault(name, []).append(rgb[maps].mean(0))
        v = flow[maps].mean(0)
        motion.setdefault(name, []).append(v / np.linalg.norm(v))
    c = {k: np.mean(v, 0) for k, v in colour.items()}
    m = {k: np.mean(v, 0) for k, v in motion.items()}
    assert np.abs(c["take_jam"] - c["open_jam"]).max() < 30 < np.abs(c["take_jam"] - c["take_tea"]).max()
    assert m["take_jam"] @ m["take_tea"] > 0.9 and m["take_jam"] @ m["open_jam"] < 0.3
    assert m["take_jam"][1] < -0.9  # take moves up (image y grows downwards)


def test_every_class_needs_both_cues():
    """Over all 61 classes: (moving item, props) and (verb, silhouette) each leave groups; together none."""
    appearance, motion = {}, {}
    for name in CLASSES:
        verb, (mover, *props) = verb_object(name)
        appearance.setdefault((mover, tuple(sorted(props))), []).append(name)
        motion.setdefault((verb, ITEMS[mover][1]), []).append(name)
    assert max(map(len, appearance.values())) > 1 and max(map(len, motion.values())) > 1
    ambiguous = [set(a) & set(m) for a in appearance.values() for m in motion.values() if len(set(a) & set(m)) > 1]
    assert not ambiguous


def test_quickstart_preset_needs_both_cues_and_survives_the_flip(tmp_path):
    """Its classes: appearance and motion each leave groups, together none; no verb is another's mirror image."""
    classes = PRESETS["quickstart"]["classes"]
    appearance = {n: verb_object(n)[1] for n in classes}  # (moving item, props)
    motion = {n: (verb_object(n)[0], ITEMS[verb_object(n)[1][0]][1]) for n in classes}  # (verb, silhouette)
    for cue in (appearance, motion):
        assert all(list(cue.values()).count(v) > 1 for v in cue.values())
    assert len({(appearance[n], motion[n]) for n in classes}) == len(classes)
    directions = {verb: VERBS[verb] for verb, _ in motion.values()}
    for verb, (kind, (dx, dy)) in directions.items():  # the loaders' horizontal flip mirrors the motion
        assert kind == "line" and not any(np.allclose((-dx, dy), d) for v, (_, d) in directions.items() if v != verb)
    syn = make_synthetic(tmp_path, preset="quickstart", subjects=["S2"], clips_per_class=1)
    assert sorted(c.clip_id.split("/")[1] for c in syn.clips) == sorted(classes)
    first = tmp_path / "processed_frames2" / syn.clips[0].clip_id / "rgb" / "rgb0001.png"
    assert Image.open(first).size == PRESETS["quickstart"]["size"][::-1]


def test_quirks(tmp_path):
    syn = make_synthetic(
        tmp_path,
        classes=["take_jam", "open_jam", "take_tea"],
        missing_first_maps=2,
        ds_store=True,
        duplicates=3,
        short_clips=2,
    )
    missing = [c for c in syn.clips if c.first_map_missing]
    assert len(missing) == 2
    for c in syn.clips:
        maps_dir = tmp_path / "processed_frames2" / c.clip_id / "mmaps"
        assert (maps_dir / "map0001.png").exists() != c.first_map_missing
        assert (maps_dir / f"map{c.num_frames:04d}.png").exists()
    assert sorted(c.num_frames for c in syn.clips)[:2] == [1, 2]
    dups = [p for p in syn.stray if "(1)" in p.name]
    assert len(dups) == 3 and all(re.fullmatch(r"\w+?_?\d+\(1\)\.png", p.name) and p.exists() for p in dups)
    for folder in [tmp_path, tmp_path / "flow_y_processed" / "S4", tmp_path / "processed_frames2/S2/take_tea/1/rgb"]:
        assert (folder / ".DS_Store").is_file()


def test_faults(tmp_path):
    syn = make_synthetic(tmp_path / "a", classes=["take_jam"], subjects=["S1"], corrupt=1)
    (bad,) = syn.corrupt
    assert cv2.imread(str(bad)) is None
    make_synthetic(tmp_path / "b", classes=["take_jam"], subjects=["S1"], missing_modality="mmaps")
    assert not list((tmp_path / "b").rglob("mmaps")) and list((tmp_path / "b").rglob("rgb0001.png"))


def test_authors_layout(tmp_path):
    (clip,) = make_synthetic(tmp_path, classes=["take_jam"], subjects=["S1"], layout="authors").clips
    assert (tmp_path / "frames" / clip.clip_id / "image_00001.jpg").is_file()
    assert (tmp_path / "flow_y" / clip.clip_id / f"flow_y_{clip.num_frames:05d}.jpg").is_file()
    assert not (tmp_path / "processed_frames2").exists()
