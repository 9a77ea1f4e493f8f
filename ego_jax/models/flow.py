"""Warp-flow stream of Ego-RNN: ResNet on a stack of 2*stack flow channels -> Dropout(0.5) -> Linear.

Input channels are interleaved x1, y1, x2, y2, ... like the reference `flow_resnet34`; the feature
is the spatial mean of layer4 (the reference's AvgPool2d(7) on a 7x7 map), taken before dropout.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from ego_jax import streams
from ego_jax.models import torch_init
from ego_jax.models.resnet import ResNet


class FlowResNet(nnx.Module):
    """Flow stream: (B,H,W,2*stack) -> dict(logits (B,C), feature (B,8*width))."""

    def __init__(
        self,
        num_classes: int,
        *,
        stack: int = 5,
        depth: int = 34,
        width: int = 64,
        dropout: float = 0.5,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.stack = stack
        self.backbone = ResNet(depth, in_channels=2 * stack, width=width, num_classes=None, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.classifier = torch_init.linear(8 * width, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, flow: jax.Array) -> dict:
        """flow (B,H,W,2*stack) normalised -> dict(logits (B,C), feature (B,8*width) before dropout)."""
        if flow.ndim != 4 or flow.shape[-1] != 2 * self.stack:
            raise ValueError(
                f"FlowResNet expects flow of shape (B, H, W, {2 * self.stack}) (stack={self.stack}, "
                f"x/y interleaved), got {flow.shape}."
            )
        feature = self.backbone(flow)["pooled"]
        return dict(logits=self.classifier(self.dropout(feature)), feature=feature)


# cpu_ynnpack: the flow ResNet, trained whole, whose weight gradients YNNPACK computes at about twice Eigen's speed
# (the kinds with a ConvLSTM/LSTA recurrence are faster with Eigen, on the recurrence's 7x7-grid convolutions).
streams.register(
    streams.Stream(
        "flow",
        FlowResNet,
        {"flow": streams.normalize_flow},
        loader="flow",
        protocol="flow",
        layout="flow",
        cpu_ynnpack=True,
    )
)
