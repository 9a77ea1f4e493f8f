"""EgoRNN (RGB stream) vs a torch re-statement of the reference attentionModel, fed the same weights.

Weights go through the reference-checkpoint converter (so this is also its round trip); eval mode,
float32, CPU. Tolerance: |jax - torch| <= ATOL + RTOL * |torch| on logits, pooled c_T and the
attention maps. Run `pytest -s` to print the measured max abs / rel (to max |torch|) errors.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax import streams
from ego_jax.models import EgoRNN, action_loss

torch = pytest.importorskip("torch")
from ego_jax.convert import torch_reference as ref  # noqa: E402
from ego_jax.convert.reference import load_reference  # noqa: E402
from ego_jax.convert.torch_reference import compare  # noqa: E402

B, T, S, CLASSES = 2, 3, 64, 5


def rgb_clip(seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, S, S, 3)).astype(np.float32)


@pytest.mark.parametrize("attention", [True, False])
def test_matches_torch_reference(attention):
    sd = ref.random_rgb_state_dict(depth=18, width=8, num_classes=CLASSES)
    model = EgoRNN(CLASSES, depth=18, width=8, attention=attention, rngs=nnx.Rngs(0))
    load_reference(model, sd)
    model.eval()
    x = rgb_clip()
    out = model(jnp.asarray(x))
    with torch.no_grad():
        logits, feats, maps = ref.rgb_forward(
            ref.to_torch(sd), torch.tensor(x).permute(0, 1, 4, 2, 3), attention=attention
        )
    tag = "attention" if attention else "no attention"
    compare(out["logits"], logits, f"EgoRNN ({tag}) logits")
    compare(out["feature"], feats, f"EgoRNN ({tag}) pooled c_T")
    if attention:
        compare(out["attention"], maps, "EgoRNN attention maps")
        assert float(np.asarray(out["attention"]).std()) > 1e-3  # a 2x2 grid: the maps are not uniform
    else:
        assert out["attention"] is None


def test_outputs_pool_and_dropout():
    model = EgoRNN(
        CLASSES,
        depth=18,
        width=4,
        mem_features=6,
        pool="h",
        ms_head=dict(kind="reg", tap="attended", hidden=3, grid=(2, 2)),
        rngs=nnx.Rngs(0),
    )
    x = jnp.asarray(rgb_clip(1))
    model.eval()
    out = model(x)
    assert out["logits"].shape == (B, CLASSES) and out["feature"].shape == (B, 6)
    assert out["attention"].shape == (B, T, 2, 2) and out["ms"].shape == (B, T, 2, 2, 1)
    # pool='h' reads h_T = o * tanh(c_T): bounded by 1, unlike c_T.
    assert float(jnp.abs(out["feature"]).max()) < 1.0
    model.dropout.deterministic = False  # dropout on, BN still in inference mode
    dropped = model(x)
    # Dropout(0.7) acts after the pooled feature: the feature is unchanged, the logits are not.
    np.testing.assert_array_equal(np.asarray(dropped["feature"]), np.asarray(out["feature"]))
    assert not np.allclose(np.asarray(dropped["logits"]), np.asarray(out["logits"]))


def test_frames_are_not_mixed_between_clips():
    """Each clip's outputs depend only on its own frames, and ms[b, t] is the head on frame (b, t)."""
    model = EgoRNN(CLASSES, depth=18, width=4, ms_head=dict(kind="cls", hidden=3, grid=(2, 2)), rngs=nnx.Rngs(0))
    model.eval()
    x = rgb_clip(2)
    both = model(jnp.asarray(x))
    first = model(jnp.asarray(x[:1]))
    np.testing.assert_allclose(np.asarray(both["logits"][0]), np.asarray(first["logits"][0]), rtol=1e-5, atol=1e-5)
    frame = model.backbone(jnp.asarray(x[1, 2:3]))["layer4"]
    np.testing.assert_allclose(np.asarray(both["ms"][1, 2]), np.asarray(model.ms_head(frame)[0]), rtol=1e-5, atol=1e-5)


def test_action_loss_by_hand():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
    labels = np.array([0, 2])
    expected = np.mean([np.log(np.exp(row).sum()) - row[y] for row, y in zip(logits, labels)])
    np.testing.assert_allclose(float(action_loss(jnp.asarray(logits), jnp.asarray(labels))), expected, rtol=1e-6)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="pool"):
        EgoRNN(3, depth=18, width=4, pool="mean", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="ms_head keys"):
        EgoRNN(3, depth=18, width=4, ms_head=dict(kind="cls", layer="layer3"), rngs=nnx.Rngs(0))
    model = EgoRNN(3, depth=18, width=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
        model(jnp.zeros((2, 32, 32, 3)))


# kind -> (kwargs, training mode, gradient paths that must be nonzero, paths with no gradient). Zero: what only an
# argmax reads (the ImageNet fc bias picks the CAM class; LSTA's coupling_fc): torch leaves their .grad None, so
# its optimisers skip them.
GRADIENTS = {
    "ego_rnn": (
        dict(depth=18, width=4),
        True,
        ("lstm.h_conv", "lstm.x_conv", "backbone.fc.kernel", "classifier.kernel"),
        ("backbone.fc.bias",),
    ),
    # A rolled scan compiles faster; with a 2x2 grid its slow CPU backward pass costs nothing.
    "lsta": (
        dict(depth=18, width=4, pool_classes=7, scan_unroll=1),
        False,
        (
            "lsta.att_s_conv",
            "lsta.att_cam_conv",
            "lsta.x_conv",
            "lsta.h_conv",
            "lsta.o_conv",
            "lsta.c_classifier",
            "backbone.fc.kernel",
            "classifier.kernel",
        ),
        ("lsta.coupling_fc.kernel", "backbone.fc.bias"),
    ),
}


@pytest.mark.parametrize("kind", sorted(GRADIENTS))
def test_jitted_gradients_reach_what_the_reference_trains_and_not_what_it_cannot(kind):
    kwargs, training, moving, still = GRADIENTS[kind]
    model = streams.get(kind).build(CLASSES, kwargs, dtype=jnp.float32, rngs=nnx.Rngs(0), crop=64)
    model.train() if training else model.eval()
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 64, 64, 3)), jnp.float32)
    g = nnx.jit(lambda m, x: nnx.grad(lambda m: action_loss(m(x)["logits"], jnp.asarray([1, 4])))(m))(model, x)

    def leaf(path):
        node = g
        for name in path.split("."):
            node = getattr(node, name)
        return np.asarray(node.kernel[...] if hasattr(node, "kernel") else node[...])

    for path in moving:
        assert np.abs(leaf(path)).max() > 0, path
    for path in still:
        np.testing.assert_array_equal(leaf(path), 0.0, err_msg=path)
