"""The table of stream kinds: what a stage's `model.kind` means, in one place.

A `Stream` entry says how to build the model from a stage's model kwargs, which batch inputs it reads and how
they are normalised, how it is called, which loader feeds it (ego_jax.data.clip_spec.LOADERS), which evaluation
protocol scores it alone (ego_jax.train.evaluate.PROTOCOLS), which reference-checkpoint layout it imports (a key
of ego_jax.convert.reference.TABLE, or None), which kwargs hold its motion-segmentation head and change speed
only, what its stage 2 and a two-stream joint stage fine-tune of it, and the sub-streams of a composite kind.
Each entry is registered beside its model, at the end of the model's module (as timm's `register_model`);
nothing else dispatches on a kind, so a new variant is one model file with its entry, and one config whose
stages name the new kind (tests/toy_variant.py is such a pair in one file):

    from ego_jax import streams

    class MyRGB(nnx.Module): ...
    streams.register(streams.Stream(kind="my_rgb", model=MyRGB, inputs={"rgb": streams.normalize_rgb},
                                    loader="rgb", protocol="rgb"))
    # stage config: model=dict(kind="my_rgb", kwargs=dict(...))  -> MyRGB(num_classes, **kwargs, dtype=, rngs=)

The call contract: model(*[normalise(batch[key], dtype) for key, normalise in inputs.items()]) -> dict with
'logits' (B, C) and optionally 'ms' (B, T, h, w) (an MS head: the loss adds it, the loader makes its targets),
'attention' (B, T, h, w) (the CAM drawn by scripts/visualize_cam.py) and 'feature'.
This module imports neither data nor train; the built-in kinds register when ego_jax.models is imported, which
the last line here does.
"""

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
from flax import nnx

# builder(num_classes, kwargs dict, *, dtype, rngs, crop) -> model; crop is the square input size.
Builder = Callable[..., nnx.Module]

RGB_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet statistics, as the reference's transforms
RGB_STD = np.array([0.229, 0.224, 0.225], np.float32)
FLOW_MEAN = np.float32(0.449)
FLOW_STD = np.float32(0.226)


def normalize_rgb(x, dtype=np.float32):
    """uint8 (..., 3) RGB -> ImageNet-normalised float (..., 3); numpy or jax arrays."""
    return ((x.astype(np.float32) / 255.0 - RGB_MEAN) / RGB_STD).astype(dtype)


def normalize_flow(x, dtype=np.float32):
    """uint8 flow (..., 2*stack) -> (v / 255 - 0.449) / 0.226 float; numpy or jax arrays."""
    return ((x.astype(np.float32) / 255.0 - FLOW_MEAN) / FLOW_STD).astype(dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class Stream:
    """One kind of stream model (see the module docstring); registered with `register`."""

    kind: str  # the stage config's model.kind
    model: type  # the nnx.Module class it builds (also how load_reference and scripts recognise a model)
    inputs: Mapping[str, Callable]  # batch key -> normaliser(uint8 array, dtype); the order of the call's arguments
    loader: str  # ego_jax.data.clip_spec loader whose batches hold the inputs: 'rgb' | 'flow' | 'two_stream'
    protocol: str  # evaluation protocol that scores it alone: 'rgb' | 'flow' | 'joint' (ego_jax.train.evaluate)
    layout: str | None = None  # reference-checkpoint layout (ego_jax.convert.reference.TABLE key); None: none
    builder: Builder | None = None  # None: model(num_classes, **kwargs, dtype=dtype, rngs=rngs)
    # The kwarg holding its motion-segmentation head, dict(kind='cls'|'reg', ...) or None; None: it has none.
    ms_head: str | None = None
    # Kwargs that change speed only (left out of a stage's identity, ego_jax.specs.identity).
    speed_only: tuple[str, ...] = ()
    # Path regexes its RGB stage 2 fine-tunes on top of stage 1's, and a two-stream joint stage fine-tunes of it
    # as the RGB stream (under 'rgb/'); () : it cannot be the two-stream recipe's RGB stream.
    finetune: tuple[str, ...] = ()
    # Composite kinds: kwargs -> {attribute and kwarg name: sub-stream kind}, e.g. two_stream's rgb and flow.
    parts: Callable[[Mapping], Mapping[str, str]] | None = None
    # Its train step is faster on CPU with jaxlib's default YNNPACK convolutions than with XLA's Eigen ones
    # (README "Performance", measured side by side; ego_jax.train.step.default_compiler_options).
    cpu_ynnpack: bool = False

    @property
    def reads_rgb(self) -> bool:
        """Whether it reads RGB frames (so the frame count and sampling of the data determine its result)."""
        return "rgb" in self.inputs

    def build(self, num_classes: int, kwargs: Mapping, *, dtype, rngs: nnx.Rngs, crop: int) -> nnx.Module:
        """Model kwargs -> a freshly initialised model for crop x crop input."""
        kwargs = dict(kwargs)
        if self.builder is not None:
            return self.builder(num_classes, kwargs, dtype=dtype, rngs=rngs, crop=crop)
        return self.model(num_classes, **kwargs, dtype=dtype, rngs=rngs)

    def forward(self, model: nnx.Module, batch: Mapping, dtype) -> dict:
        """uint8 batch (dict with at least the input keys) -> the model's output dict on its normalised inputs."""
        return model(*(normalise(batch[key], dtype) for key, normalise in self.inputs.items()))

    def sub_streams(self, kwargs: Mapping) -> dict[str, "Stream"]:
        """{attribute name: entry} of a composite kind's sub-streams ({} for a plain kind)."""
        return {name: get(kind) for name, kind in (self.parts(kwargs) if self.parts else {}).items()}

    def rgb_stream(self, kwargs: Mapping) -> tuple[str | None, "Stream"] | None:
        """(attribute holding it or None for the model itself, entry) of the RGB-only stream inside, or None."""
        if tuple(self.inputs) == ("rgb",):
            return None, self
        return next(((name, s) for name, s in self.sub_streams(kwargs).items() if tuple(s.inputs) == ("rgb",)), None)

    def ms_head_of(self, kwargs: Mapping) -> Mapping | None:
        """Its motion-segmentation head's kwargs (dict(kind='cls'|'reg', ...)) in `kwargs`, or None."""
        return kwargs.get(self.ms_head) if self.ms_head else None

    def result_kwargs(self, kwargs: Mapping) -> dict:
        """kwargs without those that change speed only, its sub-streams' included (a stage identity's part)."""
        out = {k: v for k, v in kwargs.items() if k not in self.speed_only}
        for name, stream in self.sub_streams(kwargs).items():
            if name in kwargs:
                out[name] = stream.result_kwargs(kwargs[name])
        return out


STREAMS: dict[str, Stream] = {}


def register(stream: Stream) -> Stream:
    """Adds `stream` to the table -> stream. A kind is registered once; a module executed again (a config file
    loaded again) may register the same kind for a class of the same module and name, which replaces it."""
    if not isinstance(stream, Stream):
        raise TypeError(f"register: expected a streams.Stream, got {type(stream).__name__}")
    old = STREAMS.get(stream.kind)
    if old is not None and (old.model.__module__, old.model.__qualname__) != (
        stream.model.__module__,
        stream.model.__qualname__,
    ):
        raise ValueError(
            f"stream kind {stream.kind!r} is already registered ({old.model.__qualname__}); pick another kind name"
        )
    if not stream.inputs:
        raise ValueError(
            f"stream {stream.kind!r}: inputs must name at least one batch key, e.g. {{'rgb': normalize_rgb}}"
        )
    STREAMS[stream.kind] = stream
    return stream


def unregister(kind: str) -> None:
    """Removes `kind` from the table (a test's or notebook's temporary variant)."""
    STREAMS.pop(kind, None)


def get(kind: str) -> Stream:
    """The entry of `kind`; a clear error listing the registered kinds."""
    if kind not in STREAMS:
        raise ValueError(
            f"model.kind={kind!r}: expected one of {tuple(STREAMS)} (ego_jax/streams.py); a new "
            "variant is added with streams.register(streams.Stream(...)) beside its model, in a module "
            "the config imports"
        )
    return STREAMS[kind]


def scoring(protocol: str) -> list[Stream]:
    """The entries whose own protocol is `protocol`, in registration order (built-in kinds first)."""
    return [s for s in STREAMS.values() if s.protocol == protocol]


def of_model(model: nnx.Module) -> Stream | None:
    """The entry whose `model` class is the most specific class of `model`, or None (first registered wins a tie)."""
    for cls in type(model).__mro__:
        for stream in STREAMS.values():
            if stream.model is cls:
                return stream
    return None


import ego_jax.models  # noqa: E402,F401  (its modules register the built-in kinds)
