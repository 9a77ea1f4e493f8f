"""LSTA end to end on test_train_e2e's tiny synthetic GTEA61: its own config, and as the two-stream recipe's RGB stream.

64 px crops (a 2x2 layer4 grid): on the 1x1 grid of 32 px the attention softmax is constant and the cell's
attention convolutions would get no gradient.
"""

import json
import os
import shutil

import pytest
from test_train_e2e import ARGS, FC, L4_CONVS, changed, expand, final_state, fresh_state, tiny

from configs import lsta, two_stream
from ego_jax.specs import RunSpec
from ego_jax.train import loop

# What the reference's optimiser can move in the cell: all but coupling_fc (it only moves an argmax: no gradient).
CELL = [f"lsta/{m}/" for m in ("att_s_conv", "att_cam_conv", "x_conv", "h_conv", "o_conv", "c_classifier")]


def tiny_lsta(module, data_dir, args=ARGS, **stage_epochs):
    config = tiny(module, data_dir, args=args, **stage_epochs)
    config.data.update(dict(crop=64, resize=72))
    return config


@pytest.fixture(scope="module")
def lsta_run(data_dir, tmp_path_factory):  # noqa: F811
    workdir = str(tmp_path_factory.mktemp("lsta"))
    config = tiny_lsta(lsta, data_dir)
    assert loop.train(RunSpec.from_config(config), workdir)
    return config, workdir


def test_lsta_config_trains_its_two_stages(lsta_run):
    config, w = lsta_run
    assert config.data.rgb_endpoint  # LSTA's frame sampling (first and last frame)
    for name in config.recipe:
        assert json.load(open(os.path.join(w, name, "eval.json")))["count"] == 4
    s1, s2 = final_state(w, "rgb_stage1"), final_state(w, "rgb_stage2")
    # Stage 1: the cell (but coupling_fc) and the classifier move on the frozen backbone.
    assert changed(fresh_state(config, "rgb_stage1"), s1) == expand(CELL + ["classifier/"], s1)
    # Stage 2 from stage 1: + layer4 conv1/conv2 kernels and the ImageNet fc kernel.
    assert changed(s1, s2) == expand(CELL + ["classifier/", FC, *L4_CONVS], s2)


def test_lsta_as_the_rgb_stream_of_the_two_stream_recipe(lsta_run, data_dir, tmp_path):  # noqa: F811
    config = tiny_lsta(two_stream, data_dir, args=ARGS + ",rgb=lsta", joint=2)
    lsta_config, lsta_dir = lsta_run
    for name in ("rgb_stage1", "rgb_stage2"):  # the same stages as configs/lsta.py: reused, not retrained
        assert config.stages[name] == lsta_config.stages[name]
        shutil.copytree(os.path.join(lsta_dir, name), tmp_path / name)
    done_before = (tmp_path / "rgb_stage2" / "DONE").read_text()
    assert loop.train(RunSpec.from_config(config), str(tmp_path))
    assert (tmp_path / "rgb_stage2" / "DONE").read_text() == done_before
    assert json.load(open(tmp_path / "joint" / "eval.json"))["count"] == 4
    s2, fl, jt = (final_state(tmp_path, s) for s in ("rgb_stage2", "flow", "joint"))
    # Joint from LSTA stage 2 + flow: the LSTA stream's stage-2 set and the whole flow layer4 (BN statistics too).
    want = expand(["rgb/" + p for p in CELL + [FC, *L4_CONVS]] + ["flow/backbone/layer4/"], jt)
    assert changed(s2, jt, "rgb/") | changed(fl, jt, "flow/") == want
