"""ResNet-18/34 vs an independent torch functional re-statement (ego_jax/convert/torch_reference.py), float32, CPU.

Random weights and randomised BN statistics, imported through the torchvision converter.
Tolerance for every output (layer3, layer4, layer4_raw, pooled, logits): elementwise
|jax - torch| <= ATOL + RTOL * |torch|. Achieved on the 2-core CPU dev machine (abs = max abs err,
rel = max abs err / max |torch|; jitted; `pytest -s` prints them per output):
  inference ResNet-34 width 8, 64x50 px, batch 2:  abs <= 1.9e-5, rel <= 2.6e-6
  inference ResNet-18 width 4, 33x47 px:           abs <= 2.2e-5, rel <= 3.4e-6
  inference ResNet-34 width 64, 64x64 px:          abs <= 8.7e-5, rel <= 9.0e-6
  training-mode BN (batch stats), ResNet-18 w8:    abs <= 1.3e-5, rel <= 2.4e-6
  its weight gradients (closed-form BN backward, max-pool): max abs err / max |torch grad| <= 8e-6
  running mean/var after that step (torch momentum 0.1, unbiased var): rel <= 1e-6
XLA 'SAME' padding on the stem alone gives abs errors ~7 (test_parity_check_detects_asymmetric_same_padding).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax.convert.torchvision import load_imagenet, torch_name, torchvision_to_nnx
from ego_jax.models.resnet import (
    ResNet,
    batch_norm_train,
    layer4_grid,
    max_pool_3x3_s2_p1,
)

torch = pytest.importorskip("torch")
from ego_jax.convert import torch_reference as torch_ref  # noqa: E402

ATOL, RTOL = 2e-4, 1e-4
KEYS = ("layer3", "layer4", "layer4_raw", "pooled", "logits")


def _model(sd, depth, *, width, in_channels=3, num_classes=10):
    # Every weight is loaded, so skip the random init (its per-shape compiles dominate CPU test time).
    model = nnx.eval_shape(
        lambda: ResNet(depth, width=width, in_channels=in_channels, num_classes=num_classes, rngs=nnx.Rngs(0))
    )
    load_imagenet(model, torchvision_to_nnx(sd), modality="rgb")
    return model


@nnx.jit
def _forward(model, x):
    return model(x)


def _nhwc(t):
    t = t.detach().numpy()
    return t.transpose(0, 2, 3, 1) if t.ndim == 4 else t


def _compare(out, ref, what):
    for k in KEYS:
        got, want = np.asarray(out[k]), _nhwc(ref[k])
        assert got.shape == want.shape, (what, k, got.shape, want.shape)
        err = np.abs(got - want)
        print(f"{what} {k}: max abs err {err.max():.2e}, max rel err {err.max() / np.abs(want).max():.2e}")
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=f"{what}: {k}")


def _inputs(n, h, w, c=3, seed=1):
    x = np.random.default_rng(seed).standard_normal((n, h, w, c)).astype(np.float32)
    return x, torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


@pytest.mark.parametrize("depth,width,size", [(34, 8, (64, 50)), (18, 4, (33, 47)), (34, 64, (64, 64))])
def test_inference_matches_torch(depth, width, size):
    sd = torch_ref.random_state_dict(depth, width=width, num_classes=10)
    model = _model(sd, depth, width=width)
    model.eval()
    x, xt = _inputs(2, *size)
    _compare(
        _forward(model, jnp.asarray(x)),
        torch_ref.resnet_forward(torch_ref.to_torch(sd), xt),
        f"R{depth} w{width} {size}",
    )


def test_training_mode_outputs_gradients_and_running_update_match_torch():
    """Training-mode BN (batch statistics, closed-form backward), the max-pool and the blocks: outputs, every
    weight's gradient and the running statistics after the step, against torch autograd."""
    sd = torch_ref.random_state_dict(18, width=8, num_classes=10, seed=3)
    model = _model(sd, 18, width=8)
    model.train()
    x, xt = _inputs(2, 64, 64, seed=4)
    cotangent = np.random.default_rng(7).standard_normal((2, 10)).astype(np.float32)

    def loss(m, x):
        out = m(x)
        return (out["logits"] * cotangent).sum(), out

    grads, out = nnx.jit(nnx.grad(loss, has_aux=True))(model, jnp.asarray(x))
    ref_sd = torch_ref.to_torch(sd)
    for k, v in ref_sd.items():
        v.requires_grad_(k.endswith(("weight", "bias")))
    ref = torch_ref.resnet_forward(ref_sd, xt, training=True, momentum=0.1)
    (ref["logits"] * torch.from_numpy(cotangent)).sum().backward()
    _compare(out, ref, "train-mode")
    flat = nnx.to_flat_state(grads)
    assert len(flat) == sum(v.requires_grad for v in ref_sd.values())
    errs = []
    for path, g in flat:
        want = ref_sd[torch_name(path)].grad.numpy()
        want = want.transpose({4: (2, 3, 1, 0), 2: (1, 0)}.get(want.ndim, range(want.ndim)))
        got = np.asarray(g[...])
        errs.append(np.abs(got - want).max() / np.abs(want).max())
        np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-3, err_msg=str(path))
    print(f"gradients: max rel err {max(errs):.2e}")
    # layer4 sees 2x2x2 = 8 values per channel: torch's unbiased running variance differs by 8/7 from the biased one.
    updated = torchvision_to_nnx({k: v.detach().numpy() for k, v in ref_sd.items()})
    state = nnx.to_flat_state(nnx.state(model, nnx.BatchStat))
    assert len(state) == sum(k.endswith(("/mean", "/var")) for k in updated)
    errs = []
    for p, v in state:
        got, want = np.asarray(v[...]), updated["/".join(map(str, p))]
        errs.append(np.abs(got - want).max() / np.abs(want).max())
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4, err_msg=str(p))
    print(f"running stats: max rel err {max(errs):.2e}")


def test_batch_norm_train_vjp_is_the_gradient_of_its_formula():
    """The closed-form backward equals autodiff of the plain formula, for all three outputs (y, mean, var)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, 3, 4)) * 3 + 1, jnp.float32)
    scale, bias = (jnp.asarray(rng.uniform(0.5, 1.5, 4), jnp.float32) for _ in range(2))
    cotangents = tuple(jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (x.shape, (4,), (4,)))

    def formula(x, scale, bias):
        mean = x.mean((0, 1, 2))
        var = jnp.square(x - mean).mean((0, 1, 2))
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias, mean, var

    def vjp(f):
        def both(*primals):
            out, pullback = jax.vjp(f, *primals)
            return out + pullback(cotangents)

        return jax.jit(both)(x, scale, bias)

    for got, want in zip(vjp(lambda *a: batch_norm_train(*a, 1e-5)), vjp(formula)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("size", [(16, 16), (17, 12)])
def test_max_pool_gradient_goes_to_the_first_maximum_like_torch(size):
    # Small integers: many ties inside each window, so which maximum gets the gradient decides the result.
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, (2, *size, 3)).astype(np.float32)
    dy = rng.integers(1, 5, (2, (size[0] - 1) // 2 + 1, (size[1] - 1) // 2 + 1, 3)).astype(np.float32)
    got = jax.jit(lambda x, dy: jax.vjp(max_pool_3x3_s2_p1, x)[1](dy)[0])(x, dy)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    torch.nn.functional.max_pool2d(xt, 3, 2, 1).backward(torch.from_numpy(dy.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_array_equal(np.asarray(got), _nhwc(xt.grad))


def test_parity_check_detects_asymmetric_same_padding():
    """The parity test can fail: XLA 'SAME' padding (asymmetric for stride 2) on the stem breaks it."""
    sd = torch_ref.random_state_dict(18, width=4, num_classes=10)
    model = _model(sd, 18, width=4)
    model.eval()
    model.conv1.padding = "SAME"
    x, xt = _inputs(1, 64, 64)
    with pytest.raises(AssertionError):
        _compare(_forward(model, jnp.asarray(x)), torch_ref.resnet_forward(torch_ref.to_torch(sd), xt), "SAME")


def _shapes(model, x):
    """Output shapes and dtypes of model(x), traced without compiling."""
    return nnx.eval_shape(lambda m, x: m(x), model, x)


@pytest.mark.parametrize("size", [(1, 1), (32, 32), (45, 70)])
def test_layer4_grid_follows_torch_arithmetic(size):
    sd = torch_ref.random_state_dict(18, width=4, num_classes=None)
    model = _model(sd, 18, width=4, num_classes=None)
    model.eval()
    x, xt = _inputs(1, *size)
    want = torch_ref.resnet_forward(torch_ref.to_torch(sd), xt)["layer4"].shape[2:]
    assert layer4_grid(*size) == tuple(want)
    assert _shapes(model, x)["layer4"].shape == (1, *want, 32)


def test_compute_dtype_keeps_float32_params():
    model = nnx.eval_shape(lambda: ResNet(18, width=4, num_classes=5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
    out = _shapes(model, jnp.ones((2, 32, 32, 3)))
    assert out["logits"].dtype == jnp.bfloat16 and out["layer4"].dtype == jnp.bfloat16
    assert {v.dtype for _, v in nnx.to_flat_state(nnx.state(model))} == {np.dtype(np.float32)}


def test_bad_input_and_config_errors():
    with pytest.raises(ValueError, match="depth must be one of"):
        ResNet(50, rngs=nnx.Rngs(0))
    model = nnx.eval_shape(lambda: ResNet(18, width=4, in_channels=10, num_classes=None, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"\(N, H, W, 10\)"):
        _shapes(model, jnp.ones((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        _shapes(model, jnp.ones((1, 32, 32, 10)))  # training mode, 1x1 layer4 grid, batch 1: torch refuses this too
