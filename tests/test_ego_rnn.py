"""EgoRNN (RGB stream) vs a torch re-statement of the reference attentionModel, fed the same weights.

Weights go through the reference-checkpoint converter (so this is also its round trip); eval mode,
float32, CPU. Tolerance: |jax - torch| <= ATOL + RTOL * |torch| on logits, pooled c_T and the
attention maps. Run `pytest -s` to print the measured max abs / rel (to max |torch|) errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax.models import EgoRNN, action_loss

torch = pytest.importorskip("torch")
import ego_rnn_torch_ref as ref  # noqa: E402
from ego_rnn_torch_ref import compare  # noqa: E402

from ego_jax.convert.reference import load_reference  # noqa: E402

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


def test_time_is_scanned_not_unrolled():
    """With scan_unroll=1 (the TPU default) the program does not grow with T; the model passes unroll through."""
    model = EgoRNN(CLASSES, depth=18, width=4, scan_unroll=1, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x)["logits"])
    texts = [forward.lower(state, jnp.zeros((1, t, 32, 32, 3))).as_text() for t in (7, 25)]
    assert len(texts[0].splitlines()) == len(texts[1].splitlines())
    assert texts[0].count("convolution") == texts[1].count("convolution")
    assert abs(len(texts[0]) - len(texts[1])) < 0.01 * len(texts[0])  # only the digits of T differ


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


def test_jitted_gradients_reach_the_recurrence_attention_fc_and_classifier():
    model = EgoRNN(CLASSES, depth=18, width=4, rngs=nnx.Rngs(0))
    model.train()
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 64, 64, 3)), jnp.float32)
    labels = jnp.asarray([1, 4])

    @nnx.jit
    def grads(model, x):
        return nnx.grad(lambda m: action_loss(m(x)["logits"], labels))(model)

    g = grads(model, x)
    for name, leaf in (
        ("h_conv", g.lstm.h_conv.kernel),
        ("x_conv", g.lstm.x_conv.kernel),
        ("ImageNet fc kernel (through the CAM)", g.backbone.fc.kernel),
        ("classifier", g.classifier.kernel),
    ):
        assert float(jnp.abs(leaf[...]).max()) > 0, name
    # fc.bias only selects the CAM class (an argmax): no gradient.
    np.testing.assert_array_equal(np.asarray(g.backbone.fc.bias[...]), 0.0)
