"""TwoStream vs a torch re-statement of the reference twoStreamAttentionModel, fed the same weights.

Weights go through the reference-checkpoint converter; eval mode, float32, CPU. Tolerance:
|jax - torch| <= ATOL + RTOL * |torch|. `pytest -s` prints the measured max abs / rel errors.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax.models import EgoRNN, FlowResNet, TwoStream

torch = pytest.importorskip("torch")
from ego_jax.convert import torch_reference as ref  # noqa: E402
from ego_jax.convert.reference import load_reference  # noqa: E402
from ego_jax.convert.torch_reference import compare  # noqa: E402

STACK, CLASSES = 2, 5


def build(width=8):
    rgb = EgoRNN(CLASSES, depth=18, width=width, rngs=nnx.Rngs(0))
    flow = FlowResNet(CLASSES, stack=STACK, depth=18, width=width, rngs=nnx.Rngs(1))
    return TwoStream(CLASSES, rgb=rgb, flow=flow, rngs=nnx.Rngs(2))


def inputs(seed=0, size=64):
    rng = np.random.default_rng(seed)
    rgb = rng.normal(size=(2, 3, size, size, 3)).astype(np.float32)
    flow = rng.normal(size=(2, size, size, 2 * STACK)).astype(np.float32)
    return rgb, flow


def test_matches_torch_reference():
    sd = ref.random_two_stream_state_dict(depth=18, width=8, stack=STACK, num_classes=CLASSES)
    model = build()
    load_reference(model, sd)
    model.eval()
    rgb, flow = inputs()
    out = model(jnp.asarray(rgb), jnp.asarray(flow))
    with torch.no_grad():
        logits, feats = ref.two_stream_forward(
            ref.to_torch(sd), torch.tensor(rgb).permute(0, 1, 4, 2, 3), torch.tensor(flow).permute(0, 3, 1, 2)
        )
    compare(out["logits"], logits, "TwoStream logits")
    compare(out["feature"], feats, "TwoStream joint feature (flow first)")
    assert out["attention"].shape == (2, 3, 2, 2)


def test_feature_is_flow_then_rgb_before_stream_dropouts():
    model = build(width=4)
    model.eval()
    rgb, flow = (jnp.asarray(a) for a in inputs(1, 32))
    out = model(rgb, flow)
    model.rgb.dropout.deterministic = model.flow.dropout.deterministic = False
    again = model(rgb, flow)
    np.testing.assert_array_equal(np.asarray(again["feature"]), np.asarray(out["feature"]))
    np.testing.assert_array_equal(np.asarray(out["feature"][:, :32]), np.asarray(model.flow(flow)["feature"]))
    np.testing.assert_array_equal(np.asarray(out["feature"][:, 32:]), np.asarray(model.rgb(rgb)["feature"]))
    assert model.classifier.kernel.shape == (64, CLASSES)
