"""A trained model in use: predict.py agrees with evaluate.py clip by clip, runs on videos (whole and in windows,
CAM videos, timeline), compiles once per shape; extract_features writes, reloads and resumes; fine-tuning.

The workdir is the quickstart's recipe (configs/quickstart.py: RGB stage 1 -> 2, flow, joint) trained for one
epoch per stage at the tiny test sizes on a generated GTEA61 of 3 classes.
"""
import json
import os
import pathlib
import subprocess
import sys

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common, quickstart
from ego_jax import inference
from ego_jax.data import gtea61, synthetic, video
from ego_jax.data.synthetic import PRESETS
from ego_jax.train import evaluate, loop, recipes

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = PRESETS["quickstart"]["classes"][:3]
TINY = {"data.crop": 32, "data.resize": 36, "data.stack": 2, "data.flow_eval_stacks": 2, "model.width": 4,
        "batch_size": 4, "eval_batch_size": 4, "log_every_steps": 2, "eval_every_epochs": 1,
        "checkpoint_every_epochs": 1}
STAGES = ("rgb_stage2", "flow", "joint")  # one per protocol: rgb, flow, joint


def tiny_quickstart(data_dir: str, arg: str = "frames=2"):
    """configs/quickstart.py at the test sizes, one epoch per stage."""
    config = common.override(quickstart.get_config(arg), dict(TINY, **{"data.data_dir": data_dir}))
    for name in config.recipe:
        config.stages[name].epochs = 1
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, workdir, S2 clip frames {clip id: (N, H, W, 3)}); every stage evaluated (eval/predictions.jsonl)."""
    root = tmp_path_factory.mktemp("inference")
    synthetic.make_synthetic(root / "manual", preset="tiny", classes=CLASSES, clips_per_class=1, workers=1)
    gtea61.build(manual_dir=root / "manual", data_dir=root / "tfds", config="all")
    config = tiny_quickstart(str(root / "tfds"))
    work = root / "W"
    assert loop.train(config, str(work))
    for stage in STAGES:
        evaluate.evaluate_workdir(config, work, stage=stage)
    frames = {}
    for folder in sorted((root / "manual" / "processed_frames2" / "S2").glob("*/*")):
        files = sorted((folder / "rgb").glob("*.png"))
        frames[f"S2/{folder.parent.name}/{folder.name}"] = np.stack(
            [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    return config, work, frames


def _evaluated(work, stage) -> dict:
    return {r["clip"]: r for r in map(json.loads, open(work / stage / "eval" / "predictions.jsonl"))}


def _script(name, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], env=env, capture_output=True,
                          text=True, timeout=900)


def test_predict_script_agrees_with_evaluate_and_runs_on_videos(trained, tmp_path):
    """predict.py on split:S2 gives evaluate.py's logits clip by clip for the rgb, flow and joint stages; on the
    same clips as lossless videos the RGB stage's logits are the same again; the other stages compute flow from
    the videos; a long video is predicted in windows (timeline CSV and plot); CAM videos are written."""
    config, work, frames = trained
    videos = tmp_path / "videos"
    for clip, clip_frames in frames.items():  # ffv1 .mkv: lossless, so the frames the model sees are the same
        video.write_video(videos / f"{clip.replace('/', '_')}.mkv", clip_frames, fps=8)
    long = video.write_video(tmp_path / "long.mkv", np.concatenate(list(frames.values())), fps=8)
    out = tmp_path / "out"
    run = _script("predict.py", f"--workdir={work}", f"--stage={','.join(STAGES)}", "--input=split:S2",
                  f"--input={videos}", f"--input={long}", "--window=1", "--stride=0.5", "--logits",
                  f"--out={out}", "--flow_method=farneback", "--top=2")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    n_windows = len(np.arange(0, sum(map(len, frames.values())) - 8 + 1, 4))
    assert len(lines) == len(STAGES) * (2 * len(frames) + n_windows)
    for stage in STAGES:
        evaluated = _evaluated(work, stage)
        assert len(evaluated) == len(frames) == 3
        mine = {line["clip"]: line for line in lines if line["stage"] == stage}
        for clip, row in evaluated.items():
            np.testing.assert_allclose(mine[clip]["logits"], row["logits"], rtol=1e-6, atol=1e-6, err_msg=clip)
            assert mine[clip]["top"][0][0] == gtea61.CLASSES[row["prediction"]]
            assert mine[clip]["label"] == gtea61.CLASSES[row["label"]]
            assert (mine[clip]["step"], mine[clip]["checkpoint"]) == (json.loads(
                (work / stage / "DONE").read_text())["step"], "final")
            from_video = mine[clip.replace("/", "_")]
            if stage == "rgb_stage2":
                np.testing.assert_allclose(from_video["logits"], row["logits"], rtol=1e-6, atol=1e-6)
            assert len(from_video["top"]) == 2 and 0 < sum(p for _, p in from_video["top"]) <= 1 + 1e-6
        windows = [line for line in mine.values() if line["clip"].startswith("long@")]
        assert [w["start"] for w in windows] == pytest.approx([k * 0.5 for k in range(n_windows)])
        assert all(w["end"] - w["start"] == pytest.approx(1.0) for w in windows)
        rows = (out / stage / "long_timeline.csv").read_text().splitlines()
        assert rows[0].startswith("start_s,end_s,class_1,prob_1") and len(rows) == n_windows + 1
        assert cv2.imread(str(out / stage / "long_timeline.png")) is not None
    # CAM videos for the models with attention: the T = 2 frames they saw, the CAM beside each
    cams = video.read_frames(out / "joint" / "S2_take_coffee_1.mp4")
    assert cams.shape[0] == config.data.frames and cams.shape[2] > cams.shape[1]
    assert not (out / "flow").exists()  # no attention, no motion head: nothing to draw


def test_one_compilation_per_input_shape_and_batches_over_devices(trained):
    config, work, frames = trained
    predictor = inference.load(work, "rgb_stage2", batch_size=4)
    assert predictor.mesh.size == 4 and predictor.batch_size == 4
    clip = next(iter(frames.values()))
    source = [{"clip_id": f"c{i}", "rgb": list(clip[: 5 + i])} for i in range(6)]  # 2 batches, one padded
    before = inference.predict_step._cache_size()
    first = list(predictor.predict(source))
    assert inference.predict_step._cache_size() == before + 1
    again = list(predictor.predict(source[:3])) + [predictor(clip)]
    assert inference.predict_step._cache_size() == before + 1  # same shapes: no new compilation
    assert [c["clip"] for c in first] == [f"c{i}" for i in range(6)]
    np.testing.assert_array_equal(again[0]["logits"], first[0]["logits"])
    assert first[0]["attention"].shape == (config.data.frames, 1, 1) and first[0]["feature"].shape == (32,)


def test_features_are_written_reloaded_and_resumed(trained, tmp_path):
    config, work, _ = trained
    predictor = inference.load(work, "joint")
    source = evaluate.test_source(config)
    want = {c["clip"]: c for c in predictor.predict(source)}
    out = tmp_path / "features.npz"

    class Interrupted(Exception):
        pass

    class Failing(list):
        """The split, failing on its third clip (as a kill would stop the command)."""

        def __getitem__(self, i):
            if i == 2:
                raise Interrupted
            return source[i]

    failing = Failing([None] * len(source))
    failing.ids = inference.clip_ids(source)
    with pytest.raises(Interrupted):
        inference.extract_features(predictor, failing, out, save_every=1, progress=False)
    partial = np.load(tmp_path / "features.partial.npz")
    assert not out.exists() and len(partial["clip"]) >= 1
    arrays = inference.extract_features(predictor, source, out, save_every=1, progress=False)
    assert not (tmp_path / "features.partial.npz").exists()
    saved = np.load(out)
    assert list(saved["clip"]) == failing.ids and str(saved["stage"]) == "joint"
    for i, clip in enumerate(saved["clip"]):
        np.testing.assert_allclose(saved["feature"][i], want[clip]["feature"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(saved["logits"][i], want[clip]["logits"], rtol=1e-6, atol=1e-6)
        assert saved["prediction"][i] == np.argmax(want[clip]["logits"])
        assert gtea61.CLASSES[saved["label"][i]] == want[clip]["label"]
    assert saved["feature"].shape == (3, 64) and np.array_equal(arrays["feature"], saved["feature"])


def test_a_classifier_with_another_class_count_is_replaced_and_logged(caplog):
    spec = quickstart.get_config("frames=2").stages.flow.model
    model = recipes.build_model(spec, num_classes=3, dtype=jnp.float32, seed=0, crop=32)
    trained_61 = recipes.build_model(spec, num_classes=61, dtype=jnp.float32, seed=1, crop=32)
    flat = {"/".join(map(str, p)): np.asarray(v.value)
            for p, v in nnx.to_flat_state(nnx.state(trained_61, (nnx.Param, nnx.BatchStat)))}
    fresh = np.asarray(model.classifier.kernel.value)
    with caplog.at_level("WARNING"):
        recipes.load_flat(model, flat, "W/flow")
    assert "classifier replaced" in caplog.text and "classifier/kernel (256, 61) -> (256, 3)" in caplog.text
    np.testing.assert_array_equal(model.classifier.kernel.value, fresh)
    np.testing.assert_array_equal(model.backbone.conv1.kernel.value, flat["backbone/conv1/kernel"])
    flat["backbone/conv1/kernel"] = flat["backbone/conv1/kernel"][..., :3]  # any other mismatch stays an error
    with pytest.raises(ValueError, match="backbone/conv1/kernel has shape"):
        recipes.load_flat(model, flat, "W/flow")


def test_inputs_that_are_not_clips_say_what_was_expected(trained, tmp_path):
    config, work, _ = trained
    predictor = inference.load(work, "rgb_stage2")
    with pytest.raises(ValueError, match="not in split S2; its clips look like"):
        inference.input_source(predictor, "split:S2:S2/nope/1", config)
    with pytest.raises(ValueError, match="does not exist: expected a video file"):
        predictor.files(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no clip in"):
        predictor.files(tmp_path / "empty")
    with pytest.raises(ValueError, match="give its frame rate"):
        list(predictor.video(tmp_path / "empty", window=1.0))
