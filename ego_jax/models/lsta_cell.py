"""LSTA cell (Long Short-Term Attention, Sudhakaran, Escalera & Lanz, CVPR 2019) and its `lax.scan` over time.

Follows the authors' `MyConvLSTACell` (repository swathikirans/LSTA). Per frame t, given the frame's
features x_t (N,h,w,Cin) and its class activation map cam_t (N,h,w) (top-1 ImageNet class, no softmax):

  attention recurrence (1-channel maps, 3x3 convs):
    i_s, f_s, o_s = sig(W_s * s_{t-1} + b + W_cam * cam_t)      a~ = tanh(W_as * s_{t-1} + b + W_acam * cam_t)
    a_t = f_s a_{t-1} + i_s a~        s_t = o_s tanh(a_t)
    u_t = softmax over the h*w positions of (s_t + cam_t)        x_att = x_t * u_t
  memory recurrence, with h_{t-1} = o_{t-1} tanh(c_{t-1}):
    i, f = sig(W_x * x_att + b + W_h * h_{t-1})                  c~ = tanh(W_cx * x_att + b + W_ch * h_{t-1})
    c_t = f c_{t-1} + i c~
  output pooling (a second classifier on the memory picks the class whose weights pool c_t):
    k = argmax(c_classifier(mean c_t) + coupling_fc(mean x_att))    c_cam = c_classifier.weight[k] * c_t
    o_t = sig(W_oh * h_{t-1} + b_o + W_oc * c_cam)

What the authors' code does, reproduced (not the paper's equations where they differ):
- The carry holds the raw memory c and the output gate o, not h; h_{t-1} = o_{t-1} tanh(c_{t-1}) is
  formed at the start of each step. The output gate does not read x at all.
- The reference's `conv_o_x` convolves h_{t-1} (it is declared input_size -> memory_size, so the reference
  runs only with input_size == memory_size) and carries the output gate's only bias; `conv_o_c` convolves c_cam.
- `coupling_fc` only moves the argmax k, so it never receives a gradient; `c_classifier` receives one only
  through the weight row that pools c_cam (c_cam is c weighted per channel, not summed to a map).
- Xavier-normal convolution weights with zero biases (the default `zero_init=False`); the two linears
  keep torch's default init and have no bias.
- The reference hard-codes a 7x7 grid (`view(..., 7, 7)`, `AvgPool2d(7)`); here any grid works and the
  pools are spatial means, which is what AvgPool2d(7) computes on 7x7.

Held as fused convolutions (gate blocks along the output channels; same parameters, fewer calls):
  att_s_conv (1 -> 4, bias) on s, att_cam_conv (1 -> 4, no bias) on cam, blocks i, f, a~, o;
  x_conv (Cin -> 3F, bias) on x_att and h_conv (F -> 3F, no bias) on h, blocks i, f, c~;
  o_conv (2F -> F, bias) on concat(h, c_cam): the reference's conv_o_x and conv_o_c side by side on the inputs.
The cam convolution has no recurrence, so `lsta` runs it on all B*T frames outside the scan; x_conv reads
x_att, which depends on the attention state, so it stays inside.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from ego_jax.models import torch_init
from ego_jax.models.convlstm import default_unroll, grid_padding

ATTENTION_GATES = ("i", "f", "a", "o")  # blocks of att_s_conv / att_cam_conv
MEMORY_GATES = ("i", "f", "c")  # blocks of x_conv / h_conv


class LSTACell(nnx.Module):
    """Reference LSTA cell; carry is (a, s, c, o): a, s (N,h,w,1) attention state, c, o (N,h,w,features).

    Args:
      in_features: channels of the frame features x (512 in the reference).
      features: memory channels ("memSize", 512).
      pool_classes: classes of the output-pooling classifier ("outPoolSize" / c_cam_classes, 100).
      kernel_size: odd size of every convolution (3).
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        pool_classes: int,
        *,
        kernel_size: int = 3,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        padding = grid_padding(kernel_size, "LSTACell")

        def conv(cin, cout, in_blocks, out_blocks, use_bias):
            return nnx.Conv(
                cin,
                cout,
                (kernel_size, kernel_size),
                padding=padding,
                use_bias=use_bias,
                kernel_init=torch_init.xavier_normal_blocks(in_blocks, out_blocks),
                bias_init=nnx.initializers.zeros_init(),
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
            )

        n_att, n_mem = len(ATTENTION_GATES), len(MEMORY_GATES)
        self.features = features
        self.att_s_conv = conv(1, n_att, 1, n_att, True)
        self.att_cam_conv = conv(1, n_att, 1, n_att, False)
        self.x_conv = conv(in_features, n_mem * features, 1, n_mem, True)
        self.h_conv = conv(features, n_mem * features, 1, n_mem, False)
        self.o_conv = conv(2 * features, features, 2, 1, True)
        linear = dict(use_bias=False, kernel_init=torch_init.kernel_init, dtype=dtype, param_dtype=param_dtype)
        self.c_classifier = nnx.Linear(features, pool_classes, **linear, rngs=rngs)
        self.coupling_fc = nnx.Linear(in_features, pool_classes, **linear, rngs=rngs)

    def zero_carry(self, x: jax.Array):
        """Zero (a, s, c, o) for frame features x (N,h,w,Cin)."""
        att = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
        mem = jnp.zeros(x.shape[:-1] + (self.features,), x.dtype)
        return att, att, mem, mem

    def step(self, carry, x: jax.Array, cam: jax.Array, cam_gates: jax.Array):
        """One step; x (N,h,w,Cin), cam (N,h,w,1), cam_gates = att_cam_conv(cam) (N,h,w,4)
        -> (new carry (a, s, c, o), attention u (N,h,w,1))."""
        a, s, c, o = carry
        i_s, f_s, a_tilde, o_s = jnp.split(cam_gates + self.att_s_conv(s), len(ATTENTION_GATES), axis=-1)
        a = jax.nn.sigmoid(f_s) * a + jax.nn.sigmoid(i_s) * jnp.tanh(a_tilde)
        s = jax.nn.sigmoid(o_s) * jnp.tanh(a)
        n, hh, ww, _ = s.shape
        u = jax.nn.softmax((s + cam).reshape(n, hh * ww), axis=-1).reshape(n, hh, ww, 1)
        x_att = x * u

        h = o * jnp.tanh(c)
        i, f, c_tilde = jnp.split(self.x_conv(x_att) + self.h_conv(h), len(MEMORY_GATES), axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(c_tilde)

        pool_logits = self.c_classifier(jnp.mean(c, axis=(1, 2))) + self.coupling_fc(jnp.mean(x_att, axis=(1, 2)))
        pool_class = jnp.argmax(pool_logits, axis=-1)
        pool_weights = jnp.take(self.c_classifier.kernel[...].astype(c.dtype), pool_class, axis=1).T  # (N, F)
        c_cam = pool_weights[:, None, None, :] * c
        o = jax.nn.sigmoid(self.o_conv(jnp.concatenate([h, c_cam], axis=-1)))
        return (a, s, c, o), u

    def __call__(self, carry, x: jax.Array, cam: jax.Array):
        """(a, s, c, o), x (N,h,w,Cin), cam (N,h,w,1) -> (new carry, attention u (N,h,w,1))."""
        return self.step(carry, x, cam, self.att_cam_conv(cam))


def lsta(cell: LSTACell, xs: jax.Array, cams: jax.Array, return_sequence: bool = False, unroll: int | bool = 0):
    """Runs `cell` over xs (B,T,h,w,Cin) with cams (B,T,h,w) from a zero state.

    -> (final carry (a, s, c, o), attention u (B,T,h,w)), plus with return_sequence the carries of every
    step (each (B,T,h,w,.)). unroll: the scan's unroll (an int, or True for all T steps); 0 -> the
    backend's `convlstm.default_unroll()`. A pure speed choice: results are the same for every value.
    """
    if xs.ndim != 5 or cams.shape != xs.shape[:4]:
        raise ValueError(
            f"lsta: expected xs of shape (B, T, h, w, C) and cams (B, T, h, w), got {xs.shape} and {cams.shape}."
        )
    b, t = xs.shape[:2]
    cams = cams[..., None]
    cam_gates = cell.att_cam_conv(cams.reshape((b * t,) + cams.shape[2:]))
    cam_gates = cam_gates.reshape((b, t) + cam_gates.shape[1:])

    def swap(v):  # (B, T, ...) <-> (T, B, ...)
        return jnp.swapaxes(v, 0, 1)

    def body(carry, inputs):
        carry, u = cell.step(carry, *inputs)
        return carry, (u[..., 0], carry if return_sequence else None)

    final, (us, seq) = jax.lax.scan(
        body,
        cell.zero_carry(xs[:, 0]),
        (swap(xs), swap(cams), swap(cam_gates)),
        unroll=unroll or default_unroll(),
    )
    if not return_sequence:
        return final, swap(us)
    return final, swap(us), jax.tree.map(swap, seq)
