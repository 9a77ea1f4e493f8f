"""Joint two-stream Ego-RNN: concat(flow feature, RGB feature) -> Dropout(0.5) -> Linear.

Both features are taken before their streams' own dropout (flow first, as the reference's
torch.cat((flowFeats, rgbFeats))); the per-stream classifiers are not used.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from ego_jax import streams
from ego_jax.models import torch_init
from ego_jax.models.ego_rnn import EgoRNN
from ego_jax.models.flow import FlowResNet


class TwoStream(nnx.Module):
    """Joint model over an RGB EgoRNN and a FlowResNet (held as attributes `rgb` and `flow`)."""

    def __init__(
        self,
        num_classes: int,
        *,
        rgb: EgoRNN,
        flow: FlowResNet,
        dropout: float = 0.5,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.flow = flow
        self.rgb = rgb
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        features = flow.classifier.in_features + rgb.classifier.in_features
        self.classifier = torch_init.linear(features, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, rgb: jax.Array, flow: jax.Array) -> dict:
        """rgb (B,T,H,W,3), flow (B,H,W,2*stack) -> dict(logits (B,C), feature (B,F_flow+F_rgb) flow first,
        attention (B,T,h,w) or None)."""
        rgb_out = self.rgb(rgb)
        feature = jnp.concatenate([self.flow(flow)["feature"], rgb_out["feature"]], axis=-1)
        return dict(logits=self.classifier(self.dropout(feature)), feature=feature, attention=rgb_out["attention"])


DEFAULT_RGB = "ego_rnn"  # the RGB stream's kind when the kwargs name none (rgb_kind None or absent: the reference)


def _parts(kwargs) -> dict[str, str]:
    return {"rgb": kwargs.get("rgb_kind") or DEFAULT_RGB, "flow": "flow"}


def _build(num_classes, kwargs, *, dtype, rngs, crop):
    # The RGB stream is any registered kind with a fine-tune set (kwargs rgb_kind), built before the flow stream
    # and the joint head from the same rngs, in that order; absent stream kwargs: the streams' defaults.
    parts = {name: streams.get(kind) for name, kind in _parts(kwargs).items()}
    if not parts["rgb"].finetune:
        raise ValueError(
            f"two_stream: rgb_kind={parts['rgb'].kind!r} has no fine-tune set in its stream entry, so it "
            "cannot be the RGB stream of a two-stream model"
        )
    kwargs.pop("rgb_kind", None)
    built = {
        name: stream.build(num_classes, kwargs.pop(name, {}), dtype=dtype, rngs=rngs, crop=crop)
        for name, stream in parts.items()
    }
    return TwoStream(num_classes, **built, **kwargs, dtype=dtype, rngs=rngs)


streams.register(
    streams.Stream(
        "two_stream",
        TwoStream,
        {"rgb": streams.normalize_rgb, "flow": streams.normalize_flow},
        loader="two_stream",
        protocol="joint",
        layout="two_stream",
        builder=_build,
        parts=_parts,
    )
)
