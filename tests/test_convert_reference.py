"""Reference-checkpoint converter: key table, duplicates, .pth loading and the documented errors."""

import numpy as np
import pytest
from flax import nnx

from ego_jax.convert.reference import convert_reference, load_reference
from ego_jax.convert.torchvision import WeightsError
from ego_jax.models import EgoRNN, FlowResNet, TwoStream

torch = pytest.importorskip("torch")
from ego_jax.convert import torch_reference as ref  # noqa: E402

WIDTH, CLASSES, STACK = 4, 3, 2


def rgb_sd():
    return ref.random_rgb_state_dict(depth=18, width=WIDTH, num_classes=CLASSES)


def test_rgb_values_land_where_the_table_says():
    sd = rgb_sd()
    out = convert_reference(sd, "rgb")
    f = 8 * WIDTH
    # gate block 1 is f, block 2 is c~ (order i, f, c~, o); OIHW -> HWIO.
    np.testing.assert_array_equal(
        out["lstm/x_conv/kernel"][..., f : 2 * f], sd["lstm_cell.conv_f_xx.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(out["lstm/x_conv/bias"][2 * f : 3 * f], sd["lstm_cell.conv_c_xx.bias"])
    np.testing.assert_array_equal(
        out["lstm/h_conv/kernel"][..., 3 * f :], sd["lstm_cell.conv_o_hh.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(out["classifier/kernel"], sd["classifier.1.weight"].T)
    np.testing.assert_array_equal(out["backbone/fc/kernel"], sd["resNet.fc.weight"].T)
    np.testing.assert_array_equal(out["backbone/layer4/1/bn2/var"], sd["resNet.layer4.1.bn2.running_var"])
    assert not any("weight_softmax" in k or k.startswith("fc") for k in out)
    # The duplicates are optional.
    trimmed = {k: v for k, v in sd.items() if k not in ("weight_softmax", "fc.weight", "fc.bias")}
    assert convert_reference(trimmed, "rgb").keys() == out.keys()


def test_load_from_pth_file(tmp_path):
    sd = ref.random_flow_state_dict(depth=18, width=WIDTH, stack=STACK, num_classes=CLASSES)
    path = tmp_path / "flow.pth"
    torch.save(ref.to_torch(sd), path)
    model = FlowResNet(CLASSES, stack=STACK, depth=18, width=WIDTH, rngs=nnx.Rngs(0))
    load_reference(model, str(path))
    np.testing.assert_array_equal(np.asarray(model.classifier.kernel[...]), sd["fc_action.weight"].T)
    np.testing.assert_array_equal(
        np.asarray(model.backbone.conv1.kernel[...]), sd["conv1.weight"].transpose(2, 3, 1, 0)
    )


def test_two_stream_nesting():
    sd = ref.random_two_stream_state_dict(depth=18, width=WIDTH, stack=STACK, num_classes=CLASSES)
    out = convert_reference(sd, "two_stream")
    np.testing.assert_array_equal(out["classifier/kernel"], sd["fc2.weight"].T)
    np.testing.assert_array_equal(out["flow/classifier/bias"], sd["flowModel.fc_action.bias"])
    np.testing.assert_array_equal(
        out["rgb/lstm/h_conv/kernel"][..., : 8 * WIDTH],
        sd["frameModel.lstm_cell.conv_i_hh.weight"].transpose(2, 3, 1, 0),
    )
    model = TwoStream(
        CLASSES,
        rgb=EgoRNN(CLASSES, depth=18, width=WIDTH, rngs=nnx.Rngs(0)),
        flow=FlowResNet(CLASSES, stack=STACK, depth=18, width=WIDTH, rngs=nnx.Rngs(1)),
        rngs=nnx.Rngs(2),
    )
    load_reference(model, sd)
    np.testing.assert_array_equal(
        np.asarray(model.rgb.backbone.bn1.mean[...]), sd["frameModel.resNet.bn1.running_mean"]
    )


def test_unknown_and_missing_keys_are_all_listed():
    sd = rgb_sd()
    sd["lstm_cell.peephole.weight"] = np.zeros(3, np.float32)
    del sd["lstm_cell.conv_f_hh.weight"], sd["classifier.1.bias"]
    with pytest.raises(WeightsError) as e:
        convert_reference(sd, "rgb")
    for name in ("lstm_cell.peephole.weight", "lstm_cell.conv_f_hh.weight", "classifier.1.bias", "unknown", "missing"):
        assert name in str(e.value)


def test_resnet_subtree_errors_name_the_prefix():
    sd = rgb_sd()
    del sd["resNet.layer4.1.bn2.running_var"]
    with pytest.raises(WeightsError, match=r"(?s)resNet\..*layer4\.1\.bn2\.running_var"):
        convert_reference(sd, "rgb")


def test_nested_errors_name_the_submodel():
    sd = ref.random_two_stream_state_dict(depth=18, width=WIDTH, stack=STACK, num_classes=CLASSES)
    del sd["flowModel.fc_action.bias"]
    sd["frameModel.extra"] = np.zeros(1, np.float32)
    with pytest.raises(WeightsError) as e:
        convert_reference(sd, "two_stream")
    assert "flowModel.*: missing keys: fc_action.bias" in str(e.value)
    assert "frameModel.*: unknown keys (1): extra" in str(e.value)


def test_duplicates_must_equal_their_twin():
    sd = rgb_sd()
    sd["weight_softmax"] = sd["weight_softmax"] + 1
    with pytest.raises(WeightsError, match="weight_softmax differs from resNet.fc.weight"):
        convert_reference(sd, "rgb")
    sd = ref.random_two_stream_state_dict(depth=18, width=WIDTH, stack=STACK, num_classes=CLASSES)
    sd["classifier.1.bias"] = sd["classifier.1.bias"] * 2 + 1
    with pytest.raises(WeightsError, match="classifier.1.bias differs from fc2.bias"):
        convert_reference(sd, "two_stream")


def test_misshaped_keys():
    sd = rgb_sd()
    sd["lstm_cell.conv_o_xx.weight"] = sd["lstm_cell.conv_o_xx.weight"][:, :, :1, :1]
    with pytest.raises(WeightsError, match=r"wrong shapes: .*conv_o_xx.weight \(32, 32, 1, 1\)"):
        convert_reference(sd, "rgb")
    sd = rgb_sd()
    sd["classifier.1.weight"] = sd["fc.weight"] = np.zeros((CLASSES + 1, 8 * WIDTH), np.float32)
    sd["classifier.1.bias"] = sd["fc.bias"] = np.zeros((CLASSES + 1,), np.float32)
    model = EgoRNN(CLASSES, depth=18, width=WIDTH, rngs=nnx.Rngs(0))
    with pytest.raises(WeightsError, match=r"wrong shapes.*classifier/kernel: got \(32, 4\), expected \(32, 3\)"):
        load_reference(model, sd)


def test_architecture_mismatch_with_the_model():
    sd = rgb_sd()
    model = EgoRNN(CLASSES, depth=18, width=WIDTH, ms_head=dict(kind="cls", grid=(1, 1)), rngs=nnx.Rngs(0))
    with pytest.raises(WeightsError, match=r"missing keys.*ms_head/conv/kernel"):
        load_reference(model, sd)
    with pytest.raises(WeightsError, match="backbone is a ResNet with depth 18.* model's is depth 34"):
        load_reference(EgoRNN(CLASSES, depth=34, width=WIDTH, rngs=nnx.Rngs(0)), sd)
    flow = ref.random_flow_state_dict(depth=18, width=WIDTH, stack=STACK, num_classes=CLASSES)
    with pytest.raises(WeightsError, match="4 input channels but the model's is depth 18, width 4, 10 input"):
        load_reference(FlowResNet(CLASSES, stack=5, depth=18, width=WIDTH, rngs=nnx.Rngs(0)), flow)


def test_wrong_containers_are_rejected():
    sd = rgb_sd()
    with pytest.raises(WeightsError, match="module."):
        convert_reference({f"module.{k}": v for k, v in sd.items()}, "rgb")
    with pytest.raises(WeightsError, match="state_dict"):
        convert_reference({"state_dict": sd, "epoch": np.array(3)}, "rgb")
    with pytest.raises(ValueError, match="kind"):
        convert_reference(sd, "joint")
    with pytest.raises(WeightsError, match="it is a valid 'rgb' checkpoint"):
        load_reference(FlowResNet(CLASSES, stack=STACK, depth=18, width=WIDTH, rngs=nnx.Rngs(0)), sd)
    with pytest.raises(TypeError, match="EgoRNN, FlowResNet or TwoStream"):
        load_reference(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), sd)


def test_resnet34_reference_backbone_loads():
    """The reference uses ResNet-34: layers of 3, 4, 6, 3 blocks under resNet.*."""
    sd = ref.random_rgb_state_dict(depth=34, width=WIDTH, num_classes=CLASSES)
    model = EgoRNN(CLASSES, depth=34, width=WIDTH, rngs=nnx.Rngs(0))
    load_reference(model, sd)
    np.testing.assert_array_equal(
        np.asarray(model.backbone.layer3[5].conv2.kernel[...]), sd["resNet.layer3.5.conv2.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        np.asarray(model.backbone.layer4[0].downsample.bn.mean[...]), sd["resNet.layer4.0.downsample.1.running_mean"]
    )
