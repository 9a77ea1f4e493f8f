"""EGTEA Gaze+, GTEA71 and GTEA Gaze+ builders on their stand-ins (layout, annotation syntax, quirks), the config
switch data=<dataset>,split=k, a recipe trained and evaluated on each with that one argument (tiny sizes), and the
Step-1 suite with data=egtea and with protocol=4fold."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from tiny_suite import TINY

from configs import two_stream
from configs.experiments import step1
from ego_jax import recipes
from ego_jax.data import datasets, egtea, flow, gtea71, gtea_gaze, release, standins, synthetic
from ego_jax.data.decode import decode_gray
from ego_jax.data.manual_dir import AnnotationError, CorruptFrameError, CorruptVideoError
from ego_jax.experiments import cam, runner
from ego_jax.experiments.suite import SuiteSpec
from ego_jax.specs import RunSpec
from ego_jax.train import loop, workdir
from ego_jax.viz import cam as viz_cam

FAST = flow.FlowSpec(tvl1=flow.TVL1(nscales=1, warps=1, inner_iterations=3))  # few TV-L1 iterations


def records(source) -> dict[str, int]:
    return {source[i]["clip_id"].decode(): int(source[i]["label"]) for i in range(len(source))}


def test_egtea_build_holds_every_downloaded_clip_with_its_labels(standin_build):
    """3 actions x 3 participants x 2 clips, one clip not downloaded, stray files, 2 clips of 1-4 frames."""
    stand_in, data_dir = standin_build("egtea")
    ann = stand_in.root / "action_annotation"
    for k in (1, 2, 3):
        built = {
            **records(egtea.load_source(f"train{k}", data_dir=data_dir)),
            **records(egtea.load_source(f"test{k}", data_dir=data_dir)),
        }
        assert built == stand_in.labels  # the missing clip left out, the unlisted video ignored
        test_lines = [line.split() for line in (ann / f"test_split{k}.txt").read_text().splitlines()]
        listed = [c for c, *_ in test_lines if c not in stand_in.missing]
        assert egtea.clip_ids(f"test{k}", data_dir=data_dir) == listed  # in split-file order
        assert records(egtea.load_source(f"test{k}", data_dir=data_dir)) == {
            c: int(a) - 1 for c, a, *_ in test_lines if c in listed
        }
    build = Path(data_dir) / "egtea" / "rgb_flow" / "1.0.0"
    assert json.loads((build / "skipped.json").read_text()) == list(stand_in.missing)
    names = egtea.class_names(data_dir=data_dir)
    assert len(names) == 106 and names[0] == (ann / "action_idx.txt").read_text().split("\n")[0].rsplit(" ", 1)[0]
    verbs = egtea.load_source("test1", data_dir=data_dir, target="verb")
    lines = {c: int(v) - 1 for c, _, v, _ in (x.split() for x in (ann / "test_split1.txt").read_text().splitlines())}
    assert all(int(verbs[i]["label"]) == lines[verbs[i]["clip_id"].decode()] for i in range(len(verbs)))
    train, fit, val = (egtea.clip_ids(s, data_dir=data_dir) for s in ("train1", "fit1", "val1"))
    assert sorted(fit + val) == sorted(train) and not set(fit) & set(val) and val
    everyone = egtea.load_source("P01+P02+P03", data_dir=data_dir)  # the participants' splits hold every clip
    lengths = sorted(len(everyone[i]["rgb"]) for i in range(len(everyone)))
    assert len(lengths) == len(stand_in.labels) and lengths[0] <= 4  # a clip too short for sampling is kept


def test_egtea_errors_name_the_file(tmp_path):
    stand_in = standins.make_egtea(tmp_path / "m", classes=1, participants=1, corrupt=1)
    with pytest.raises(CorruptFrameError, match=str(stand_in.corrupt[0])):
        egtea.build(manual_dir=tmp_path / "m", data_dir=tmp_path / "d1")
    standins.make_egtea(tmp_path / "m", classes=1, participants=1)
    split = tmp_path / "m" / "action_annotation" / "train_split2.txt"
    split.write_text(split.read_text() + "P01-R01-PastaSalad-1-2-F000001-F000002 1 1\n")
    with pytest.raises(AnnotationError, match=rf"{split}:\d+: expected '<clip> <action> <verb> <noun>'"):
        egtea.build(manual_dir=tmp_path / "m", data_dir=tmp_path / "d2")
    stand_in = standins.make_egtea(tmp_path / "m", classes=1, participants=1, extracted=False, corrupt_videos=1)
    with pytest.raises(CorruptVideoError, match=rf"cannot decode video {stand_in.corrupt[0]}"):
        release.build(egtea.Egtea(config="rgb_flow", data_dir=str(tmp_path / "d3"), flow_spec=FAST), tmp_path / "m")


def test_frames_and_warp_flow_are_extracted_from_the_videos(tmp_path):
    """No extracted folders: the builders decode the videos and compute warp flow (ego_jax.data.flow, few TV-L1
    iterations); a clip cut from a video holds exactly its annotated frames, a clip video loses its first."""
    lengths = {}
    for name, module, builder in (("egtea", egtea, egtea.Egtea), ("gtea71", gtea71, gtea71.Gtea71)):
        kwargs = dict(classes=2, participants=1) if name == "egtea" else dict(classes=2, subjects=("S1",))
        stand_in = standins.MAKERS[name](tmp_path / name, extracted=False, **kwargs)
        release.build(builder(config="rgb_flow", data_dir=str(tmp_path / "d"), flow_spec=FAST), tmp_path / name)
        source = module.load_source("P01" if name == "egtea" else "S1", data_dir=tmp_path / "d")
        assert records(source) == stand_in.labels
        for i in range(len(source)):
            clip = source[i]["clip_id"].decode()
            lengths[clip] = len(source[i]["rgb"]), len(source[i]["flow_x"])
            moving = decode_gray(source[i]["flow_x"][len(source[i]["flow_x"]) // 2])
            assert np.abs(moving.astype(int) - 128).max() > 2, clip  # the moving item shows in the warp flow
    for clip, (n, m) in lengths.items():
        first, last = (int(x) for x in clip.rsplit("/", 1)[1].split("-")) if "/" in clip else (0, 0)
        expected = last - first + 1 if "/" in clip else int(clip.split("-F")[-1]) - int(clip.split("-F")[-2])
        assert n == m == expected, clip


@pytest.mark.parametrize("name", ["gtea71", "gtea_gaze"])
def test_gtea_family_builds_clips_of_their_classes(name, standin_build):
    module = {"gtea71": gtea71, "gtea_gaze": gtea_gaze}[name]
    stand_in, data_dir = standin_build(name)
    subjects = "+".join(sorted({c.split("_")[0] for c in stand_in.labels}))
    built = records(module.load_source(subjects, data_dir=data_dir))
    assert built == stand_in.labels  # stir<cup> (GTEA71) / an action of none of the 44 classes left out
    names = module.class_names(data_dir=data_dir)
    if name == "gtea71":
        assert names == sorted({f"{v}_{','.join(o)}" for v, o in standins.GTEA_ACTIONS[:3]})
    else:
        assert names == list(gtea_gaze.CLASSES)
        assert {names[v] for v in built.values()} == set(list(standins.GAZE_ACTIONS)[:3])


def test_config_switch_sets_classes_and_splits():
    c = two_stream.get_config("data=egtea,split=2")
    assert (c.num_classes, c.data.train_split, c.data.test_split, c.data.builder_config) == (
        106,
        "train2",
        "test2",
        "rgb_flow",
    )
    c = two_stream.get_config("data=gtea71,split=4")
    assert (c.num_classes, c.data.train_split, c.data.test_split) == (71, "S1+S2+S3", "S4")
    assert two_stream.get_config("data=gtea_gaze").num_classes == 44
    assert two_stream.get_config("data=egtea,target=verb").num_classes == 19
    c = two_stream.get_config("")
    assert (c.num_classes, c.data.train_split, c.data.test_split) == (61, "S1+S3+S4", "S2")
    assert c.data.builder_config == "all"
    with pytest.raises(ValueError, match=r"protocol splits \(1, 2, 3\), not 4"):
        two_stream.get_config("data=egtea,split=4")
    assert [datasets.protocol("gtea61", k).val for k in (1, 2, 3, 4)] == ["S4", "S4", "S4", "S3"]


# One stage of the two-stream recipe per dataset, the cheapest that shows its path: the flow stage (warp flow stacks)
# on GTEA71 and GTEA Gaze+, the RGB attention stage 1 (RGB frames; its CAMs) on EGTEA.
TRAINED = {"gtea71": "flow", "gtea_gaze": "flow", "egtea": "rgb_stage1"}


def expected_test_clips(name: str, stand_in) -> dict[str, int]:
    """{clip: label} of the stand-in's default protocol test split, read from its annotation files' naming."""
    if name == "egtea":  # test_split1.txt, the clip not downloaded left out
        lines = (stand_in.root / "action_annotation" / "test_split1.txt").read_text().splitlines()
        return {c: stand_in.labels[c] for c, *_ in map(str.split, lines) if c not in stand_in.missing}
    subject = {"gtea71": "S2", "gtea_gaze": "Ahmad"}[name]  # GTEA61's fixed test subject; GTEA Gaze+'s first
    return {c: label for c, label in stand_in.labels.items() if c.split("_")[0] == subject}


@pytest.mark.parametrize("name", TRAINED)
def test_recipe_trains_and_evaluates_with_one_config_argument(name, standin_build, tmp_path, monkeypatch):
    """configs/two_stream.py:data=<name> (+ tiny sizes, one stage) trains on its protocol's training split and is
    evaluated on its test split; the report (and EGTEA's CAM) names the classes of the build's classes.json."""
    stand_in, data_dir = standin_build(name)
    stage = TRAINED[name]
    c = two_stream.get_config(f"data={name},frames=2,init=scratch")
    recipes.override(c, {**dict(TINY), "model.depth": 18, "data.worker_count": 0, "data.data_dir": data_dir})
    c.recipe = (stage,)
    run = RunSpec.from_config(c)
    assert loop.train(run, str(tmp_path))
    trained = json.loads((tmp_path / stage / "config.json").read_text())["identity"]["data"]["train_split"]
    assert (
        trained == {"gtea71": "S1+S3+S4", "gtea_gaze": "Alireza+Carlos+Rahul+Shaghayegh+Yin", "egtea": "train1"}[name]
    )
    test = expected_test_clips(name, stand_in)
    report = workdir.evaluate_workdir(run, tmp_path, stage=stage)
    predictions = [json.loads(line) for line in open(tmp_path / stage / "eval" / "predictions.jsonl")]
    assert {p["clip"]: p["label"] for p in predictions} == test and report["num_examples"] == len(test)
    assert report["split"] == {"gtea71": "S2", "gtea_gaze": "Ahmad", "egtea": "test1"}[name]
    build = json.loads((Path(data_dir) / name / "rgb_flow" / "1.0.0" / "classes.json").read_text())["label"]
    names = list(report["per_class_accuracy"])
    assert len(names) == datasets.NUM_CLASSES[name] and names[: len(build)] == build
    assert set(names[len(build) :]) == {str(i) for i in range(len(build), len(names))}  # a partial GTEA71
    support = {build[label]: list(test.values()).count(label) for label in set(test.values())}
    assert {k: v for k, v in report["per_class_support"].items() if v} == support
    if stage == "rgb_stage1":  # a CAM of a test clip, found by its EGTEA id
        titles, grid = [], viz_cam.compare_grid

        def titled(*args, title, **kwargs):
            titles.append(title)
            return grid(*args, title=title, **kwargs)

        monkeypatch.setattr(viz_cam, "compare_grid", titled)
        clip = sorted(test)[-1]
        (png,) = cam.draw([(run, str(tmp_path), stage, "")], [clip], out_dir=str(tmp_path / "cam"))
        assert os.path.exists(png) and titles[0].split("\n")[:2] == [clip, f"true {build[test[clip]]}"]


def tiny(data_dir, arg):
    s = step1.get_config(f"preset=quickstart,seeds=1,rows=flow,data_dir={data_dir},{arg}")
    s.overrides = s.overrides + TINY
    s.columns = (2,)
    return SuiteSpec.from_config(s)


def test_step1_suite_on_egtea(standin_build, tmp_path):
    _, data_dir = standin_build("egtea")
    out = runner.run_suite(tiny(data_dir, "data=egtea"), str(tmp_path))
    cell = out["rows"][0]["cells"][2]
    run = os.path.join(tmp_path, cell["workdirs"][0], "flow")
    assert json.load(open(os.path.join(run, "eval.json")))["split"] == "test1"
    assert json.load(open(os.path.join(run, "identity.json")))["identity"]["data"]["train_split"] == "train1"
    assert out["title"].startswith("Step 1: Ego-RNN ablations on egtea") or "EGTEA" in out["title"], out["title"]
    names = egtea.class_names(data_dir=data_dir)
    assert [list(r["per_class_accuracy"]) for r in out["runs"]] == [names]  # EGTEA's 106 actions name the columns


def test_step1_suite_4fold(tmp_path, synthetic_gtea61):
    data_dir = synthetic_gtea61(synthetic.PRESETS["quickstart"]["classes"][:3])
    out = runner.run_suite(tiny(data_dir, "protocol=4fold"), str(tmp_path / "w"))
    cell = out["rows"][0]["cells"][2]
    assert sorted(cell["folds"]) == [1, 2, 3, 4] and len(cell["accuracies"]) == 4
    for k, fold in cell["folds"].items():
        path = os.path.join(tmp_path, "w", f"runs/flow/any/fold{k}/seed0/flow/eval.json")
        assert fold["accuracies"] == [json.load(open(path))["accuracy"]] and json.load(open(path))["split"] == f"S{k}"
    assert cell["mean"] == pytest.approx(sum(f["mean"] for f in cell["folds"].values()) / 4)
    md = open(os.path.join(tmp_path, "w", "results.md")).read()
    assert "mean over the 4 protocol splits" in md and "Per split (temporal warp flow)" in md
