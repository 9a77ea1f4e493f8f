"""FlowResNet vs a torch re-statement of the reference flow_resnet34, fed the same weights.

Weights go through the reference-checkpoint converter; eval mode, float32, CPU. Tolerance:
|jax - torch| <= ATOL + RTOL * |torch|. `pytest -s` prints the measured max abs / rel errors.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax.models import FlowResNet

torch = pytest.importorskip("torch")
from ego_jax.convert import torch_reference as ref  # noqa: E402
from ego_jax.convert.reference import load_reference  # noqa: E402
from ego_jax.convert.torch_reference import compare  # noqa: E402

STACK, CLASSES = 2, 5


def test_matches_torch_reference():
    sd = ref.random_flow_state_dict(depth=18, width=8, stack=STACK, num_classes=CLASSES)
    model = FlowResNet(CLASSES, stack=STACK, depth=18, width=8, rngs=nnx.Rngs(0))
    load_reference(model, sd)
    model.eval()
    x = np.random.default_rng(0).normal(size=(2, 64, 48, 2 * STACK)).astype(np.float32)
    out = model(jnp.asarray(x))
    with torch.no_grad():
        logits, feats = ref.flow_forward(ref.to_torch(sd), torch.tensor(x).permute(0, 3, 1, 2))
    compare(out["logits"], logits, "FlowResNet logits")
    compare(out["feature"], feats, "FlowResNet pooled layer4")


def test_dropout_after_feature_and_input_check():
    model = FlowResNet(CLASSES, stack=STACK, depth=18, width=4, rngs=nnx.Rngs(0))
    model.eval()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 2 * STACK)), jnp.float32)
    out = model(x)
    assert out["logits"].shape == (2, CLASSES) and out["feature"].shape == (2, 32)
    model.dropout.deterministic = False
    dropped = model(x)
    np.testing.assert_array_equal(np.asarray(dropped["feature"]), np.asarray(out["feature"]))
    assert not np.allclose(np.asarray(dropped["logits"]), np.asarray(out["logits"]))
    with pytest.raises(ValueError, match="stack=2"):
        model(jnp.zeros((2, 32, 32, 10)))
