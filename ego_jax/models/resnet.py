"""ResNet-18/34 (torchvision layout, BasicBlock) with torch-exact padding and Ego-RNN's layer4 taps.

Attribute names mirror torchvision's module names, so nnx state paths map one-to-one onto
torchvision state-dict keys (see ego_jax/convert/torchvision.py):
('layer4', 2, 'conv2', 'kernel') <-> 'layer4.2.conv2.weight'.
"""

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

# torchvision initialises convolutions with kaiming_normal_(mode='fan_out', nonlinearity='relu').
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _batch_stats(x):
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes)
    return mean, jnp.square(x - mean).mean(axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, epsilon: float):
    """x (..., C) -> (y (..., C), mean (C,), biased var (C,)): normalisation by the batch statistics.

    The forward pass is the plain two-pass formula; the backward pass is the closed form (as torch's and
    cuDNN's): two per-channel sums and one elementwise pass, where autodiff of the formula would build one
    reduction per use of mean and var. The same gradients up to float rounding (tests/test_resnet.py).
    """
    return _batch_norm_train_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon):
    mean, var = _batch_stats(x)
    rstd = jax.lax.rsqrt(var + epsilon)
    return ((x - mean) * rstd * scale + bias, mean, var), (x, mean, rstd, scale)


def _batch_norm_train_bwd(epsilon, residuals, cotangents):
    x, mean, rstd, scale = residuals
    dy, dmean, dvar = cotangents
    axes, n = tuple(range(x.ndim - 1)), math.prod(x.shape[:-1])
    centred = x - mean
    xhat = centred * rstd
    dbias, dscale = dy.sum(axes), (dy * xhat).sum(axes)
    # The mean and var outputs (running statistics) take no gradient in training; their terms keep the VJP exact.
    dx = (scale * rstd) * (dy - dbias / n - xhat * (dscale / n)) + dmean / n + centred * (dvar * (2 / n))
    return dx, dscale, dbias


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nnx.BatchNorm):
    """`nnx.BatchNorm` whose training-mode running variance uses torch's unbiased batch variance.

    Normalisation is identical to nnx.BatchNorm (biased batch variance in training mode, running
    statistics in inference mode); only the running-variance update differs, by n/(n-1), so that
    statistics accumulated in training mode match PyTorch's `BatchNorm2d` (the reference trains
    the flow stream with BN in training mode). Training mode runs `batch_norm_train`.
    """

    def __call__(self, x, use_running_average: bool | None = None):
        """(..., C) -> (..., C); in training mode also updates `mean` and `var`."""
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average:
            return super().__call__(x, use_running_average=True)
        n = math.prod(x.shape[:-1])
        if n < 2:
            raise ValueError(
                f"BatchNorm in training mode needs more than one value per channel, got input shape {x.shape}; "
                "use a larger batch or input, or put BatchNorm in inference mode (model.eval())"
            )
        dtype = self.dtype or x.dtype
        xf = x.astype(jnp.promote_types(dtype, jnp.float32))
        y, mean, var = batch_norm_train(xf, self.scale[...], self.bias[...], self.epsilon)
        m = self.momentum
        self.mean[...] = m * self.mean[...] + (1 - m) * jax.lax.stop_gradient(mean)
        self.var[...] = m * self.var[...] + (1 - m) * jax.lax.stop_gradient(var) * (n / (n - 1))
        return y.astype(dtype)


def _conv(cin, cout, kernel, stride, pad, dtype, rngs):
    return nnx.Conv(
        cin,
        cout,
        (kernel, kernel),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=_conv_init,
        dtype=dtype,
        rngs=rngs,
    )


def _bn(features, dtype, rngs):
    return BatchNorm(features, momentum=0.9, epsilon=1e-5, use_running_average=False, dtype=dtype, rngs=rngs)


class Downsample(nnx.Module):
    """Projection shortcut: 1x1 conv (stride s, no padding) + BN; torchvision's `downsample.{0,1}`."""

    def __init__(self, cin, cout, stride, *, dtype, rngs: nnx.Rngs):
        self.conv = _conv(cin, cout, 1, stride, 0, dtype, rngs)
        self.bn = _bn(cout, dtype, rngs)

    def __call__(self, x):
        """(N,H,W,cin) -> (N,H/s,W/s,cout)."""
        return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
    """conv3x3(s)-bn-relu-conv3x3-bn + shortcut, relu (torchvision BasicBlock)."""

    def __init__(self, cin, cout, stride=1, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv1 = _conv(cin, cout, 3, stride, 1, dtype, rngs)
        self.bn1 = _bn(cout, dtype, rngs)
        self.conv2 = _conv(cout, cout, 3, 1, 1, dtype, rngs)
        self.bn2 = _bn(cout, dtype, rngs)
        self.downsample = Downsample(cin, cout, stride, dtype=dtype, rngs=rngs) if stride != 1 or cin != cout else None

    def __call__(self, x):
        """(N,H,W,cin) -> (out, raw), both (N,H/s,W/s,cout): out = relu(bn2(conv2)+shortcut), raw = conv2+shortcut."""
        shortcut = x if self.downsample is None else self.downsample(x)
        h = self.conv2(nnx.relu(self.bn1(self.conv1(x))))
        return nnx.relu(self.bn2(h) + shortcut), h + shortcut


def layer4_grid(height: int, width: int) -> tuple[int, int]:
    """Input size (H, W) -> layer4 grid (h, w) (224 -> 7, 64 -> 2, 32 -> 1)."""
    # Stem, max-pool and the first blocks of layers 2-4 each map s -> floor((s + 2p - k) / 2) + 1,
    # which is (s - 1) // 2 + 1 for every (k, p) pair used: (7, 3), (3, 1), (1, 0).
    for _ in range(5):
        height, width = (height - 1) // 2 + 1, (width - 1) // 2 + 1
    return height, width


def _max_pool(x):
    # torch pads max-pooling with -inf, so padded cells never win.
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))


@jax.custom_vjp
def max_pool_3x3_s2_p1(x):
    """(N,H,W,C) -> (N,(H-1)//2+1,(W-1)//2+1,C): torch's MaxPool2d(3, 2, 1); the gradient goes to each window's first
    maximum in row-major order (as torch's and XLA's select-and-scatter), computed as one elementwise pass over the
    nine taps, where autodiff lowers to an argmax reduce-window and a scatter on CPU."""
    return _max_pool(x)


def _max_pool_fwd(x):
    y = _max_pool(x)
    return y, (x, y)


def _max_pool_bwd(residuals, dy):
    x, y = residuals
    _, h, w, _ = x.shape
    ho, wo = y.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    zero = jnp.zeros((), dy.dtype)
    taken = jnp.zeros(y.shape, bool)
    dx = jnp.zeros((x.shape[0], h + 2, w + 2, x.shape[3]), dy.dtype)
    for i in range(3):
        for j in range(3):
            first = (padded[:, i : i + 2 * ho - 1 : 2, j : j + 2 * wo - 1 : 2] == y) & ~taken
            taken = taken | first
            # Tap (i, j) of output (a, b) is padded cell (2a + i, 2b + j): interior padding places it there.
            spread = ((0, 0, 0), (i, h + 1 - i - 2 * (ho - 1), 1), (j, w + 1 - j - 2 * (wo - 1), 1), (0, 0, 0))
            dx = dx + jax.lax.pad(jnp.where(first, dy, zero), zero, spread)
    return (dx[:, 1 : h + 1, 1 : w + 1],)


max_pool_3x3_s2_p1.defvjp(_max_pool_fwd, _max_pool_bwd)


class ResNet(nnx.Module):
    """torchvision ResNet-18/34 (NHWC) exposing layer3, layer4, layer4 pre-bn2 features and ImageNet logits.

    Args:
      depth: 18 or 34.
      in_channels: 3 for RGB, 2*stack for stacked flow (x1, y1, x2, y2, ...).
      width: channels of layer1 (64 in torchvision); layer k has width * 2**(k-1).
      num_classes: size of the `fc` head (1000 for ImageNet), or None for no head.
      dtype: computation dtype; parameters and BN statistics stay float32.

    BatchNorm starts in training mode (as a fresh torch module); `model.eval()` / `model.train()`
    switch every BN, or set `use_running_average` on selected BN modules.
    """

    def __init__(
        self,
        depth: int = 34,
        *,
        in_channels: int = 3,
        width: int = 64,
        num_classes: int | None = 1000,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if depth not in BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS)} (BasicBlock ResNets), got {depth}")
        self.depth = depth
        self.width = width
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.conv1 = _conv(in_channels, width, 7, 2, 3, dtype, rngs)
        self.bn1 = _bn(width, dtype, rngs)
        cin = width
        for k, n in enumerate(BLOCKS[depth]):
            cout = width * 2**k
            blocks = [
                BasicBlock(cin if i == 0 else cout, cout, 2 if (i == 0 and k > 0) else 1, dtype=dtype, rngs=rngs)
                for i in range(n)
            ]
            setattr(self, f"layer{k + 1}", nnx.List(blocks))
            cin = cout
        self.fc = nnx.Linear(cin, num_classes, dtype=dtype, rngs=rngs) if num_classes is not None else None

    def __call__(self, x):
        """(N,H,W,in_channels) -> dict; any H, W >= 1 (grid: `layer4_grid`).

        With w = width:
          'layer3' (N,h3,w3,4w), 'layer4' (N,h,w,8w) relu(bn2(conv2)+shortcut) of the last block,
          'layer4_raw' (N,h,w,8w) conv2+shortcut of the last block (before bn2 and relu),
          'pooled' (N,8w) spatial mean of 'layer4', and 'logits' (N,num_classes) if the model has an fc.
        """
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"ResNet expects (N, H, W, {self.in_channels}) channels-last input, got shape {x.shape}")
        h = max_pool_3x3_s2_p1(nnx.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            for block in getattr(self, name):
                h, raw = block(h)
            if name == "layer3":
                layer3 = h
        result = {"layer3": layer3, "layer4": h, "layer4_raw": raw, "pooled": h.mean(axis=(1, 2))}
        if self.fc is not None:
            result["logits"] = self.fc(result["pooled"])
        return result
