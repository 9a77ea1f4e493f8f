"""CAM attention of Ego-RNN: class activation map of each frame's top-1 ImageNet class.

Per frame: c = argmax fc(avgpool(feat_bn)) (an ImageNet class, not the activity);
cam[p] = <fc.kernel[:, c], feat_bn[p]> (no bias); attention = softmax of cam over all h*w positions;
attended = feat_raw * attention (pre-bn2 features, not rescaled). The argmax is an integer, so
fc.kernel receives gradients only through cam, and fc.bias only picks the class.
An optional `guide` (N,h,w) is added to the CAM before the softmax: the motion-guided variant
(ego_jax/models/motion_guided.py) passes w * log p(moving) there; None is the reference.
"""

import jax
import jax.numpy as jnp
from flax import nnx


def class_activation_map(feat_bn: jax.Array, fc_kernel: jax.Array, fc_bias: jax.Array) -> jax.Array:
    """feat_bn (N,h,w,C), fc_kernel (C,K), fc_bias (K,) -> cam (N,h,w) of each frame's top-1 class (no softmax)."""
    if feat_bn.ndim != 4 or fc_kernel.shape[0] != feat_bn.shape[-1]:
        raise ValueError(
            f"class_activation_map: expected feat_bn (N, h, w, C) and fc_kernel (C, K); got {feat_bn.shape}, "
            f"{fc_kernel.shape}."
        )
    logits = jnp.mean(feat_bn, axis=(1, 2)) @ fc_kernel + fc_bias
    class_weights = jnp.take(fc_kernel, jnp.argmax(logits, axis=-1), axis=1).T  # (N, C)
    return jnp.einsum("nhwc,nc->nhw", feat_bn, class_weights)


def cam_attention(
    feat_bn: jax.Array, feat_raw: jax.Array, fc_kernel: jax.Array, fc_bias: jax.Array, guide: jax.Array | None = None
):
    """feat_bn, feat_raw (N,h,w,C), fc_kernel (C,K), fc_bias (K,) [, guide (N,h,w) added to the CAM]
    -> (attended (N,h,w,C), attention (N,h,w))."""
    if feat_bn.shape != feat_raw.shape:
        raise ValueError(
            f"cam_attention: expected feat_bn and feat_raw of one shape (N, h, w, C); got {feat_bn.shape}, "
            f"{feat_raw.shape}."
        )
    cam = class_activation_map(feat_bn, fc_kernel, fc_bias)
    n, h, w = cam.shape
    if guide is not None:
        if guide.shape != cam.shape:
            raise ValueError(
                f"cam_attention: guide must have the CAM's shape {cam.shape} (N, h, w), got {guide.shape}."
            )
        cam = cam + guide.astype(cam.dtype)
    attention = jax.nn.softmax(cam.reshape(n, h * w), axis=-1).reshape(n, h, w)
    return feat_raw * attention[..., None], attention


class CamAttention(nnx.Module):
    """Parameter-free module form of `cam_attention`, reading the ImageNet classifier `fc` it is given."""

    def __call__(self, feat_bn: jax.Array, feat_raw: jax.Array, fc: nnx.Linear):
        """feat_bn, feat_raw (N,h,w,C), fc Linear(C->K) -> (attended (N,h,w,C), attention (N,h,w))."""
        dtype = feat_bn.dtype
        return cam_attention(feat_bn, feat_raw, fc.kernel[...].astype(dtype), fc.bias[...].astype(dtype))
