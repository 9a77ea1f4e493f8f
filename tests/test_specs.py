"""Specs: built once from a config with every range checked; identities derived from field metadata; stage keys of
earlier GTEA61 workdirs and suite stores kept, or re-keyed by the command the refusal names."""

import dataclasses
import json
import os

import pytest

from configs import two_stream
from ego_jax import specs
from ego_jax.experiments import plan, runner
from ego_jax.train import preflight

LEGACY = json.load(open(os.path.join(os.path.dirname(__file__), "data", "legacy", "gtea61_stage_keys.json")))


def _run(**changes) -> specs.RunSpec:
    """two_stream run with dotted keys set, as --config.a.b=v would."""
    c = two_stream.get_config("frames=2,data=synthetic,init=scratch")
    c.update_from_flattened_dict(changes)
    return specs.RunSpec.from_config(c)


def _diff(a: specs.RunSpec, b: specs.RunSpec, stage: str) -> list[str]:
    return specs.diff(specs.identity(a, stage), specs.identity(b, stage))


HARMLESS = {
    "log_every_steps": 1,
    "eval_every_epochs": 7,
    "checkpoint_every_epochs": 3,
    "eval_batch_size": 8,
    "data.worker_count": 0,
    "data.flow_eval_stacks": 2,
    "data.test_split": "S3",
    "data.data_dir": "/x",
    "model.scan_unroll": 3,
    "stages.flow.epochs": 3,
    "data.stack": 2,
    "compiler_options": "",
}
RESULT = {
    "batch_size": 16,
    "seed": 1,
    "data.crop": 112,
    "data.train_split": "S1",
    "model.width": 32,
    "stages.rgb_stage1.optimizer.lr": 0.5,
    "stages.rgb_stage1.epochs": 7,
    "dtype": "bfloat16",
}


@pytest.mark.parametrize("key", sorted(HARMLESS))
def test_harmless_keys_leave_rgb_stage2_unchanged(key):
    assert _diff(_run(), _run(**{key: HARMLESS[key]}), "rgb_stage2") == []


@pytest.mark.parametrize("key", sorted(RESULT))
def test_result_keys_change_rgb_stage2_and_the_diff_names_them(key):
    changes = _diff(_run(), _run(**{key: RESULT[key]}), "rgb_stage2")
    assert changes and all("->" in line for line in changes)
    assert any(key.split(".")[-1] in line and str(RESULT[key]) in line for line in changes), changes


def test_upstream_changes_reach_the_joint_stage_and_the_identity_is_json():
    ident = specs.identity(_run(), "joint")
    assert json.loads(json.dumps(ident)) == ident
    assert _diff(_run(), _run(**{"stages.flow.optimizer.lr": 0.1}), "joint") == [
        "init_from.flow.stage.optimizer.lr: 0.01 -> 0.1"
    ]


def test_what_a_stage_reads_decides_which_data_fields_count():
    """The flow stack reaches flow stages through their kwargs; RGB frame sampling only the stages reading RGB; the
    flow protocol's stack count only the flow stage's report."""
    assert _diff(_run(), _run(**{"data.stack": 2}), "flow") == ["stage.model.kwargs.stack: 5 -> 2"]
    assert _diff(_run(), _run(**{"data.rgb_endpoint": True}), "rgb_stage1") == ["data.rgb_endpoint: False -> True"]
    for key, value in (("data.rgb_endpoint", True), ("data.frames", 3)):
        assert _diff(_run(), _run(**{key: value}), "flow") == []
    lsta = specs.RunSpec.from_config(two_stream.get_config("frames=2,data=synthetic,init=scratch,rgb=lsta"))
    assert _diff(_run(), lsta, "flow") == []
    changed = _run(**{"data.flow_eval_stacks": 2})
    assert specs.report(changed, "flow") != specs.report(_run(), "flow")
    assert specs.report(changed, "rgb_stage2") == specs.report(_run(), "rgb_stage2") == {"test_split": "S2"}


def test_every_field_declares_what_it_affects():
    """identity/report read field metadata alone: a field without it would be silently left out of them."""
    kinds = (
        specs.RunSpec,
        specs.DataSpec,
        specs.StageSpec,
        specs.ModelSpec,
        specs.OptimSpec,
        specs.ScheduleSpec,
        specs.ParamGroupSpec,
        specs.LossSpec,
    )
    for cls in kinds:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("affects", "?") in (specs.RESULT, specs.REPORT, None), (cls.__name__, f.name)


def test_a_none_valued_option_leaves_every_key_unchanged():
    c = two_stream.get_config("frames=2,data=synthetic,init=scratch").to_dict()
    before = specs.RunSpec.from_config(c)
    c["stages"]["rgb_stage1"]["model"]["kwargs"]["new_option"] = None
    after = specs.RunSpec.from_config(c)
    assert all(plan.stage_key(before, s) == plan.stage_key(after, s) for s in before.recipe)
    c["stages"]["rgb_stage1"]["model"]["kwargs"]["new_option"] = 1
    assert _diff(before, specs.RunSpec.from_config(c), "rgb_stage2") == [
        "init_from.model.stage.model.kwargs.new_option: (absent) -> 1"
    ]


def test_config_problems_are_listed_together_with_their_keys():
    c = two_stream.get_config()
    with c.unlocked():
        c.batch_size, c.data.crop, c.data.worker_count = 0, 300, -1
        c.stages.flow.epochs, c.stages.flow.optimizer.name, c.stages.joint.model.kind = 0, "rmsprop", "two_steam"
        c.data.typo = 1
    with pytest.raises(ValueError) as e:
        specs.RunSpec.from_config(c)
    for line in (
        "config.batch_size=0: expected an integer >= 1",
        "config.data.crop=300 is larger than resize=256",
        "config.data.worker_count=-1: expected an integer >= 0",
        "config.stages.flow.epochs=0",
        "config.stages.flow.optimizer.name='rmsprop': expected one of ('adam', 'sgd')",
        "config.stages.joint.model.kind='two_steam'",
        "config.data.typo: not a field of DataSpec",
    ):
        assert line in str(e.value), line


def test_a_recorded_run_reads_back_and_specs_are_frozen():
    run = _run()
    assert specs.RunSpec.from_config(json.loads(json.dumps(run.to_dict()))) == run
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.stage("flow").epochs = 3


def _legacy_run(label: str) -> specs.RunSpec:
    path, _, args = label.partition(":")
    return specs.RunSpec.from_config(
        __import__(f"configs.{path[8:-3]}", fromlist=["get_config"]).get_config(args or None)
    )


@pytest.mark.parametrize("label", sorted(LEGACY["keys"]))
def test_stage_keys_of_earlier_gtea61_stores(label):
    """Keys computed by ego_jax before the specs (tests/data/legacy, 90c876c): unchanged where no None value was
    hashed (flow, LSTA), and where one was, the key of the normalised fields an earlier store recorded."""
    run, old = _legacy_run(label), LEGACY["keys"][label]
    fields = LEGACY["stage_fields"].get(label, {})
    for stage, key in old.items():
        new = plan.stage_key(run, stage)
        if run.stage(stage).model.kind in ("flow", "lsta") or "rgb=lsta" in label:
            assert new == key, (stage, key, new)
        if stage in fields:
            assert plan.key_of(stage, fields[stage]) == key
            assert plan.key_of(stage, specs.normalise(fields[stage])) == new


def test_an_earlier_store_is_refused_with_the_command_that_re_keys_it_and_an_earlier_workdir_resumes(tmp_path):
    label = "configs/two_stream.py:frames=16"
    run, old = _legacy_run(label), LEGACY["keys"][label]
    for stage, fields in LEGACY["stage_fields"][label].items():
        os.makedirs(tmp_path / "stages" / old[stage])
        (tmp_path / "stages" / old[stage] / plan.FIELDS).write_text(json.dumps(fields))
        # a train.py workdir of the same run, as the earlier ego_jax recorded it
        os.makedirs(tmp_path / "w" / stage)
        (tmp_path / "w" / stage / preflight.RECORD).write_text(json.dumps(dict(identity=fields["identity"])))
    assert preflight.check_records(run, str(tmp_path / "w")) == []
    with pytest.raises(ValueError, match=f"`python scripts/experiment.py --workdir {tmp_path} --rekey`"):
        runner.check_store(str(tmp_path))
    renamed = plan.rekey(str(tmp_path))
    assert sorted(renamed) == sorted(k for s, k in old.items() if plan.stage_key(run, s) != k)  # rgb + joint
    runner.check_store(str(tmp_path))
    assert sorted(os.listdir(tmp_path / "stages")) == sorted(plan.stage_key(run, s) for s in run.recipe)
