"""stage_identity: what determines a stage's result changes it (upstream stages too); harmless keys do not."""
import json

import pytest

from configs import two_stream
from ego_jax.train.stage_identity import diff, stage_identity


def _config(**changes):
    """two_stream config with dotted keys set, as --config.a.b=v would."""
    c = two_stream.get_config("frames=2,data=synthetic,init=scratch")
    c.update_from_flattened_dict(changes)
    return c


HARMLESS = {"log_every_steps": 1, "eval_every_epochs": 7, "checkpoint_every_epochs": 3, "eval_batch_size": 8,
            "data.worker_count": 0, "data.flow_eval_stacks": 2, "data.test_split": "S3", "data.data_dir": "/x",
            "model.scan_unroll": 3, "stages.flow.epochs": 3, "data.stack": 2}
RESULT = {"batch_size": 16, "seed": 1, "data.crop": 112, "data.train_split": "S1", "model.width": 32,
          "stages.rgb_stage1.optimizer.lr": 0.5, "stages.rgb_stage1.epochs": 7, "dtype": "bfloat16"}


@pytest.mark.parametrize("key", sorted(HARMLESS))
def test_harmless_keys_leave_rgb_stage2_unchanged(key):
    changed = _config(**{key: HARMLESS[key]})
    assert diff(stage_identity(_config(), "rgb_stage2"), stage_identity(changed, "rgb_stage2")) == []


@pytest.mark.parametrize("key", sorted(RESULT))
def test_result_keys_change_rgb_stage2_and_the_diff_names_them(key):
    changed = _config(**{key: RESULT[key]})
    changes = diff(stage_identity(_config(), "rgb_stage2"), stage_identity(changed, "rgb_stage2"))
    assert changes and all("->" in line for line in changes)
    assert any(key.split(".")[-1] in line and str(RESULT[key]) in line for line in changes), changes


def test_upstream_changes_reach_the_joint_stage_and_the_identity_is_json():
    ident = stage_identity(_config(), "joint")
    assert json.loads(json.dumps(ident)) == ident
    assert diff(ident, stage_identity(_config(**{"stages.flow.optimizer.lr": 0.1}), "joint")) == [
        "init_from.flow.stage.optimizer.lr: 0.01 -> 0.1"]


def test_the_flow_stack_size_changes_the_stages_that_read_flow():
    assert diff(stage_identity(_config(), "flow"), stage_identity(_config(**{"data.stack": 2}), "flow")) == [
        "stage.model.kwargs.stack: 5 -> 2"]


def test_lsta_frame_sampling_changes_the_rgb_stages_but_not_flow():
    """data.rgb_endpoint (LSTA's frames) is part of what an RGB stage reads; a flow stage stays shareable."""
    changed = _config(**{"data.rgb_endpoint": True})
    assert diff(stage_identity(_config(), "rgb_stage1"), stage_identity(changed, "rgb_stage1")) == [
        "data.rgb_endpoint: False -> True"]
    assert diff(stage_identity(_config(), "flow"), stage_identity(changed, "flow")) == []
    lsta = two_stream.get_config("frames=2,data=synthetic,init=scratch,rgb=lsta")
    assert diff(stage_identity(_config(), "flow"), stage_identity(lsta, "flow")) == []
