"""Motion-guided attention (ego_jax's own variant, not from a paper): the CAM re-weighted by predicted motion.

Ego-RNN's CAM says where the *object* is; the self-supervised MS head (motion_head.py) learns where
things *move*. The guided attention of a frame is

    attention = softmax over the h*w cells of (cam + w * g),   g = max(log p(moving), log FLOOR)

i.e. attention is proportional to cam_attention * p(moving)^w: a product of the two experts, with
one learned scalar w deciding how much the motion expert counts. w starts at 0, so a fresh model is
exactly Ego-RNN + MS (the recipe's stage 2 starts from the attention stage 1 plus a fresh MS head).

Choices, and why:
- g = log p(moving) of the MS head's own prediction: for the 'cls' head the log-softmax of its
  "moving" logit, for the 'reg' head the log of its predicted moving fraction. Both kinds then add a
  log-probability to the CAM's logits, so w means the same for both, and w = 1 multiplies the CAM
  attention by p(moving) (plain probabilities added to logits would have no such reading).
- FLOOR = 1e-4: a cell the head calls certainly static is damped by at most FLOOR^w instead of being
  erased, and the 'reg' head's sigmoid (which can round to 0) gives no log 0.
- detach=True (default): g is a stop_gradient, so the action loss reaches w and the CAM but not the
  MS head; the head stays a motion segmenter trained by its self-supervised loss alone (the point of
  the pretext task), and the action loss only learns how far to trust it. detach=False lets the
  action loss also reshape the MS prediction into a second, class-driven attention (an option to
  compare; its MS maps then stop meaning "moving").
- The MS head must read features computed before attention ('layer4' or 'layer4_raw'): the
  attention now depends on it, so 'attended' would be circular (EgoRNN refuses it).
- On a 1x1 feature grid (32 px input) the softmax over one cell is 1 whatever w is: w gets no
  gradient. It needs at least a 2x2 grid.
"""

import jax
import jax.numpy as jnp
from flax import nnx

FLOOR = 1e-4


def motion_log_prob(ms: jax.Array) -> jax.Array:
    """MS head output (..., h, w, K) -> (..., h, w) max(log p(moving), log FLOOR): K=2 cls logits, K=1 reg value."""
    if ms.shape[-1] == 2:
        log_p = jax.nn.log_softmax(ms, axis=-1)[..., 1]
    elif ms.shape[-1] == 1:
        log_p = jnp.log(jnp.maximum(ms[..., 0], FLOOR))
    else:
        raise ValueError(
            f"motion_log_prob: expected the MS head's (..., h, w, K) output with K=2 (cls) or "
            f"K=1 (reg), got {ms.shape}."
        )
    return jnp.maximum(log_p, jnp.log(FLOOR).astype(log_p.dtype))


class MotionGuide(nnx.Module):
    """The learned term w * g(MS prediction) that EgoRNN adds to the CAM before its softmax (w starts at 0)."""

    def __init__(self, *, detach: bool = True):
        self.detach = detach
        self.w = nnx.Param(jnp.zeros((), jnp.float32))

    def __call__(self, ms: jax.Array) -> jax.Array:
        """ms (N,h,w,K) MS head output -> guide (N,h,w) = w * g, in the dtype of ms."""
        g = motion_log_prob(ms)
        if self.detach:
            g = jax.lax.stop_gradient(g)
        return self.w[...].astype(g.dtype) * g
