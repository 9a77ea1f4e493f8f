"""A trained model in use: predict.py agrees with evaluate.py clip by clip, runs on videos (whole and in windows,
CAM videos, timeline), compiles once per shape; extract_features writes, reloads and resumes; a folder of your own
videos builds, fine-tunes from the trained model and evaluates.

The workdir is the quickstart's recipe (configs/quickstart.py: RGB stage 1 -> 2, flow, joint) trained for one
epoch per stage at the tiny test sizes on a generated GTEA61 of 3 classes.
"""

import json
import pathlib
import shutil

import cv2
import numpy as np
import pytest
from absl import flags
from flax import nnx
from test_train_e2e import TINY, run_script, tiny

from configs import flow as flow_config, quickstart
from ego_jax import inference, recipes
from ego_jax.cli import extract_features
from ego_jax.data import clip_files, flow, folder, gtea61, standins, synthetic, video
from ego_jax.data.folder import layout as folder_layout
from ego_jax.data.synthetic import PRESETS
from ego_jax.specs import RunSpec
from ego_jax.train import loaders, loop, stage as stage_lib, workdir as workdir_lib

CLASSES = PRESETS["quickstart"]["classes"][:3]
STAGES = ("rgb_stage2", "flow", "joint")  # one per protocol: rgb, flow, joint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run specs, workdir, S2 clip frames {clip id: (N, H, W, 3)}); every stage evaluated (eval/predictions.jsonl)."""
    root = tmp_path_factory.mktemp("inference")
    synthetic.make_synthetic(root / "manual", preset="tiny", classes=CLASSES, clips_per_class=1, workers=1)
    gtea61.build(manual_dir=root / "manual", data_dir=root / "tfds", config="all")
    run = RunSpec.from_config(tiny(quickstart, str(root / "tfds"), args="frames=2"))
    work = root / "W"
    assert loop.train(run, str(work))
    for stage in STAGES:
        workdir_lib.evaluate_workdir(run, work, stage=stage)
    frames = {}
    for clip in sorted((root / "manual" / "processed_frames2" / "S2").glob("*/*")):
        files = sorted((clip / "rgb").glob("*.png"))
        frames[f"S2/{clip.parent.name}/{clip.name}"] = np.stack(
            [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
        )
    return run, work, frames


def _evaluated(work, stage) -> dict:
    return {r["clip"]: r for r in map(json.loads, open(work / stage / "eval" / "predictions.jsonl"))}


def test_predict_script_agrees_with_evaluate_and_runs_on_videos(trained, tmp_path):
    """predict.py on split:S2 gives evaluate.py's logits clip by clip for the rgb, flow and joint stages; on the
    same clips as lossless videos the RGB stage's logits are the same again; the other stages compute flow from
    the videos; a long video is predicted in windows (timeline CSV and plot); CAM videos are written."""
    spec, work, frames = trained
    videos = tmp_path / "videos"
    for clip, clip_frames in frames.items():  # ffv1 .mkv: lossless, so the frames the model sees are the same
        video.write_video(videos / f"{clip.replace('/', '_')}.mkv", clip_frames, fps=8)
    long = video.write_video(tmp_path / "long.mkv", np.concatenate(list(frames.values())), fps=8)
    out = tmp_path / "out"
    run = run_script(
        "predict.py",
        f"--workdir={work}",
        f"--stage={','.join(STAGES)}",
        "--input=split:S2",
        f"--input={videos}",
        f"--input={long}",
        "--window=1",
        "--stride=0.5",
        "--logits",
        f"--out={out}",
        "--flow_method=farneback",
        "--top=2",
        timeout=900,
    )
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
            assert (mine[clip]["step"], mine[clip]["checkpoint"]) == (
                json.loads((work / stage / "DONE").read_text())["step"],
                "final",
            )
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
    assert cams.shape[0] == spec.data.frames and cams.shape[2] > cams.shape[1]
    assert not list((out / "flow").glob("*.mp4"))  # no attention, no motion head: no CAM video


def test_one_compilation_per_input_shape_and_batches_over_devices(trained):
    spec, work, frames = trained
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
    assert first[0]["attention"].shape == (spec.data.frames, 1, 1) and first[0]["feature"].shape == (32,)


def test_an_unfinished_stage_is_refused_unless_asked_then_predicts_with_its_newest_checkpoint(trained, tmp_path):
    """A stage with checkpoints but no DONE (still training, or killed): load refuses it naming --allow_unfinished;
    with allow_unfinished it predicts with the newest checkpoint, whose step it reports as not final."""
    _, work, frames = trained
    shutil.copy(work / "config.json", tmp_path / "config.json")
    shutil.copytree(work / "rgb_stage2", tmp_path / "rgb_stage2")
    (tmp_path / "rgb_stage2" / "DONE").unlink()
    with pytest.raises(FileNotFoundError, match=r"stage 'rgb_stage2' is not finished .* pass --allow_unfinished"):
        inference.load(tmp_path, "rgb_stage2")
    # batch 8: not the shapes test_one_compilation counts
    unfinished = inference.load(tmp_path, "rgb_stage2", allow_unfinished=True, batch_size=8)
    steps = [int(d.name) for d in (tmp_path / "rgb_stage2" / "checkpoints").iterdir() if d.name.isdigit()]
    assert unfinished.info["step"] == max(steps) and unfinished.info["finished"] is False
    clip = next(iter(frames.values()))
    finished = inference.load(work, "rgb_stage2", batch_size=8)  # the same newest checkpoint, finished there
    np.testing.assert_array_equal(unfinished(clip)["logits"], finished(clip)["logits"])


def test_an_ms_model_gives_its_motion_map_cam_and_feature():
    """A Predictor of an Ego-RNN with an MS head: the clip's MS map, CAM and pooled c_T are the model's outputs on
    the evaluation's clip (sampled frames, centre crop)."""
    from ego_jax.data import pipeline  # noqa: PLC0415
    from ego_jax.data.clip_spec import ClipSpec  # noqa: PLC0415
    from ego_jax.models import EgoRNN  # noqa: PLC0415
    from ego_jax.streams import normalize_rgb  # noqa: PLC0415

    model = EgoRNN(
        3, depth=18, width=4, ms_head=dict(kind="cls", tap="layer4", hidden=4, grid=(1, 1)), rngs=nnx.Rngs(0)
    )
    predictor = inference.Predictor(
        model, "ego_rnn", ClipSpec("rgb", False, frames=2, crop=32, resize=36), ["a", "b", "c"], batch_size=4
    )
    frames = np.random.default_rng(0).integers(0, 256, (5, 40, 48, 3), np.uint8)
    got = predictor(frames, top=3)
    model.eval()
    clip = pipeline.load_clip({"rgb": list(frames), "label": 0}, predictor.spec, None)
    want = model(normalize_rgb(clip["rgb"][None]))
    assert got["ms"].shape == (2, 1, 1, 2) and got["attention"].shape == (2, 1, 1) and got["feature"].shape == (32,)
    for key in ("logits", "ms", "attention", "feature"):
        np.testing.assert_allclose(got[key], want[key][0], rtol=1e-5, atol=1e-5, err_msg=key)
    assert [name for name, _ in got["top"]] == [["a", "b", "c"][c] for c in np.argsort(-want["logits"][0])]


def test_features_are_written_reloaded_and_resumed(trained, tmp_path, capsys):
    """Killed in its third batch, extract_features goes on after the clips it saved; the file equals the
    predictor's outputs and reloads with np.load; the command writes the same for a split, with a progress bar."""
    spec, work, _ = trained
    predictor = inference.load(work, "joint")
    split = loaders.test_source(spec)
    # The 3 test clips three times over (9 clips, 3 batches of 4), under their own ids.
    source = inference.Subset(split, [0, 1, 2] * 3, [f"clip{i}" for i in range(9)])
    want = {c["clip"]: c for c in predictor.predict(source)}
    out = tmp_path / "features.npz"

    class Failing(inference.Subset):
        def __getitem__(self, i):
            if i == 8:
                raise RuntimeError("killed")  # as a kill would stop the command there
            return super().__getitem__(i)

    with pytest.raises(OSError, match="killed"):  # the loader names the example it could not read
        inference.extract_features(
            predictor, Failing(split, [0, 1, 2] * 3, source.ids), out, save_every=1, progress=False
        )
    partial = np.load(tmp_path / "features.partial.npz")
    assert not out.exists() and list(partial["clip"]) == source.ids[:8]
    predicted = []
    original = predictor.predict
    predictor.predict = lambda todo, **kw: (predicted.append(len(todo)), original(todo, **kw))[1]
    arrays = inference.extract_features(predictor, source, out, save_every=1, progress=False)
    assert predicted == [1]  # only the clip the killed run had not saved
    assert not (tmp_path / "features.partial.npz").exists()
    saved = np.load(out)
    assert list(saved["clip"]) == source.ids and str(saved["stage"]) == "joint"
    for i, clip in enumerate(saved["clip"]):
        np.testing.assert_allclose(saved["feature"][i], want[clip]["feature"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(saved["logits"][i], want[clip]["logits"], rtol=1e-6, atol=1e-6)
        assert saved["prediction"][i] == np.argmax(want[clip]["logits"])
        assert gtea61.CLASSES[saved["label"][i]] == want[clip]["label"]
    assert saved["feature"].shape == (9, 64) and np.array_equal(arrays["feature"], saved["feature"])
    assert list(saved["class_names"]) == predictor.class_names

    # The command, in this process (its flags removed after, as another command's process would not have them)
    before = set(flags.FLAGS)
    try:
        with pytest.raises(SystemExit) as exit_:
            extract_features.main(
                [
                    "extract_features",
                    f"--workdir={work}",
                    "--stage=joint",
                    "--input=split:S2",
                    f"--out={tmp_path / 'split.npz'}",
                ]
            )
    finally:
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)
    assert not exit_.value.code
    assert "3/3" in capsys.readouterr().err  # the progress bar
    saved = np.load(tmp_path / "split.npz")
    assert list(saved["clip"]) == inference.clip_ids(split) and str(saved["step"]) == str(predictor.info["step"])
    for i in range(3):
        np.testing.assert_allclose(saved["feature"][i], want[f"clip{i}"]["feature"], rtol=1e-6, atol=1e-6)


class _Head(nnx.Module):
    """What load_flat reads of a stream model: a stem and a class head named `classifier`."""

    def __init__(self, num_classes: int, seed: int):
        rngs = nnx.Rngs(seed)
        self.conv1 = nnx.Conv(4, 2, (3, 3), rngs=rngs)
        self.classifier = nnx.Linear(2, num_classes, rngs=rngs)


def test_a_classifier_with_another_class_count_is_replaced_and_logged(caplog):
    model, trained_61 = _Head(3, seed=0), _Head(61, seed=1)
    flat = {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(trained_61))}
    fresh = np.asarray(model.classifier.kernel[...])
    with caplog.at_level("WARNING"):
        stage_lib.load_flat(model, flat, "W/flow")
    assert "classifier replaced" in caplog.text and "classifier/kernel (2, 61) -> (2, 3)" in caplog.text
    np.testing.assert_array_equal(model.classifier.kernel[...], fresh)
    np.testing.assert_array_equal(model.conv1.kernel[...], flat["conv1/kernel"])
    flat["conv1/kernel"] = flat["conv1/kernel"][..., :1]  # any other mismatch stays an error
    with pytest.raises(ValueError, match="conv1/kernel has shape"):
        stage_lib.load_flat(model, flat, "W/flow")


def test_init_from_a_reference_checkpoint_replaces_its_classifier(tmp_path, caplog):
    """init=P.pth: the recipe's one ImageNet stage starts from the authors' whole model (converted; its 61-class
    classifier replaced, logged); a recipe with two such stages is refused."""
    torch = pytest.importorskip("torch")
    from configs import two_stream  # noqa: PLC0415
    from ego_jax import streams  # noqa: PLC0415
    from ego_jax.convert import reference, torch_reference as ref  # noqa: PLC0415

    sd = ref.random_flow_state_dict(depth=18, width=4, stack=2, num_classes=61)
    path = tmp_path / "model_flow_state_dict.pth"
    torch.save(ref.to_torch(sd), path)
    config = flow_config.get_config(f"data=folder,init={path}")
    assert config.stages.flow.init_from.to_dict() == {"model": str(path)}
    with pytest.raises(ValueError, match="2 stages of this recipe start from ImageNet"):
        two_stream.get_config(f"init={path}")
    model = streams.get("flow").build(3, dict(depth=18, width=4, stack=2), dtype=np.float32, rngs=nnx.Rngs(0), crop=32)
    fresh = np.asarray(model.classifier.kernel[...])
    with caplog.at_level("WARNING"):
        stage_lib.initialise(model, config.stages.flow.init_from, workdir=str(tmp_path), imagenet_weights="")
    assert "classifier replaced" in caplog.text and "(32, 61) -> (32, 3)" in caplog.text
    np.testing.assert_array_equal(model.classifier.kernel[...], fresh)
    arrays = reference.convert_reference(sd, "flow")
    np.testing.assert_array_equal(model.backbone.conv1.kernel[...], arrays["backbone/conv1/kernel"])


def test_inputs_that_are_not_clips_say_what_was_expected(trained, tmp_path):
    spec, work, _ = trained
    predictor = inference.load(work, "rgb_stage2")
    with pytest.raises(ValueError, match="not in split S2; its clips look like"):
        inference.input_source(predictor, "split:S2:S2/nope/1", spec)
    with pytest.raises(ValueError, match="does not exist: expected a video file"):
        predictor.files(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no clip in"):
        predictor.files(tmp_path / "empty")
    with pytest.raises(ValueError, match="give its frame rate"):
        list(predictor.video(tmp_path / "empty", window=1.0))


def test_a_reference_checkpoint_predicts_with_the_reference_preprocessing(tmp_path):
    """from_reference: an authors' .pth (random weights in their layout) -> the model the converter loads, run on
    the evaluation's centre crop of the clip's sampled frames."""
    torch = pytest.importorskip("torch")
    from ego_jax.convert import torch_reference as ref  # noqa: PLC0415  (needs torch)
    from ego_jax.convert.reference import load_reference  # noqa: PLC0415
    from ego_jax.data import pipeline  # noqa: PLC0415
    from ego_jax.models import EgoRNN  # noqa: PLC0415
    from ego_jax.streams import normalize_rgb  # noqa: PLC0415

    sd = ref.random_rgb_state_dict(depth=18, width=4, num_classes=3)
    torch.save(ref.to_torch(sd), tmp_path / "model_rgb_state_dict.pth")
    predictor = inference.from_reference(
        tmp_path / "model_rgb_state_dict.pth",
        "ego_rnn",
        num_classes=3,
        model_kwargs=dict(depth=18, width=4),
        frames=3,
        crop=32,
        resize=36,
    )
    assert predictor.class_names == ["0", "1", "2"] and predictor.info["kind"] == "ego_rnn"
    frames = np.random.default_rng(0).integers(0, 256, (7, 40, 50, 3), np.uint8)
    got = predictor(frames)
    model = EgoRNN(3, depth=18, width=4, rngs=nnx.Rngs(1))
    load_reference(model, sd)
    model.eval()
    clip = pipeline.load_clip({"rgb": list(frames), "label": 0}, predictor.spec, None)
    assert clip["rgb"].shape == (3, 32, 32, 3)
    want = model(normalize_rgb(clip["rgb"][None]))["logits"][0]
    np.testing.assert_allclose(got["logits"], want, rtol=1e-5, atol=1e-5)


def test_your_videos_build_fine_tune_from_the_trained_model_and_evaluate(trained, tmp_path, caplog):
    """A folder of class-named videos -> the folder dataset (frames and flow computed at build time) -> the flow
    recipe fine-tuned from the trained workdir's flow stage (its 61-class classifier replaced by a 3-class one,
    logged) and evaluated on the test split by the train loop; its predictor names the build's classes."""
    spec, work, _ = trained
    stand_in = standins.make_folder(tmp_path / "videos", classes=3, videos_per_class=4)
    built = folder.build(
        manual_dir=tmp_path / "videos",
        data_dir=tmp_path / "tfds",
        test_fraction=0.25,
        flow_spec=flow.FlowSpec(method="farneback", short_side=spec.data.resize),
    )
    assert {name: split.num_examples for name, split in built.info.splits.items()} == {"train": 9, "test": 3}
    names = folder.class_names(data_dir=tmp_path / "tfds", config="rgb_flow")
    assert names == sorted(standins.folder_class(c) for c in range(3))
    test = folder.load_source("test", data_dir=tmp_path / "tfds", config="rgb_flow")
    for example in test:  # one held-out video per class, labelled by its folder
        assert names[example["label"]] == workdir_lib.clip_id(example).split("/")[0]

    tuned = recipes.override(
        flow_config.get_config(f"data=folder,init={work}"),
        dict(TINY, **{"data.data_dir": str(tmp_path / "tfds"), "stages.flow.epochs": 1}),
    )
    assert tuned.num_classes == 0 and tuned.stages.flow.init_from.to_dict() == {"model": str(work / "flow")}
    both = quickstart.get_config(f"data=folder,init={work}")  # the two-stream recipe: each ImageNet stage from W's
    assert {name: both.stages[name].init_from.to_dict() for name in both.recipe} == {
        "rgb_stage1": {"model": str(work / "rgb_stage1")},
        "rgb_stage2": {"model": "rgb_stage1"},
        "flow": {"model": str(work / "flow")},
        "joint": {"rgb": "rgb_stage2", "flow": "flow"},
    }
    with caplog.at_level("INFO"):
        assert loop.train(RunSpec.from_config(tuned), str(tmp_path / "W"))
    assert "classifier replaced" in caplog.text and "(32, 61) -> (32, 3)" in caplog.text
    # The trained stage's model (ResNet-18 width 4): every array but the classifier comes from it.
    assert "arrays loaded, 0 kept fresh" in caplog.text
    assert json.loads((tmp_path / "W" / "config.json").read_text())["num_classes"] == 3
    assert json.loads((tmp_path / "W" / "flow" / "eval.json").read_text())["count"] == 3  # evaluated on test

    predictor = inference.load(tmp_path / "W")  # its config.json: the folder's 3 classes, by name
    assert predictor.class_names == names and predictor.info["stage"] == "flow"
    assert sorted(clip_files.find_clips(tmp_path / "videos"), key=lambda c: c.clip_id) == [
        clip_files.ClipFiles(clip, tmp_path / "videos" / f"{clip}.mp4") for clip in sorted(stand_in.labels)
    ]


def test_folder_conventions(tmp_path):
    """Class folders (held-out fraction), train/ test/ folders, and mmaction2 lists with indices or names."""
    for path in ("a/1.mp4", "a/2.mp4", "a/3.mp4", "b/x/1.avi", "b/2.mp4", ".hidden/1.mp4"):
        (tmp_path / "classes" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "classes" / path).write_bytes(b"")
    names, clips, how = folder_layout.scan(tmp_path / "classes", test_fraction=0.34)
    assert (names, how) == (["a", "b"], "class folders")
    assert {c.clip_id: c.label for c in clips} == {"a/1": 0, "a/2": 0, "a/3": 0, "b/x/1": 1, "b/2": 1}
    assert sorted(c.split for c in clips if c.label == 0) == ["test", "train", "train"]
    assert sorted(c.split for c in clips if c.label == 1) == ["test", "train"]
    assert folder_layout.scan(tmp_path / "classes", test_fraction=0.34)[1] == clips  # seeded
    assert {c.split for c in folder_layout.scan(tmp_path / "classes", test_fraction=0)[1]} == {"train"}

    lists = tmp_path / "lists"
    for path in ("v/1.mp4", "v/2.mp4", "v/3.mp4"):
        (lists / path).parent.mkdir(parents=True, exist_ok=True)
        (lists / path).write_bytes(b"")
    (lists / "train.txt").write_text("v/1.mp4 1\nv/2.mp4 0\n\n")
    (lists / "test.txt").write_text("v/3.mp4 1\n")
    (lists / "classes.txt").write_text("cut\nstir\n")
    names, clips, how = folder_layout.scan(lists)
    assert (names, how) == (["cut", "stir"], "lists")
    assert [(c.clip_id, c.split, c.label) for c in clips] == [
        ("v/1", "train", 1),
        ("v/2", "train", 0),
        ("v/3", "test", 1),
    ]
    (lists / "test.txt").write_text("v/3.mp4 stir\n")
    (lists / "train.txt").write_text("v/1.mp4 stir\nv/2.mp4 cut\n")
    assert folder_layout.scan(lists)[0] == ["cut", "stir"]
    (lists / "test.txt").write_text("v/4.mp4 stir\n")
    with pytest.raises(ValueError, match=r"test.txt:1: video .*v/4.mp4 does not exist"):
        folder_layout.scan(lists)
    (lists / "test.txt").write_text("v/1.mp4 stir\n")
    with pytest.raises(ValueError, match="listed twice"):
        folder_layout.scan(lists)
    with pytest.raises(ValueError, match="no class folders"):
        folder_layout.scan(tmp_path / "lists" / "v")


def test_train_and_test_folders_build_their_own_splits_with_the_train_classes_labels(tmp_path):
    """train/<class>/ and test/<class>/ videos: each split holds its own folder's clips, labelled by the sorted
    class folders of train/ (a test/ with only the second class still labels it 1)."""
    stand_in = standins.make_folder(tmp_path / "made", classes=2, videos_per_class=3, size=(32, 32), frames=(4, 4))
    names = sorted(standins.folder_class(c) for c in range(2))
    for clip in stand_in.labels:  # train/: each class's video_000, video_001; test/: names[1]'s video_002 alone
        name, video_name = clip.split("/")
        if name == names[0] and video_name.endswith("2"):
            continue
        split = "test" if video_name.endswith("2") else "train"
        (tmp_path / "videos" / split / name).mkdir(parents=True, exist_ok=True)
        shutil.move(tmp_path / "made" / f"{clip}.mp4", tmp_path / "videos" / split / name)
    build = folder.build(
        manual_dir=tmp_path / "videos",
        data_dir=tmp_path / "tfds",
        config="rgb",
        test_fraction=0.5,
        flow_spec=flow.FlowSpec(method="farneback", short_side=32),
    )
    assert folder.class_names(data_dir=tmp_path / "tfds", config="rgb") == names
    assert json.loads((pathlib.Path(build.data_dir) / folder.SPLIT_FILE).read_text()) == {
        "layout": "split folders"
    }  # no held-out fraction: the folders are the split
    built = {}
    for split in ("train", "test"):
        for example in folder.load_source(split, data_dir=tmp_path / "tfds", config="rgb"):
            built[workdir_lib.clip_id(example)] = (split, names[example["label"]], len(example["rgb"]))
    # 4 frames a video, the first lost to flow as dense_flow loses it (release.py)
    assert built == {
        f"{split}/{name}/video_{i:03d}": (split, name, 3)
        for split, name, i in [
            ("train", names[0], 0),
            ("train", names[0], 1),
            ("train", names[1], 0),
            ("train", names[1], 1),
            ("test", names[1], 2),
        ]
    }


def test_cam_video_frames_and_gif(tmp_path):
    """A CAM video: per frame the frame, its CAM overlay and its motion overlay side by side under the title."""
    from PIL import Image  # noqa: PLC0415

    from ego_jax.viz import cam  # noqa: PLC0415

    frames = np.zeros((3, 32, 32, 3), np.uint8)
    attention = np.zeros((3, 2, 2), np.float32)
    attention[:, 0, 1] = 1.0  # top right
    ms = np.zeros((3, 2, 2, 2), np.float32)
    out = cam.cam_video(frames, attention, ms, title="clip: class 90%", min_size=64)
    assert out.shape[0] == 3 and out.shape[2] == 3 * 64 + 2 * 2 and out.dtype == np.uint8
    overlay = out[0, -64:, 64 + 2 : 2 * 64 + 2]  # the CAM column of the first frame: red at its top right
    assert overlay[8, -8, 0] > overlay[-8, 8, 0]
    cam.write_gif(tmp_path / "c.gif", out, fps=4)
    gif = Image.open(tmp_path / "c.gif")
    assert gif.n_frames == 3 and gif.size == (out.shape[2], out.shape[1])
