"""The stream table: built-in entries, registration, lookup by kind and by model class."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ego_jax import models, streams
from ego_jax.streams import normalize_flow, normalize_rgb


class Echo(nnx.Module):
    """Returns its (normalised) inputs, to see what the table passes to a model."""

    def __init__(self, num_classes, *, dtype=jnp.float32, rngs=None):
        self.num_classes = num_classes

    def __call__(self, *inputs):
        return {"logits": inputs}


class EchoChild(Echo):
    pass


@pytest.fixture
def echo():
    stream = streams.register(
        streams.Stream(
            kind="echo",
            model=Echo,
            inputs={"flow": normalize_flow, "rgb": normalize_rgb},
            loader="two_stream",
            protocol="joint",
        )
    )
    yield stream
    streams.unregister("echo")


def test_builtin_entries_build_their_models():
    built = {kind: streams.get(kind) for kind in ("ego_rnn", "flow", "two_stream")}
    small = dict(depth=18, width=4)
    rgb = built["ego_rnn"].build(3, dict(small, attention=True), dtype=jnp.float32, rngs=nnx.Rngs(0), crop=32)
    flow = built["flow"].build(3, dict(small, stack=2), dtype=jnp.float32, rngs=nnx.Rngs(0), crop=32)
    joint = built["two_stream"].build(
        3,
        dict(rgb=dict(small, attention=True), flow=dict(small, stack=2)),
        dtype=jnp.float32,
        rngs=nnx.Rngs(0),
        crop=32,
    )
    assert (type(rgb), type(flow), type(joint)) == (models.EgoRNN, models.FlowResNet, models.TwoStream)
    assert (type(joint.rgb), type(joint.flow)) == (models.EgoRNN, models.FlowResNet)
    assert [streams.of_model(m).kind for m in (rgb, flow, joint)] == ["ego_rnn", "flow", "two_stream"]
    assert [built[k].layout for k in built] == ["rgb", "flow", "two_stream"]


def test_ms_head_grid_follows_the_crop():
    ms = dict(kind="cls", tap="layer4", hidden=4, grid=(99, 99))  # grid overwritten by the crop's layer4 grid
    model = streams.get("ego_rnn").build(
        3, dict(depth=18, width=4, attention=True, ms_head=ms), dtype=jnp.float32, rngs=nnx.Rngs(0), crop=64
    )
    out = model(jnp.zeros((1, 2, 64, 64, 3)))
    assert out["ms"].shape[2:4] == models.layer4_grid(64, 64) == (2, 2)


def test_forward_normalises_each_input_in_the_entry_order(echo):
    batch = {
        "rgb": np.full((1, 2, 4, 4, 3), 200, np.uint8),
        "flow": np.full((1, 4, 4, 4), 30, np.uint8),
        "label": np.zeros(1, np.int32),
    }
    flow, rgb = echo.forward(Echo(3), batch, jnp.bfloat16)["logits"]
    np.testing.assert_array_equal(flow, normalize_flow(batch["flow"], jnp.bfloat16))
    np.testing.assert_array_equal(rgb, normalize_rgb(batch["rgb"], jnp.bfloat16))
    assert rgb.dtype == jnp.bfloat16


def test_default_builder_and_lookup_by_class(echo):
    model = echo.build(7, {}, dtype=jnp.float32, rngs=nnx.Rngs(0), crop=32)
    assert type(model) is Echo and model.num_classes == 7
    assert streams.of_model(EchoChild(1)) is echo  # a subclass is recognised as its registered base
    assert streams.of_model(nnx.Linear(2, 2, rngs=nnx.Rngs(0))) is None


def test_registration_errors(echo):
    assert streams.register(dataclasses.replace(echo, layout="rgb")) is streams.get("echo")  # its module run again
    with pytest.raises(ValueError, match="already registered"):
        streams.register(dataclasses.replace(echo, model=EchoChild))
    with pytest.raises(TypeError, match="streams.Stream"):
        streams.register(dict(kind="x"))
    with pytest.raises(ValueError, match="at least one batch key"):
        streams.register(streams.Stream("empty", Echo, {}, loader="rgb", protocol="rgb"))
    with pytest.raises(ValueError, match=r"kind='ego_rnm'.*'ego_rnn', 'flow', 'lsta', 'two_stream'.*'echo'.*register"):
        streams.get("ego_rnm")


def test_what_each_kind_means_is_in_its_entry():
    """Everything the recipes, identities and CAM drawing ask of a kind: RGB input, MS head, speed-only kwargs,
    the fine-tune set of the two-stream joint stage, the RGB sub-stream of a composite kind."""
    rgb, flow, lsta, joint = (streams.get(k) for k in ("ego_rnn", "flow", "lsta", "two_stream"))
    assert (rgb.reads_rgb, flow.reads_rgb, joint.reads_rgb) == (True, False, True)
    assert rgb.ms_head_of({"ms_head": {"kind": "cls"}}) == {"kind": "cls"} and lsta.ms_head_of({}) is None
    assert rgb.finetune and lsta.finetune and not flow.finetune
    kwargs = dict(rgb=dict(depth=18, scan_unroll=1), flow=dict(stack=2), dropout=0.5)
    assert joint.result_kwargs(kwargs) == dict(rgb=dict(depth=18), flow=dict(stack=2), dropout=0.5)
    assert joint.rgb_stream(kwargs) == ("rgb", rgb) and rgb.rgb_stream({}) == (None, rgb)
    assert joint.rgb_stream(dict(kwargs, rgb_kind="lsta")) == ("rgb", lsta) and flow.rgb_stream({}) is None
    with pytest.raises(ValueError, match="no fine-tune set"):
        joint.build(3, dict(kwargs, rgb_kind="flow"), dtype=jnp.float32, rngs=nnx.Rngs(0), crop=32)


@pytest.mark.parametrize("xp", [np, jnp])
def test_normalisation_on_numpy_and_jax(xp):
    rgb = xp.asarray(np.array([[0, 255, 128]], np.uint8))
    # (0 - 0.485) / 0.229, (1 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225
    np.testing.assert_allclose(np.asarray(streams.normalize_rgb(rgb)), [[-2.117904, 2.428571, 0.426492]], atol=1e-5)
    flow = xp.asarray(np.array([0, 128, 255], np.uint8))
    # (v / 255 - 0.449) / 0.226
    np.testing.assert_allclose(np.asarray(streams.normalize_flow(flow)), [-1.986726, 0.234349, 2.438053], atol=1e-5)
    assert isinstance(streams.normalize_rgb(rgb), type(xp.zeros(1)))
    assert streams.normalize_flow(flow, dtype=jnp.bfloat16).dtype == jnp.bfloat16
