"""Motion-segmentation head: layout vs torch, losses on small cases by hand, gradients into layer4."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax.models import EgoRNN, MotionSegmentationHead, ms_loss


@pytest.mark.parametrize("kind,k", [("cls", 2), ("reg", 1)])
def test_shapes_and_range(kind, k):
    head = MotionSegmentationHead(8, (2, 3), kind=kind, hidden=5, rngs=nnx.Rngs(0))
    out = head(jax.random.normal(jax.random.key(0), (4, 2, 3, 8)) * 10)
    assert out.shape == (4, 2, 3, k)
    assert head.conv.kernel.shape == (1, 1, 8, 5) and head.fc.kernel.shape == (5 * 2 * 3, 2 * 3 * k)
    if kind == "reg":
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_layout_matches_torch_module():
    """ReLU -> 1x1 conv -> torch.flatten(NCHW) -> Linear -> view(N, h, w, K), as documented in motion_head.py."""
    torch = pytest.importorskip("torch")
    n, h, w, c, hidden = 2, 2, 3, 4, 5
    head = MotionSegmentationHead(c, (h, w), kind="cls", hidden=hidden, rngs=nnx.Rngs(1))
    conv_w = np.asarray(head.conv.kernel[...])[0, 0].T  # (hidden, c)
    x = np.random.default_rng(0).normal(size=(n, h, w, c)).astype(np.float32)

    def tt(a):
        return torch.tensor(np.asarray(a))

    t = torch.nn.functional.relu(tt(x).permute(0, 3, 1, 2))
    t = torch.nn.functional.conv2d(t, tt(conv_w)[:, :, None, None], tt(head.conv.bias[...]))
    t = torch.flatten(t, 1) @ tt(head.fc.kernel[...]) + tt(head.fc.bias[...])
    np.testing.assert_allclose(np.asarray(head(jnp.asarray(x))), t.view(n, h, w, 2).numpy(), rtol=1e-5, atol=1e-5)


def test_cls_loss_by_hand_with_targets_varying_per_frame_and_cell():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(2, 3, 2, 2, 2)).astype(np.float32)
    target = rng.integers(0, 2, size=(2, 3, 2, 2)).astype(np.float32)
    assert 0 < target.mean() < 1
    # CE of a 2-way softmax = softplus(other logit - true logit), summed cell by cell.
    total = 0.0
    for idx in np.ndindex(target.shape):
        true = int(target[idx])
        total += math.log1p(math.exp(pred[idx][1 - true] - pred[idx][true]))
    expected = total / target.size
    np.testing.assert_allclose(float(ms_loss(jnp.asarray(pred), jnp.asarray(target), "cls")), expected, rtol=1e-5)
    # A target shifted by one frame pairs cells with the wrong predictions and changes the loss.
    shifted = np.roll(target, 1, axis=1)
    assert abs(float(ms_loss(jnp.asarray(pred), jnp.asarray(shifted), "cls")) - expected) > 1e-3


def test_cls_loss_known_value():
    # logits (0, log 3) -> p(moving) = 3/4; target moving -> -log(3/4); static -> -log(1/4).
    pred = jnp.asarray([[[[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]]]])  # (1,1,1,2,2)
    target = jnp.asarray([[[[1.0, 0.0]]]])
    np.testing.assert_allclose(float(ms_loss(pred, target, "cls")), (-math.log(0.75) - math.log(0.25)) / 2, rtol=1e-6)


def test_reg_losses_by_hand():
    pred = np.array([0.9, 0.2, 0.5, 0.0], np.float32).reshape(1, 2, 1, 2, 1)
    target = np.array([0.5, 0.2, 0.0, 1.0], np.float32).reshape(1, 2, 1, 2)
    d = [0.4, 0.0, 0.5, -1.0]
    cases = {
        "mse": sum(x * x for x in d) / 4,
        "l1": sum(abs(x) for x in d) / 4,
        "smooth_l1": sum(0.5 * x * x if abs(x) < 1 else abs(x) - 0.5 for x in d) / 4,
    }
    for name, expected in cases.items():
        got = float(ms_loss(jnp.asarray(pred), jnp.asarray(target), "reg", reg_loss=name))
        np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=name)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        ms_loss(jnp.zeros((1, 2, 2, 2, 1)), jnp.zeros((1, 2, 2, 2)), "cls")
    with pytest.raises(ValueError, match="reg_loss"):
        ms_loss(jnp.zeros((1, 2, 2, 2, 1)), jnp.zeros((1, 2, 2, 2)), "reg", reg_loss="huber")
    with pytest.raises(ValueError, match="tap"):
        MotionSegmentationHead(4, (1, 1), tap="layer3", rngs=nnx.Rngs(0))
    head = MotionSegmentationHead(4, (2, 2), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="grid"):
        head(jnp.zeros((1, 1, 1, 4)))


@pytest.mark.parametrize("kind,tap", [("cls", "layer4"), ("reg", "layer4_raw"), ("cls", "attended")])
def test_gradients_reach_layer4(kind, tap):
    model = EgoRNN(3, depth=18, width=4, ms_head=dict(kind=kind, tap=tap, hidden=6, grid=(1, 1)), rngs=nnx.Rngs(0))
    model.eval()
    rgb = jax.random.normal(jax.random.key(1), (2, 3, 32, 32, 3))
    target = jnp.asarray(np.random.default_rng(0).integers(0, 2, (2, 3, 1, 1)), jnp.float32)

    def loss(model):
        return ms_loss(model(rgb)["ms"], target, kind)

    grads = nnx.grad(loss)(model)
    g = grads.backbone.layer4[1].conv2.kernel[...]
    assert float(jnp.abs(g).max()) > 0
    assert float(jnp.abs(grads.ms_head.fc.kernel[...]).max()) > 0
