"""LSTA cell and RGB model vs a torch re-statement of the authors' MyConvLSTACell / attentionModel.

Weights go through the reference-checkpoint converter (so this is also its round trip for LSTA); eval
mode, float32, CPU. Tolerances as in the README's parity table: 1e-5 for the cell's states at every step,
|jax - torch| <= 1e-4 + 1e-4 * |torch| for the model. `pytest -s` prints the measured errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax.models import LSTA, LSTACell, lsta

torch = pytest.importorskip("torch")
from ego_jax.convert import torch_reference as ref  # noqa: E402
from ego_jax.convert.reference import load_reference  # noqa: E402
from ego_jax.convert.torch_reference import compare, to_torch  # noqa: E402
from ego_jax.convert.torchvision import WeightsError  # noqa: E402

B, T, CLASSES, POOL = 2, 4, 5, 6
CELL_ATOL = CELL_RTOL = 1e-5


def cell_with_reference_weights(width=1):
    """(LSTACell with 8*width features, its reference state dict): random weights loaded by the converter."""
    sd = ref.random_lsta_state_dict(depth=18, width=width, pool_classes=POOL, num_classes=CLASSES)
    model = LSTA(CLASSES, depth=18, width=width, pool_classes=POOL, rngs=nnx.Rngs(0))
    load_reference(model, sd)
    return model.lsta, {k.removeprefix("lsta_cell."): v for k, v in sd.items() if k.startswith("lsta_cell.")}


def test_cell_matches_reference_at_every_step():
    features, size = 8, 5
    cell, sd = cell_with_reference_weights()
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(B, T, size, size, features)).astype(np.float32)
    cams = (3 * rng.normal(size=(B, T, size, size))).astype(np.float32)
    final, attention, (a, s, c, o) = lsta(cell, jnp.asarray(xs), jnp.asarray(cams), return_sequence=True)

    wt = to_torch(sd)
    state = ref.lsta_zero_state(B, features, size, size)
    want = {k: [] for k in ("a", "s", "c", "o", "u")}
    with torch.no_grad():
        for t in range(T):
            x = torch.tensor(xs[:, t]).permute(0, 3, 1, 2)
            state_att, state_inp, _, u = ref.lsta_cell(wt, x, torch.tensor(cams[:, t])[:, None], *state)
            state = (state_att, state_inp)
            for k, v in zip(want, (*state_att, *state_inp, u)):
                want[k].append(v.permute(0, 2, 3, 1))
    for name, got in dict(a=a, s=s, c=c, o=o, u=attention[..., None]).items():
        expected = torch.stack(want[name], 1).numpy()
        err = np.abs(np.asarray(got) - expected)
        print(f"LSTA cell {name}: max abs err {err.max():.2e}, max rel err {err.max() / np.abs(expected).max():.2e}")
        np.testing.assert_allclose(np.asarray(got), expected, atol=CELL_ATOL, rtol=CELL_RTOL, err_msg=name)
    assert float(np.std(np.asarray(attention))) > 1e-3  # the attention is not uniform
    assert float(np.std(np.asarray(a))) > 1e-2  # the attention state moves
    for got, seq in zip(final, (a, s, c, o)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(seq[:, -1]))
    # The pooling class (an argmax) is not the same for every clip and step, so the parity covers its selection.
    logits = np.einsum("btc,ck->btk", np.asarray(c).mean((2, 3)), np.asarray(cell.c_classifier.kernel[...]))
    x_att = xs * np.asarray(attention)[..., None]
    logits += np.einsum("btc,ck->btk", x_att.mean((2, 3)), np.asarray(cell.coupling_fc.kernel[...]))
    assert len(np.unique(logits.argmax(-1))) > 1
    # One call of the cell equals the first scanned step.
    carry, u = cell(cell.zero_carry(jnp.asarray(xs[:, 0])), jnp.asarray(xs[:, 0]), jnp.asarray(cams[:, 0, ..., None]))
    np.testing.assert_allclose(np.asarray(carry[2]), np.asarray(c[:, 0]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(u[..., 0]), np.asarray(attention[:, 0]), atol=1e-7)


def test_model_matches_reference():
    size = 96  # a 3x3 layer4 grid
    sd = ref.random_lsta_state_dict(depth=18, width=8, pool_classes=POOL, num_classes=CLASSES)
    model = LSTA(CLASSES, depth=18, width=8, pool_classes=POOL, rngs=nnx.Rngs(0))
    load_reference(model, sd)
    model.eval()
    x = np.random.default_rng(0).normal(size=(B, 3, size, size, 3)).astype(np.float32)
    out = model(jnp.asarray(x))
    with torch.no_grad():
        logits, feats, maps = ref.lsta_forward(to_torch(sd), torch.tensor(x).permute(0, 1, 4, 2, 3))
    compare(out["logits"], logits, "LSTA logits")
    compare(out["feature"], feats, "LSTA pooled c_T")
    compare(out["attention"], maps, "LSTA attention maps")
    assert out["attention"].shape == (B, 3, 3, 3) and out["ms"] is None
    assert float(np.asarray(out["attention"]).std()) > 1e-3


def test_reference_checkpoint_file_imports(tmp_path):
    """A .pth of the authors' attentionModel state dict lands where the converter's table says."""
    sd = ref.random_lsta_state_dict(depth=18, width=1, pool_classes=POOL, num_classes=CLASSES)
    path = tmp_path / "lsta_rgb.pth"
    torch.save(to_torch(sd), path)
    model = LSTA(CLASSES, depth=18, width=1, pool_classes=POOL, rngs=nnx.Rngs(0))
    load_reference(model, str(path))

    def hwio(key):
        return sd[f"lsta_cell.{key}.weight"].transpose(2, 3, 1, 0)

    cell, f = model.lsta, 8
    # attention blocks i, f, a~, o; memory blocks i, f, c~; o_conv reads concat(h, c_cam).
    np.testing.assert_array_equal(np.asarray(cell.att_s_conv.kernel[...])[..., 2:3], hwio("conv_a_s"))
    np.testing.assert_array_equal(np.asarray(cell.att_cam_conv.kernel[...])[..., 3:], hwio("conv_o_cam"))
    np.testing.assert_array_equal(np.asarray(cell.x_conv.bias[...])[f : 2 * f], sd["lsta_cell.conv_f_x.bias"])
    np.testing.assert_array_equal(np.asarray(cell.h_conv.kernel[...])[..., 2 * f :], hwio("conv_c_c"))
    np.testing.assert_array_equal(np.asarray(cell.o_conv.kernel[...])[:, :, :f], hwio("conv_o_x"))
    np.testing.assert_array_equal(np.asarray(cell.o_conv.kernel[...])[:, :, f:], hwio("conv_o_c"))
    np.testing.assert_array_equal(np.asarray(cell.o_conv.bias[...]), sd["lsta_cell.conv_o_x.bias"])
    np.testing.assert_array_equal(np.asarray(cell.coupling_fc.kernel[...]), sd["lsta_cell.coupling_fc.weight"].T)
    np.testing.assert_array_equal(np.asarray(model.classifier.bias[...]), sd["classifier.1.bias"])
    # The fc.* twins must equal classifier.1.*; a missing cell key is named.
    with pytest.raises(WeightsError, match="duplicate fc.weight differs"):
        load_reference(model, sd | {"fc.weight": sd["fc.weight"] + 1})
    with pytest.raises(WeightsError, match="missing keys: lsta_cell.conv_o_c.weight"):
        load_reference(model, {k: v for k, v in sd.items() if k != "lsta_cell.conv_o_c.weight"})


def test_initialisation_follows_the_reference():
    cin, feat = 16, 8
    cell = LSTACell(cin, feat, POOL, rngs=nnx.Rngs(1))
    for conv in (cell.att_s_conv, cell.x_conv, cell.o_conv):
        np.testing.assert_array_equal(np.asarray(conv.bias[...]), 0.0)
    assert cell.att_cam_conv.bias is None and cell.h_conv.bias is None
    assert cell.c_classifier.bias is None and cell.coupling_fc.bias is None
    # xavier_normal_ on each reference conv (its own fans): std = sqrt(2 / (9 * (in + out))).
    for conv, fan_in, fan_out in (
        (cell.att_s_conv, 1, 1),
        (cell.att_cam_conv, 1, 1),
        (cell.x_conv, cin, feat),
        (cell.h_conv, feat, feat),
        (cell.o_conv, feat, feat),
    ):
        kernel = np.asarray(conv.kernel[...])
        expected = np.sqrt(2.0 / (9 * (fan_in + fan_out)))
        assert abs(kernel.std() / expected - 1) < (0.4 if kernel.size < 100 else 0.1), conv
    # torch's default nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    kernel = np.asarray(cell.coupling_fc.kernel[...])
    assert np.abs(kernel).max() <= 1 / np.sqrt(cin) and np.abs(kernel).max() > 0.8 / np.sqrt(cin)


def test_unroll_is_a_pure_speed_choice():
    """Outputs and gradients of the fully unrolled scan (the CPU default) equal those of the rolled one."""
    cell = LSTACell(4, 5, POOL, rngs=nnx.Rngs(2))
    graphdef, state = nnx.split(cell)
    xs = jax.random.normal(jax.random.key(3), (2, 4, 3, 3, 4))
    cams = 2 * jax.random.normal(jax.random.key(4), (2, 4, 3, 3))

    def loss(state, xs, unroll):
        (a, s, c, o), u = lsta(nnx.merge(graphdef, state), xs, cams, unroll=unroll)
        return jnp.sum(jnp.sin(c)) + jnp.sum(o * o) + jnp.sum(a) + jnp.sum(u * u)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    (v1, (gs1, gx1)), (v2, (gs2, gx2)) = grad(state, xs, 1), grad(state, xs, True)
    np.testing.assert_allclose(v2, v1, rtol=1e-6)
    np.testing.assert_allclose(gx2, gx1, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(gs2), jax.tree.leaves(gs1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_inputs_are_rejected():
    cell = LSTACell(2, 3, POOL, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(B, T, h, w, C\) and cams \(B, T, h, w\)"):
        lsta(cell, jnp.zeros((1, 2, 4, 4, 2)), jnp.zeros((1, 2, 4, 5)))
    with pytest.raises(ValueError, match="odd"):
        LSTACell(2, 3, POOL, kernel_size=2, rngs=nnx.Rngs(0))
    model = nnx.eval_shape(lambda: LSTA(3, depth=18, width=4, rngs=nnx.Rngs(0)))  # shapes only: nothing to compute
    with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
        model(jnp.zeros((2, 32, 32, 3)))
