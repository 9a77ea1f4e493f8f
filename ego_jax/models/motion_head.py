"""Self-supervised motion-segmentation (MS) head of SparNet, and its losses.

Per frame: ReLU -> 1x1 conv C -> hidden (100) -> flatten -> Linear to h*w*K -> (h, w, K).
  kind='cls': K=2 logits per cell (static, moving); loss = per-cell softmax cross-entropy.
  kind='reg': K=1 value per cell, squashed by a sigmoid into [0, 1] like its target (the moving
              fraction of the cell); loss = 'mse' (default), 'smooth_l1' or 'l1'.
Flatten order: the (h, w, hidden) map is flattened channel-major, index = k*h*w + y*w + x, i.e. as
torch's flatten of an NCHW tensor, so `fc` rows line up with a torch head's fc1 input columns. The fc
output is read as (y, x, K) row-major.
`tap` names the features the head reads: 'layer4' (post-bn2/ReLU, before attention; the common
choice), 'layer4_raw' (pre-bn2) or 'attended' (after CAM attention); the RGB model routes them.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ego_jax.models import torch_init

KINDS = {"cls": 2, "reg": 1}  # kind -> outputs per cell
TAPS = ("layer4", "layer4_raw", "attended")
REG_LOSSES = ("mse", "smooth_l1", "l1")


class MotionSegmentationHead(nnx.Module):
    """Per-frame MS head: (N,h,w,C) -> (N,h,w,K); cls logits (K=2) or reg values in [0,1] (K=1)."""

    def __init__(
        self,
        in_features: int,
        grid: tuple[int, int],
        *,
        kind: str = "cls",
        hidden: int = 100,
        tap: str = "layer4",
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if kind not in KINDS:
            raise ValueError(f"MotionSegmentationHead: kind must be one of {tuple(KINDS)}, got {kind!r}.")
        if tap not in TAPS:
            raise ValueError(f"MotionSegmentationHead: tap must be one of {TAPS}, got {tap!r}.")
        self.kind, self.tap, self.grid = kind, tap, tuple(grid)
        cells = self.grid[0] * self.grid[1]
        self.conv = nnx.Conv(
            in_features,
            hidden,
            kernel_size=(1, 1),
            padding="VALID",
            dtype=dtype,
            kernel_init=torch_init.kernel_init,
            bias_init=torch_init.bias_init(in_features),
            rngs=rngs,
        )
        self.fc = torch_init.linear(hidden * cells, cells * KINDS[kind], dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x (N,h,w,C) -> (N,h,w,K)."""
        if tuple(x.shape[1:3]) != self.grid:
            raise ValueError(
                f"MotionSegmentationHead: built for a {self.grid} grid, got features {x.shape}; "
                f"pass grid=(h, w) of the layer4 map for this input size."
            )
        n = x.shape[0]
        y = self.conv(jax.nn.relu(x))
        y = self.fc(jnp.transpose(y, (0, 3, 1, 2)).reshape(n, -1))  # torch (NCHW) flatten order
        y = y.reshape((n,) + self.grid + (KINDS[self.kind],))
        return jax.nn.sigmoid(y) if self.kind == "reg" else y


def ms_loss(pred: jax.Array, target: jax.Array, kind: str, reg_loss: str = "mse") -> jax.Array:
    """pred (B,T,h,w,K) head outputs, target (B,T,h,w) float -> scalar mean over frames and cells.

    cls: target in {0,1}; softmax cross-entropy of the K=2 logits (one softmax, inside the loss).
    reg: target the moving fraction; pred already in [0,1]. 'mse' is the default (sigmoid + MSE was
    reported best by one group and keeps gradients smooth near 0); 'l1' is robust to the many exactly
    zero cells; 'smooth_l1' uses torch's beta=1, and since both pred and target lie in [0,1] it equals
    0.5 * MSE here (kept because groups reported it under that name).
    """
    if kind not in KINDS:
        raise ValueError(f"ms_loss: kind must be one of {tuple(KINDS)}, got {kind!r}.")
    if pred.shape != target.shape + (KINDS[kind],):
        raise ValueError(
            f"ms_loss: kind={kind!r} expects pred of shape target.shape + ({KINDS[kind]},); got pred "
            f"{pred.shape}, target {target.shape}."
        )
    if kind == "cls":
        return jnp.mean(
            optax.softmax_cross_entropy_with_integer_labels(pred.astype(jnp.float32), target.astype(jnp.int32))
        )
    diff = pred[..., 0].astype(jnp.float32) - target.astype(jnp.float32)
    if reg_loss == "mse":
        return jnp.mean(jnp.square(diff))
    if reg_loss == "smooth_l1":
        return jnp.mean(optax.huber_loss(diff, delta=1.0))
    if reg_loss == "l1":
        return jnp.mean(jnp.abs(diff))
    raise ValueError(f"ms_loss: reg_loss must be one of {REG_LOSSES}, got {reg_loss!r}.")
