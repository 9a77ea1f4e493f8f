"""scripts/evaluate.py and scripts/visualize_cam.py on a tiny synthetic GTEA61 and a checkpointed workdir.

The workdir holds freshly initialised quickstart-sized models saved the way the train loop saves them
(orbax 'state' item + DONE); the expected predictions come from those in-memory models, run one clip at
a time on unpadded, unsharded batches, so the restore, loader, padding and sharding paths are all checked.
"""

import json
import os
import pathlib
import shutil

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_train_e2e import run_script

from ego_jax import recipes
from ego_jax.data import gtea61
from ego_jax.data.pipeline import make_loader
from ego_jax.specs import RunSpec
from ego_jax.streams import normalize_flow, normalize_rgb
from ego_jax.train import checkpoint, loaders, sharding, workdir as workdir_lib

CLASSES = gtea61.CLASSES[:3]
CONFIG = """
from ego_jax import recipes


def get_config(arg=None):
    c = recipes.quickstart(arg)
    c.data.data_dir = {data_dir!r}
    c.data.update(dict(frames=3, crop=32, resize=36, stack=2, flow_eval_stacks=2))  # tiny, whatever the quickstart's
    c.eval_batch_size = 4  # 3 test clips on 4 devices: one padded example
    with c.unlocked():
        c.stages.rgb_ms = recipes.rgb_stage2(c, attention=True, ms_head=dict(kind="cls", tap="layer4", hidden=4,
                                                                           grid=(1, 1)))
        c.recipe = c.recipe[:2] + ("rgb_ms",) + c.recipe[2:]  # joint stays last
    return c
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, synthetic_gtea61):
    """(config path, its run specs, workdir, {stage: in-memory model}); every stage DONE except 'unfinished'."""
    root = tmp_path_factory.mktemp("e2e")
    config_path = root / "config.py"
    config_path.write_text(CONFIG.format(data_dir=synthetic_gtea61(CLASSES)))
    run = RunSpec.from_config(recipes.from_file(str(config_path)))
    work = root / "W"
    models = {}
    for seed, name in enumerate(run.recipe):
        spec = run.stage(name).model
        model = spec.stream.build(
            run.num_classes, spec.build_kwargs(), dtype=jnp.float32, rngs=nnx.Rngs(seed + 1), crop=run.data.crop
        )
        # Saved replicated over the 4 test devices, as the train loop does; the scripts restore on 1 device.
        nnx.update(model, jax.device_put(nnx.state(model), sharding.replicated(sharding.make_mesh())))
        ckpts = checkpoint.StageCheckpoints(str(work / name / "checkpoints"))
        ckpts.save(7, model, {"count": jnp.zeros((), jnp.int32)}, dict(step=7, epoch=1, stage=name))
        ckpts.close()
        (work / name / "DONE").write_text(json.dumps(dict(stage=name, step=7)))
        model.eval()
        models[name] = model
    (work / "rgb_stage1" / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "train/loss": 4.0 / s, "lr": 1e-3, "epoch": s // 2}) for s in range(1, 6))
        + "\n"
    )
    return config_path, run, work, models


def _clips(run, *, kind, eval_stacks=1):
    """The test clips one at a time, unpadded and unsharded."""
    d = run.data
    return list(
        make_loader(
            loaders.test_source(run),
            loader=kind,
            train=False,
            global_batch_size=1,
            frames=d.frames,
            stack=d.stack,
            crop=d.crop,
            resize=d.resize,
            eval_stacks=eval_stacks,
            num_epochs=1,
        )
    )


def _rgb_logits(model, clip):
    return np.asarray(model(normalize_rgb(jnp.asarray(clip["rgb"])))["logits"][0])


def _flow_logits(model, clip):
    """Each stack through the model on its own, then the mean (the protocol batches them as B*k)."""
    stacks = clip["flow"][0] if clip["flow"].ndim == 5 else clip["flow"]
    return np.mean([np.asarray(model(normalize_flow(jnp.asarray(s[None])))["logits"][0]) for s in stacks], axis=0)


def _confusion(labels, logits):
    out = np.zeros((61, 61), int)
    for label, row in zip(labels, logits):
        out[label, int(np.argmax(row))] += 1
    return out


def _saved_confusion(outdir):
    return np.array(json.loads((outdir / "confusion.json").read_text())["matrix"])


def test_rgb_and_flow_stages_match_per_clip_predictions(workdir):
    _, run, work, models = workdir
    clips = _clips(run, kind="rgb")
    labels = [int(c["label"][0]) for c in clips]
    assert len(clips) == 3 and sorted(labels) == [gtea61.CLASSES.index(n) for n in CLASSES]

    metrics = workdir_lib.evaluate_workdir(run, work, stage="rgb_stage2")
    outdir = work / "rgb_stage2" / "eval"
    expected = _confusion(labels, [_rgb_logits(models["rgb_stage2"], c) for c in clips])
    np.testing.assert_array_equal(_saved_confusion(outdir), expected)
    saved = json.loads((outdir / "metrics.json").read_text())
    assert saved["protocol"] == "rgb" and saved["checkpoint"] == "final" and saved["num_examples"] == 3
    assert saved["stages"]["rgb_stage2"]["step"] == 7 and saved["accuracy"] == metrics["accuracy"]
    assert cv2.imread(str(outdir / "confusion.png")) is not None

    flow_clips = _clips(run, kind="flow", eval_stacks=run.data.flow_eval_stacks)
    assert flow_clips[0]["flow"].shape[1] == run.data.flow_eval_stacks == 2
    workdir_lib.evaluate_workdir(run, work, stage="flow")
    expected = _confusion(
        [int(c["label"][0]) for c in flow_clips], [_flow_logits(models["flow"], c) for c in flow_clips]
    )
    np.testing.assert_array_equal(_saved_confusion(work / "flow" / "eval"), expected)
    assert json.loads((work / "flow" / "eval" / "metrics.json").read_text())["flow_stacks"] == 2


def test_joint_and_late_fusion_match_per_clip_predictions(workdir):
    _, run, work, models = workdir
    workdir_lib.evaluate_workdir(run, work)  # default: the recipe's last stage (joint), its own protocol
    clips = _clips(run, kind="two_stream")
    joint = models["joint"]
    expected = _confusion(
        [int(c["label"][0]) for c in clips],
        [
            np.asarray(joint(normalize_rgb(jnp.asarray(c["rgb"])), normalize_flow(jnp.asarray(c["flow"])))["logits"][0])
            for c in clips
        ],
    )
    np.testing.assert_array_equal(_saved_confusion(work / "joint" / "eval"), expected)

    metrics = workdir_lib.evaluate_workdir(run, work, protocol="late_fusion", fusion_stacks=3, flow_weight=0.25)
    assert metrics["stages"].keys() == {"rgb_ms", "flow"}  # the recipe's last EgoRNN stage and its flow stage
    clips = _clips(run, kind="two_stream", eval_stacks=3)
    fused = [0.25 * _flow_logits(models["flow"], c) + 0.75 * _rgb_logits(models["rgb_ms"], c) for c in clips]
    np.testing.assert_array_equal(
        _saved_confusion(work / "late_fusion" / "eval"), _confusion([int(c["label"][0]) for c in clips], fused)
    )


def test_errors_say_what_to_do(workdir):
    _, run, work, _ = workdir
    done = work / "rgb_stage1" / "DONE"
    done.rename(work / "rgb_stage1" / "DONE.bak")
    try:
        with pytest.raises(FileNotFoundError, match="--allow_unfinished"):
            workdir_lib.evaluate_workdir(run, work, stage="rgb_stage1")
        unfinished = workdir_lib.evaluate_workdir(run, work, stage="rgb_stage1", allow_unfinished=True)
        assert unfinished["stages"]["rgb_stage1"]["finished"] is False
        # Labelled with the step it really evaluated, not as the final checkpoint.
        saved = json.loads((work / "rgb_stage1" / "eval" / "metrics.json").read_text())
        assert (saved["checkpoint"], saved["finished"], saved["steps"]) == ("unfinished", False, {"rgb_stage1": 7})
    finally:
        (work / "rgb_stage1" / "DONE.bak").rename(done)
    with pytest.raises(ValueError, match="--protocol rgb"):
        workdir_lib.evaluate_workdir(run, work, stage="rgb_stage1", protocol="flow")
    with pytest.raises(ValueError, match="not in the config"):
        workdir_lib.evaluate_workdir(run, work, stage="rgb_stage3")
    # A checkpoint of another model (no MS head) where the config expects the MS model.
    other = work.parent / "W_wrong"
    shutil.copytree(work / "rgb_stage1", other / "rgb_ms")
    with pytest.raises(ValueError, match="different config"):
        workdir_lib.evaluate_workdir(run, other, stage="rgb_ms")


def test_evaluate_script_writes_the_eval_folder(workdir):
    config_path, _, work, _ = workdir
    out = run_script("evaluate.py", f"--config={config_path}", f"--workdir={work}", "--stage=rgb_stage1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rgb_stage1: rgb accuracy" in out.stdout
    outdir = work / "rgb_stage1" / "eval"
    assert {"metrics.json", "confusion.json", "confusion.png", "curves.png"} <= set(os.listdir(outdir))
    out = run_script("evaluate.py", f"--config={config_path}", f"--workdir={work}", "--stage=nope")
    assert out.returncode != 0 and "not in the config" in out.stderr


def test_visualize_cam_script_grid_and_tensorboard(workdir):
    config_path, run, work, _ = workdir
    clip_id = loaders.test_source(run)[1]["clip_id"]
    clip_id = clip_id.decode() if isinstance(clip_id, bytes) else clip_id
    out = run_script(
        "visualize_cam.py", f"--config={config_path}", f"--workdir={work}", "--stage=rgb_ms", f"--clips={clip_id}"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    png = pathlib.Path(out.stdout.strip().splitlines()[-1])
    assert png == work / "rgb_ms" / "cam" / (clip_id.replace("/", "_") + ".png")
    image = cv2.imread(str(png))
    size, frames = 160, run.data.frames  # the 32 px crops enlarged to the default --min_size
    # Title band (3 lines: clip, true, stage + step + pred) + rows frames / CAM / MS pred / MS target, 2 px gaps.
    assert image.shape == (3 * 18 + 4 + 4 * (size + 2) - 2, frames * (size + 2) - 2, 3)
    events = list((work / "rgb_ms").glob("events.out.tfevents.*"))
    assert events, os.listdir(work / "rgb_ms")

    import tensorflow as tf

    tags = {v.tag for e in events for ev in tf.compat.v1.train.summary_iterator(str(e)) for v in ev.summary.value}
    assert f"cam/{clip_id}" in tags


def test_visualize_cam_errors(workdir):
    _, run, work, _ = workdir
    from ego_jax.experiments import cam

    with pytest.raises(ValueError, match="no CAM"):
        cam.draw([(run, str(work), "flow", "")], ["0"], out_dir=str(work / "cams"))
    with pytest.raises(ValueError, match="indices 0..2"):
        cam.find_clip(run.data, run.data.test_split, "3")
    with pytest.raises(ValueError, match="not in split"):
        cam.find_clip(run.data, run.data.test_split, "S9/take_bread/1")
