"""Jitted train step and the loop's evaluation on a stand-in model: trainable subsets, frozen state, BN modes,
sharding, compiles."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from train_standin import StandIn, batches, loss_fn

from ego_jax.streams import normalize_flow
from ego_jax.train import loop, sharding, stage as stage_lib
from ego_jax.train.step import init_state, make_train_step


def _setup(trainable, bn_train, *, devices=None, dropout_train=(".*",)):
    model = StandIn(rngs=nnx.Rngs(0))
    before = {
        "/".join(map(str, p)): np.array(v[...])
        for p, v in nnx.to_flat_state(nnx.state(model))
        if not isinstance(v, nnx.RngKey)
    }
    train_filter = stage_lib.param_filter(trainable, model)
    updated = stage_lib.set_modes(model, bn_train=bn_train, dropout_train=dropout_train)
    mesh = sharding.make_mesh(devices)
    tx = optax.sgd(0.1, momentum=0.9)
    graphdef, state, frozen = init_state(model, train_filter, updated, tx, mesh)
    step = make_train_step(graphdef, loss_fn, tx, mesh)
    return model, before, state, frozen, step, graphdef


def _evaluate(graphdef, state, frozen, data):
    """The train loop's periodic evaluation (the stand-in is a flow-like stream: 'flow' protocol)."""
    return loop.evaluate_state(graphdef, state, frozen, data, protocol="flow", num_classes=5, dtype=jnp.float32)


def _eval_mode_logits(graphdef, state, frozen, batch):
    """Logits of an eval-mode copy of the model at `state`, run outside the evaluation code."""
    model = nnx.merge(graphdef, state.params, state.stats, state.rngs, frozen, copy=True)
    model.eval()
    return np.asarray(model(normalize_flow(batch["flow"]))["logits"])


@contextlib.contextmanager
def count_compiles():
    """Collects one entry per XLA backend compile inside the block."""
    compiles = []

    def listener(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _flat(*states):
    out = {}
    for s in states:
        out.update(
            {"/".join(map(str, p)): np.array(v[...]) for p, v in nnx.to_flat_state(s) if not isinstance(v, nnx.RngKey)}
        )
    return out


@pytest.mark.parametrize(
    "trainable,bn_train,changed",
    [
        # "stage 1": head only, every BN in inference mode.
        ((r"classifier/.*",), (), {"classifier/kernel", "classifier/bias"}),
        # "stage 2"-like: one conv kernel of every block + head, BNs frozen.
        (
            (r"classifier/.*", r"layer/\d+/conv/kernel"),
            (),
            {"classifier/kernel", "classifier/bias", "layer/0/conv/kernel", "layer/1/conv/kernel"},
        ),
        # "joint"-like: a block fully trained with its BN in training mode.
        (
            (r"layer/1/.*",),
            (r"layer/1/.*",),
            {"layer/1/conv/kernel", "layer/1/bn/scale", "layer/1/bn/bias", "layer/1/bn/mean", "layer/1/bn/var"},
        ),
    ],
)
def test_exactly_the_trainable_params_and_training_bn_stats_change(trainable, bn_train, changed):
    _, before, state, frozen, step, _ = _setup(trainable, bn_train)
    data = batches(3)
    state, metrics = step(state, frozen, data[0])
    with count_compiles() as compiles:
        for batch in data[1:]:
            state, metrics = step(state, frozen, batch)
    after = _flat(state.params, state.stats, state.rngs, frozen)
    assert after.keys() == before.keys()
    diff = {k for k in after if not np.array_equal(after[k], before[k]) and "rngs" not in k}
    assert diff == changed  # everything else bitwise equal
    assert int(state.step) == 3 and np.isfinite(float(metrics["loss"]))
    assert not compiles  # one compile for the whole stage


def test_frozen_backbone_has_no_backward_pass():
    """With only the head trainable, the lowered step holds just the forward convolutions."""

    def count_convs(trainable):
        _, _, state, frozen, step, _ = _setup(trainable, ())
        return step.lower(state, frozen, batches(1)[0]).as_text().count("stablehlo.convolution")

    forward = sum(isinstance(m, nnx.Conv) for _, m in nnx.iter_modules(StandIn(rngs=nnx.Rngs(0))))
    assert count_convs((r"classifier/.*",)) == forward
    assert count_convs((r".*",)) > forward


def test_dropout_only_in_training():
    model, _, state, frozen, step, graphdef = _setup((r"classifier/.*",), ())
    data = batches(3)
    a, b = _evaluate(graphdef, state, frozen, data), _evaluate(graphdef, state, frozen, data)
    assert a == b  # eval: deterministic, no rng consumed
    # Dropout off: the predictions are those of the eval-mode model (24 examples; dropout 0.5 on 4 features
    # would flip some of them).
    hits = sum(
        int((_eval_mode_logits(graphdef, state, frozen, x).argmax(-1) == np.asarray(x["label"])).sum()) for x in data
    )
    assert a["correct"] == hits and a["count"] == 24
    count = int(state.rngs["dropout"]["rngs"]["count"][...])
    state, _ = step(state, frozen, data[0])
    assert int(state.rngs["dropout"]["rngs"]["count"][...]) == count + 1  # training drew a dropout mask
    with count_compiles() as compiles:  # periodic eval after more training: the eval step is not recompiled
        _evaluate(graphdef, state, frozen, data)
    assert not compiles
    assert all(m.deterministic is False for _, m in nnx.iter_modules(model) if isinstance(m, nnx.Dropout))


def test_eval_masks_padding():
    _, _, state, frozen, _, graphdef = _setup((r"classifier/.*",), ())
    batch = batches(1)[0]
    logits = _eval_mode_logits(graphdef, state, frozen, batch)
    hits = np.argmax(logits, -1) == np.asarray(batch["label"])
    assert logits.shape == (8, 5)
    out = _evaluate(graphdef, state, frozen, [batch])
    assert (out["correct"], out["count"]) == (int(hits.sum()), 8)
    padded = dict(batch, mask=batch["mask"].at[:].set(False))
    assert _evaluate(graphdef, state, frozen, [padded])["correct"] == 0
    half = dict(batch, mask=batch["mask"].at[4:].set(False))
    out = _evaluate(graphdef, state, frozen, [half])
    assert (out["correct"], out["count"]) == (int(hits[:4].sum()), 4)


def test_sharded_step_equals_single_device_step():
    """4-device data-parallel vs 1 device, BN in training mode (cross-device batch statistics): atol 1e-5."""
    assert len(jax.devices()) == 4
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        _, _, state, frozen, step, _ = _setup((r".*",), (r".*",), devices=devices)
        for batch in batches(2):
            state, _ = step(state, frozen, batch)
        if len(devices) == 4:
            assert state.params["classifier"]["kernel"][...].sharding.is_fully_replicated
        results.append(_flat(state.params, state.stats))
    for k in results[0]:
        np.testing.assert_allclose(results[1][k], results[0][k], atol=1e-5, rtol=1e-5, err_msg=k)


def test_indivisible_batch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"batch_size=6 is not divisible by the 4 devices.*--config.batch_size"):
        sharding.check_batch_size(6, sharding.make_mesh())


def test_typo_in_a_filter_regex_is_a_clear_error():
    model = StandIn(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="'classifer/.*' matches no parameter"):
        stage_lib.param_filter((r"classifer/.*",), model)
    with pytest.raises(ValueError, match="matches no BatchNorm"):
        stage_lib.set_modes(model, bn_train=("layer/7/.*",), dropout_train=())


def test_compiler_options_parse_and_reach_xla():
    from ego_jax.train.step import compiler_options

    assert compiler_options("") == {}
    assert compiler_options(" xla_a=1; xla_b=x,y; xla_c=false ") == {"xla_a": "1", "xla_b": "x,y", "xla_c": False}
    ynn_off = {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert compiler_options("auto", "cpu", "ego_rnn") == ynn_off and compiler_options("auto", "cpu", "flow") == {}
    assert compiler_options("auto", "gpu", "ego_rnn") == {} == compiler_options("auto", "tpu", "flow")
    with pytest.raises(ValueError, match="xla_<option>=<value>"):
        compiler_options("ynn=off")
    model = StandIn(rngs=nnx.Rngs(0))
    mesh = sharding.make_mesh()
    tx = optax.sgd(0.1)
    graphdef, state, frozen = init_state(model, nnx.Param, nnx.BatchStat, tx, mesh)
    step = make_train_step(graphdef, loss_fn, tx, mesh, compiler_options={"xla_no_such_option": "1"})
    with pytest.raises(Exception, match="xla_no_such_option"):  # XLA itself refuses it: the options reach it
        step(state, frozen, batches(1)[0])
