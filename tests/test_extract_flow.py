"""Flow extraction of clips into the authors' layout: the library (extract_clip) and the command (extract_flow)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ego_jax.data import flow, video

DATA = Path(__file__).parent / "data" / "gtea61_sample"
TINY = flow.TVL1(nscales=2, warps=2, inner_iterations=20)  # a short TV-L1 budget: tests only


def _panning_frames(n=5, size=(48, 64), step=(1.0, -0.5)):
    """A GTEA61 frame seen by a camera that pans `step` px per frame: the true flow is step everywhere."""
    image = cv2.cvtColor(cv2.imread(str(DATA / "rgb0011.png")), cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (2 * size[1], 2 * size[0]), interpolation=cv2.INTER_AREA)
    frames = []
    for k in range(n):
        shift = np.float32([[1, 0, k * step[0] - size[1] / 2], [0, 1, k * step[1] - size[0] / 2]])
        frames.append(cv2.warpAffine(image, shift, size[::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames)


def test_extract_clip_writes_the_authors_layout_and_skips_when_done(tmp_path):
    frames = _panning_frames()
    source = video.write_video(tmp_path / "pan.mkv", frames, fps=10)  # lossless
    spec = flow.FlowSpec(method="tvl1", tvl1=TINY)
    result = flow.extract_clip(source, tmp_path / "out", "S1/take_jam/1", spec=spec)
    assert result == flow.ClipResult("S1/take_jam/1", pairs=4)
    for kind, prefix in flow.KINDS.items():
        files = sorted((tmp_path / "out" / kind / "S1/take_jam/1").iterdir())
        assert [f.name for f in files] == [f"{prefix}_{k:05d}.jpg" for k in range(1, 5)]
    # image k is the second frame of pair k (dense_flow): image_00001 = the video's frame 2
    first = cv2.cvtColor(cv2.imread(str(tmp_path / "out/frames/S1/take_jam/1/image_00001.jpg")), cv2.COLOR_BGR2RGB)
    errors = [np.abs(first.astype(int) - f).mean() for f in frames]
    assert np.argmin(errors) == 1 and errors[1] < 3, errors
    fx, fy = (
        flow.dequantise(cv2.imread(str(tmp_path / f"out/{k}/S1/take_jam/1/{k}_00002.jpg"), 0))
        for k in ("flow_x", "flow_y")
    )
    assert abs(np.median(fx[8:-8, 8:-8]) - 1.0) < 0.2 and abs(np.median(fy[8:-8, 8:-8]) + 0.5) < 0.2
    assert not (tmp_path / "out" / flow.clip.PARTIAL / "S1/take_jam/1").exists()

    before = (tmp_path / "out/flow_x/S1/take_jam/1/flow_x_00001.jpg").stat().st_mtime_ns
    assert flow.extract_clip(source, tmp_path / "out", "S1/take_jam/1", spec=spec).skipped
    assert (tmp_path / "out/flow_x/S1/take_jam/1/flow_x_00001.jpg").stat().st_mtime_ns == before
    with pytest.raises(flow.FlowSpecMismatch, match="S1/take_jam/1.*another output folder"):
        flow.extract_clip(source, tmp_path / "out", "S1/take_jam/1", spec=flow.FlowSpec(method="tvl1", bound=15))


def test_a_half_written_clip_is_redone(tmp_path):
    frames = _panning_frames(3)
    spec = flow.FlowSpec(method="farneback", image_ext=".png")
    fields, cameras = flow.clip_flow(frames, spec)
    assert fields.shape == (2, 48, 64, 2) and cameras is None
    # a run killed after moving frames/ into place, before the marker: flow_x/ missing, stale staging left
    out = tmp_path / "out"
    (out / "frames/clip").mkdir(parents=True)
    (out / "frames/clip/image_00001.png").write_bytes(b"stale")
    (out / flow.clip.PARTIAL / "clip/flow_x").mkdir(parents=True)
    assert not flow.done(out, "clip", spec)
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"img{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    assert flow.extract_clip(folder, out, spec=spec).pairs == 2
    assert sorted(p.name for p in (out / "frames/clip").iterdir()) == ["image_00001.png", "image_00002.png"]
    np.testing.assert_array_equal(
        cv2.imread(str(out / "flow_x/clip/flow_x_00002.png"), cv2.IMREAD_UNCHANGED), flow.quantise(fields[1, ..., 0])
    )  # PNG: exactly the quantised field
    assert json.loads((out / flow.clip.DONE / "clip.json").read_text())["spec"]["method"] == "farneback"
    assert not (out / flow.clip.PARTIAL / "clip").exists()


def test_specs_that_cannot_run_are_refused():
    with pytest.raises(ValueError, match="Farneback flow has the opencv backend only"):
        flow.FlowSpec(method="farneback", backend="jax")
    with pytest.raises(ValueError, match="unknown flow method 'brox'"):
        flow.FlowSpec(method="brox")
    with pytest.raises(ValueError, match="median_filtering=7"):
        flow.TVL1(median_filtering=7)


def _run(*args):
    from ego_jax.cli import extract_flow

    return extract_flow.main([str(a) for a in args])


def test_command_shards_resumes_and_reports_corrupt_videos(tmp_path, capsys):
    frames = _panning_frames(3, size=(32, 48))
    for name in ("S1/a/1", "S1/a/2", "S2/b/1"):
        video.write_video(tmp_path / "in" / f"{name}.mp4", frames, fps=10)
    good = (tmp_path / "in/S1/a/1.mp4").read_bytes()
    (tmp_path / "in/S1/a/3.mp4").write_bytes(good[: len(good) // 3])  # truncated: unreadable
    (tmp_path / "in/.hidden.mp4").write_bytes(good)
    common = (
        "--input",
        tmp_path / "in",
        "--out",
        tmp_path / "out",
        "--backend",
        "opencv",  # warp_tvl1
        "--tvl1",
        "nscales=1",
        "--tvl1",
        "inner_iterations=5",
    )
    assert _run(*common, "--shard", "0/2") == 1  # S1/a/1, S1/a/3 (corrupt)
    out, err = capsys.readouterr()
    assert "2 clips (shard 0/2 of 4)" in out and "1 clips extracted (2 pairs" in out and "1 failed" in out
    assert "failed: S1/a/3: cannot decode video" in err and "3.mp4" in err
    assert _run(*common, "--shard", "1/2", "--workers", "2") == 0  # S1/a/2, S2/b/1 in 2 processes
    assert "2 clips extracted" in capsys.readouterr().out
    assert sorted(
        p.relative_to(tmp_path / "out/flow_y").as_posix() for p in (tmp_path / "out/flow_y").glob("*/*/*")
    ) == ["S1/a/1", "S1/a/2", "S2/b/1"]
    assert _run(*common, "--shard", "1/2") == 0
    assert "0 clips extracted (0 pairs, 0.0 pairs/s), 2 already done, 0 failed" in capsys.readouterr().out
    assert _run(*common[:-4], "--shard", "1/2") == 2  # another TV-L1: refused before any work
    assert "was extracted with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run(*common, "--shard", "2/2")
    assert "expected 0 <= I < N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run(*common, "--tvl1", "iterations=3")
    assert "KEY one of tau, lambda_" in capsys.readouterr().err


def test_synthetic_videos_to_warp_flow_to_builder_to_the_quickstart_flow_stage(tmp_path, capsys):
    """Raw videos -> extract_flow.py (jax backend, warp flow) -> the GTEA61 builder (authors' layout) -> training."""
    import runpy

    from configs import quickstart
    from ego_jax.data import gtea61, synthetic
    from ego_jax.specs import RunSpec
    from ego_jax.train import loop

    classes = ("take_jam", "open_jam")
    synthetic.make_synthetic(tmp_path / "videos", preset="tiny", classes=classes, clips_per_class=1, layout="video")
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "extract_flow.py"))["main"]
    fast = "--backend jax --batch 8 --tvl1 nscales=1 --tvl1 warps=1 --tvl1 inner_iterations=10".split()
    assert script([f"--input={tmp_path}/videos", f"--out={tmp_path}/GTEA61", "--workers=2", *fast]) == 0
    assert "8 clips extracted" in capsys.readouterr().out
    one = tmp_path / "videos/S1/take_jam/1.mp4"  # optical flow of one video (the same TV-L1 program)
    assert script([f"--input={one}", f"--out={tmp_path}/optical", "--method=tvl1", *fast]) == 0
    assert len(list((tmp_path / "optical/flow_x/1").iterdir())) == len(video.read_frames(one)) - 1
    gtea61.build(manual_dir=tmp_path / "GTEA61", data_dir=tmp_path / "tfds", config="flow")
    assert len(gtea61.load_source("S2", data_dir=tmp_path / "tfds", config="flow")) == 2

    c = quickstart.get_config()
    c.recipe = ("flow",)
    c.data.data_dir, c.data.builder_config = str(tmp_path / "tfds"), "flow"
    c.data.update({"crop": 32, "resize": 36, "stack": 2, "flow_eval_stacks": 1, "worker_count": 0})
    c.model.depth, c.model.width, c.batch_size, c.eval_batch_size = 18, 4, 4, 4
    c.stages.flow.epochs = 1
    assert loop.train(RunSpec.from_config(c), str(tmp_path / "work"))
    assert (tmp_path / "work/flow/DONE").exists()
