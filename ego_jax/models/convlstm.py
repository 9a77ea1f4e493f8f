"""ConvLSTM cell of the reference Ego-RNN, and its `lax.scan` runner over time.

Gates follow the reference `MyConvLSTMCell` exactly:
  i = sig(Wxi*x + bi + Whi*h)   f = sig(Wxf*x + bf + Whf*h)
  g = tanh(Wxc*x + bc + Whc*h)  o = sig(Wxo*x + bo + Who*h)
  c' = g*i + c*f                h' = o*tanh(c')
no peepholes, no +1 forget bias, bias only on the x convolutions, zero initial state.
The reference's eight convolutions are held as two: `x_conv` (in -> 4F, with bias) and `h_conv`
(F -> 4F, no bias), gate blocks ordered i, f, c~, o along the output channels.
`flax.linen.ConvLSTMCell` is NOT equivalent (+1 forget bias, bias on h, carry (c, h)).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from ego_jax.models import torch_init

GATES = ("i", "f", "c", "o")  # order of the gate blocks along the conv output channels


# torch.nn.init.xavier_normal_ on each (in -> F) gate conv, the four held as one (in -> 4F) kernel.
xavier_normal_per_gate = torch_init.xavier_normal_blocks(1, len(GATES))


def grid_padding(kernel_size: int, who: str) -> tuple:
    """Odd kernel size k -> the reference's symmetric padding (k-1)/2 on both spatial axes, which keeps the grid."""
    if kernel_size % 2 != 1:
        raise ValueError(
            f"{who}: kernel_size must be odd (the reference pads (k-1)/2 to keep the grid), got {kernel_size}."
        )
    return ((kernel_size // 2,) * 2,) * 2


class ConvLSTMCell(nnx.Module):
    """Reference Ego-RNN ConvLSTM cell; carry is (h, c), each (N, h, w, features)."""

    def __init__(
        self,
        in_features: int,
        features: int,
        *,
        kernel_size: int = 3,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        conv = dict(
            kernel_size=(kernel_size, kernel_size),
            padding=grid_padding(kernel_size, "ConvLSTMCell"),
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=xavier_normal_per_gate,
            rngs=rngs,
        )
        self.features = features
        self.x_conv = nnx.Conv(
            in_features, len(GATES) * features, use_bias=True, bias_init=nnx.initializers.zeros_init(), **conv
        )
        self.h_conv = nnx.Conv(features, len(GATES) * features, use_bias=False, **conv)

    def zero_carry(self, x_gates: jax.Array):
        """Zero (h, c) matching x_gates (N, h, w, 4F)."""
        zeros = jnp.zeros(x_gates.shape[:-1] + (self.features,), x_gates.dtype)
        return zeros, zeros

    def step(self, carry, x_gates: jax.Array):
        """One step from precomputed x_conv(x) (N,h,w,4F); returns the new (h, c)."""
        h, c = carry
        return self._update(x_gates + self.h_conv(h), c)

    def first_step(self, x_gates: jax.Array):
        """`step` from the zero state, without its h convolution: h_conv(0) = 0 (no bias), so the result is the same."""
        return self._update(x_gates, self.zero_carry(x_gates)[1])

    def _update(self, gates, c):
        i, f, g, o = jnp.split(gates, len(GATES), axis=-1)
        c = jnp.tanh(g) * jax.nn.sigmoid(i) + c * jax.nn.sigmoid(f)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, c

    def __call__(self, carry, x: jax.Array):
        """(h, c), x (N,h,w,Cin) -> new (h, c)."""
        return self.step(carry, self.x_conv(x))


def default_unroll(backend: str | None = None) -> int | bool:
    """`lax.scan` unroll for the ConvLSTM on `backend` (default: jax's): True (full) or 1 (a rolled loop).

    CPU, measured (7-step ConvLSTM(512), batch 2): XLA CPU runs convolutions inside a while-loop body on a
    slow path (jax-ml/jax issue 12868): gradient 17.0 s rolled, 0.64 s fully unrolled; at T=25 even
    unroll=5 took 59 s, full 2.7 s (compile 7.3 s). Any loop left in the program is slow, so: full.
    GPU, reasoned (not yet measured): a while loop costs a predicate copy to the host and a kernel-launch
    barrier per step, and hides the steps from fusion and scheduling; T <= 25, so compile stays bounded: full.
    TPU, reasoned: while loops run on the device without host round trips and TPU compiles are the costly
    ones, so the rolled loop (1) until measured.
    """
    return 1 if (backend or jax.default_backend()) == "tpu" else True


def convlstm(cell: ConvLSTMCell, xs: jax.Array, return_sequence: bool = False, unroll: int | bool = 0):
    """Runs `cell` over xs (B,T,h,w,Cin) from a zero state -> (h_T, c_T)[, (hs, cs) each (B,T,h,w,F)].

    The input convolution has no recurrence, so it runs on all B*T frames in one call; only the
    h convolution is inside the scan. unroll: the scan's unroll (an int, or True for all T steps);
    0 -> `default_unroll()` of the backend. A pure speed choice: results are the same for every value.
    """
    if xs.ndim != 5:
        raise ValueError(f"convlstm: expected xs of shape (B, T, h, w, C), got {xs.shape}.")
    b, t = xs.shape[:2]
    x_gates = cell.x_conv(xs.reshape((b * t,) + xs.shape[2:]))
    x_gates = jnp.swapaxes(x_gates.reshape((b, t) + x_gates.shape[1:]), 0, 1)  # time-major for scan

    def body(carry, xg):
        carry = cell.step(carry, xg)
        return carry, (carry if return_sequence else None)

    # The first step starts from zeros: its h convolution is skipped (1/T of the recurrent convolutions' work).
    first = cell.first_step(x_gates[0])
    final, seq = jax.lax.scan(body, first, x_gates[1:], unroll=unroll or default_unroll())
    if not return_sequence:
        return final
    seq = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s]), first, seq)
    return final, jax.tree.map(lambda s: jnp.swapaxes(s, 0, 1), seq)
