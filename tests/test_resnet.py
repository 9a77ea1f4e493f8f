"""ResNet-18/34 vs an independent torch functional re-statement (ego_jax/convert/torch_reference.py), float32, CPU.

Random weights and randomised BN statistics, imported through the torchvision converter.
Tolerance for every output (layer3, layer4, layer4_raw, pooled, logits): elementwise
|jax - torch| <= ATOL + RTOL * |torch|. Achieved on the 2-core CPU dev machine (abs = max abs err,
rel = max abs err / max |torch|; jitted; `pytest -s` prints them per output):
  inference ResNet-34 width 8, 64x50 px, batch 2:  abs <= 1.9e-5, rel <= 2.6e-6
  inference ResNet-18 width 4, 33x47 px:           abs <= 2.2e-5, rel <= 3.4e-6
  inference ResNet-34 width 64, 64x64 px:          abs <= 8.7e-5, rel <= 9.0e-6
  training-mode BN (batch stats), ResNet-34 w8:    abs <= 6.3e-5, rel <= 1.1e-5
  running mean/var after that step (torch momentum 0.1, unbiased var): rel <= 1e-6
XLA 'SAME' padding on the stem alone gives abs errors ~7 (test_parity_check_detects_asymmetric_same_padding).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax.convert.torchvision import load_imagenet, torchvision_to_nnx
from ego_jax.models.resnet import ResNet, layer4_grid

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


def test_training_mode_batch_stats_and_running_update_match_torch():
    sd = torch_ref.random_state_dict(34, width=8, num_classes=10, seed=3)
    model = _model(sd, 34, width=8)
    model.train()
    x, xt = _inputs(2, 64, 64, seed=4)
    ref_sd = torch_ref.to_torch(sd)
    ref = torch_ref.resnet_forward(ref_sd, xt, training=True, momentum=0.1)
    _compare(_forward(model, jnp.asarray(x)), ref, "train-mode")
    # layer4 sees 2x2x2 = 8 values per channel: torch's unbiased running variance differs by 8/7 from the biased one.
    updated = torchvision_to_nnx({k: v.numpy() for k, v in ref_sd.items()})
    state = nnx.to_flat_state(nnx.state(model, nnx.BatchStat))
    assert len(state) == sum(k.endswith(("/mean", "/var")) for k in updated)
    errs = []
    for p, v in state:
        got, want = np.asarray(v[...]), updated["/".join(map(str, p))]
        errs.append(np.abs(got - want).max() / np.abs(want).max())
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4, err_msg=str(p))
    print(f"running stats: max rel err {max(errs):.2e}")


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
