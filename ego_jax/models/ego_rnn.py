"""Ego-RNN RGB stream: ResNet -> CAM attention -> ConvLSTM over time -> classifier on pooled c_T.

Reference forward pass per clip: each frame's layer4 features are attended with the CAM of its
top-1 ImageNet class and fed to a ConvLSTM; after the last frame the classifier reads the spatial
mean of the *cell state* c_T (pool='c'; pool='h' reads h_T instead, a documented option)
through Dropout(0.7) and a Linear. attention=False is the "ConvLSTM" ablation: the LSTM reads the
plain layer4 output (feat_bn). An optional motion-segmentation head (SparNet) predicts per-frame
motion maps from the features named by its tap; with `motion_guide` its prediction also steers the
CAM (ego_jax's own variant, motion_guided.py), so it is computed before the attention.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ego_jax import streams
from ego_jax.models import torch_init
from ego_jax.models.attention import cam_attention
from ego_jax.models.convlstm import ConvLSTMCell, convlstm
from ego_jax.models.motion_guided import MotionGuide
from ego_jax.models.motion_head import MotionSegmentationHead
from ego_jax.models.resnet import ResNet, layer4_grid

POOLS = ("c", "h")


class EgoRNN(nnx.Module):
    """RGB stream of Ego-RNN.

    Args:
      num_classes: activity classes.
      depth, width: backbone ResNet (34, 64 in the reference); features are 8*width channels.
      attention: CAM attention (True, the reference) or the plain ConvLSTM ablation (False).
      ms_head: None, or dict(kind='cls'|'reg', tap='layer4'|'layer4_raw'|'attended', hidden=100,
        grid=(7, 7)) for a motion-segmentation head; grid is the layer4 grid of the input size
        (ego_jax.models.resnet.layer4_grid: 224 px -> (7, 7)). Without attention, tap 'attended' reads
        what the LSTM reads, i.e. 'layer4'.
      motion_guide: None (the reference), or dict(detach=True): the attention becomes
        softmax(CAM + w * log p(moving)) with the MS head's prediction and a learned w starting at 0
        (ego_jax.models.motion_guided); needs attention and an ms_head tapping 'layer4' or 'layer4_raw'.
      pool: 'c' classifies the spatial mean of c_T (reference), 'h' that of h_T.
      dropout: rate before the classifier (0.7 in the reference).
      mem_features: ConvLSTM channels (None -> 8*width, as the reference's 512).
      scan_unroll: unroll of the ConvLSTM's time scan (0: the backend's default, see convlstm.default_unroll).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        depth: int = 34,
        width: int = 64,
        attention: bool = True,
        ms_head: dict | None = None,
        motion_guide: dict | None = None,
        pool: str = "c",
        dropout: float = 0.7,
        mem_features: int | None = None,
        scan_unroll: int | bool = 0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if pool not in POOLS:
            raise ValueError(f"EgoRNN: pool must be one of {POOLS} (pooled c_T or h_T), got {pool!r}.")
        features = 8 * width
        mem_features = mem_features or features
        self.attention, self.pool, self.scan_unroll = attention, pool, scan_unroll
        self.backbone = ResNet(depth, width=width, num_classes=1000, dtype=dtype, rngs=rngs)
        self.lstm = ConvLSTMCell(features, mem_features, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.classifier = torch_init.linear(mem_features, num_classes, dtype=dtype, rngs=rngs)
        if ms_head is None:
            self.ms_head = None
        else:
            unknown = set(ms_head) - {"kind", "tap", "hidden", "grid"}
            if unknown:
                raise ValueError(f"EgoRNN: unknown ms_head keys {sorted(unknown)}; expected kind, tap, hidden, grid.")
            ms = dict(ms_head)
            self.ms_head = MotionSegmentationHead(features, tuple(ms.pop("grid", (7, 7))), dtype=dtype, rngs=rngs, **ms)
        if motion_guide is not None and set(motion_guide) - {"detach"}:
            unknown = sorted(set(motion_guide) - {"detach"})
            raise ValueError(f"EgoRNN: unknown motion_guide keys {unknown}; expected detach.")
        if motion_guide is not None and (not attention or self.ms_head is None or self.ms_head.tap == "attended"):
            raise ValueError(
                f"EgoRNN: motion_guide steers the CAM attention with the MS head's prediction, so it needs "
                f"attention=True and an ms_head with tap 'layer4' or 'layer4_raw' (read before the attention); "
                f"got attention={attention}, ms_head={ms_head}."
            )
        self.motion_guide = None if motion_guide is None else MotionGuide(**motion_guide)

    def __call__(self, rgb: jax.Array) -> dict:
        """rgb (B,T,H,W,3) normalised -> dict(logits (B,C), feature (B,mem) pooled state before dropout,
        attention (B,T,h,w) or None, ms (B,T,h,w,K) or None)."""
        if rgb.ndim != 5:
            raise ValueError(f"EgoRNN expects rgb of shape (B, T, H, W, 3), got {rgb.shape}.")
        b, t = rgb.shape[:2]
        out = self.backbone(rgb.reshape((b * t,) + rgb.shape[2:]))
        feats = {"layer4": out["layer4"], "layer4_raw": out["layer4_raw"]}
        # Pre-attention taps run first: the motion guide reads their prediction.
        ms = self.ms_head(feats[self.ms_head.tap]) if self.ms_head is not None and self.ms_head.tap in feats else None
        attention = None
        if self.attention:
            fc = self.backbone.fc
            dtype = out["layer4"].dtype
            guide = None if self.motion_guide is None else self.motion_guide(ms)
            feats["attended"], attention = cam_attention(
                out["layer4"], out["layer4_raw"], fc.kernel[...].astype(dtype), fc.bias[...].astype(dtype), guide
            )
            lstm_in = feats["attended"]
        else:
            feats["attended"] = lstm_in = out["layer4"]  # the ablation has no attention: its "attended" is layer4
        if self.ms_head is not None and ms is None:
            ms = self.ms_head(feats["attended"])

        def per_clip(x):
            return x.reshape((b, t) + x.shape[1:])

        h_t, c_t = convlstm(self.lstm, per_clip(lstm_in), unroll=self.scan_unroll)
        feature = jnp.mean(c_t if self.pool == "c" else h_t, axis=(1, 2))
        return dict(
            logits=self.classifier(self.dropout(feature)),
            feature=feature,
            attention=None if attention is None else per_clip(attention),
            ms=None if ms is None else per_clip(ms),
        )


def action_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """logits (B,C), labels (B,) int -> scalar mean softmax cross-entropy."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels))


def _build(num_classes, kwargs, *, dtype, rngs, crop):
    if kwargs.get("ms_head"):  # the MS head predicts on the layer4 grid of this input size
        kwargs["ms_head"] = dict(kwargs["ms_head"], grid=layer4_grid(crop, crop))
    return EgoRNN(num_classes, **kwargs, dtype=dtype, rngs=rngs)


# RGB stage 2 fine-tunes these on top of stage 1's ConvLSTM + classifier (layer4 downsample and every BN stay frozen).
# fc/kernel only: the reference's fc.bias only picks the CAM class (an argmax), so its grad stays None and torch's
# Adam skips it, coupled weight decay included; listing it would let the decay shrink the ImageNet bias.
FINETUNE = (r"lstm/.*", r"backbone/layer4/\d+/conv[12]/kernel", r"backbone/fc/kernel")

streams.register(
    streams.Stream(
        "ego_rnn",
        EgoRNN,
        {"rgb": streams.normalize_rgb},
        loader="rgb",
        protocol="rgb",
        layout="rgb",
        builder=_build,
        ms_head="ms_head",
        speed_only=("scan_unroll",),
        finetune=FINETUNE,
    )
)
