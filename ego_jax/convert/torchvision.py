"""torchvision ResNet-18/34 state dicts -> ego_jax ResNet weights, and the torch-free ImageNet artifact (.npz).

The artifact is a flat .npz keyed by '/'-joined nnx state paths of `ego_jax.models.ResNet`
('conv1/kernel', 'layer4/2/conv2/kernel', 'layer4/0/downsample/bn/mean', 'fc/bias', ...) plus a
JSON metadata entry '__meta__'. Loading it needs NumPy only.
"""

import json
import re
import zipfile
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx

from ego_jax.models.resnet import BLOCKS, ResNet

META_KEY = "__meta__"

# The whole mapping. An nnx path maps to a torch name element-wise; torchvision keeps the
# projection shortcut in an nn.Sequential, so downsample/{conv,bn} become downsample.{0,1}.
_SHORTCUT = {"conv": "0", "bn": "1"}
# nnx leaf -> (torch leaf, torch->nnx axis permutation by ndim; absent: copied as is).
# Kernels: conv OIHW -> HWIO, Linear (out, in) -> (in, out).
_LEAVES = {
    "kernel": ("weight", {4: (2, 3, 1, 0), 2: (1, 0)}),
    "scale": ("weight", {}),
    "bias": ("bias", {}),
    "mean": ("running_mean", {}),
    "var": ("running_var", {}),
}


class WeightsError(ValueError):
    """A weight file or state dict that does not fit the expected ResNet."""


def _permutation(path: tuple, ndim: int) -> tuple[int, ...]:
    """torch -> nnx axis order of the weight at nnx `path`."""
    return _LEAVES[path[-1]][1].get(ndim, tuple(range(ndim)))


def torch_name(path: tuple) -> str:
    """nnx state path ('layer4', 0, 'downsample', 'conv', 'kernel') -> torch key 'layer4.0.downsample.0.weight'."""
    *modules, leaf = (str(p) for p in path)
    names = [_SHORTCUT[m] if i > 0 and modules[i - 1] == "downsample" else m for i, m in enumerate(modules)]
    return ".".join(names + [_LEAVES[leaf][0]])


def path_key(path: tuple) -> str:
    """nnx state path -> artifact key ('layer4', 2, 'conv2', 'kernel') -> 'layer4/2/conv2/kernel'."""
    return "/".join(str(p) for p in path)


def _weights(resnet: ResNet) -> list[tuple[tuple, tuple]]:
    """(nnx path, shape) of every Param and BatchStat of `resnet` (works on nnx.eval_shape models)."""
    state = nnx.state(resnet, (nnx.Param, nnx.BatchStat))
    return [(p, tuple(v.shape)) for p, v in nnx.to_flat_state(state)]


def weight_shapes(resnet: ResNet) -> dict[str, tuple]:
    """Artifact key -> nnx shape for every Param and BatchStat of `resnet`."""
    return {path_key(p): s for p, s in _weights(resnet)}


def _abstract_resnet(depth, width, in_channels, num_classes) -> ResNet:
    return nnx.eval_shape(
        lambda: ResNet(depth, in_channels=in_channels, width=width, num_classes=num_classes, rngs=nnx.Rngs(0))
    )


def check_keys(got: Mapping[str, tuple], want: Mapping[str, tuple], what: str) -> None:
    """Raise WeightsError listing every missing, unknown and mis-shaped key of `got` (name -> shape) vs `want`."""
    missing = sorted(set(want) - set(got))
    unknown = sorted(set(got) - set(want))
    misshaped = [
        f"{k}: got {tuple(got[k])}, expected {tuple(want[k])}"
        for k in sorted(set(got) & set(want))
        if tuple(got[k]) != tuple(want[k])
    ]
    if missing or unknown or misshaped:
        parts = [f"{what} does not match:"]
        for title, items in (("missing keys", missing), ("unknown keys", unknown), ("wrong shapes", misshaped)):
            if items:
                parts.append(f"  {title} ({len(items)}): " + ", ".join(items))
        raise WeightsError("\n".join(parts))


def _blocks_per_stage(keys, sep: str) -> tuple[int, ...]:
    counts = {}
    for k in keys:
        if m := re.match(rf"layer([1-4]){re.escape(sep)}(\d+){re.escape(sep)}", k):
            counts[int(m[1])] = max(counts.get(int(m[1]), 0), int(m[2]) + 1)
    return tuple(counts.get(s, 0) for s in (1, 2, 3, 4))


def _depth(blocks: tuple[int, ...], what: str) -> int:
    for depth, b in BLOCKS.items():
        if b == blocks:
            return depth
    raise WeightsError(
        f"{what} has {blocks} blocks in layer1..layer4; only ResNet-18 {BLOCKS[18]} and "
        f"ResNet-34 {BLOCKS[34]} (BasicBlock ResNets) are supported"
    )


def resnet_config(state_dict: Mapping[str, np.ndarray]) -> dict:
    """torchvision ResNet state dict -> dict(depth, width, in_channels, num_classes) (num_classes None without fc)."""
    what = "the state dict"
    if "conv1.weight" not in state_dict:
        hint = ""
        if state_dict and all(k.startswith("module.") for k in state_dict):
            hint = " (every key starts with 'module.': strip that DataParallel prefix first)"
        raise WeightsError(
            f"{what} is not a torchvision ResNet: it has no 'conv1.weight'{hint}; first keys: {list(state_dict)[:5]}"
        )
    if any(re.match(r"layer[1-4]\.\d+\.conv3\.", k) for k in state_dict):
        raise WeightsError(
            f"{what} is a Bottleneck ResNet (ResNet-50 or deeper: it has conv3 keys); "
            "only ResNet-18 and ResNet-34 are supported"
        )
    conv1 = np.shape(state_dict["conv1.weight"])
    if len(conv1) != 4:
        raise WeightsError(f"{what}: 'conv1.weight' has shape {conv1}, expected a conv kernel (out, in, 7, 7)")
    fc = state_dict.get("fc.weight")
    return dict(
        depth=_depth(_blocks_per_stage(state_dict, "."), what),
        width=conv1[0],
        in_channels=conv1[1],
        num_classes=None if fc is None else np.shape(fc)[0],
    )


def torchvision_to_nnx(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision ResNet-18/34 state dict (torch names -> arrays in torch layout) -> {artifact key: float32 array}.

    Every key must map to a weight of the ResNet the dict describes (only its BatchNorms'
    'num_batches_tracked' are ignored), every weight must be present with its torch shape; otherwise WeightsError
    lists the keys.
    """
    if not isinstance(state_dict, Mapping):
        raise WeightsError(f"expected a state dict (a mapping of parameter names to tensors), got {type(state_dict)}")
    nested = [k for k, v in state_dict.items() if isinstance(v, Mapping)]
    if nested:
        raise WeightsError(
            f"expected a flat state dict of tensors, but {nested[:5]} hold dicts: this looks like a "
            "training checkpoint; pass the model's state dict (e.g. checkpoint['state_dict'])"
        )
    cfg = resnet_config(state_dict)
    weights = {torch_name(p): (p, _permutation(p, len(s)), s) for p, s in _weights(_abstract_resnet(**cfg))}
    want = {k: tuple(s[i] for i in np.argsort(perm)) for k, (_, perm, s) in weights.items()}
    # torch BatchNorm's step counter is not a weight and nothing in ego_jax uses it.
    ignored = {k.removesuffix("running_mean") + "num_batches_tracked" for k in weights if k.endswith(".running_mean")}
    got = {k: np.shape(v) for k, v in state_dict.items() if k not in ignored}
    check_keys(got, want, f"the ResNet-{cfg['depth']} state dict (width {cfg['width']})")
    return {
        path_key(p): np.ascontiguousarray(np.asarray(state_dict[k], np.float32).transpose(perm))
        for k, (p, perm, _) in weights.items()
    }


def config_of(arrays: Mapping[str, np.ndarray]) -> dict:
    """Artifact arrays -> dict(depth, width, in_channels, num_classes) they describe."""
    if "conv1/kernel" not in arrays:
        raise WeightsError(f"not an ego_jax ResNet artifact: no 'conv1/kernel'; first keys: {list(arrays)[:5]}")
    *_, cin, width = np.shape(arrays["conv1/kernel"])
    fc = arrays.get("fc/kernel")
    return dict(
        depth=_depth(_blocks_per_stage(arrays, "/"), "the artifact"),
        width=width,
        in_channels=cin,
        num_classes=None if fc is None else np.shape(fc)[1],
    )


def save_imagenet(path, arrays: Mapping[str, np.ndarray], **meta) -> None:
    """Write the artifact: {artifact key: array} + '__meta__' (JSON: depth, width, ... and `meta`) -> .npz at `path`."""
    info = config_of(arrays) | meta
    np.savez(path, **arrays, **{META_KEY: np.array(json.dumps(info, default=int))})


def read_imagenet(path) -> tuple[dict[str, np.ndarray], dict]:
    """.npz artifact -> ({artifact key: array}, metadata); a damaged or foreign file is a WeightsError naming it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files if k != META_KEY}
            meta = json.loads(str(f[META_KEY])) if META_KEY in f.files else {}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise WeightsError(
            f"{path} is not a readable ImageNet weights artifact ({type(e).__name__}: {e}); "
            "re-create it with scripts/convert_weights.py"
        ) from e
    return arrays, meta


def flow_stem(kernel: np.ndarray, channels: int) -> np.ndarray:
    """ImageNet stem (7,7,3,w) -> flow stem (7,7,channels,w): mean over RGB, repeated (no rescaling), as the
    reference."""
    return np.repeat(kernel.mean(axis=2, keepdims=True), channels, axis=2)


def load_imagenet(resnet: ResNet, source, *, modality: str = "rgb") -> None:
    """Apply an ImageNet artifact (.npz path, or {artifact key: array}) to `resnet` in place.

    modality: what the ResNet reads. 'rgb': every weight copied, fc included (the model needs in_channels=3 and
    the artifact's fc). 'flow': stem averaged over RGB and repeated for resnet.in_channels; fc dropped (model
    without fc).
    `resnet` may be abstract (`nnx.eval_shape(lambda: ResNet(...))`): every weight is replaced.
    """
    if modality not in ("rgb", "flow"):
        raise ValueError(f"modality must be 'rgb' or 'flow', got {modality!r}")
    arrays = dict(source) if isinstance(source, Mapping) else read_imagenet(source)[0]
    arrays.pop(META_KEY, None)
    cfg = config_of(arrays)
    name = f"ResNet-{resnet.depth} (width {resnet.width})"
    if cfg["depth"] != resnet.depth:
        raise WeightsError(f"this artifact is a ResNet-{cfg['depth']} but the model is ResNet-{resnet.depth}")
    if cfg["width"] != resnet.width:
        raise WeightsError(
            f"this artifact has width {cfg['width']} (layer1 channels) but the model has width {resnet.width}"
        )
    if modality == "flow":
        if resnet.fc is not None:
            raise WeightsError(
                "modality='flow' drops the ImageNet fc, but the model has an fc: build it with num_classes=None"
            )
        arrays = {k: v for k, v in arrays.items() if not k.startswith("fc/")}
        arrays["conv1/kernel"] = flow_stem(arrays["conv1/kernel"], resnet.in_channels)
    elif resnet.in_channels != cfg["in_channels"]:
        raise WeightsError(
            f"the artifact's stem takes {cfg['in_channels']} channels but the model's takes "
            f"{resnet.in_channels}: use modality='flow' for stacked-flow input"
        )
    check_keys({k: np.shape(v) for k, v in arrays.items()}, weight_shapes(resnet), f"the artifact for {name}")
    state = nnx.state(resnet, (nnx.Param, nnx.BatchStat))
    new = {p: jax.numpy.asarray(arrays[path_key(p)], v.dtype) for p, v in nnx.to_flat_state(state)}
    nnx.update(resnet, nnx.from_flat_state(new))
