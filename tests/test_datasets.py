"""EGTEA Gaze+, GTEA71 and GTEA Gaze+ builders on their stand-ins (layout, annotation syntax, quirks), the config
switch data=<dataset>,split=k, and the Step-1 suite with data=egtea and with protocol=4fold (tiny sizes)."""
import json
import os
import runpy
from pathlib import Path

import numpy as np
import pytest
from tiny_suite import TINY

from configs import two_stream
from configs.experiments import step1
from ego_jax.data import datasets, egtea, flow, gtea71, gtea_gaze, release, standins, synthetic
from ego_jax.data.decode import decode_gray
from ego_jax.data.manual_dir import AnnotationError, CorruptFrameError, CorruptVideoError
from ego_jax.experiments import runner
from ego_jax.experiments.suite import SuiteSpec

FAST = flow.FlowSpec(tvl1=flow.TVL1(nscales=1, warps=1, inner_iterations=3))  # few TV-L1 iterations
BUILD = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "build_dataset.py"))["main"]


def records(source) -> dict[str, int]:
    return {source[i]["clip_id"].decode(): int(source[i]["label"]) for i in range(len(source))}


@pytest.fixture(scope="module")
def egtea_dir(tmp_path_factory):
    """3 actions x 3 participants x 2 clips, one clip not downloaded, stray files, 2 clips of 1-4 frames."""
    tmp = tmp_path_factory.mktemp("egtea")
    stand_in = standins.make_egtea(tmp / "manual", missing=1, stray=True, short_clips=2)
    BUILD(["--dataset", "egtea", "--manual_dir", str(tmp / "manual"), "--data_dir", str(tmp / "tfds")])
    return stand_in, str(tmp / "tfds")


def test_egtea_build_holds_every_downloaded_clip_with_its_labels(egtea_dir):
    stand_in, data_dir = egtea_dir
    ann = stand_in.root / "action_annotation"
    for k in (1, 2, 3):
        built = {**records(egtea.load_source(f"train{k}", data_dir=data_dir)),
                 **records(egtea.load_source(f"test{k}", data_dir=data_dir))}
        assert built == stand_in.labels  # the missing clip left out, the unlisted video ignored
        test_lines = [line.split() for line in (ann / f"test_split{k}.txt").read_text().splitlines()]
        listed = [c for c, *_ in test_lines if c not in stand_in.missing]
        assert egtea.clip_ids(f"test{k}", data_dir=data_dir) == listed  # in split-file order
        assert records(egtea.load_source(f"test{k}", data_dir=data_dir)) == {c: int(a) - 1 for c, a, *_ in test_lines
                                                                            if c in listed}
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
def test_gtea_family_builds_clips_of_their_classes(name, tmp_path):
    module = {"gtea71": gtea71, "gtea_gaze": gtea_gaze}[name]
    stand_in = standins.MAKERS[name](tmp_path / "m", short_clips=1)
    BUILD(["--dataset", name, "--manual_dir", str(tmp_path / "m"), "--data_dir", str(tmp_path / "d")])
    subjects = "+".join(sorted({c.split("_")[0] for c in stand_in.labels}))
    built = records(module.load_source(subjects, data_dir=tmp_path / "d"))
    assert built == stand_in.labels  # stir<cup> (GTEA71) / an action of none of the 44 classes left out
    names = module.class_names(data_dir=tmp_path / "d")
    if name == "gtea71":
        assert names == sorted({f"{v}_{','.join(o)}" for v, o in standins.GTEA_ACTIONS[:3]})
    else:
        assert names == list(gtea_gaze.CLASSES)
        assert {names[v] for v in built.values()} == set(list(standins.GAZE_ACTIONS)[:3])


def test_config_switch_sets_classes_and_splits():
    c = two_stream.get_config("data=egtea,split=2")
    assert (c.num_classes, c.data.train_split, c.data.test_split, c.data.builder_config) == (106, "train2", "test2",
                                                                                             "rgb_flow")
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


def tiny(data_dir, arg):
    s = step1.get_config(f"preset=quickstart,seeds=1,rows=flow,data_dir={data_dir},{arg}")
    s.overrides = s.overrides + TINY
    s.columns = (2,)
    return SuiteSpec.from_config(s)


def test_step1_suite_on_egtea(egtea_dir, tmp_path):
    _, data_dir = egtea_dir
    out = runner.run_suite(tiny(data_dir, "data=egtea"), str(tmp_path))
    cell = out["rows"][0]["cells"][2]
    run = os.path.join(tmp_path, cell["workdirs"][0], "flow")
    assert json.load(open(os.path.join(run, "eval.json")))["split"] == "test1"
    assert json.load(open(os.path.join(run, "identity.json")))["identity"]["data"]["train_split"] == "train1"
    assert out["title"].startswith("Step 1: Ego-RNN ablations on egtea") or "EGTEA" in out["title"], out["title"]


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
