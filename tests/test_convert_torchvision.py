"""torchvision state dict -> ego_jax artifact -> ResNet: name mapping, flow stem, .npz without torch, errors."""

import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax.convert.torchvision import (
    WeightsError,
    load_imagenet,
    read_imagenet,
    save_imagenet,
    torch_name,
    torchvision_to_nnx,
)
from ego_jax.models.resnet import ResNet

torch = pytest.importorskip("torch")
from ego_jax.convert import torch_reference as torch_ref  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import convert_weights  # noqa: E402

ATOL = RTOL = 1e-4


def _abstract(depth=18, *, width=4, in_channels=3, num_classes=10):
    return nnx.eval_shape(
        lambda: ResNet(depth, width=width, in_channels=in_channels, num_classes=num_classes, rngs=nnx.Rngs(0))
    )


@nnx.jit
def _forward(model, x):
    return model(x)


def test_torch_names_follow_torchvision():
    assert torch_name(("conv1", "kernel")) == "conv1.weight"
    assert torch_name(("layer4", 2, "bn2", "var")) == "layer4.2.bn2.running_var"
    assert torch_name(("layer2", 0, "downsample", "conv", "kernel")) == "layer2.0.downsample.0.weight"
    assert torch_name(("layer2", 0, "downsample", "bn", "scale")) == "layer2.0.downsample.1.weight"
    assert torch_name(("fc", "kernel")) == "fc.weight"


def test_layouts_and_every_key_used():
    sd = torch_ref.random_state_dict(18, width=4, num_classes=10)
    arrays = torchvision_to_nnx(sd)
    assert len(arrays) == sum(not k.endswith("num_batches_tracked") for k in sd)
    np.testing.assert_array_equal(arrays["layer3/0/conv1/kernel"], sd["layer3.0.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(arrays["fc/kernel"], sd["fc.weight"].T)
    np.testing.assert_array_equal(arrays["layer4/0/downsample/bn/mean"], sd["layer4.0.downsample.1.running_mean"])


def _save(obj, path):
    torch.save(obj, path)
    return path


def test_script_artifact_round_trip(tmp_path):
    """.pth -> scripts/convert_weights.py -> .npz -> ResNet gives the torch reference's outputs."""
    sd = torch_ref.random_state_dict(18, width=4, num_classes=10, seed=5)
    out = tmp_path / "w" / "r18.npz"
    convert_weights.main([str(_save(torch_ref.to_torch(sd), tmp_path / "r18.pth")), str(out)])
    arrays, meta = read_imagenet(out)
    assert (meta["depth"], meta["width"], meta["num_classes"], meta["source"]) == (18, 4, 10, "r18.pth")
    model = _abstract()
    load_imagenet(model, out)
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 40, 40, 3)).astype(np.float32)
    ref = torch_ref.resnet_forward(torch_ref.to_torch(sd), torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(_forward(model, jnp.asarray(x))["logits"], ref["logits"].numpy(), atol=ATOL, rtol=RTOL)


def test_artifact_loads_without_torch(tmp_path):
    sd = torch_ref.random_state_dict(18, width=4, num_classes=10)
    save_imagenet(tmp_path / "a.npz", torchvision_to_nnx(sd))
    code = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
import numpy as np
from flax import nnx
from ego_jax.convert.torchvision import load_imagenet
from ego_jax.models import ResNet
m = nnx.eval_shape(lambda: ResNet(18, width=4, num_classes=10, rngs=nnx.Rngs(0)))
load_imagenet(m, {str(tmp_path / "a.npz")!r})
np.save({str(tmp_path / "fc.npy")!r}, np.asarray(m.fc.kernel[...]))
"""
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
    )
    np.testing.assert_array_equal(np.load(tmp_path / "fc.npy"), sd["fc.weight"].T)


def test_flow_stem_and_forward_match_reference_initialisation():
    stack = 5
    sd = torch_ref.random_state_dict(18, width=4, num_classes=1000, seed=2)
    model = _abstract(in_channels=2 * stack, num_classes=None)
    load_imagenet(model, torchvision_to_nnx(sd), modality="flow")
    # The reference: conv1.weight (out, 3, 7, 7) averaged over dim 1, repeated 2*stack times; fc dropped.
    flow_sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    flow_sd["conv1.weight"] = np.repeat(sd["conv1.weight"].mean(axis=1, keepdims=True), 2 * stack, axis=1)
    np.testing.assert_allclose(model.conv1.kernel[...], flow_sd["conv1.weight"].transpose(2, 3, 1, 0), rtol=1e-6)
    model.eval()
    x = np.random.default_rng(1).standard_normal((2, 40, 40, 2 * stack)).astype(np.float32)
    ref = torch_ref.resnet_forward(torch_ref.to_torch(flow_sd), torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    out = _forward(model, jnp.asarray(x))
    assert "logits" not in out
    np.testing.assert_allclose(out["pooled"], ref["pooled"].numpy(), atol=ATOL, rtol=RTOL)


def test_malformed_state_dict_lists_every_bad_key():
    sd = torch_ref.random_state_dict(18, width=4, num_classes=10)
    del sd["layer2.1.bn1.running_var"]
    sd["layer2.1.bn3.weight"] = np.ones(8, np.float32)
    sd["layer2.1.bn3.num_batches_tracked"] = np.array(0)
    sd["layer3.0.conv2.weight"] = np.ones((16, 16, 1, 1), np.float32)
    with pytest.raises(WeightsError) as e:
        torchvision_to_nnx(sd)
    msg = str(e.value)
    assert "missing keys (1): layer2.1.bn1.running_var" in msg
    assert "unknown keys (2): layer2.1.bn3.num_batches_tracked, layer2.1.bn3.weight" in msg
    assert "layer3.0.conv2.weight: got (16, 16, 1, 1), expected (16, 16, 3, 3)" in msg


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda sd: {"module." + k: v for k, v in sd.items()}, "strip that DataParallel prefix"),
        (lambda sd: sd | {"layer1.0.conv3.weight": np.ones((4, 4, 1, 1), np.float32)}, "Bottleneck"),
        (lambda sd: {k: v for k, v in sd.items() if not k.startswith("layer4.1.")}, r"\(2, 2, 2, 1\) blocks"),
        (lambda sd: {"state_dict": sd, "epoch": 3}, "training checkpoint"),
    ],
)
def test_not_a_resnet_state_dict(edit, match):
    with pytest.raises(WeightsError, match=match):
        torchvision_to_nnx(edit(torch_ref.random_state_dict(18, width=4, num_classes=10)))


def test_artifact_model_mismatch_errors():
    arrays = torchvision_to_nnx(torch_ref.random_state_dict(18, width=4, num_classes=10))
    cases = [
        (_abstract(34), "rgb", "this artifact is a ResNet-18 but the model is ResNet-34"),
        (_abstract(width=8), "rgb", "width 4 .* model has width 8"),
        (_abstract(in_channels=10), "rgb", "use modality='flow'"),
        (_abstract(in_channels=10), "flow", "build it with num_classes=None"),
        (_abstract(num_classes=7), "rgb", r"fc/kernel: got \(32, 10\), expected \(32, 7\)"),
        (_abstract(num_classes=None), "rgb", "unknown keys \\(2\\): fc/bias, fc/kernel"),
    ]
    for model, modality, match in cases:
        with pytest.raises(WeightsError, match=match):
            load_imagenet(model, arrays, modality=modality)


@pytest.mark.parametrize(
    "obj,match",
    [
        ([1, 2], "holds a list, expected a state dict"),
        ("module", "not a loadable state dict"),
    ],
)
def test_script_rejects_non_state_dicts(tmp_path, obj, match):
    path = tmp_path / "bad.pth"
    torch.save(torch.nn.Linear(2, 2) if obj == "module" else obj, path)
    with pytest.raises(SystemExit, match=match):
        convert_weights.main([str(path), str(tmp_path / "out.npz")])
