"""CAM attention vs a direct NumPy computation, and where its gradients go."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax.models import CamAttention, cam_attention


def numpy_cam(feat_bn, feat_raw, weight, bias):
    """Per frame, per position, with a torch-layout fc weight (K, C): the reference's steps literally."""
    n, h, w, c = feat_bn.shape
    attended = np.zeros_like(feat_raw)
    maps = np.zeros((n, h, w))
    for i in range(n):
        pooled = feat_bn[i].reshape(-1, c).mean(0)
        top1 = int(np.argmax(weight @ pooled + bias))
        cam = np.array([[weight[top1] @ feat_bn[i, y, x] for x in range(w)] for y in range(h)])
        e = np.exp(cam - cam.max())
        maps[i] = e / e.sum()
        for y in range(h):
            for x in range(w):
                attended[i, y, x] = feat_raw[i, y, x] * maps[i, y, x]
    return attended, maps


def make_inputs(seed=0, n=3, h=3, w=4, c=8, k=10):
    rng = np.random.default_rng(seed)
    feat_bn = np.maximum(rng.normal(size=(n, h, w, c)), 0)
    feat_raw = rng.normal(size=(n, h, w, c))
    weight = rng.normal(size=(k, c))
    bias = rng.normal(size=(k,)) * 3  # large enough that the bias changes the argmax for some frames
    return feat_bn, feat_raw, weight, bias


def test_matches_numpy():
    feat_bn, feat_raw, weight, bias = make_inputs()
    attended, attention = cam_attention(*(jnp.asarray(a, jnp.float32) for a in (feat_bn, feat_raw, weight.T, bias)))
    ref_attended, ref_maps = numpy_cam(feat_bn, feat_raw, weight, bias)
    np.testing.assert_allclose(np.asarray(attention), ref_maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(attended), ref_attended, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(attention).sum(axis=(1, 2)), 1.0, rtol=1e-6)


def test_bias_selects_the_class():
    feat_bn, feat_raw, weight, bias = make_inputs(seed=1)
    # Frame 0 with the bias pointing at two different classes gives two different maps.
    maps = []
    for target in (0, 1):
        b = np.zeros_like(bias)
        b[target] = 1e6
        maps.append(
            np.asarray(cam_attention(*(jnp.asarray(a, jnp.float32) for a in (feat_bn, feat_raw, weight.T, b)))[1])
        )
        np.testing.assert_allclose(maps[-1], numpy_cam(feat_bn, feat_raw, weight, b)[1], rtol=1e-5, atol=1e-6)
    assert np.abs(maps[0] - maps[1]).max() > 1e-3


def test_gradients_reach_fc_kernel_only_through_the_top1_columns():
    feat_bn, feat_raw, weight, bias = (jnp.asarray(a, jnp.float32) for a in make_inputs(seed=2))

    def loss(k, b):
        return jnp.sum(cam_attention(feat_bn, feat_raw, k, b)[0] ** 2)

    g_kernel, g_bias = jax.grad(loss, argnums=(0, 1))(weight.T, bias)
    np.testing.assert_array_equal(np.asarray(g_bias), 0.0)
    top1 = np.argmax(np.asarray(feat_bn).mean((1, 2)) @ np.asarray(weight).T + np.asarray(bias), -1)
    used = np.abs(np.asarray(g_kernel)).sum(0) > 0
    np.testing.assert_array_equal(np.flatnonzero(used), np.unique(top1))


def test_module_form_reads_the_linear():
    feat_bn, feat_raw, weight, bias = make_inputs(seed=3)
    fc = nnx.Linear(8, 10, rngs=nnx.Rngs(0))
    fc.kernel[...] = jnp.asarray(weight.T, jnp.float32)
    fc.bias[...] = jnp.asarray(bias, jnp.float32)
    attended, attention = CamAttention()(jnp.asarray(feat_bn, jnp.float32), jnp.asarray(feat_raw, jnp.float32), fc)
    np.testing.assert_allclose(
        np.asarray(attended), numpy_cam(feat_bn, feat_raw, weight, bias)[0], rtol=1e-5, atol=1e-6
    )


def test_shape_mismatch_is_rejected():
    feat_bn, feat_raw, weight, bias = make_inputs()
    with pytest.raises(ValueError, match="feat_bn and feat_raw"):
        cam_attention(feat_bn, feat_raw[:, :2], weight.T, bias)
