"""Reference PyTorch checkpoints -> ego_jax EgoRNN / FlowResNet / TwoStream / LSTA weights.

Key names are those of the reference code's modules (Ego-RNN: objectAttentionModelConvLSTM.attentionModel,
flow_resnet.ResNet, twoStreamModel.twoStreamAttentionModel; LSTA: attentionModel with its MyConvLSTACell).
The whole mapping is the table below (`TABLE`, `DUPLICATES`); correct a name there and nowhere else.

| model      | reference key (torch layout)              | ego_jax path (nnx layout)    | rule     |
|------------|-------------------------------------------|------------------------------|----------|
| rgb        | resNet.<torchvision ResNet key>           | backbone/<path>              | resnet   |
| rgb        | lstm_cell.conv_{i,f,c,o}_xx.weight        | lstm/x_conv/kernel           | gates    |
| rgb        | lstm_cell.conv_{i,f,c,o}_xx.bias          | lstm/x_conv/bias             | gates    |
| rgb        | lstm_cell.conv_{i,f,c,o}_hh.weight        | lstm/h_conv/kernel           | gates    |
| rgb        | classifier.1.weight, classifier.1.bias    | classifier/kernel, /bias     | linear   |
| rgb        | weight_softmax (== resNet.fc.weight), fc.weight / fc.bias (== classifier.1.*) | duplicates |
| flow       | <torchvision ResNet key>, no fc, conv1 with 2*stack inputs | backbone/<path> | resnet |
| flow       | fc_action.weight, fc_action.bias          | classifier/kernel, /bias     | linear   |
| two_stream | frameModel.<rgb key>                      | rgb/<rgb path>               | rgb      |
| two_stream | flowModel.<flow key>                      | flow/<flow path>             | flow     |
| two_stream | fc2.weight, fc2.bias                      | classifier/kernel, /bias     | linear   |
| two_stream | classifier.1.weight / .bias (== fc2.*)    |                              | duplicates |
| lsta       | resNet.<torchvision ResNet key>           | backbone/<path>              | resnet   |
| lsta       | lsta_cell.conv_{i,f,a,o}_s.weight, .bias  | lsta/att_s_conv/kernel, /bias | gates   |
| lsta       | lsta_cell.conv_{i,f,a,o}_cam.weight       | lsta/att_cam_conv/kernel     | gates    |
| lsta       | lsta_cell.conv_{i,f,c}_x.weight, .bias    | lsta/x_conv/kernel, /bias    | gates    |
| lsta       | lsta_cell.conv_{i,f,c}_c.weight           | lsta/h_conv/kernel           | gates    |
| lsta       | lsta_cell.conv_o_x.weight, .conv_o_c.weight | lsta/o_conv/kernel         | inputs   |
| lsta       | lsta_cell.conv_o_x.bias                   | lsta/o_conv/bias             | copy     |
| lsta       | lsta_cell.c_classifier.weight             | lsta/c_classifier/kernel     | weight   |
| lsta       | lsta_cell.coupling_fc.weight              | lsta/coupling_fc/kernel      | weight   |
| lsta       | classifier.1.weight, classifier.1.bias    | classifier/kernel, /bias     | linear   |
| lsta       | fc.weight / fc.bias (== classifier.1.*)   |                              | duplicates |

Rules: resnet = ego_jax.convert.torchvision.torchvision_to_nnx on the keys under the prefix (its
'*.num_batches_tracked' are ignored); gates = the per-gate convs OIHW -> HWIO concatenated along
outputs in the listed order (Ego-RNN i, f, c~, o; LSTA attention i, f, a~, o and memory i, f, c~,
the cell's block orders); inputs = convs OIHW -> HWIO concatenated along inputs (LSTA's o_conv reads
concat(h, c_cam)); copy = the array as it is; linear = (out, in) -> (in, out) for the weight, bias copied;
weight = a bias-free linear's weight transposed; rgb / flow = the table of that model under the prefix.
Duplicates are dropped only when equal to their twin. Every other problem (unknown, missing, mis-shaped
or unequal-duplicate keys) raises WeightsError listing all of them.
"""

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ego_jax import streams
from ego_jax.convert.torchvision import WeightsError, check_keys, config_of, path_key, torchvision_to_nnx
from ego_jax.models.lsta_cell import ATTENTION_GATES, MEMORY_GATES
from ego_jax.models.resnet import ResNet

GATE_ORDER = ("i", "f", "c", "o")  # ego_jax ConvLSTMCell's gate blocks, along the output channels


def _each(key: str, gates) -> tuple[str, ...]:
    """'conv_{}_xx.weight', 'if' -> ('conv_i_xx.weight', 'conv_f_xx.weight'): the keys of a fused kernel's blocks."""
    return tuple(key.format(g) for g in gates)


# model -> rows (ego_jax path, reference key or prefix (a tuple of keys for gates / inputs), rule).
TABLE = {
    "rgb": (
        ("backbone", "resNet.", "resnet"),
        ("lstm/x_conv/kernel", _each("lstm_cell.conv_{}_xx.weight", GATE_ORDER), "gates"),
        ("lstm/x_conv/bias", _each("lstm_cell.conv_{}_xx.bias", GATE_ORDER), "gates"),
        ("lstm/h_conv/kernel", _each("lstm_cell.conv_{}_hh.weight", GATE_ORDER), "gates"),
        ("classifier", "classifier.1.", "linear"),
    ),
    "flow": (
        ("classifier", "fc_action.", "linear"),
        ("backbone", "", "resnet"),  # an empty prefix takes every key the other rows left
    ),
    "two_stream": (
        ("rgb", "frameModel.", "rgb"),
        ("flow", "flowModel.", "flow"),
        ("classifier", "fc2.", "linear"),
    ),
    "lsta": (
        ("backbone", "resNet.", "resnet"),
        ("lsta/att_s_conv/kernel", _each("lsta_cell.conv_{}_s.weight", ATTENTION_GATES), "gates"),
        ("lsta/att_s_conv/bias", _each("lsta_cell.conv_{}_s.bias", ATTENTION_GATES), "gates"),
        ("lsta/att_cam_conv/kernel", _each("lsta_cell.conv_{}_cam.weight", ATTENTION_GATES), "gates"),
        ("lsta/x_conv/kernel", _each("lsta_cell.conv_{}_x.weight", MEMORY_GATES), "gates"),
        ("lsta/x_conv/bias", _each("lsta_cell.conv_{}_x.bias", MEMORY_GATES), "gates"),
        ("lsta/h_conv/kernel", _each("lsta_cell.conv_{}_c.weight", MEMORY_GATES), "gates"),
        # the reference's conv_o_x convolves h_{t-1} (despite its name) and conv_o_c convolves c_cam
        ("lsta/o_conv/kernel", ("lsta_cell.conv_o_x.weight", "lsta_cell.conv_o_c.weight"), "inputs"),
        ("lsta/o_conv/bias", "lsta_cell.conv_o_x.bias", "copy"),
        ("lsta/c_classifier/kernel", "lsta_cell.c_classifier.weight", "weight"),
        ("lsta/coupling_fc/kernel", "lsta_cell.coupling_fc.weight", "weight"),
        ("classifier", "classifier.1.", "linear"),
    ),
}
# model -> {duplicate key: twin key}: the reference saves one tensor under both names.
DUPLICATES = {
    "rgb": {"weight_softmax": "resNet.fc.weight", "fc.weight": "classifier.1.weight", "fc.bias": "classifier.1.bias"},
    "flow": {},
    "two_stream": {"classifier.1.weight": "fc2.weight", "classifier.1.bias": "fc2.bias"},
    "lsta": {"fc.weight": "classifier.1.weight", "fc.bias": "classifier.1.bias"},
}


def _blocks(sd, keys, axis, errors):
    """Per-gate convs (OIHW) or biases under `keys`, concatenated along outputs (axis -1) or conv inputs (-2)."""
    arrays = [sd.pop(k, None) for k in keys]
    missing = [k for k, a in zip(keys, arrays) if a is None]
    if missing:
        errors.append(f"missing keys: {', '.join(missing)}")
        return None
    expected = (4,) if axis == -2 else (1, 4)
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim not in expected:
        errors.append(
            f"wrong shapes: {', '.join(f'{k} {a.shape}' for k, a in zip(keys, arrays))} (expected {len(keys)} equal "
            + ("conv weights (out, in, k, k))" if axis == -2 else "conv weights (out, in, k, k) or biases (out,))")
        )
        return None
    return np.concatenate([a.transpose(2, 3, 1, 0) if a.ndim == 4 else a for a in arrays], axis=axis)


def _single(sd, key, transpose, errors):
    """The array under `key` ((out, in) -> (in, out) if `transpose`)."""
    if key not in sd:
        errors.append(f"missing keys: {key}")
        return {}
    value = sd.pop(key)
    if transpose and value.ndim != 2:
        errors.append(f"wrong shapes: {key} {value.shape} (expected a linear weight (out, in))")
        return {}
    return {"": value.T if transpose else value}


def _linear(sd, prefix, errors):
    keys = (prefix + "weight", prefix + "bias")
    weight, bias = (sd.pop(k, None) for k in keys)
    missing = [k for k, a in zip(keys, (weight, bias)) if a is None]
    if missing:
        errors.append(f"missing keys: {', '.join(missing)}")
        return {}
    if weight.ndim != 2 or bias.shape != weight.shape[:1]:
        errors.append(f"wrong shapes: {keys[0]} {weight.shape}, {keys[1]} {bias.shape} (expected (out, in) and (out,))")
        return {}
    return {"kernel": weight.T, "bias": bias}


def _resnet(sd, prefix, errors):
    keys = [k for k in sd if k.startswith(prefix)]
    try:
        return torchvision_to_nnx({k[len(prefix) :]: sd.pop(k) for k in keys})
    except WeightsError as e:
        errors.append(f"ResNet under '{prefix}': {e}")
        return {}


def _convert(sd: dict, kind: str, errors: list) -> dict[str, np.ndarray]:
    """Consumes the keys of `sd` (reference names, prefix stripped) that `kind`'s table claims."""
    for dup, twin in DUPLICATES[kind].items():
        if dup in sd:
            if twin not in sd:
                errors.append(f"missing key {twin} (its duplicate {dup} is present)")
            elif sd[dup].shape != sd[twin].shape or not np.array_equal(sd[dup], sd[twin]):
                errors.append(f"duplicate {dup} differs from {twin}; the reference saves one tensor under both names")
            del sd[dup]
    out = {}
    for path, key, rule in TABLE[kind]:
        if rule in ("gates", "inputs"):
            value = _blocks(sd, key, -1 if rule == "gates" else -2, errors)
            parts = {} if value is None else {"": value}
        elif rule in ("copy", "weight"):
            parts = _single(sd, key, rule == "weight", errors)
        elif rule == "linear":
            parts = _linear(sd, key, errors)
        elif rule == "resnet":
            parts = _resnet(sd, key, errors)
        else:  # a nested model under a prefix
            sub = {k[len(key) :]: sd.pop(k) for k in [k for k in sd if k.startswith(key)]}
            sub_errors = []
            parts = _convert(sub, rule, sub_errors)
            if sub:
                sub_errors.append(f"unknown keys ({len(sub)}): {', '.join(sorted(sub))}")
            errors.extend(f"{key}*: {e}" for e in sub_errors)
        out.update({f"{path}/{p}" if p else path: v for p, v in parts.items()})
    return out


def _to_numpy(state_dict) -> dict[str, np.ndarray]:
    if not isinstance(state_dict, Mapping):
        raise WeightsError(
            f"expected a reference state dict (mapping of parameter names to tensors), got {type(state_dict).__name__}"
        )
    nested = [k for k, v in state_dict.items() if isinstance(v, Mapping)]
    if nested:
        raise WeightsError(
            f"expected a flat state dict of tensors, but {nested[:5]} hold dicts: pass the model's "
            "state dict (e.g. checkpoint['state_dict']), not the training checkpoint"
        )

    def as_np(v):
        return v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)

    return {k: as_np(v) for k, v in state_dict.items()}


def convert_reference(state_dict: Mapping, kind: str) -> dict[str, np.ndarray]:
    """Reference state dict (torch names -> tensors/arrays) of a kind in TABLE -> {nnx path: array}.

    Paths are '/'-joined nnx state paths of the ego_jax model ('lstm/x_conv/kernel',
    'rgb/backbone/layer4/2/conv2/kernel', ...); shapes are checked against the model by `load_reference`.
    """
    if kind not in TABLE:
        raise ValueError(f"kind must be one of {tuple(TABLE)}, got {kind!r}")
    sd = _to_numpy(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        raise WeightsError("every key starts with 'module.' (a DataParallel wrapper): strip that prefix first")
    out, errors = _convert_all(sd, kind)
    if errors:
        fits = [other for other in TABLE if other != kind and not _convert_all(sd, other)[1]]
        hint = f"\n  it is a valid {fits[0]!r} checkpoint: load it into that model instead" if fits else ""
        raise WeightsError(
            f"the reference {kind} checkpoint does not match the table in ego_jax/convert/reference.py:\n  "
            + "\n  ".join(errors)
            + hint
        )
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def _convert_all(sd: dict, kind: str) -> tuple[dict, list]:
    """(converted arrays, error lines) of all of `sd` (not modified) read as a `kind` checkpoint."""
    rest, errors = dict(sd), []
    out = _convert(rest, kind, errors)
    if rest:
        errors.append(f"unknown keys ({len(rest)}): {', '.join(sorted(rest))}")
    return out, errors


def _describe(cfg: dict) -> str:
    return f"depth {cfg['depth']}, width {cfg['width']}, {cfg['in_channels']} input channels"


def reference_arrays(model: nnx.Module, source) -> tuple[str, dict[str, np.ndarray]]:
    """A reference checkpoint (a state dict, or a .pth path read with torch) -> (its layout, {nnx path: array}),
    read in the layout the stream table (ego_jax.streams) names for the model's class; shapes unchecked."""
    stream = streams.of_model(model)  # the stream table names each model class's layout in TABLE
    if stream is None or stream.layout is None:
        names = ", ".join(s.model.__name__ for s in streams.STREAMS.values() if s.layout is not None)
        raise TypeError(
            f"a reference checkpoint loads into an EgoRNN, FlowResNet or TwoStream (Ego-RNN), or another "
            f"model with a reference layout in ego_jax/streams.py (now: {names}), not "
            f"{type(model).__name__}"
        )
    if not isinstance(source, Mapping):
        import torch  # only for reading .pth files; the torch extra of ego_jax

        source = torch.load(source, map_location="cpu", weights_only=True)
    return stream.layout, convert_reference(source, stream.layout)


def load_reference(model: nnx.Module, source) -> None:
    """Apply a reference checkpoint (a state dict, or a .pth path read with torch) to `model` in place.

    The checkpoint layout (TABLE key) is the one the stream table (ego_jax.streams) names for the model's class.
    The model must have the checkpoint's architecture (depth, width, stack, classes; an EgoRNN without
    ms_head, since the reference has none); otherwise WeightsError lists the missing, unknown and
    mis-shaped nnx paths.
    """
    kind, arrays = reference_arrays(model, source)
    for path, resnet in nnx.iter_modules(model):
        if isinstance(resnet, ResNet):  # name an architecture mismatch before listing every key it breaks
            prefix = path_key(path) + "/"
            got = config_of({k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)})
            want = dict(depth=resnet.depth, width=resnet.width, in_channels=resnet.in_channels)
            if any(got[k] != v for k, v in want.items()):
                raise WeightsError(
                    f"the checkpoint's {prefix[:-1]} is a ResNet with {_describe(got)} but the model's is "
                    f"{_describe(want)}: build the model with the checkpoint's architecture"
                )
    state = nnx.state(model, (nnx.Param, nnx.BatchStat))
    flat = nnx.to_flat_state(state)
    check_keys(
        {k: v.shape for k, v in arrays.items()},
        {path_key(p): tuple(v.shape) for p, v in flat},
        f"the reference {kind} checkpoint vs the {type(model).__name__} model",
    )
    new = {p: jnp.asarray(arrays[path_key(p)], v.dtype) for p, v in flat}
    nnx.update(model, nnx.from_flat_state(new))
