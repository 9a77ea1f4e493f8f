"""Configs: arguments, command-line overrides, typo protection, and the reference recipe table (ego-rnn.md)."""

import os

import pytest
from absl import flags
from ml_collections import config_flags

from configs import attention, convlstm, flow, ms_cls, ms_reg, quickstart, two_stream
from ego_jax.specs import RunSpec
from ego_jax.train.stage import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = (attention, convlstm, flow, ms_cls, ms_reg, quickstart, two_stream)


def _parse(*argv):
    fv = flags.FlagValues()
    argv = ["train.py", *argv]
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    return fv.config


def test_command_line_arguments_and_overrides():
    c = _parse(
        f"--config={ROOT}/configs/two_stream.py:frames=16,data=synthetic,seed=3",
        "--config.stages.flow.epochs=7",
        "--config.model.width=16",
        "--config.schedule_quirk=False",
    )
    assert (c.data.frames, c.seed, c.data.data_dir) == (16, 3, "data/tfds_synthetic")
    assert c.stages.flow.epochs == 7 and c.schedule_quirk is False
    # One size override reaches every stage, the joint model's streams included.
    assert {c.stages[s].model.kwargs.width for s in ("rgb_stage1", "rgb_stage2", "flow")} == {16}
    assert c.stages.joint.model.kwargs.rgb.width == c.stages.joint.model.kwargs.flow.width == 16


def test_typos_fail_with_a_suggestion():
    with pytest.raises((AttributeError, flags.Error), match='Did you mean "epochs"'):
        _parse(f"--config={ROOT}/configs/flow.py", "--config.stages.flow.epcohs=7")
    with pytest.raises(ValueError, match="expected key=value with key in"):
        two_stream.get_config("frame=16")
    with pytest.raises(ValueError, match="expected one of"):
        two_stream.get_config("data=gtea99")
    with pytest.raises(AttributeError, match="Did you mean"):
        two_stream.get_config().stages.flow.epcohs = 3


def test_init_argument():
    assert two_stream.get_config().stages.rgb_stage1.init_from.to_dict() == {"backbone": "imagenet"}
    assert two_stream.get_config().stages.flow.init_from.to_dict() == {"backbone": "imagenet"}
    scratch = two_stream.get_config("init=scratch")
    assert scratch.stages.rgb_stage1.init_from.to_dict() == {} and scratch.stages.flow.init_from.to_dict() == {}
    assert scratch.stages.joint.init_from.to_dict() == {"rgb": "rgb_stage2", "flow": "flow"}


def test_stage1_backbone_argument():
    """Off by default (reference: frozen backbone, BN inference mode); 'train' opens the whole backbone in stage 1
    only."""
    for module in ALL:
        if module is not quickstart and "rgb_stage1" in module.get_config().stages:
            s1 = module.get_config().stages.rgb_stage1
            assert (s1.trainable, s1.bn_train) == ((r"lstm/.*", r"classifier/.*"), ()), module.__name__
    ref, dev = two_stream.get_config(), two_stream.get_config("stage1_backbone=train")
    assert dev.stages.rgb_stage1.trainable == ref.stages.rgb_stage1.trainable + (r"backbone/.*",)
    assert dev.stages.rgb_stage1.bn_train == (r"backbone/.*",)
    for name in ("rgb_stage2", "flow", "joint"):
        assert dev.stages[name] == ref.stages[name]
    assert quickstart.get_config().stages.rgb_stage1.bn_train == (r"backbone/.*",)
    with pytest.raises(ValueError, match="no rgb_stage1"):
        flow.get_config("stage1_backbone=train")


def test_defaults_are_the_reference_recipe_table():
    c = two_stream.get_config()
    assert (c.batch_size, c.data.frames, c.schedule_quirk, c.dtype) == (32, 25, True, "float32")
    table = {  # optimiser, lr, weight decay, eps|momentum, milestones, step, gamma, epochs, dropout
        "rgb_stage1": ("adam", 1e-3, 4e-5, 1e-4, (25, 75, 150), 0, 0.1, 300),
        "rgb_stage2": ("adam", 1e-4, 4e-5, 1e-4, (25, 75), 0, 0.1, 150),
        "flow": ("sgd", 1e-2, 5e-4, 0.9, (150, 300, 500), 0, 0.5, 750),
        "joint": ("sgd", 1e-2, 5e-4, 0.9, (), 1, 0.99, 250),
    }
    for name, (opt, lr, wd, eps_or_mom, milestones, step, gamma, epochs) in table.items():
        s = c.stages[name]
        o = s.optimizer
        assert (
            o.name,
            o.lr,
            o.weight_decay,
            o.schedule.milestones,
            o.schedule.step_size,
            o.schedule.gamma,
            s.epochs,
        ) == (opt, lr, wd, milestones, step, gamma, epochs), name
        assert (o.eps if opt == "adam" else o.momentum) == eps_or_mom
    assert c.stages.joint.optimizer.param_groups.flow_layer4.lr == 1e-4
    assert c.stages.rgb_stage1.model.kwargs.dropout == 0.7
    assert c.stages.flow.model.kwargs.dropout == c.stages.joint.model.kwargs.dropout == 0.5
    assert c.stages.flow.bn_train == (".*",) and c.stages.rgb_stage2.bn_train == ()


@pytest.mark.parametrize("module", ALL)
def test_every_config_loads_locked(module):
    c = module.get_config()
    assert c.is_locked and c.recipe and set(c.recipe) == set(c.stages)
    for name in c.recipe:
        for source in c.stages[name].init_from.values():
            assert source == "imagenet" or source in c.recipe[: c.recipe.index(name)]


def test_ms_configs_add_the_head_in_stage_2_only():
    for module, kind in ((ms_cls, "cls"), (ms_reg, "reg")):
        c = module.get_config()
        assert c.stages.rgb_stage1.model.kwargs.ms_head is None
        assert c.stages.rgb_stage2.model.kwargs.ms_head.kind == kind
        assert "ms_head/.*" in c.stages.rgb_stage2.trainable
        assert c.stages.rgb_stage2.loss.ms_alpha == 1.0
    assert convlstm.get_config().stages.rgb_stage1.model.kwargs.attention is False
    assert attention.get_config().stages.rgb_stage1.model.kwargs.attention is True


def test_pool_and_resize_method_default_to_the_reference_and_reach_every_rgb_stream():
    c = two_stream.get_config()
    assert (c.model.pool, c.data.resize_method) == ("c", "pil")
    with c.unlocked():
        c.model.pool = "h"  # one override (as --config.model.pool=h) changes every RGB stream of the recipe
        c.model.depth, c.model.width = 18, 4
        c.data.crop, c.data.resize = 32, 32
    assert c.stages.rgb_stage1.model.kwargs.pool == c.stages.rgb_stage2.model.kwargs.pool == "h"
    assert c.stages.joint.model.kwargs.rgb.pool == "h"
    assert build_model(RunSpec.from_config(c), "rgb_stage1").pool == "h"


@pytest.mark.parametrize("rgb", ["ego_rnn", "lsta"])
def test_the_joint_stage_takes_its_rgb_stream_from_rgb_stage2(rgb):
    """Its kwargs are RGB stage 2's, its RGB fine-tune set the stream entry's (ego_jax.streams)."""
    c = two_stream.get_config(f"rgb={rgb}")
    joint, stage2 = c.stages.joint, c.stages.rgb_stage2
    assert joint.model.kwargs.rgb == stage2.model.kwargs and stage2.model.kind == rgb
    assert joint.model.kwargs.get("rgb_kind") == (None if rgb == "ego_rnn" else rgb)
    assert tuple(p[4:] for p in joint.trainable if p.startswith("rgb/")) == stage2.trainable[:-1]
