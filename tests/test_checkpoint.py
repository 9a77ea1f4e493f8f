"""Stage checkpoints: whole-model state (BN stats, RNG keys) + optimiser state round trip, and init_from loading."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from train_standin import StandIn, batches, loss_fn

from ego_jax.train import checkpoint, sharding, stage as stage_lib
from ego_jax.train.step import init_state, make_train_step


def _trained(seed=0, steps=2):
    """A stand-in trained a few steps (BNs in training mode, so stats and RNG counts moved)."""
    model = StandIn(rngs=nnx.Rngs(seed))
    mesh = sharding.make_mesh()
    tx = optax.adam(1e-2)
    graphdef, state, frozen = init_state(model, nnx.Param, nnx.BatchStat, tx, mesh)
    step = make_train_step(graphdef, loss_fn, tx, mesh)
    for batch in batches(steps):
        state, _ = step(state, frozen, batch)
    nnx.update(model, state.params, state.stats, state.rngs)
    return model, state.opt_state, tx


def _leaves(tree):
    return [
        np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
        for x in jax.tree.leaves(tree)
    ]


def test_round_trip_restores_model_and_optimizer_bitwise(tmp_path):
    model, opt_state, tx = _trained()
    ckpts = checkpoint.StageCheckpoints(str(tmp_path / "ckpt"))
    ckpts.save(2, model, opt_state, dict(step=2, epoch=0))
    ckpts.close()

    fresh = StandIn(rngs=nnx.Rngs(7))  # different init: everything must come from the checkpoint
    fresh_opt = tx.init(nnx.state(fresh, nnx.Param))
    ckpts = checkpoint.StageCheckpoints(str(tmp_path / "ckpt"))
    assert ckpts.latest_step() == 2
    restored_opt, meta = ckpts.restore(2, fresh, fresh_opt, sharding.replicated(sharding.make_mesh()))
    assert meta == dict(step=2, epoch=0)
    for a, b in zip(_leaves(nnx.state(model)), _leaves(nnx.state(fresh)), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(opt_state), _leaves(restored_opt), strict=True):
        np.testing.assert_array_equal(a, b)
    # The restored RNG key is a usable typed key again (dropout draws from it).
    key = fresh.dropout.rngs.key[...]
    assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def test_final_state_is_flat_by_nnx_path_and_loads_into_a_submodule(tmp_path):
    model, opt_state, _ = _trained()
    ckpts = checkpoint.StageCheckpoints(str(tmp_path / "stage" / "checkpoints"))
    ckpts.save(2, model, opt_state, dict(step=2, epoch=0))
    ckpts.close()
    flat = checkpoint.load_final_state(str(tmp_path / "stage" / "checkpoints"))
    assert "layer/1/bn/mean" in flat and "classifier/kernel" in flat

    class Parent(nnx.Module):
        def __init__(self, rngs):
            self.rgb = StandIn(rngs=rngs)
            self.head = nnx.Linear(4, 2, rngs=rngs)

    parent = Parent(nnx.Rngs(3))
    head_before = np.asarray(parent.head.kernel[...])
    (tmp_path / "stage" / "DONE").write_text("{}")
    stage_lib.initialise(parent, {"rgb": "stage"}, workdir=str(tmp_path), imagenet_weights="unused")
    np.testing.assert_array_equal(parent.rgb.layer[1].bn.mean[...], model.layer[1].bn.mean[...])
    np.testing.assert_array_equal(parent.rgb.classifier.kernel[...], model.classifier.kernel[...])
    np.testing.assert_array_equal(parent.head.kernel[...], head_before)  # not in the source: kept


def test_restore_onto_another_device_count_and_a_model_of_another_config(tmp_path):
    """Written from one device, restored replicated over this process's 4; a wider model is a clear error."""
    model, opt_state, _ = _trained()
    nnx.update(model, jax.device_put(nnx.state(model), jax.devices()[0]))
    ckpts = checkpoint.StageCheckpoints(str(tmp_path / "ckpt"))
    ckpts.save(2, model, jax.device_put(opt_state, jax.devices()[0]), dict(step=2, epoch=0))
    ckpts.close()
    tree, step = checkpoint.restore_state(str(tmp_path / "ckpt"))
    assert step == 2
    assert all(len(x.sharding.device_set) == 4 and x.sharding.is_fully_replicated for x in jax.tree.leaves(tree))
    fresh = StandIn(rngs=nnx.Rngs(7))
    checkpoint.load_model_tree(fresh, tree)
    for a, b in zip(_leaves(nnx.state(model)), _leaves(nnx.state(fresh)), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"classifier/kernel \(4, 5\) \(model \(4, 7\)\).*different config"):
        checkpoint.load_model_tree(StandIn(num_classes=7, rngs=nnx.Rngs(0)), tree)
    headless = StandIn(rngs=nnx.Rngs(0))
    headless.classifier = None
    with pytest.raises(ValueError, match=r"unexpected \['classifier/bias'.*different config"):
        checkpoint.load_model_tree(headless, tree)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        checkpoint.restore_state(str(tmp_path / "nothing"))


def test_init_errors_say_what_to_do(tmp_path):
    model = StandIn(rngs=nnx.Rngs(0))
    with pytest.raises(FileNotFoundError, match="stage rgb_stage1 is not finished"):
        stage_lib.initialise(model, {"model": "rgb_stage1"}, workdir=str(tmp_path), imagenet_weights="x")
    with pytest.raises(FileNotFoundError, match="convert_weights.py.*init=scratch"):
        stage_lib.initialise(model, {"model": "imagenet"}, workdir=str(tmp_path), imagenet_weights="nope.npz")
    with pytest.raises(ValueError, match="no submodule 'backbone'"):
        stage_lib.initialise(model, {"backbone": "imagenet"}, workdir=str(tmp_path), imagenet_weights="x")


def test_shape_mismatch_is_a_clear_error():
    model = StandIn(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="classifier/kernel has shape"):
        stage_lib.load_flat(model, {"classifier/kernel": jnp.zeros((3, 3))}, "somewhere")


def _largest_file(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != checkpoint.DIGEST]
    return max(files, key=lambda p: p.stat().st_size)


def _flip(path, count=64):
    data = bytearray(path.read_bytes())
    for i in range(count):
        data[(i * 7919) % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_item", "delete_digest"])
def test_a_damaged_newest_step_is_named_and_skipped_for_the_newest_good_one(tmp_path, damage, caplog):
    model, opt_state, tx = _trained()
    ckpts = checkpoint.StageCheckpoints(str(tmp_path / "ckpt"))
    ckpts.save(1, model, opt_state, dict(step=1, epoch=0))
    good = {k: np.asarray(v) for k, v in checkpoint.load_final_state(str(tmp_path / "ckpt")).items()}
    model2, opt_state2, _ = _trained(seed=1)
    ckpts.save(2, model2, opt_state2, dict(step=2, epoch=0))
    ckpts.close()
    step2 = tmp_path / "ckpt" / "2"
    if damage == "flip":
        _flip(_largest_file(step2))
    elif damage == "truncate":
        path = _largest_file(step2)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "delete_item":
        shutil.rmtree(step2 / "state")
    else:
        (step2 / checkpoint.DIGEST).unlink()
    with pytest.raises(checkpoint.BadCheckpoint, match=str(step2)):
        checkpoint.restore_state(str(tmp_path / "ckpt"), step=2)
    tree, step = checkpoint.restore_state(str(tmp_path / "ckpt"))  # newest good: step 1, the damage logged
    assert step == 1 and str(step2) in caplog.text
    flat = checkpoint.load_final_state(str(tmp_path / "ckpt"))
    assert flat.keys() == good.keys() and all(np.array_equal(flat[k], good[k]) for k in good)

    # Resume: step 1 restored, step 2 moved aside (kept, not deleted) so that step 2 can be saved again.
    ckpts = checkpoint.StageCheckpoints(str(tmp_path / "ckpt"))
    step, _, meta = ckpts.restore_newest_good(
        StandIn(rngs=nnx.Rngs(5)), tx.init(nnx.state(model, nnx.Param)), sharding.replicated(sharding.make_mesh())
    )
    assert (step, meta["step"]) == (1, 1) and ckpts.latest_step() == 1
    assert (tmp_path / "rejected_checkpoints" / "2").is_dir() and not step2.exists()
    ckpts.save(2, model2, opt_state2, dict(step=2, epoch=0))
    assert checkpoint.restore_state(str(tmp_path / "ckpt"))[1] == 2
    ckpts.close()


def test_a_step_with_non_finite_arrays_is_never_used_and_no_good_step_says_so(tmp_path):
    model, opt_state, tx = _trained()
    model.classifier.kernel[...] = model.classifier.kernel[...].at[0, 0].set(jnp.nan)
    ckpts = checkpoint.StageCheckpoints(str(tmp_path / "ckpt"))
    ckpts.save(3, model, opt_state, dict(step=3, epoch=0))  # a valid digest of a NaN kernel
    ckpts.close()
    with pytest.raises(
        checkpoint.BadCheckpoint,
        match=r"(?s)no good checkpoint left in .*ckpt.*non-finite values in "
        r"\['classifier/kernel'\]",
    ):
        checkpoint.restore_state(str(tmp_path / "ckpt"))
    ckpts = checkpoint.StageCheckpoints(str(tmp_path / "ckpt"))
    with pytest.raises(checkpoint.BadCheckpoint, match="classifier/kernel"):
        ckpts.restore_newest_good(
            StandIn(rngs=nnx.Rngs(5)), tx.init(nnx.state(model, nnx.Param)), sharding.replicated(sharding.make_mesh())
        )
    assert (tmp_path / "ckpt" / "3").is_dir()  # never deleted
    ckpts.close()
