"""Every config end to end on a tiny synthetic GTEA61 (ResNet-18 width 4, 32 px, T=2, batch 4, 3 steps/epoch).

Also: exact resume, SIGTERM, non-finite loss, skipped stages, and the clear errors of the train loop.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import attention, convlstm, flow, motion_guided, ms_cls, ms_reg, quickstart, two_stream
from ego_jax import recipes
from ego_jax.cli import common
from ego_jax.data.pipeline import make_loader
from ego_jax.specs import RunSpec
from ego_jax.streams import normalize_rgb
from ego_jax.train import checkpoint, loaders, loop, workdir as workdir_lib
from ego_jax.train.stage import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = "frames=2,data=synthetic,init=scratch"


TINY = {
    "data.crop": 32,
    "data.resize": 36,
    "data.stack": 2,
    "data.flow_eval_stacks": 2,
    "data.worker_count": 0,
    "model.depth": 18,
    "model.width": 4,
    "batch_size": 4,
    "eval_batch_size": 4,
    "log_every_steps": 2,
    "eval_every_epochs": 1,
    "checkpoint_every_epochs": 1,
}


def tiny(config_module, data_dir, *, args=ARGS, epochs=1, **stage_epochs):
    c = config_module.get_config(args)
    recipes.override(c, {**TINY, "data.data_dir": data_dir})
    for name in c.recipe:
        c.stages[name].epochs = stage_epochs.get(name, epochs)
    return c


def script(name: str, *flags: str) -> list[str]:
    """The command line of scripts/<name> with `flags`, run by this Python."""
    return [sys.executable, os.path.join(ROOT, "scripts", name), *flags]


def script_env() -> dict:
    """A script subprocess's environment: this checkout first on the path, JAX on the CPU, TensorFlow quiet."""
    return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")


def run_script(name: str, *flags: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """scripts/<name> run to its end in a subprocess (script_env), stdout and stderr captured as text."""
    return subprocess.run(script(name, *flags), env=script_env(), capture_output=True, text=True, timeout=timeout)


def tiny_flags(config_file: str, data_dir: str, workdir, **values) -> list[str]:
    """scripts/train.py's command line for `tiny` of a config file (values: more --config.KEY=VALUE)."""
    return script(
        "train.py",
        f"--config={config_file}:{ARGS}",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        *(f"--config.{k}={v}" for k, v in {**TINY, **values}.items()),
    )


def final_state(workdir, stage):
    return checkpoint.load_final_state(os.path.join(workdir, stage, "checkpoints"))


def changed(before: dict, after: dict, prefix="") -> set:
    """Paths (under `prefix` in `after`) whose arrays differ from `before`; RNG state ignored."""
    out = set()
    for k, v in after.items():
        if k.startswith(prefix) and "rngs" not in k and not np.array_equal(before[k[len(prefix) :]], v):
            out.add(k)
    return out


def fresh_state(config, stage):
    model = build_model(RunSpec.from_config(config), stage)
    return {
        k: np.asarray(v)
        for k, v in jax.tree_util.tree_flatten_with_path(checkpoint.model_tree(model))[0]
        for k in ["/".join(str(p.key) for p in k)]
    }


def expand(patterns_by_hand, state):
    """Paths of `state` selected by hand-written prefixes/suffix lists (independent of the configs' regexes)."""
    return {k for k in state if any(k.startswith(p) for p in patterns_by_hand)}


L4_CONVS = [f"backbone/layer4/{b}/conv{c}/kernel" for b in (0, 1) for c in (1, 2)]  # ResNet-18: 2 blocks
# The ImageNet fc bias is trainable but cannot move here: it is zero from scratch and only changes the CAM's argmax
# (zero gradient), so coupled weight decay leaves it at zero; the kernel does move.
FC = "backbone/fc/kernel"


EVAL_LOADERS = {"made": [], "closed": []}  # of two_stream_run


def _counted_eval_loaders(make):
    def counted(*args, **kwargs):
        loader = make(*args, **kwargs)
        close = loader.close
        loader.close = lambda: EVAL_LOADERS["closed"].append(loader) or close()
        EVAL_LOADERS["made"].append(loader)
        return loader

    return counted


@pytest.fixture(scope="module")
def two_stream_run(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("two_stream"))
    config = tiny(two_stream, data_dir, joint=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loaders, "eval_loader", _counted_eval_loaders(loaders.eval_loader))
        assert loop.train(RunSpec.from_config(config), workdir)
    return config, workdir


def test_each_stage_builds_its_eval_loader_once_for_all_its_evaluations(two_stream_run):
    config, w = two_stream_run
    evaluations = [
        r
        for stage in config.recipe
        for r in map(json.loads, open(os.path.join(w, stage, "metrics.jsonl")))
        if "eval/accuracy" in r
    ]
    assert len(evaluations) == len(config.recipe) + 1  # joint trains 2 epochs, evaluated after each
    assert len(EVAL_LOADERS["made"]) == len(config.recipe) and EVAL_LOADERS["closed"] == EVAL_LOADERS["made"]


def test_two_stream_all_stages_and_trainable_subsets(two_stream_run):
    config, w = two_stream_run
    for stage in config.recipe:
        done = json.load(open(os.path.join(w, stage, "DONE")))
        ev = json.load(open(os.path.join(w, stage, "eval.json")))
        assert done["step"] == 3 * config.stages[stage].epochs and ev["count"] == 4 and 0 <= ev["accuracy"] <= 1
        rows = [json.loads(line) for line in open(os.path.join(w, stage, "metrics.jsonl"))]
        assert any("lr" in r and "train/loss" in r for r in rows) and any("eval/accuracy" in r for r in rows)
        assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(w, stage)))

    s1, s2, fl, jt = (final_state(w, s) for s in config.recipe)
    # Stage 1: only ConvLSTM + classifier moved away from the (seeded) init; frozen BN statistics untouched.
    assert changed(fresh_state(config, "rgb_stage1"), s1) == expand(["lstm/", "classifier/"], s1)
    # Stage 2 from stage 1: + layer4 conv1/conv2 kernels and the ImageNet fc; no BN parameter or statistic.
    assert changed(s1, s2) == expand(["lstm/", "classifier/", FC, *L4_CONVS], s2)
    # Flow: everything, BN statistics included.
    assert changed(fresh_state(config, "flow"), fl) == set(k for k in fl if "rngs" not in k)
    # Joint from stage 2 + flow: RGB ConvLSTM, layer4 convs, fc; the whole flow layer4 (BN stats too).
    want = expand(["rgb/lstm/", "rgb/" + FC, *["rgb/" + p for p in L4_CONVS], "flow/backbone/layer4/"], jt)
    got = changed(s2, jt, "rgb/") | changed(fl, jt, "flow/")
    assert got == want
    assert {k for k in jt if k.startswith("flow/backbone/layer4/") and k.endswith("/mean")} <= got


def test_configs_sharing_two_stream_stages(data_dir):
    """attention, flow and quickstart run the same stage definitions as two_stream (covered above).

    quickstart with its stage1_backbone=train deviation (covered below); its sizes, epochs and milestones differ.
    """
    ts = two_stream.get_config(ARGS)
    for module in (attention, flow):
        c = module.get_config(ARGS)
        for name in c.recipe:
            assert c.stages[name] == ts.stages[name], (module.__name__, name)
    q, ts = quickstart.get_config(), two_stream.get_config(ARGS + ",stage1_backbone=train")
    assert q.recipe == ts.recipe
    for name in q.recipe:
        a, b = q.stages[name], ts.stages[name]
        assert (a.model.kind, a.trainable, a.bn_train, a.dropout_train, a.init_from, a.optimizer.name) == (
            b.model.kind,
            b.trainable,
            b.bn_train,
            b.dropout_train,
            b.init_from,
            b.optimizer.name,
        ), name


def test_stage1_backbone_train_moves_the_backbone_and_its_bn_statistics(data_dir, tmp_path):
    """stage1_backbone=train: every backbone array moves in stage 1, BN statistics too.

    Except two zero biases that reach the loss only through the CAM softmax, constant on the 1x1 grid of 32 px
    frames (zero gradient; coupled weight decay keeps zeros at zero): the fc bias and the last block's bn2 bias.
    """
    config = tiny(two_stream, data_dir, args=ARGS + ",stage1_backbone=train")
    config.recipe = ("rgb_stage1",)
    assert loop.train(RunSpec.from_config(config), str(tmp_path))
    s1 = final_state(tmp_path, "rgb_stage1")
    got = changed(fresh_state(config, "rgb_stage1"), s1)
    assert got == expand(["lstm/", "classifier/", "backbone/"], s1) - {"backbone/fc/bias", "backbone/layer4/1/bn2/bias"}
    assert {k for k in s1 if k.startswith("backbone/") and k.endswith(("/mean", "/var"))} <= got


def test_convlstm_config(data_dir, tmp_path):
    config = tiny(convlstm, data_dir)
    assert loop.train(RunSpec.from_config(config), str(tmp_path))
    s1, s2 = final_state(tmp_path, "rgb_stage1"), final_state(tmp_path, "rgb_stage2")
    assert changed(s1, s2) == expand(["lstm/", "classifier/", FC, *L4_CONVS], s2)


def test_attention_and_flow_configs_run_end_to_end(data_dir, tmp_path):
    """Their stages equal two_stream's (above), but each config file itself also trains end to end."""
    for module in (attention, flow):
        work = tmp_path / module.__name__.split(".")[-1]
        config = tiny(module, data_dir)
        assert loop.train(RunSpec.from_config(config), str(work))
        for name in config.recipe:
            assert (work / name / "DONE").exists() and json.loads((work / name / "eval.json").read_text())["count"] == 4


@pytest.mark.parametrize("module", [ms_cls, ms_reg])
def test_ms_configs_reuse_a_finished_stage_1(module, data_dir, two_stream_run, tmp_path):
    config = tiny(module, data_dir)
    ts_config, ts_dir = two_stream_run
    assert config.stages.rgb_stage1 == ts_config.stages.rgb_stage1
    shutil.copytree(os.path.join(ts_dir, "rgb_stage1"), tmp_path / "rgb_stage1")
    done_before = (tmp_path / "rgb_stage1" / "DONE").read_text()
    assert loop.train(RunSpec.from_config(config), str(tmp_path))
    assert (tmp_path / "rgb_stage1" / "DONE").read_text() == done_before  # skipped, not retrained
    rows = [json.loads(line) for line in open(tmp_path / "rgb_stage2" / "metrics.jsonl")]
    assert any("train/ms_loss" in r for r in rows)
    s1, s2 = final_state(tmp_path, "rgb_stage1"), final_state(tmp_path, "rgb_stage2")
    start = {**fresh_state(config, "rgb_stage2"), **s1}  # the MS head starts from its seeded init
    assert changed(start, s2) == expand(["lstm/", "classifier/", FC, "ms_head/", *L4_CONVS], s2)


def test_motion_guided_config_trains_end_to_end(data_dir, tmp_path):
    """Stage 1 is the attention stage 1; stage 2 is ms_cls's plus the guide weight w, which moves off 0.

    64 px crops (a 2x2 layer4 grid): on the 1x1 grid of 32 px the attention softmax is constant and w cannot learn.
    """
    config = tiny(motion_guided, data_dir)
    config.data.update(dict(crop=64, resize=72))
    assert motion_guided.get_config(ARGS).stages.rgb_stage1 == attention.get_config(ARGS).stages.rgb_stage1
    assert loop.train(RunSpec.from_config(config), str(tmp_path))
    for name in config.recipe:
        assert json.loads((tmp_path / name / "eval.json").read_text())["count"] == 4
    rows = [json.loads(line) for line in open(tmp_path / "rgb_stage2" / "metrics.jsonl")]
    assert any("train/ms_loss" in r for r in rows)
    s1, s2 = final_state(tmp_path, "rgb_stage1"), final_state(tmp_path, "rgb_stage2")
    start = {**fresh_state(config, "rgb_stage2"), **s1}
    assert start["motion_guide/w"] == 0.0
    assert changed(start, s2) == expand(["lstm/", "classifier/", FC, "ms_head/", "motion_guide/", *L4_CONVS], s2)


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(two_stream_run, tmp_path):
    """Joint stage (BN training, dropout, momentum, two lr groups) stopped at step 4 of 6, then resumed."""
    config, w = two_stream_run
    for stage in ("rgb_stage1", "rgb_stage2", "flow"):
        shutil.copytree(os.path.join(w, stage), tmp_path / stage)
    assert not loop.train(RunSpec.from_config(config), str(tmp_path), stop_at_step=4)
    assert not (tmp_path / "joint" / "DONE").exists()
    assert checkpoint.StageCheckpoints(str(tmp_path / "joint" / "checkpoints")).latest_step() == 4
    metrics = tmp_path / "joint" / "metrics.jsonl"
    with open(metrics, "a") as f:  # what a crash after logging step 5 and in the middle of writing step 6 leaves
        f.write(json.dumps({"step": 5, "train/loss": 1.0}) + "\n" + '{"step": 6, "train/lo')
    assert loop.train(RunSpec.from_config(config), str(tmp_path))
    want, got = final_state(w, "joint"), final_state(tmp_path, "joint")
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # the rows of steps after the checkpoint are logged again, once: the file of an uninterrupted run
    assert metrics.read_text() == open(os.path.join(w, "joint", "metrics.jsonl")).read()


def test_sigterm_saves_a_usable_checkpoint_and_exits_cleanly(data_dir, tmp_path):
    workdir = tmp_path / "w"
    cmd = tiny_flags(
        os.path.join(ROOT, "configs", "convlstm.py"),
        data_dir,
        workdir,
        log_every_steps=1,
        recipe="('rgb_stage1',)",
        **{"stages.rgb_stage1.epochs": 1000},
    )
    proc = subprocess.Popen(cmd, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = workdir / "rgb_stage1" / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().strip()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == common.EXIT_STOPPED, out[-3000:]
    assert "rerun the same command to resume" in out
    assert not (workdir / "rgb_stage1" / "DONE").exists()
    ckpts = checkpoint.StageCheckpoints(str(workdir / "rgb_stage1" / "checkpoints"))
    step = ckpts.latest_step()
    assert step and step >= 1
    state = final_state(workdir, "rgb_stage1")
    assert all(np.isfinite(v).all() for k, v in state.items() if v.dtype.kind == "f")
    # Usable: the same config resumes from it (and stops one step later).
    config = tiny(convlstm, data_dir, rgb_stage1=1000)
    config.recipe = ("rgb_stage1",)
    assert not loop.train(RunSpec.from_config(config), str(workdir), stop_at_step=step + 1)
    assert checkpoint.StageCheckpoints(str(workdir / "rgb_stage1" / "checkpoints")).latest_step() == step + 1


def test_non_finite_loss_stops_naming_the_step(data_dir, tmp_path):
    config = tiny(convlstm, data_dir)
    config.recipe = ("rgb_stage1",)
    config.stages.rgb_stage1.optimizer.lr = float("inf")  # the first update overflows
    with pytest.raises(FloatingPointError, match=r"non-finite .* at step 1 .*Last good checkpoint: step None"):
        loop.train(RunSpec.from_config(config), str(tmp_path))
    assert not (tmp_path / "rgb_stage1" / "DONE").exists()
    assert checkpoint.StageCheckpoints(str(tmp_path / "rgb_stage1" / "checkpoints")).latest_step() is None


def test_clear_errors(data_dir, tmp_path):
    config = tiny(convlstm, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="build_dataset.py"):
        loop.train(RunSpec.from_config(config), str(tmp_path / "w1"))
    config = tiny(convlstm, data_dir)
    config.batch_size = 6
    with pytest.raises(ValueError, match="batch_size=6 is not divisible by the 4 devices"):
        loop.train(RunSpec.from_config(config), str(tmp_path / "w2"))
    config = convlstm.get_config("frames=2,data=synthetic")  # init=imagenet by default
    config.data.data_dir, config.imagenet_weights = data_dir, str(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="convert_weights.py.*init=scratch"):  # with every other problem found
        loop.train(RunSpec.from_config(config), str(tmp_path / "w3"))


def test_a_variant_defined_outside_the_package_trains_from_its_config_file_and_evaluates(data_dir, tmp_path):
    """A model + its Stream entry + a config, in one file outside the repository: `train.py --config FILE` trains
    it (the file registers its kind), evaluate scores it, unchanged."""
    variant = tmp_path / "elsewhere" / "my_variant.py"
    variant.parent.mkdir()
    shutil.copy(os.path.join(ROOT, "tests", "toy_variant.py"), variant)
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    proc = subprocess.run(
        tiny_flags(str(variant), data_dir, tmp_path, **{"stages.toy.epochs": 2}),
        env=env,
        cwd=variant.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    config = tiny(types.SimpleNamespace(get_config=lambda a: recipes.from_file(str(variant), a)), data_dir, epochs=2)
    done = json.loads((tmp_path / "toy" / "DONE").read_text())
    assert done["step"] == 6
    trained = final_state(tmp_path, "toy")
    assert changed(fresh_state(config, "toy"), trained) == {k for k in trained if "rngs" not in k}

    metrics = workdir_lib.evaluate_workdir(RunSpec.from_config(config), tmp_path)
    assert metrics["protocol"] == "rgb" and metrics["num_examples"] == 4
    # The restored model run one clip at a time by hand gives the confusion evaluate wrote.
    model, _ = workdir_lib.load_stage_model(RunSpec.from_config(config), tmp_path, "toy")
    d = config.data
    clips = list(
        make_loader(
            loaders.test_source(RunSpec.from_config(config)),
            loader="rgb",
            train=False,
            global_batch_size=1,
            frames=d.frames,
            crop=d.crop,
            resize=d.resize,
            num_epochs=1,
        )
    )
    want = np.zeros((61, 61), int)
    for clip in clips:
        want[int(clip["label"][0]), int(np.argmax(model(normalize_rgb(jnp.asarray(clip["rgb"])))["logits"][0]))] += 1
    saved = json.loads((tmp_path / "toy" / "eval" / "confusion.json").read_text())["matrix"]
    np.testing.assert_array_equal(saved, want)
    assert metrics["accuracy"] == json.loads((tmp_path / "toy" / "eval.json").read_text())["accuracy"]


def test_train_stage_closes_its_writers_and_checkpoints_on_errors(data_dir, tmp_path, monkeypatch):
    """A stage that fails after opening its metric writers and checkpoint manager closes both."""
    closed = {}
    for owner in (loop._Log, checkpoint.StageCheckpoints):

        def close(self, original=owner.close, name=owner.__name__):
            closed[name] = self
            original(self)

        monkeypatch.setattr(owner, "close", close)
    config = tiny(convlstm, data_dir)
    config.recipe = ("rgb_stage1",)
    config.stages.rgb_stage1.optimizer.lr = float("inf")  # fails in the first steps, after both are open
    with pytest.raises(FloatingPointError):
        loop.train(RunSpec.from_config(config), str(tmp_path))
    assert closed.keys() == {"_Log", "StageCheckpoints"}
