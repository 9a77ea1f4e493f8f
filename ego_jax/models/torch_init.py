"""PyTorch's initialisations of nn.Linear / nn.Conv2d: the default one, for the heads the reference leaves at
default, and xavier_normal_ on convolutions that ego_jax fuses into one kernel.

torch draws weights from kaiming_uniform(a=sqrt(5)) and biases from U(-b, b), both with
b = 1/sqrt(fan_in); flax's defaults (lecun_normal, zero bias) would start training elsewhere.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

# kaiming_uniform(a=sqrt(5)): gain^2 = 2/(1+5) = 1/3, uniform limit sqrt(3*gain^2/fan_in) = 1/sqrt(fan_in).
kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def bias_init(fan_in: int):
    """Bias initialiser U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def linear(in_features: int, out_features: int, *, dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.Linear:
    """nnx.Linear (in -> out) with torch's default nn.Linear initialisation."""
    return nnx.Linear(
        in_features, out_features, dtype=dtype, kernel_init=kernel_init, bias_init=bias_init(in_features), rngs=rngs
    )


def xavier_normal_blocks(in_blocks: int = 1, out_blocks: int = 1):
    """Initialiser of an HWIO kernel (kh,kw,I,O) that fuses in_blocks x out_blocks torch convs (I/in_blocks ->
    O/out_blocks), each drawn by torch.nn.init.xavier_normal_ with its own fans.

    xavier_normal_ is not truncated, so jax's glorot_normal (truncated) would not match it, and the fused
    kernel's own fans (I, O) would give a smaller std than the convolutions it stands for.
    """

    def init(key, shape, dtype=jnp.float32):
        kh, kw, fan_in_channels, fan_out_channels = shape
        std = math.sqrt(2.0 / (kh * kw * (fan_in_channels // in_blocks + fan_out_channels // out_blocks)))
        return std * jax.random.normal(key, shape, dtype)

    return init
