"""Motion-guided attention: w = 0 is Ego-RNN + MS, the guide is a product of experts, w and detach get their gradients.

Tiny models (ResNet-18 width 4, 64 px frames -> a 2x2 layer4 grid: on 1x1 the softmax is constant and w
has no effect), inference-mode BN, CPU float32.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax.models import EgoRNN, action_loss, motion_log_prob
from ego_jax.models.motion_guided import FLOOR

B, T, S, CLASSES = 2, 3, 64, 5


def clip(seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(B, T, S, S, 3)), jnp.float32)


def pair(kind="cls", tap="layer4", **guide):
    """Ego-RNN + MS (seed 0) and a motion-guided EgoRNN (seed 1) given the plain model's weights."""
    ms_head = dict(kind=kind, tap=tap, hidden=3, grid=(2, 2))
    plain = EgoRNN(CLASSES, depth=18, width=4, ms_head=ms_head, rngs=nnx.Rngs(0))
    guided = EgoRNN(CLASSES, depth=18, width=4, ms_head=ms_head, motion_guide=guide, rngs=nnx.Rngs(1))
    before = np.asarray(guided.lstm.x_conv.kernel[...]).copy()
    nnx.update(guided, nnx.state(plain))
    assert not np.array_equal(before, np.asarray(guided.lstm.x_conv.kernel[...]))  # the weights really were replaced
    plain.eval()
    guided.eval()
    return plain, guided


@pytest.mark.parametrize("kind,tap", [("cls", "layer4"), ("reg", "layer4_raw")])
def test_w_zero_is_ego_rnn_plus_ms(kind, tap):
    plain, guided = pair(kind, tap)
    assert float(guided.motion_guide.w[...]) == 0.0  # its initialisation
    x = clip()
    want, got = plain(x), guided(x)
    for key in ("logits", "feature", "attention", "ms"):
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)
    # Not equal by construction: a nonzero w changes the attention and the logits.
    guided.motion_guide.w[...] = jnp.float32(0.5)
    moved = guided(x)
    assert np.abs(np.asarray(moved["attention"]) - np.asarray(want["attention"])).max() > 1e-3
    assert not np.allclose(np.asarray(moved["logits"]), np.asarray(want["logits"]))


@pytest.mark.parametrize("kind", ["cls", "reg"])
def test_guided_attention_is_cam_attention_times_p_moving_to_the_w(kind):
    """softmax(cam + w log p) = cam_attention * p^w / sum: checked from the plain model's maps with NumPy."""
    plain, guided = pair(kind)
    w = 1.7
    guided.motion_guide.w[...] = jnp.float32(w)
    x = clip(1)
    base, got = plain(x), guided(x)
    ms = np.asarray(base["ms"], np.float64)
    if kind == "cls":
        p = np.exp(ms[..., 1]) / np.exp(ms).sum(-1)
    else:
        p = ms[..., 0]
    weights = np.asarray(base["attention"], np.float64) * np.maximum(p, FLOOR) ** w
    want = weights / weights.sum(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(np.asarray(got["attention"]), want, rtol=1e-4, atol=1e-6)


def test_motion_log_prob_floor_and_kinds():
    logits = jnp.asarray([[0.0, np.log(3.0)], [0.0, -30.0]])  # p(moving) 3/4; ~1e-13 -> floored
    np.testing.assert_allclose(np.asarray(motion_log_prob(logits)), [np.log(0.75), np.log(FLOOR)], rtol=1e-6)
    values = jnp.asarray([[0.5], [0.0]])
    np.testing.assert_allclose(np.asarray(motion_log_prob(values)), [np.log(0.5), np.log(FLOOR)], rtol=1e-6)
    with pytest.raises(ValueError, match="K=2"):
        motion_log_prob(jnp.zeros((2, 3)))


def grads(model, x, labels):
    model.train()
    return nnx.grad(lambda m: action_loss(m(x)["logits"], labels))(model)


def test_w_gets_a_gradient_from_the_action_loss_at_zero():
    _, guided = pair()
    g = grads(guided, clip(2), jnp.asarray([1, 4]))
    assert abs(float(g.motion_guide.w[...])) > 1e-6


@pytest.mark.parametrize("detach", [True, False])
def test_detach_decides_whether_the_action_loss_shapes_the_ms_head(detach):
    _, guided = pair(detach=detach)
    guided.motion_guide.w[...] = jnp.float32(0.5)  # at w = 0 the guide passes no gradient either way
    g = grads(guided, clip(3), jnp.asarray([0, 2]))
    reach = float(jnp.abs(g.ms_head.fc.kernel[...]).max())
    assert (reach == 0.0) if detach else (reach > 0.0), reach


def test_bad_arguments_are_rejected():
    ms = dict(kind="cls", hidden=3, grid=(2, 2))
    for kwargs in (dict(attention=False, ms_head=ms), dict(ms_head=None), dict(ms_head=dict(ms, tap="attended"))):
        with pytest.raises(ValueError, match="motion_guide steers"):
            EgoRNN(CLASSES, depth=18, width=4, motion_guide={}, rngs=nnx.Rngs(0), **kwargs)
    with pytest.raises(ValueError, match="motion_guide keys"):
        EgoRNN(CLASSES, depth=18, width=4, ms_head=ms, motion_guide=dict(weight=1.0), rngs=nnx.Rngs(0))
