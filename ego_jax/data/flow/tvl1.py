"""TV-L1 optical flow (Zach, Pock & Bischof 2007; Sanchez et al. 2013) in JAX, batched over frame pairs.

The algorithm is OpenCV's DualTVL1 (opencv_contrib modules/optflow/src/tvl1flow.cpp), step for step, so that the
`jax` and `opencv` backends take the same parameters and give the same flow:
- pyramid: each level cv::resize'd (bilinear, half-pixel centres, no anti-aliasing) from the one above by
  `scale_step`, down to `nscales` levels or until a side would drop below 16 px; flow starts at 0 on the coarsest
  level and is resized up (bilinear) and multiplied by 1 / scale_step between levels;
- per level: `warps` times, the second image and its centred gradients are warped by the current flow with
  cv::remap's bicubic (a = -0.75, zero outside the image; at the exact position as OpenCV 5 samples float maps,
  earlier OpenCVs rounded it to 1/32 px), then primal-dual iterations: thresholding step (v), divergence of the
  dual, primal update (u), forward gradients, dual update;
  `outer_iterations` x `inner_iterations` of them, a 3x3 or 5x5 median filter of u before each outer one when
  `median_filtering` > 1, stopping early when the squared change of u summed over the level drops below
  epsilon^2 * its area (OpenCV's test, per pair here).
Differences from OpenCV are float summation order only; `gamma` (illumination term) is not implemented (0 in both
OpenCV's and dense_flow's defaults).

The defaults are what dense_flow ran: OpenCV's CUDA TV-L1 with its defaults (300 iterations, no median filter),
i.e. DualTVL1 with inner_iterations=300, outer_iterations=1, median_filtering=1. OpenCV's CPU defaults (30 x 10
iterations, 5x5 median) are `OPENCV_DEFAULTS`. The CUDA kernel itself warps with a = -0.5 bicubic and clamps at the
border, and checks the stopping test every other iteration; neither backend reproduces those two details.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

MIN_LEVEL_SIDE = 16  # OpenCV stops the pyramid before a level narrower or lower than this
_CUBIC_A = -0.75  # cv::remap's INTER_CUBIC
_FLT_EPSILON = float(np.finfo(np.float32).eps)


@dataclasses.dataclass(frozen=True)
class TVL1:
    """Parameters of Dual TV-L1, named and defaulted as OpenCV's DualTVL1OpticalFlow (dense_flow's iterations)."""

    tau: float = 0.25  # time step of the primal-dual scheme
    lambda_: float = 0.15  # weight of the data term (smaller: smoother flow)
    theta: float = 0.3  # coupling of u and v
    nscales: int = 5  # pyramid levels
    warps: int = 5  # warpings per level
    epsilon: float = 0.01  # stopping threshold (per-pixel RMS change of u)
    inner_iterations: int = 300
    outer_iterations: int = 1
    scale_step: float = 0.8  # size ratio of consecutive pyramid levels
    median_filtering: int = 1  # median filter size before each outer iteration; 0 or 1: none

    def __post_init__(self):
        if self.median_filtering not in (0, 1, 3, 5):
            raise ValueError(
                f"median_filtering={self.median_filtering}: OpenCV filters float flow with 3 or 5 only "
                "(0 or 1: no filter)"
            )
        if (
            not 0 < self.scale_step < 1
            or min(self.nscales, self.warps, self.inner_iterations, self.outer_iterations) < 1
        ):
            raise ValueError(f"{self}: expected 0 < scale_step < 1 and nscales, warps, iterations >= 1")

    @classmethod
    def parse(cls, pairs, base: "TVL1 | None" = None) -> "TVL1":
        """['inner_iterations=20', 'nscales=3'] -> TVL1 (the rest from `base`, default dense_flow's)."""
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        values = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key not in types or not value:
                raise ValueError(f"TV-L1 parameter {pair!r}: expected KEY=VALUE with KEY one of {', '.join(types)}")
            values[key] = (int if types[key] in (int, "int") else float)(value)
        return dataclasses.replace(base or cls(), **values)

    def opencv(self):
        """The same parameters as a cv2.optflow.DualTVL1OpticalFlow."""
        import cv2

        return cv2.optflow.DualTVL1OpticalFlow_create(
            tau=self.tau,
            lambda_=self.lambda_,
            theta=self.theta,
            nscales=self.nscales,
            warps=self.warps,
            epsilon=self.epsilon,
            innnerIterations=self.inner_iterations,
            outerIterations=self.outer_iterations,
            scaleStep=self.scale_step,
            gamma=0.0,
            medianFiltering=self.median_filtering,
            useInitialFlow=False,
        )


DENSE_FLOW = TVL1()  # what dense_flow ran (OpenCV CUDA TV-L1 defaults)
OPENCV_DEFAULTS = TVL1(inner_iterations=30, outer_iterations=10, median_filtering=5)


def pyramid_sizes(height: int, width: int, params: TVL1) -> list[tuple[int, int]]:
    """(H, W) of each level, finest first, as OpenCV computes them (cvRound of size * scale_step)."""
    sizes = [(height, width)]
    for _ in range(1, params.nscales):
        h, w = (int(np.rint(s * params.scale_step)) for s in sizes[-1])
        if h < MIN_LEVEL_SIDE or w < MIN_LEVEL_SIDE:
            break
        sizes.append((h, w))
    return sizes


def _linear_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """(n_out, n_in) weights of cv::resize INTER_LINEAR along one axis; scale = input px per output px."""
    m = np.zeros((n_out, n_in), np.float32)
    for d in range(n_out):
        f = np.float32((d + 0.5) * scale - 0.5)
        s = int(np.floor(f))
        f = np.float32(f - s)
        if s < 0:
            s, f = 0, np.float32(0)
        if s >= n_in - 1:
            s, f = n_in - 1, np.float32(0)
        m[d, s] += 1 - f
        m[d, min(s + 1, n_in - 1)] += f
    return m


def resize(image: jax.Array, size: tuple[int, int], scale: tuple[float, float] | None = None) -> jax.Array:
    """cv::resize(INTER_LINEAR) of (..., H, W) to `size`; scale (y, x) as OpenCV derives it from fx/fy, else
    from the sizes. Two small matrix products, so it runs as such on accelerators."""
    h, w = image.shape[-2:]
    sy, sx = scale or (h / size[0], w / size[1])
    my, mx = _linear_matrix(h, size[0], sy), _linear_matrix(w, size[1], sx)
    hp = lax.Precision.HIGHEST
    return jnp.einsum("ph,...hw,qw->...pq", jnp.asarray(my), image, jnp.asarray(mx), precision=hp)


def _centred_gradient(img):
    """OpenCV's centeredGradient: half differences, one-sided at the borders."""
    pad = jnp.pad(img, 1, mode="edge")
    return 0.5 * (pad[1:-1, 2:] - pad[1:-1, :-2]), 0.5 * (pad[2:, 1:-1] - pad[:-2, 1:-1])


def _forward_gradient(u):
    """OpenCV's forwardGradient: u[x+1] - u[x], 0 on the last column / row."""
    ux = jnp.concatenate([u[:, 1:] - u[:, :-1], jnp.zeros_like(u[:, :1])], 1)
    uy = jnp.concatenate([u[1:] - u[:-1], jnp.zeros_like(u[:1])], 0)
    return ux, uy


def _divergence(v1, v2):
    """OpenCV's divergence: backward differences with zero before the first row / column."""
    return (v1 - jnp.pad(v1, ((0, 0), (1, 0)))[:, :-1]) + (v2 - jnp.pad(v2, ((1, 0), (0, 0)))[:-1])


def _cubic_weights(f):
    """cv::remap INTER_CUBIC coefficients of the 4 taps for fractional positions f (any shape) -> (..., 4)."""
    a, g, h = _CUBIC_A, f + 1, 1 - f
    c0 = ((a * g - 5 * a) * g + 8 * a) * g - 4 * a
    c1 = ((a + 2) * f - (a + 3)) * f * f + 1
    c2 = ((a + 2) * h - (a + 3)) * h * h + 1
    return jnp.stack([c0, c1, c2, 1 - c0 - c1 - c2], -1)


def _remap_cubic(images, x, y):
    """cv::remap(INTER_CUBIC, BORDER_CONSTANT 0) of (C, H, W) at float positions x, y (H, W) -> (C, H, W)."""
    _, h, w = images.shape
    fx, fy = jnp.floor(x), jnp.floor(y)
    ix, iy = fx.astype(jnp.int32), fy.astype(jnp.int32)
    wx, wy = _cubic_weights(x - fx), _cubic_weights(y - fy)
    taps = jnp.arange(-1, 3)
    cols, rows = ix[..., None] + taps, iy[..., None] + taps  # (H, W, 4)
    valid = ((rows >= 0) & (rows < h))[..., :, None] & ((cols >= 0) & (cols < w))[..., None, :]  # (H, W, 4, 4)
    flat = jnp.clip(rows, 0, h - 1)[..., :, None] * w + jnp.clip(cols, 0, w - 1)[..., None, :]
    weights = jnp.where(valid, wy[..., :, None] * wx[..., None, :], 0.0)
    samples = images.reshape(images.shape[0], -1)[:, flat]  # (C, H, W, 4, 4)
    return jnp.einsum("chwij,hwij->chw", samples, weights, precision=lax.Precision.HIGHEST)


def _median_network(n: int) -> list[tuple[int, int]]:
    """Compare-exchange pairs of Batcher's odd-even merge sort of n values (padded to a power of two with +inf, so
    pairs that touch the padding do nothing), only those the middle output depends on: the median as elementwise
    min / max, which XLA fuses (a sort would not)."""
    size = 1 << (n - 1).bit_length()
    pairs, p = [], 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    needed, kept = {n // 2}, []
    for a, b in reversed(pairs):
        if (a in needed or b in needed) and a < n and b < n:
            kept.append((a, b))
            needed |= {a, b}
    return kept[::-1]


def _median(u, k):
    """cv::medianBlur(k) of float (H, W): the median of the k x k neighbourhood, border replicated."""
    r = k // 2
    pad = jnp.pad(u, r, mode="edge")
    h, w = u.shape
    values = [pad[i : i + h, j : j + w] for i in range(k) for j in range(k)]
    for a, b in _median_network(k * k):
        values[a], values[b] = jnp.minimum(values[a], values[b]), jnp.maximum(values[a], values[b])
    return values[k * k // 2]


def _one_scale(i0, i1, u, params: TVL1):
    """TV-L1 at one pyramid level: (H, W) images, (2, H, W) initial flow -> (2, H, W) flow."""
    area = i0.shape[0] * i0.shape[1]
    eps = np.float32(params.epsilon * params.epsilon * area)
    l_t, taut = np.float32(params.lambda_ * params.theta), np.float32(params.tau / params.theta)
    theta = np.float32(params.theta)
    i1x, i1y = _centred_gradient(i1)
    rows, cols = jnp.mgrid[0 : i0.shape[0], 0 : i0.shape[1]].astype(jnp.float32)
    p0 = jnp.zeros((2, 2) + i0.shape, jnp.float32)  # p[k] = (p_k1, p_k2), the dual of u_k

    def iteration(u, p, wx, wy, grad, rho_c):
        rho = rho_c + wx * u[0] + wy * u[1]
        d = jnp.where(
            rho < -l_t * grad,
            l_t,
            jnp.where(
                rho > l_t * grad,
                -l_t,
                jnp.where(grad > _FLT_EPSILON, -rho / jnp.where(grad > _FLT_EPSILON, grad, 1.0), 0.0),
            ),
        )
        v = u + d * jnp.stack([wx, wy])
        u_new = v + theta * jnp.stack([_divergence(p[0, 0], p[0, 1]), _divergence(p[1, 0], p[1, 1])])
        error = jnp.sum(jnp.square(u_new - u))
        ux, uy = zip(*(_forward_gradient(c) for c in u_new))
        ux, uy = jnp.stack(ux), jnp.stack(uy)
        ng = 1 + taut * jnp.hypot(ux, uy)
        p = jnp.stack([(p[:, 0] + taut * ux) / ng, (p[:, 1] + taut * uy) / ng], 1)
        return u_new, p, error

    def warp(_, state):
        u, p = state
        w = _remap_cubic(jnp.stack([i1, i1x, i1y]), cols + u[0], rows + u[1])
        wx, wy = w[1], w[2]
        grad = wx * wx + wy * wy
        rho_c = w[0] - wx * u[0] - wy * u[1] - i0

        def inner(state):
            n, u, p, _ = state
            return (n + 1, *iteration(u, p, wx, wy, grad, rho_c))

        def outer(state):
            n, u, p, error = state
            if params.median_filtering > 1:
                u = jax.vmap(_median, (0, None))(u, params.median_filtering)
            _, u, p, error = lax.while_loop(
                lambda s: (s[3] > eps) & (s[0] < params.inner_iterations), inner, (0, u, p, error)
            )
            return n + 1, u, p, error

        state = (0, u, p, jnp.float32(np.finfo(np.float32).max))
        _, u, p, _ = lax.while_loop(lambda s: (s[3] > eps) & (s[0] < params.outer_iterations), outer, state)
        return u, p

    u, _ = lax.fori_loop(0, params.warps, warp, (u, p0))
    return u


def _tvl1_pair(i0, i1, params: TVL1):
    sizes = pyramid_sizes(*i0.shape, params)
    down = (1 / params.scale_step,) * 2
    pyr0, pyr1 = [i0], [i1]
    for size in sizes[1:]:
        pyr0.append(resize(pyr0[-1], size, down))
        pyr1.append(resize(pyr1[-1], size, down))
    u = jnp.zeros((2,) + sizes[-1], jnp.float32)
    for s in range(len(sizes) - 1, -1, -1):
        u = _one_scale(pyr0[s], pyr1[s], u, params)
        if s:
            u = resize(u, sizes[s - 1]) * np.float32(1 / params.scale_step)
    return jnp.moveaxis(u, 0, -1)


def _batched(prev, next_, params: TVL1):
    prev, next_ = jnp.asarray(prev, jnp.float32), jnp.asarray(next_, jnp.float32)
    return jax.vmap(lambda a, b: _tvl1_pair(a, b, params))(prev, next_)


@functools.partial(jax.jit, static_argnames="params")
def tvl1(prev: jax.Array, next_: jax.Array, params: TVL1 = DENSE_FLOW) -> jax.Array:
    """Flow from `prev` to `next_`: grey (B, H, W) uint8 (or float on the 0-255 scale) -> (B, H, W, 2) float32 px,
    flow[..., 0] horizontal; next_(x + flow(x)) ~ prev(x), as OpenCV's calc(prev, next_). One device."""
    return _batched(prev, next_, params)


@functools.cache
def _on_devices(params: TVL1, devices: tuple):
    mesh = jax.sharding.Mesh(np.array(devices), ("pairs",))
    spec = jax.sharding.PartitionSpec("pairs")
    # shard_map: each device runs its own pairs' loops and stops them on its own (no per-iteration all-reduce)
    return jax.jit(
        jax.shard_map(
            functools.partial(_batched, params=params),
            mesh=mesh,
            in_specs=(spec, spec),
            out_specs=spec,
            check_vma=False,
        )
    )


def tvl1_on_devices(prev, next_, params: TVL1 = DENSE_FLOW, devices=None) -> jax.Array:
    """`tvl1` with the pairs split over `devices` (default: all local devices); B must divide by their count."""
    devices = tuple(devices or jax.local_devices())
    if len(prev) % len(devices):
        raise ValueError(f"{len(prev)} pairs do not split over {len(devices)} devices: pad to a multiple")
    return _on_devices(params, devices)(prev, next_)
