"""Experiment suites: stage identity, hyperparameter sets, the step1 and ms suites end to end at tiny sizes.

The suites run at preset=quickstart with the test's smaller sizes on top (ResNet-18 width 4, 32 px crops, 1 epoch,
tiny synthetic set with the quickstart's 6 classes); asserted is the structure, never an accuracy.
"""

import json
import os
import re
import signal
import subprocess
import time

import cv2
import pytest
import tensorflow_datasets as tfds
from test_train_e2e import script
from tiny_suite import TINY, get_config as tiny_suite

from configs import attention, flow, ms_cls, two_stream
from configs.experiments import ms, step1
from ego_jax import recipes
from ego_jax.data import gtea61, synthetic
from ego_jax.experiments import executors, plan, runner
from ego_jax.experiments.suite import SuiteSpec
from ego_jax.specs import RunSpec
from ego_jax.train import loop, sharding
from ego_jax.train.workdir_lock import WorkdirLock, WorkdirLocked, process_alive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600  # seconds for a local-executor suite, far above its time on a loaded 2-core machine


def sessions(w) -> dict:
    """W/hparams read back with tensorboard's event loader -> {'': experiment, session dir: (hparams, scalars)}."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    found = {}
    for folder, _, files in os.walk(os.path.join(w, "hparams")):
        for name in files:
            hparams, scalars = {}, {}
            for event in EventFileLoader(os.path.join(folder, name)).Load():
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name == "hparams":
                        data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                        if data.HasField("experiment"):
                            hparams = data.experiment
                        else:
                            hparams = {
                                k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                                for k, v in data.session_start_info.hparams.items()
                            }
                    else:  # the loader stores scalars as tensors
                        scalars[value.tag] = tensor_util.make_ndarray(value.tensor).item()
            found[os.path.relpath(folder, os.path.join(w, "hparams")).removeprefix(".")] = (hparams, scalars)
    return found


def ids(config) -> dict:
    run = RunSpec.from_config(config)
    return {name: plan.stage_key(run, name) for name in run.recipe}


def changed(config, values) -> dict:
    return ids(recipes.override(config, values))


def test_identity_changes_with_result_fields_only():
    base = ids(attention.get_config("frames=7"))
    for harmless in (
        {"log_every_steps": 1},
        {"eval_batch_size": 3},
        {"eval_every_epochs": 1},
        {"checkpoint_every_epochs": 1},
        {"data.worker_count": 0},
        {"model.scan_unroll": 1},
        {"data.data_dir": "/elsewhere"},
        {"data.flow_eval_stacks": 2},
    ):
        assert changed(attention.get_config("frames=7"), harmless) == base, harmless
    assert ids(attention.get_config("frames=16")).keys() == base.keys()
    for name in base:  # every stage reads RGB frames
        assert ids(attention.get_config("frames=16"))[name] != base[name]
    # stage 1's learning rate changes stage 1 and, through init_from, stage 2
    lr1 = changed(attention.get_config("frames=7"), {"stages.rgb_stage1.optimizer.lr": 5e-4})
    assert lr1["rgb_stage1"] != base["rgb_stage1"] and lr1["rgb_stage2"] != base["rgb_stage2"]
    lr2 = changed(attention.get_config("frames=7"), {"stages.rgb_stage2.optimizer.lr": 5e-4})
    assert lr2["rgb_stage1"] == base["rgb_stage1"] and lr2["rgb_stage2"] != base["rgb_stage2"]
    # the stored eval.json is on the test split: a stage tested elsewhere is another stored stage
    for field in (
        {"seed": 1},
        {"batch_size": 16},
        {"data.train_split": "S1+S3"},
        {"stages.rgb_stage2.epochs": 3},
        {"data.test_split": "S4"},
    ):
        assert changed(attention.get_config("frames=7"), field)["rgb_stage2"] != base["rgb_stage2"], field


def test_identity_shares_what_recipes_share():
    ts7, ts16 = ids(two_stream.get_config("frames=7")), ids(two_stream.get_config("frames=16"))
    assert ts7["flow"] == ts16["flow"] == ids(flow.get_config())["flow"]  # flow does not read the RGB frame count
    assert changed(flow.get_config(), {"data.flow_eval_stacks": 2})["flow"] != ts7["flow"]  # its eval.json does
    assert ts7["joint"] != ts16["joint"]
    att = ids(attention.get_config("frames=7"))
    assert att == {k: ts7[k] for k in att}
    cls = ids(ms_cls.get_config("frames=7"))
    assert cls["rgb_stage1"] == att["rgb_stage1"] and cls["rgb_stage2"] != att["rgb_stage2"]
    # the MS threshold matters to the classification head only
    assert changed(ms_cls.get_config("frames=7"), {"data.ms_threshold": 0.4})["rgb_stage2"] != cls["rgb_stage2"]
    assert changed(attention.get_config("frames=7"), {"data.ms_threshold": 0.4}) == att


def test_search_sets():
    space = (("a", (1, 2, 3)), ("b", ("x", "y")), ("c", (0.1, 0.2, 0.3, 0.4)))
    for n in (2, 3, 5, 24):
        sets = plan.search_sets(space, n, "random", 0)
        assert sets[0] == {"a": 1, "b": "x", "c": 0.1} and len({tuple(s.items()) for s in sets}) == n
        for key, values in space:  # every hyperparameter of the space is varied as far as the sets allow
            assert len({s[key] for s in sets}) == min(n, len(values)), (n, key)
    assert plan.search_sets(space, 3, "random", 0) == plan.search_sets(space, 3, "random", 0)
    assert len({str(plan.search_sets(space, 3, "random", seed)) for seed in range(5)}) > 1  # seeded
    assert len(plan.search_sets(space, 1, "grid", 0)) == 24
    with pytest.raises(ValueError, match="only 24 combinations"):
        plan.search_sets(space, 25, "random", 0)


def test_suite_arguments():
    s = ms.get_config("val=S3,sets=4")
    assert dict(s.folds[0]) == {"split": 2, "train": "S1+S3+S4", "test": "S2", "fit": "S1+S4", "val": "S3"}
    assert s.protocol == "fixed" and s.selection.sets == 4
    with pytest.raises(ValueError, match="never the test subject"):
        ms.get_config("val=S2")
    with pytest.raises(ValueError, match="unknown rows"):
        step1.get_config("rows=lstm")
    assert [r["key"] for r in step1.get_config("rows=flow+convlstm").rows] == ["convlstm", "flow"]


def test_a_bucket_workdir_is_refused_with_the_reason():
    for run in (runner.dry_run, runner.run_suite):
        with pytest.raises(ValueError, match="symlinks, which a bucket cannot hold"):
            run(SuiteSpec.from_config(step1.get_config("seeds=1")), "gs://bucket/suite")


@pytest.fixture(scope="module")
def data_dir(synthetic_gtea61):
    """The quickstart's 6 classes, 1 clip per class and subject: train S1+S3+S4 = 18 clips (4 steps of 4)."""
    return synthetic_gtea61(synthetic.PRESETS["quickstart"]["classes"])


def tiny(module, data_dir, arg="", columns=(2, 3)):
    s = module.get_config(f"preset=quickstart,seeds=2,data_dir={data_dir}" + (f",{arg}" if arg else ""))
    s.overrides = s.overrides + TINY
    s.columns = columns
    return SuiteSpec.from_config(s)


@pytest.fixture(scope="module")
def step1_run(data_dir, tmp_path_factory):
    """Every row but ConvLSTM (a recipe of the same stage kinds; test_train_e2e trains it): 7 stages, not 11."""
    w = str(tmp_path_factory.mktemp("step1"))
    suite = tiny(step1, data_dir, "seeds=1,rows=attention+flow+two_stream")
    out = runner.run_suite(suite, w)
    return suite, w, out


def test_step1_table_structure(step1_run):
    suite, w, out = step1_run
    md = open(os.path.join(w, "results.md")).read()
    assert re.search(r"^\| \| 2 frames \| 3 frames \|$", md, re.M)
    for name in ("ConvLSTM-attention", "temporal warp flow", "two-stream (joint train)"):
        assert re.search(rf"^\| {re.escape(name)} \| \d+\.\d \(1 seed\) \| \d+\.\d \(1 seed\) \|$", md, re.M), name
    assert "Flow row" in md and all(os.path.getsize(os.path.join(w, f"results.{x}")) > 0 for x in ("png", "svg", "pdf"))
    assert not os.path.exists(os.path.join(w, "per_class_diff.png"))  # its rows (ConvLSTM vs attention) not both run
    saved = json.load(open(os.path.join(w, "results.json")))
    for row in saved["rows"]:
        for col, c in row["cells"].items():
            # each cell is the mean of its own runs' eval.json, read back here from the run workdirs
            accs = [json.load(open(os.path.join(w, d, row["stage"], "eval.json")))["accuracy"] for d in c["workdirs"]]
            assert c["accuracies"] == accs and c["mean"] == pytest.approx(sum(accs) / len(accs))
            want = "runs/flow/any/seed0" if row["key"] == "flow" else f"runs/{row['key']}/frames{col}/seed0"
            assert c["workdirs"] == [want]
        assert sum(v is not None for v in saved["runs"][0]["per_class_accuracy"].values()) == 6
    # TensorBoard HParams: the experiment, then one session per run with its hyperparameters and test accuracy
    found = sessions(w)
    experiment = found.pop("")[0]
    assert {m.name.tag for m in experiment.metric_infos} >= {"test/accuracy", "train/loss", "train/wall_s"}
    assert {"row", "frames", "seed"} <= {h.name for h in experiment.hparam_infos}
    assert sorted(found) == sorted("table/" + r["workdir"].removeprefix("runs/") for r in saved["runs"])
    for r in saved["runs"]:
        hparams, scalars = found["table/" + r["workdir"].removeprefix("runs/")]
        assert (hparams["row"], hparams["seed"], hparams["frames"]) == (r["row"], r["seed"], str(r["column"] or "any"))
        assert scalars["test/accuracy"] == pytest.approx(100 * r["accuracy"]) and scalars["train/loss"] > 0


def test_step1_shared_stages_trained_once(step1_run):
    _, w, _ = step1_run
    real = {}
    for row, col in (("attention", "frames2"), ("two_stream", "frames2"), ("flow", "any"), ("two_stream", "frames3")):
        for stage in os.listdir(os.path.join(w, "runs", row, col, "seed0")):
            if stage != "config.json":
                real.setdefault(stage, set()).add(os.path.realpath(os.path.join(w, "runs", row, col, "seed0", stage)))
    assert len(real["flow"]) == 1  # the flow row's stage is two-stream's, at both frame counts
    two_stream_2 = os.path.join(w, "runs", "two_stream", "frames2", "seed0")
    attention_2 = os.path.join(w, "runs", "attention", "frames2", "seed0")
    for stage in ("rgb_stage1", "rgb_stage2"):
        assert os.path.realpath(os.path.join(two_stream_2, stage)) == os.path.realpath(os.path.join(attention_2, stage))
    stages = os.listdir(os.path.join(w, "stages"))
    assert len(stages) == 7  # attention 2 x 2 columns + flow + joint x 2
    for sid in stages:  # each trained in one session: every step logged once
        steps = [
            json.loads(x)["step"] for x in open(os.path.join(w, "stages", sid, "metrics.jsonl")) if "train/loss" in x
        ]
        assert steps and len(steps) == len(set(steps)), sid


class StopAfter(loop.StopRequest):
    """A kill after `steps` train steps of the suite (the loop reads `requested` once a step)."""

    def __init__(self, steps):
        self.left = steps
        super().__init__()

    @property
    def requested(self):
        self.left -= 1
        return self.left < 0

    @requested.setter
    def requested(self, value):
        pass


def test_killed_suite_resumes_to_the_same_table(step1_run, data_dir, tmp_path):
    _, w_full, full = step1_run
    suite = tiny(step1, data_dir, "seeds=1,rows=attention", columns=(2,))
    w = str(tmp_path)
    # rgb_stage1 has 4 steps: it finishes, then rgb_stage2 stops after 2 steps with a checkpoint
    assert runner.run_suite(suite, w, stop=StopAfter(6)) is None
    assert os.path.exists(os.path.join(w, "runs/attention/frames2/seed0/rgb_stage1/DONE"))
    assert not os.path.exists(os.path.join(w, "runs/attention/frames2/seed0/rgb_stage2/DONE"))
    out = runner.run_suite(suite, w)
    assert out["rows"][0]["key"] == full["rows"][0]["key"] == "attention"
    assert out["rows"][0]["cells"][2]["accuracies"] == full["rows"][0]["cells"][2]["accuracies"]
    stage2 = os.path.realpath(os.path.join(w, "runs/attention/frames2/seed0/rgb_stage2"))
    assert os.path.basename(stage2) == os.path.basename(
        os.path.realpath(os.path.join(w_full, "runs/attention/frames2/seed0/rgb_stage2"))
    )
    assert runner.run_suite(suite, w)["rows"] == out["rows"]  # a third run trains nothing and changes nothing


def test_ms_selection_reads_no_test_example(data_dir, tmp_path, monkeypatch):
    w = str(tmp_path)
    opened = []
    real = tfds.data_source

    def recording(name, *, split, **kw):
        opened.append((split, os.path.exists(os.path.join(w, runner.SELECTION))))
        return real(name, split=split, **kw)

    monkeypatch.setattr(tfds, "data_source", recording)
    # MS classification alone stands for both searched rows (the same selection code; 3 stages fewer to train)
    suite = tiny(ms, data_dir, "seeds=1,sets=2,rows=baseline+ms_cls", columns=(2,))
    out = runner.run_suite(suite, w)
    during_selection = {split for split, after in opened if not after}
    assert during_selection == {"S1+S3", "S4"}
    assert ("S2", True) in opened  # the recorder does see the table runs' test split
    val = out["validation"]
    assert [(v["row"], v["set"]) for v in val] == [("ms_cls", k) for k in range(2)]
    for key in ("ms_cls",):
        chosen = [v for v in val if v["row"] == key and v["chosen"]]
        assert len(chosen) == 1
        best = max(sum(v["accuracies"]) for v in val if v["row"] == key)
        assert sum(chosen[0]["accuracies"]) == best
        row = next(r for r in out["rows"] if r["key"] == key)
        assert row["chosen_set"] == {2: chosen[0]["set"]}
        # the table run trains the chosen set on all training subjects
        fields = json.load(open(os.path.join(w, row["cells"][2]["workdirs"][0], "rgb_stage2", "identity.json")))
        assert fields["identity"]["data"]["train_split"] == "S1+S3+S4"
        for k, v in chosen[0]["hyperparameters"].items():
            assert _field(fields, k) == v, k
    for v in val:  # TensorBoard HParams: each validation run, its searched values and validation accuracy
        [(hparams, scalars)] = [
            found
            for path, found in sessions(w).items()
            if path == f"validation/{v['row']}/frames2/val-set{v['set']}-seed0"
        ]
        assert scalars["val/accuracy"] == pytest.approx(100 * v["accuracies"][0])
        assert all(
            hparams[k] == pytest.approx(x) if isinstance(x, float) else hparams[k] == x
            for k, x in v["hyperparameters"].items()
        ), (hparams, v["hyperparameters"])
    md = open(os.path.join(w, "results.md")).read()
    assert "Validation (hyperparameter selection" in md and md.count("| yes |") == 1
    assert "Per-class accuracy, ms_cls minus baseline" in md and os.path.exists(os.path.join(w, "per_class_diff.png"))
    # CAM comparison of the two rows on the suite's clips: frames, baseline CAM, then CAM + MS pred + MS target
    # of the MS model; 32 px frames enlarged to 160, 2 px gaps, under a title band of clip, truth, 2 models.
    assert out["cam"] == [os.path.join(w, "cam", "frames2", c.replace("/", "_") + ".png") for c in suite.cam.clips]
    image = cv2.imread(out["cam"][0])
    assert image.shape == (4 * 18 + 4 + 5 * 162 - 2, 2 * 162 - 2, 3)


def test_clip_index_finds_clips_without_reading_examples(data_dir, monkeypatch):
    source = gtea61.load_source("S1+S3", data_dir=data_dir)
    ids = [x.decode() for x in (source[i]["clip_id"] for i in range(len(source)))]
    assert gtea61.clip_ids("S1+S3", data_dir=data_dir) == ids and len(ids) == 12

    def no_reading(*args, **kwargs):
        raise AssertionError("the clip index must not read the dataset")

    monkeypatch.setattr(tfds, "data_source", no_reading)  # the index was written at build time
    s2 = gtea61.clip_ids("S2", data_dir=data_dir)
    assert sorted(s2) == sorted(f"S2/{c}/1" for c in synthetic.PRESETS["quickstart"]["classes"])


def _field(fields: dict, key: str):
    """identity.json value of a dotted config key of the MS search space ('data.x' or 'stages.<stage>.x.y')."""
    parts = key.split(".")
    node = fields["identity"]["data"] if parts[0] == "data" else fields["identity"]["stage"]
    for part in parts[1 if parts[0] == "data" else 2 :]:
        node = node[part]
    return node


def test_a_stage_trained_elsewhere_is_not_trained_again(data_dir, tmp_path):
    """Every stage trains under its store directory's lock: a serial run refuses a stage a live job holds."""
    w = str(tmp_path)
    run = plan.Plan(tiny(step1, data_dir, "seeds=1,rows=flow", columns=(2,)), w).table_runs({})[0]
    runner.link_stages(w, run)
    with WorkdirLock(runner.stage_dir(w, run.spec, "flow")):  # as a stage job of an executor holds it
        with pytest.raises(WorkdirLocked, match=rf"stages/flow-\w+ is in use by pid {os.getpid()}"):
            runner.train_run(w, run, mesh=sharding.make_mesh(), stop=loop.StopRequest())
    assert not os.path.exists(os.path.join(runner.stage_dir(w, run.spec, "flow"), "metrics.jsonl"))


def _jobs(w) -> dict:
    """{stage name: (stage key, submissions, attempts)} of the stage jobs recorded in W/jobs."""
    jobs = os.path.join(w, "jobs")
    keys = [k for k in os.listdir(jobs) if executors.submissions(jobs, k)] if os.path.isdir(jobs) else []
    return {k.rsplit("-", 1)[0]: (k, executors.submissions(jobs, k), executors.attempts(jobs, k)) for k in keys}


def _wait_for(found, driver, log):
    deadline = time.time() + TIMEOUT
    while not found():
        assert driver.poll() is None, open(log).read()[-4000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)
    return found()


def _end_jobs(w):
    """Kill what is left of the stage jobs (a failed test must not leave processes behind)."""
    for _, subs, attempts in _jobs(w).values():
        for pid, start in [(int(s["job_id"]), s.get("pid_start")) for s in subs] + [(a["pid"], None) for a in attempts]:
            if process_alive(pid, start):
                os.kill(pid, signal.SIGKILL)


def test_local_executor_gives_the_serial_table(step1_run, data_dir, tmp_path, monkeypatch):
    """--executor local --workers 2: each stage a process of its own, in dependency order; stage 2's job preempted
    (submitit's USR2) and requeued; the driver SIGKILLed meanwhile and rerun. The table is the serial run's.

    Two rows, three stages (stage 2 after stage 1, flow beside them): a joint stage's two dependencies are the same
    code path (test_executors.py checks them in the SLURM submission).
    """
    _, w_serial, serial = step1_run
    w, arg = str(tmp_path / "w"), f"data_dir={data_dir},rows=attention+flow,seeds=1"
    for k, v in dict(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4", TF_CPP_MIN_LOG_LEVEL="3").items():
        monkeypatch.setenv(k, v)  # the jobs' environment: the 4 CPU devices of the serial run (conftest)
    log = str(tmp_path / "driver.log")  # a file, not a pipe: the jobs inherit it and outlive the driver
    with open(log, "w") as f:
        driver = subprocess.Popen(
            script(
                "experiment.py",
                f"--suite={ROOT}/tests/tiny_suite.py:{arg}",
                f"--workdir={w}",
                "--executor=local",
                "--workers=2",
            ),
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        # stage 2 starts once stage 1 is done; it trains one step, saves, exits to be requeued and resumes
        first = _wait_for(lambda: _jobs(w).get("rgb_stage2", (0, 0, []))[2], driver, log)[0]
        os.kill(first["pid"], executors.preempt_signal())
        driver.kill()  # the rerun finds stage 1 done, the running jobs by their ids, and submits the rest
        driver.wait(timeout=60)
        suite = SuiteSpec.from_config(tiny_suite(arg))
        out = runner.run_suite(suite, w, executor=executors.Executor("local", workers=2))
    finally:
        if driver.poll() is None:
            driver.kill()
        _end_jobs(w)

    assert [r["key"] for r in out["rows"]] == ["attention", "flow"]
    for row in out["rows"]:  # the table: the serial run's cells of this column, wall times aside
        theirs = next(r for r in serial["rows"] if r["key"] == row["key"])["cells"][2]
        assert {k: v for k, v in row["cells"][2].items() if k != "wall_s"} == {
            k: v for k, v in theirs.items() if k != "wall_s"
        }, row["key"]
    assert [(r["row"], r["per_class_accuracy"]) for r in out["runs"]] == [
        (r["row"], r["per_class_accuracy"])
        for r in serial["runs"]
        if r["row"] in ("attention", "flow") and r["column"] in (2, None)
    ]
    jobs = _jobs(w)
    serial_keys = {
        s: os.path.basename(os.path.realpath(os.path.join(w_serial, "runs/two_stream/frames2/seed0", s)))
        for s in ("rgb_stage1", "rgb_stage2", "flow")
    }
    assert {s: key for s, (key, _, _) in jobs.items()} == serial_keys
    ids = {s: subs[-1]["job_id"] for s, (_, subs, _) in jobs.items()}
    pids = [a["pid"] for _, _, attempts in jobs.values() for a in attempts]
    assert len(set(pids)) == len(pids) and not {driver.pid, os.getpid()} & set(pids)  # processes of their own
    for stage, (key, subs, attempts) in jobs.items():
        assert len(subs) == 1, stage  # submitted once: the rerun found it finished or running
        assert {a["job_id"] for a in attempts} == {ids[stage]} and attempts[-1]["outcome"] == "done", stage
        assert subs[0]["after"] == ({serial_keys["rgb_stage1"]: ids["rgb_stage1"]} if stage == "rgb_stage2" else {})
        for dep in subs[0]["after"]:  # started after the stages it starts from had finished
            assert attempts[0]["start"] >= jobs[dep.rsplit("-", 1)[0]][2][-1]["end"], (stage, dep)
        steps = [
            json.loads(x)["step"] for x in open(os.path.join(w, "stages", key, "metrics.jsonl")) if "train/loss" in x
        ]
        assert steps and len(steps) == len(set(steps)), stage  # no step trained twice
    assert [a["outcome"] for a in jobs["rgb_stage2"][2]] == ["preempted", "done"]
    assert "resuming from step 1" in open(jobs["rgb_stage2"][1][0]["log"]["err"]).read()
    for stage, key in serial_keys.items():  # the resumed stage too: the serial run's results
        assert json.load(open(os.path.join(w, "stages", key, "eval.json"))) == json.load(
            open(os.path.join(w_serial, "stages", key, "eval.json"))
        ), stage
    for stage in ("rgb_stage1", "flow"):  # and the serial run's training, loss for loss
        assert (
            open(os.path.join(w, "stages", serial_keys[stage], "metrics.jsonl")).read()
            == open(os.path.join(w_serial, "stages", serial_keys[stage], "metrics.jsonl")).read()
        ), stage
    md = open(os.path.join(w, "results.md")).read()
    for stage, (key, subs, attempts) in jobs.items():  # the footnote: each stage's job, its runs and its log
        log = re.escape(subs[0]["log"]["err"])
        assert re.search(rf"^\| {key} \| {ids[stage]} \| {len(attempts)} \| \d+ \| {log} \|$", md, re.M), stage
