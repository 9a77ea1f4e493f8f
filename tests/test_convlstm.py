"""ConvLSTM cell vs a torch re-statement of the reference cell (eight separate convolutions)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax import streams
from ego_jax.models import ConvLSTMCell, convlstm

torch = pytest.importorskip("torch")
from ego_jax.convert.torch_reference import GATES, convlstm_cell  # noqa: E402


def torch_reference_steps(weights, xs, features):
    """The reference cell (eight convolutions) step by step from zero state; xs (B,T,C,H,W) -> hs, cs (B,T,F,H,W)."""
    b, t, _, hh, ww = xs.shape
    state = (torch.zeros(b, features, hh, ww, dtype=xs.dtype),) * 2
    hs, cs = [], []
    for step in range(t):
        state = convlstm_cell(weights, xs[:, step], state)
        hs.append(state[0])
        cs.append(state[1])
    return torch.stack(hs, 1), torch.stack(cs, 1)


def test_matches_eight_conv_reference_over_several_steps():
    cin, feat, b, t, size = 3, 4, 2, 4, 5
    rng = np.random.default_rng(0)
    weights = {}
    for g in GATES:
        weights[f"conv_{g}_xx.weight"] = rng.normal(0, 0.5, (feat, cin, 3, 3))
        weights[f"conv_{g}_xx.bias"] = rng.normal(0, 0.5, (feat,))
        weights[f"conv_{g}_hh.weight"] = rng.normal(0, 0.5, (feat, feat, 3, 3))
    xs = rng.normal(0, 1, (b, t, size, size, cin))

    cell = ConvLSTMCell(cin, feat, rngs=nnx.Rngs(0))

    def hwio(w):
        return np.transpose(w, (2, 3, 1, 0))

    cell.x_conv.kernel[...] = jnp.asarray(
        np.concatenate([hwio(weights[f"conv_{g}_xx.weight"]) for g in GATES], -1), jnp.float32
    )
    cell.x_conv.bias[...] = jnp.asarray(np.concatenate([weights[f"conv_{g}_xx.bias"] for g in GATES]), jnp.float32)
    cell.h_conv.kernel[...] = jnp.asarray(
        np.concatenate([hwio(weights[f"conv_{g}_hh.weight"]) for g in GATES], -1), jnp.float32
    )
    (h_t, c_t), (hs, cs) = convlstm(cell, jnp.asarray(xs, jnp.float32), return_sequence=True)

    ref_hs, ref_cs = torch_reference_steps(
        {k: torch.from_numpy(v) for k, v in weights.items()}, torch.from_numpy(xs).permute(0, 1, 4, 2, 3), feat
    )

    def to_nhwc(a):
        return a.permute(0, 1, 3, 4, 2).numpy()

    np.testing.assert_allclose(np.asarray(hs), to_nhwc(ref_hs), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(cs), to_nhwc(ref_cs), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(h_t), np.asarray(hs[:, -1]))
    np.testing.assert_array_equal(np.asarray(c_t), np.asarray(cs[:, -1]))
    # One step of the cell's public call agrees with the first scanned step.
    zeros = jnp.zeros((b, size, size, feat))
    h1, c1 = cell((zeros, zeros), jnp.asarray(xs[:, 0], jnp.float32))
    np.testing.assert_allclose(np.asarray(c1), to_nhwc(ref_cs)[:, 0], atol=1e-5, rtol=1e-5)


def test_initialisation_is_per_gate_xavier_normal_with_zero_bias():
    cin, feat = 16, 8
    cell = ConvLSTMCell(cin, feat, rngs=nnx.Rngs(1))
    assert cell.h_conv.bias is None
    np.testing.assert_array_equal(np.asarray(cell.x_conv.bias[...]), 0.0)
    for conv, fan_in in ((cell.x_conv, cin), (cell.h_conv, feat)):
        kernel = np.asarray(conv.kernel[...])
        # torch.nn.init.xavier_normal_ on each (fan_in -> feat) 3x3 gate conv: std = sqrt(2 / (9 * (fan_in + feat))).
        expected_std = np.sqrt(2.0 / (9 * (fan_in + feat)))
        assert kernel.shape == (3, 3, fan_in, 4 * feat)
        assert abs(kernel.std() / expected_std - 1) < 0.1
        # untruncated normal: some draws beyond 2 std (a truncated normal at 2 std would have none).
        assert (np.abs(kernel) > 2.2 * expected_std).mean() > 0.01


def _cell_program(t: int) -> str:
    cell = ConvLSTMCell(2, 3, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(cell)
    run = jax.jit(lambda state, xs: convlstm(nnx.merge(graphdef, state), xs, return_sequence=True, unroll=1))
    return run.lower(state, jnp.zeros((1, t, 4, 4, 2))).as_text()


def _stream_program(kind: str, t: int) -> str:
    model = streams.get(kind).build(
        3, dict(depth=18, width=4, scan_unroll=1), dtype=jnp.float32, rngs=nnx.Rngs(0), crop=32
    )
    model.eval()
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x)["logits"])
    return forward.lower(state, jnp.zeros((1, t, 32, 32, 3))).as_text()


# The ConvLSTM, and every stream kind with a time scan (its entry names scan_unroll a speed-only kwarg).
SCANNED = ["convlstm"] + [k for k, s in streams.STREAMS.items() if "scan_unroll" in s.speed_only]


@pytest.mark.parametrize("what", SCANNED)
def test_time_is_scanned_not_unrolled(what):
    """With unroll=1 (the TPU default) the program does not grow with T: time is one scan, for the ConvLSTM and
    every model that passes scan_unroll through."""
    texts = [_cell_program(t) if what == "convlstm" else _stream_program(what, t) for t in (7, 25)]
    assert texts[0].count("convolution") == texts[1].count("convolution")
    assert len(texts[0].splitlines()) == len(texts[1].splitlines())
    assert abs(len(texts[0]) - len(texts[1])) < 0.01 * len(texts[0])  # only the digits of T differ


def test_bad_input_rank_and_even_kernel_are_rejected():
    cell = ConvLSTMCell(2, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(B, T, h, w, C\)"):
        convlstm(cell, jnp.zeros((4, 4, 4, 2)))
    with pytest.raises(ValueError, match="odd"):
        ConvLSTMCell(2, 3, kernel_size=2, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("unroll", [True, 3])
def test_unroll_is_a_pure_speed_choice(unroll):
    """Outputs and gradients (parameters and input) with `unroll` equal those of the rolled scan (unroll=1)."""
    cell = ConvLSTMCell(4, 5, rngs=nnx.Rngs(2))
    graphdef, state = nnx.split(cell)
    xs = jax.random.normal(jax.random.key(3), (2, 7, 5, 5, 4))

    def loss(state, xs, unroll):
        h, c = convlstm(nnx.merge(graphdef, state), xs, unroll=unroll)
        return jnp.sum(jnp.sin(h)) + jnp.sum(c * c)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    (v1, (gs1, gx1)), (v2, (gs2, gx2)) = grad(state, xs, 1), grad(state, xs, unroll)
    lowered = [jax.jit(loss, static_argnums=2).lower(state, xs, u).as_text() for u in (1, unroll)]
    assert lowered[0] != lowered[1]  # the two really are different programs
    np.testing.assert_allclose(v2, v1, rtol=1e-6)
    np.testing.assert_allclose(gx2, gx1, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(gs2), jax.tree.leaves(gs1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_default_unroll_per_backend():
    from ego_jax.models.convlstm import default_unroll

    assert default_unroll("cpu") is True and default_unroll("gpu") is True  # any loop is slow there (issue 12868)
    assert default_unroll("tpu") == 1


def test_first_step_skips_the_zero_h_convolution_without_changing_the_result():
    """The scan starts with `first_step` (no h convolution of the zero state): equal to `step` from zeros, bitwise."""
    cell = ConvLSTMCell(3, 4, rngs=nnx.Rngs(0))
    x_gates = cell.x_conv(jax.random.normal(jax.random.key(1), (2, 5, 5, 3)))
    want = cell.step(cell.zero_carry(x_gates), x_gates)
    got = cell.first_step(x_gates)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
