"""The table of stream kinds: what a stage's `model.kind` means, in one place.

A `Stream` entry says how to build the model from a stage's model config, which batch inputs it reads and how
they are normalised, how it is called, which loader kind feeds it (ego_jax.data.pipeline.KINDS), which
evaluation protocol scores it alone (ego_jax.train.evaluate.PROTOCOLS) and which reference-checkpoint layout
it imports (a key of ego_jax.convert.reference.TABLE, or None). The train loop, evaluation, conversion and
scripts read this table and dispatch on nothing else, so a new variant is one model file, one entry and one
config whose stages name the new kind:

    from ego_jax import streams
    from ego_jax.data.transforms import normalize_rgb

    streams.register(streams.Stream(kind="my_rgb", model=MyRGB, inputs={"rgb": normalize_rgb},
                                    loader="rgb", protocol="rgb"))
    # stage config: model=dict(kind="my_rgb", kwargs=dict(...))  -> MyRGB(num_classes, **kwargs, dtype=, rngs=)

The call contract: model(*[normalise(batch[key], dtype) for key, normalise in inputs.items()]) -> dict with
'logits' (B, C) and optionally 'ms' (B, T, h, w) (an MS head: the loss adds it, the loader makes its targets),
'attention' (B, T, h, w) (the CAM drawn by scripts/visualize_cam.py) and 'feature'.
This module sits beside train and convert (it imports only models and data), so both can read it.
"""
import dataclasses
from collections.abc import Callable, Mapping

from flax import nnx

from ego_jax import models
from ego_jax.data.transforms import normalize_flow, normalize_rgb

# builder(num_classes, kwargs dict, *, dtype, rngs, crop) -> model; crop is the square input size.
Builder = Callable[..., nnx.Module]


@dataclasses.dataclass(frozen=True, eq=False)
class Stream:
    """One kind of stream model (see the module docstring); registered with `register`."""

    kind: str  # the stage config's model.kind
    model: type  # the nnx.Module class it builds (also how load_reference and scripts recognise a model)
    inputs: Mapping[str, Callable]  # batch key -> normaliser(uint8 array, dtype); the order of the call's arguments
    loader: str  # ego_jax.data.pipeline kind whose batches hold the inputs: 'rgb' | 'flow' | 'two_stream'
    protocol: str  # evaluation protocol that scores it alone: 'rgb' | 'flow' | 'joint' (ego_jax.train.evaluate)
    layout: str | None = None  # reference-checkpoint layout (ego_jax.convert.reference.TABLE key); None: none
    builder: Builder | None = None  # None: model(num_classes, **kwargs, dtype=dtype, rngs=rngs)

    def build(self, num_classes: int, kwargs: Mapping, *, dtype, rngs: nnx.Rngs, crop: int) -> nnx.Module:
        """Model config kwargs -> a freshly initialised model for crop x crop input."""
        kwargs = dict(kwargs)
        if self.builder is not None:
            return self.builder(num_classes, kwargs, dtype=dtype, rngs=rngs, crop=crop)
        return self.model(num_classes, **kwargs, dtype=dtype, rngs=rngs)

    def forward(self, model: nnx.Module, batch: Mapping, dtype) -> dict:
        """uint8 batch (dict with at least the input keys) -> the model's output dict on its normalised inputs."""
        return model(*(normalise(batch[key], dtype) for key, normalise in self.inputs.items()))


STREAMS: dict[str, Stream] = {}


def register(stream: Stream) -> Stream:
    """Adds `stream` to the table (a kind may be registered once) -> stream."""
    if not isinstance(stream, Stream):
        raise TypeError(f"register: expected a streams.Stream, got {type(stream).__name__}")
    if stream.kind in STREAMS:
        raise ValueError(f"stream kind {stream.kind!r} is already registered ({STREAMS[stream.kind]}); pick "
                         "another kind name")
    if not stream.inputs:
        raise ValueError(f"stream {stream.kind!r}: inputs must name at least one batch key, e.g. "
                         "{'rgb': normalize_rgb}")
    STREAMS[stream.kind] = stream
    return stream


def get(kind: str) -> Stream:
    """The entry of `kind`; a clear error listing the registered kinds."""
    if kind not in STREAMS:
        raise ValueError(f"model.kind={kind!r}: expected one of {tuple(STREAMS)} (ego_jax/streams.py); a new "
                         "variant is added with streams.register(streams.Stream(...))")
    return STREAMS[kind]


def of_model(model: nnx.Module) -> Stream | None:
    """The entry whose `model` class is the most specific class of `model`, or None (first registered wins a tie)."""
    for cls in type(model).__mro__:
        for stream in STREAMS.values():
            if stream.model is cls:
                return stream
    return None


def _ego_rnn(num_classes, kwargs, *, dtype, rngs, crop):
    if kwargs.get("ms_head"):  # the MS head predicts on the layer4 grid of this input size
        kwargs["ms_head"] = dict(kwargs["ms_head"], grid=models.layer4_grid(crop, crop))
    return models.EgoRNN(num_classes, **kwargs, dtype=dtype, rngs=rngs)


def _two_stream(num_classes, kwargs, *, dtype, rngs, crop):
    # The RGB stream is any registered kind (kwargs rgb_kind, default ego_rnn), built before the flow stream
    # and the joint head from the same rngs, in that order.
    # and the joint head from the same rngs, in that order; absent stream kwargs: the streams' defaults.
    rgb = get(kwargs.pop("rgb_kind", "ego_rnn")).build(num_classes, kwargs.pop("rgb", {}), dtype=dtype, rngs=rngs,
                                                       crop=crop)
    flow = get("flow").build(num_classes, kwargs.pop("flow", {}), dtype=dtype, rngs=rngs, crop=crop)
    return models.TwoStream(num_classes, rgb=rgb, flow=flow, **kwargs, dtype=dtype, rngs=rngs)


register(Stream("ego_rnn", models.EgoRNN, {"rgb": normalize_rgb}, loader="rgb", protocol="rgb", layout="rgb",
                builder=_ego_rnn))
register(Stream("flow", models.FlowResNet, {"flow": normalize_flow}, loader="flow", protocol="flow",
                layout="flow"))
register(Stream("two_stream", models.TwoStream, {"rgb": normalize_rgb, "flow": normalize_flow},
                loader="two_stream", protocol="joint", layout="two_stream", builder=_two_stream))
register(Stream("lsta", models.LSTA, {"rgb": normalize_rgb}, loader="rgb", protocol="rgb", layout="lsta"))
