"""The gtea61 tfds builder on generated trees with every quirk, on real files, and on each bad input."""

import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ego_jax.data import gtea61
from ego_jax.data.decode import decode_gray, decode_rgb
from ego_jax.data.synthetic import make_synthetic

SAMPLE = Path(__file__).parent / "data" / "gtea61_sample"
# Same-object and same-verb pairs, and class names with commas.
CLASSES = ["take_jam", "open_jam", "take_tea", "pour_mustard,hotdog,bread", "stir_spoon,cup"]
QUIRKS = dict(missing_first_maps=3, ds_store=True, duplicates=4, short_clips=3)


def _frame_files(folder, pattern):
    return sorted(f for f in folder.iterdir() if re.fullmatch(pattern, f.name))


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    """A tiny tree with every quirk of the release, built with the 'all' config."""
    tmp = tmp_path_factory.mktemp("quirky")
    syn = make_synthetic(tmp / "GTEA61", preset="tiny", classes=CLASSES, clips_per_class=2, seed=3, **QUIRKS)
    gtea61.build(manual_dir=tmp / "GTEA61", data_dir=tmp / "tfds", config="all")
    return syn, tmp / "tfds"


def _examples(data_dir, split="S1+S2+S3+S4", config="all"):
    return list(gtea61.load_source(split, data_dir=data_dir, config=config))


def test_split_counts_match_clip_folders(quirky):
    syn, data_dir = quirky
    for subject in ("S1", "S2", "S3", "S4"):
        on_disk = [p for p in (syn.root / "processed_frames2" / subject).glob("*/*") if p.is_dir()]
        assert len(gtea61.load_source(subject, data_dir=data_dir)) == len(on_disk) == 2 * len(CLASSES)
    assert len(gtea61.load_source("S1+S3+S4", data_dir=data_dir)) == 3 * 2 * len(CLASSES)


def test_labels_are_the_fixed_class_list(quirky):
    _, data_dir = quirky
    builder = gtea61.Gtea61(config="all", data_dir=str(data_dir))
    assert builder.info.features["label"].names == list(gtea61.CLASSES)
    for ex in _examples(data_dir):
        subject, name, inst = ex["clip_id"].decode().split("/")
        assert ex["label"] == gtea61.CLASSES.index(name)
        assert ex["subject"].decode() == subject and inst.isdigit()


def test_frames_round_trip_and_stray_files_ignored(quirky):
    syn, data_dir = quirky
    assert any("(1)" in p.name for p in syn.stray) and any(p.name == ".DS_Store" for p in syn.stray)
    short = 0
    for ex in _examples(data_dir):
        clip_id = ex["clip_id"].decode()
        rgb_dir = syn.root / "processed_frames2" / clip_id / "rgb"
        rgb_files = _frame_files(rgb_dir, r"rgb\d{4}\.png")
        flow_files = _frame_files(syn.root / "flow_x_processed" / clip_id, r"flow_x_\d{5}\.png")
        n = ex["num_frames"]
        short += n < 5
        assert n == len(rgb_files) == len(flow_files)
        assert len(ex["rgb"]) == len(ex["flow_x"]) == len(ex["flow_y"]) == len(ex["mmaps"]) == n
        # RGB is stored as the source bytes; flow is re-encoded to one channel, losslessly.
        assert ex["rgb"][-1] == rgb_files[-1].read_bytes()
        source = cv2.imread(str(flow_files[-1]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(decode_gray(ex["flow_x"][-1]), source[..., 0])
    assert short == QUIRKS["short_clips"]


def test_missing_first_maps_filled_from_nearest_and_counted(quirky):
    syn, data_dir = quirky
    missing = {c.clip_id for c in syn.clips if c.first_map_missing}
    assert len(missing) == QUIRKS["missing_first_maps"]
    for ex in _examples(data_dir):
        clip_id = ex["clip_id"].decode()
        maps_dir = syn.root / "processed_frames2" / clip_id / "mmaps"
        has_first = (maps_dir / "map0001.png").exists()
        assert has_first == (clip_id not in missing)
        assert ex["maps_filled"] == (0 if has_first else 1)
        nearest = maps_dir / ("map0001.png" if has_first else "map0002.png")
        np.testing.assert_array_equal(decode_gray(ex["mmaps"][0]), cv2.imread(str(nearest), cv2.IMREAD_GRAYSCALE))


def test_several_releases_in_the_manual_folder(tmp_path):
    for name in ("GTEA61", "GTEA61_copy"):
        make_synthetic(tmp_path / name, classes=CLASSES[:1], subjects=["S1"])
    with pytest.raises(gtea61.LayoutError, match="several GTEA61 releases"):
        gtea61.build(manual_dir=tmp_path, data_dir=tmp_path / "tfds")


def test_modality_configs_have_only_their_keys(quirky, tmp_path):
    syn, _ = quirky
    common = {"label", "subject", "clip_id", "num_frames"}
    gtea61.build(manual_dir=syn.root, data_dir=tmp_path, config="flow")
    (ex,) = _examples(tmp_path, "S2[:1]", config="flow")
    assert set(ex) == common | {"flow_x", "flow_y"}
    with pytest.raises(FileNotFoundError, match="scripts/build_dataset.py"):
        gtea61.load_source("S1", data_dir=tmp_path, config="rgb")


def test_real_files_read_back_exactly_without_tensorflow(tmp_path):
    """One clip made of the real sample files: build and read in a process that never imports TensorFlow."""
    clip = "S1/take_bread/1"
    layout = {
        f"processed_frames2/{clip}/rgb/rgb0001.png": "rgb0011.png",
        f"processed_frames2/{clip}/mmaps/map0001.png": "map0011.png",
        f"flow_x_processed/{clip}/flow_x_00001.png": "flow_x_00020.png",
        f"flow_y_processed/{clip}/flow_y_00001.png": "flow_y_00001.png",
    }
    for dst, src in layout.items():
        (tmp_path / "GTEA61" / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE / src, tmp_path / "GTEA61" / dst)
    script = f"""
import sys
from ego_jax.data import gtea61
gtea61.build(manual_dir={str(tmp_path / "GTEA61")!r}, data_dir={str(tmp_path / "tfds")!r})
(ex,) = list(gtea61.load_source("S1", data_dir={str(tmp_path / "tfds")!r}))
assert "tensorflow" not in sys.modules, "tensorflow was imported"
"""
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        env={"PYTHONPATH": str(Path(__file__).parents[1]), "PATH": "/usr/bin:/bin"},
    )
    (ex,) = _examples(tmp_path / "tfds", "S1")
    assert ex["clip_id"] == clip.encode() and ex["label"] == gtea61.CLASSES.index("take_bread")
    assert ex["num_frames"] == 1 and ex["maps_filled"] == 0
    np.testing.assert_array_equal(decode_rgb(ex["rgb"][0]), decode_rgb((SAMPLE / "rgb0011.png").read_bytes()))
    for key, src in [("flow_x", "flow_x_00020.png"), ("flow_y", "flow_y_00001.png"), ("mmaps", "map0011.png")]:
        np.testing.assert_array_equal(decode_gray(ex[key][0]), decode_gray((SAMPLE / src).read_bytes()))
        assert cv2.imdecode(np.frombuffer(ex[key][0], np.uint8), cv2.IMREAD_UNCHANGED).ndim == 2


@pytest.mark.parametrize("rgb_folder", ["processed_frames", "processed_frames2"])
def test_renamed_rgb_folder_and_parent_folder(tmp_path, rgb_folder):
    make_synthetic(tmp_path / "download" / "GTEA61", classes=CLASSES[:2], subjects=["S3"], rgb_folder=rgb_folder)
    # manual_dir may also be the folder that holds GTEA61/.
    gtea61.build(manual_dir=tmp_path / "download", data_dir=tmp_path / "tfds", config="rgb_mmaps")
    assert len(gtea61.load_source("S3", data_dir=tmp_path / "tfds", config="rgb_mmaps")) == 2


def test_authors_jpeg_layout(tmp_path):
    syn = make_synthetic(tmp_path / "GTEA61", classes=CLASSES[:2], subjects=["S2"], layout="authors")
    with pytest.raises(gtea61.MissingModalityError, match=r"mmaps.*authors.*rgb_flow"):
        gtea61.build(manual_dir=syn.root, data_dir=tmp_path / "tfds", config="all")
    gtea61.build(manual_dir=syn.root, data_dir=tmp_path / "tfds", config="rgb_flow")
    examples = _examples(tmp_path / "tfds", "S2", config="rgb_flow")
    assert sorted(ex["clip_id"].decode() for ex in examples) == [c.clip_id for c in syn.clips]
    ex = examples[0]
    jpeg = syn.root / "frames" / ex["clip_id"].decode() / "image_00001.jpg"
    assert ex["rgb"][0] == jpeg.read_bytes()
    assert decode_gray(ex["flow_y"][0]).shape == (48, 80)


def test_scripts_make_and_build(tmp_path, capsys):
    scripts = Path(__file__).parents[1] / "scripts"
    make = runpy.run_path(str(scripts / "make_synthetic.py"))["main"]
    build = runpy.run_path(str(scripts / "build_dataset.py"))["main"]
    make(["--root", str(tmp_path / "GTEA61"), "--preset", "tiny", "--classes", "take_jam", "--workers", "1"])
    build(["--manual_dir", str(tmp_path / "GTEA61"), "--data_dir", str(tmp_path / "tfds"), "--config", "rgb"])
    assert "clips per split S1 1, S2 1, S3 1, S4 1" in capsys.readouterr().out
    build(["--manual_dir", str(tmp_path / "GTEA61"), "--data_dir", str(tmp_path / "tfds"), "--config", "rgb"])
    assert "already built" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: no GTEA61 layout found"):
        build(["--manual_dir", str(tmp_path / "tfds"), "--data_dir", str(tmp_path / "tfds2")])


@pytest.fixture(scope="module")
def built_rgb(tmp_path_factory):
    """gtea61/rgb of a tiny one-subject tree; tests that damage it work on a copy."""
    tmp = tmp_path_factory.mktemp("built_rgb")
    make_synthetic(tmp / "GTEA61", classes=CLASSES[:3], subjects=["S1"])
    gtea61.build(manual_dir=tmp / "GTEA61", data_dir=tmp / "tfds", config="rgb")
    return tmp


def _copy(built, tmp_path) -> Path:
    shutil.copytree(built / "tfds", tmp_path / "tfds")
    return tmp_path / "tfds"


def test_a_build_of_the_whole_clip_layout_asks_for_a_rebuild(built_rgb, tmp_path, capsys):
    data_dir = _copy(built_rgb, tmp_path)
    version = data_dir / "gtea61" / "rgb" / str(gtea61.Gtea61.VERSION)
    old = version.rename(version.parent / "1.0.0")  # where ego_jax before the frame files put its build
    with pytest.raises(
        FileNotFoundError,
        match=r"version 1\.0\.0.*rebuild with: python scripts/build_dataset\.py "
        rf"--manual_dir <GTEA61 folder> --data_dir {re.escape(str(data_dir))} --config rgb",
    ):
        gtea61.load_source("S1", data_dir=data_dir, config="rgb")
    build = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "build_dataset.py"))["main"]
    build(["--manual_dir", str(built_rgb / "GTEA61"), "--data_dir", str(data_dir), "--config", "rgb"])
    assert f"{old} is a build of an earlier ego_jax" in capsys.readouterr().out
    assert len(gtea61.load_source("S1", data_dir=data_dir, config="rgb")) == 3


def test_a_damaged_frame_file_names_itself_its_split_and_the_rebuild(built_rgb, tmp_path):
    data_dir = _copy(built_rgb, tmp_path)
    frames = data_dir / "gtea61" / "rgb" / str(gtea61.Gtea61.VERSION) / "frames-S1.array_record"
    data = frames.read_bytes()
    rebuild = re.escape(
        f"rebuild with: python scripts/build_dataset.py --manual_dir <GTEA61 folder> --data_dir {data_dir}"
    )
    # Bytes changed inside a frame: found when that frame is read.
    frames.write_bytes(data[:2000] + bytes(255 - b for b in data[2000:2100]) + data[2100:])
    source = gtea61.load_source("S1", data_dir=data_dir, config="rgb")
    with pytest.raises(
        gtea61.DamagedBuildError,
        match=rf"{re.escape(str(frames))} of split S1 .*corrupt.*"
        rf"cannot read clip S1/\w+/1 rgb\[\d+\].*{rebuild}",
    ):
        [list(ex["rgb"]) for ex in source]
    frames.write_bytes(data[: len(data) // 2])  # truncated: found when the source opens
    with pytest.raises(gtea61.DamagedBuildError, match=rf"{re.escape(str(frames))} of split S1 is truncated"):
        gtea61.load_source("S1", data_dir=data_dir, config="rgb")
    frames.unlink()
    with pytest.raises(gtea61.DamagedBuildError, match=rf"{re.escape(str(frames))} of split S1 is missing.*{rebuild}"):
        gtea61.load_source("S1", data_dir=data_dir, config="rgb")


# Bad inputs: each raises its documented error naming the file or folder, and leaves nothing loadable.


@pytest.fixture
def small_tree(tmp_path):
    return make_synthetic(tmp_path / "GTEA61", classes=CLASSES[:3], subjects=["S1", "S2"])


def _assert_nothing_built(data_dir, config="all"):
    assert not list(Path(data_dir).rglob("dataset_info.json"))
    with pytest.raises(FileNotFoundError, match="not built"):
        gtea61.load_source("S1", data_dir=data_dir, config=config)
    with pytest.raises(Exception):  # noqa: B017  (whatever tfds raises: nothing is loadable)
        tfds.data_source(f"gtea61/{config}", split="S1", data_dir=str(data_dir), download=False)


def test_wrong_folder(tmp_path):
    (tmp_path / "stuff" / "videos").mkdir(parents=True)
    with pytest.raises(gtea61.LayoutError, match=r"no GTEA61 layout found in .*stuff.*processed_frames2"):
        gtea61.build(manual_dir=tmp_path / "stuff", data_dir=tmp_path / "tfds")
    _assert_nothing_built(tmp_path / "tfds")


def test_unknown_class_folder(small_tree, tmp_path):
    flow_y = small_tree.root / "flow_y_processed" / "S2"
    (flow_y / "take_jam").rename(flow_y / "take_jamm")
    with pytest.raises(gtea61.UnknownClassError, match=r"flow_y_processed/S2/take_jamm.*did you mean take_jam"):
        gtea61.build(manual_dir=small_tree.root, data_dir=tmp_path / "tfds")


def test_corrupt_frame_fails_the_build_and_leaves_nothing(tmp_path):
    syn = make_synthetic(tmp_path / "GTEA61", classes=CLASSES[:3], subjects=["S1", "S2"], corrupt=1)
    (bad,) = syn.corrupt
    with pytest.raises(gtea61.CorruptFrameError, match=re.escape(str(bad))):
        gtea61.build(manual_dir=syn.root, data_dir=tmp_path / "tfds")
    _assert_nothing_built(tmp_path / "tfds")
    # Once the file is fixed, the same command builds.
    shutil.copyfile(next(f for f in sorted(bad.parent.iterdir()) if f != bad), bad)
    gtea61.build(manual_dir=syn.root, data_dir=tmp_path / "tfds")
    assert len(gtea61.load_source("S1+S2", data_dir=tmp_path / "tfds")) == 6


def test_frame_counts_disagree(small_tree, tmp_path):
    flow_dir = small_tree.root / "flow_x_processed" / "S1" / "take_tea" / "1"
    last = _frame_files(flow_dir, r"flow_x_\d{5}\.png")[-1]
    last.unlink()
    with pytest.raises(gtea61.FrameCountError, match=r"S1/take_tea/1: frame counts disagree.*flow_x"):
        gtea61.build(manual_dir=small_tree.root, data_dir=tmp_path / "tfds")
    _assert_nothing_built(tmp_path / "tfds")


def test_gap_in_frame_numbers(small_tree, tmp_path):
    (small_tree.root / "processed_frames2" / "S2" / "open_jam" / "1" / "rgb" / "rgb0002.png").unlink()
    with pytest.raises(gtea61.FrameCountError, match=r"S2/open_jam/1/rgb .*missing frame numbers \[2\]"):
        gtea61.build(manual_dir=small_tree.root, data_dir=tmp_path / "tfds", config="rgb")


@pytest.mark.parametrize("missing, configs", [("flow_y", "rgb_mmaps, rgb"), ("mmaps", "rgb_flow, rgb, flow")])
def test_missing_modality_names_folder_and_configs(tmp_path, missing, configs):
    syn = make_synthetic(tmp_path / "GTEA61", classes=CLASSES[:2], subjects=["S4"], missing_modality=missing)
    folder = {"flow_y": "flow_y_processed", "mmaps": "processed_frames2"}[missing]
    with pytest.raises(gtea61.MissingModalityError, match=rf"{missing} not found.*{folder}.*: {configs}\."):
        gtea61.build(manual_dir=syn.root, data_dir=tmp_path / "tfds", config="all")


def test_one_clip_without_maps(small_tree, tmp_path):
    shutil.rmtree(small_tree.root / "processed_frames2" / "S1" / "take_tea" / "1" / "mmaps")
    with pytest.raises(gtea61.MissingModalityError, match=r"S1/take_tea/1 has no mmaps folder"):
        gtea61.build(manual_dir=small_tree.root, data_dir=tmp_path / "tfds")


def test_map_that_is_not_binary(small_tree, tmp_path):
    path = small_tree.root / "processed_frames2" / "S2" / "take_jam" / "1" / "mmaps" / "map0001.png"
    cv2.imwrite(str(path), np.full((48, 80), 128, np.uint8))
    with pytest.raises(gtea61.FrameFormatError, match=rf"{re.escape(str(path))}: motion map values"):
        gtea61.build(manual_dir=small_tree.root, data_dir=tmp_path / "tfds")
    _assert_nothing_built(tmp_path / "tfds")


def test_frames_of_different_sizes(small_tree, tmp_path):
    path = small_tree.root / "flow_y_processed" / "S1" / "open_jam" / "1" / "flow_y_00001.png"
    cv2.imwrite(str(path), np.full((40, 80, 3), 128, np.uint8))
    with pytest.raises(gtea61.FrameFormatError, match=r"S1/open_jam/1: frames differ in size"):
        gtea61.build(manual_dir=small_tree.root, data_dir=tmp_path / "tfds")


def test_colour_coded_flow(small_tree, tmp_path):
    path = small_tree.root / "flow_x_processed" / "S2" / "take_tea" / "1" / "flow_x_00002.png"
    img = cv2.imread(str(path))
    img[..., 2] = 255 - img[..., 2]
    cv2.imwrite(str(path), img)
    with pytest.raises(gtea61.FrameFormatError, match=rf"{re.escape(str(path))}: expected a one-channel"):
        gtea61.build(manual_dir=small_tree.root, data_dir=tmp_path / "tfds")
