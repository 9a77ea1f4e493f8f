"""LSTA RGB stream: ResNet -> per-frame CAM -> LSTA cell over time -> classifier on the pooled memory c_T.

Reference: the authors' `attentionModel` (repository swathikirans/LSTA). Per frame, the backbone gives the
layer4 output feat_bn (relu(bn2(conv2)+shortcut)), the pre-bn2 tap feat_raw (conv2+shortcut) and ImageNet
logits; cam = class activation map of the top-1 ImageNet class on feat_bn (no softmax: the LSTA cell
smooths it over time and applies its own softmax). The cell reads feat_raw and cam. After the last frame
the classifier reads the spatial mean of the cell's memory c_T through Dropout(0.7) and a Linear, as
Ego-RNN does. The backbone and the attention inputs are those of Ego-RNN (ego_jax.models.ego_rnn).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from ego_jax import streams
from ego_jax.models import torch_init
from ego_jax.models.attention import class_activation_map
from ego_jax.models.lsta_cell import LSTACell, lsta
from ego_jax.models.resnet import ResNet


class LSTA(nnx.Module):
    """RGB stream of LSTA.

    Args:
      num_classes: activity classes.
      depth, width: backbone ResNet (34, 64 in the reference); features are 8*width channels.
      mem_features: memory channels of the cell (None -> 8*width, as the reference's memSize 512).
      pool_classes: classes of the cell's output-pooling classifier (the reference's outPoolSize, 100).
      dropout: rate before the classifier (0.7 in the reference).
      scan_unroll: unroll of the time scan (0: the backend's default, see convlstm.default_unroll).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        depth: int = 34,
        width: int = 64,
        mem_features: int | None = None,
        pool_classes: int = 100,
        dropout: float = 0.7,
        scan_unroll: int | bool = 0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        features = 8 * width
        mem_features = mem_features or features
        self.scan_unroll = scan_unroll
        self.backbone = ResNet(depth, width=width, num_classes=1000, dtype=dtype, rngs=rngs)
        self.lsta = LSTACell(features, mem_features, pool_classes, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.classifier = torch_init.linear(mem_features, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, rgb: jax.Array) -> dict:
        """rgb (B,T,H,W,3) normalised -> dict(logits (B,C), feature (B,mem) pooled c_T before dropout,
        attention (B,T,h,w) the cell's softmax maps u_t, ms None (no motion head))."""
        if rgb.ndim != 5:
            raise ValueError(f"LSTA expects rgb of shape (B, T, H, W, 3), got {rgb.shape}.")
        b, t = rgb.shape[:2]
        out = self.backbone(rgb.reshape((b * t,) + rgb.shape[2:]))
        fc = self.backbone.fc
        dtype = out["layer4"].dtype
        cam = class_activation_map(out["layer4"], fc.kernel[...].astype(dtype), fc.bias[...].astype(dtype))

        def per_clip(x):
            return x.reshape((b, t) + x.shape[1:])

        (_, _, c_t, _), attention = lsta(self.lsta, per_clip(out["layer4_raw"]), per_clip(cam), unroll=self.scan_unroll)
        feature = jnp.mean(c_t, axis=(1, 2))
        return dict(logits=self.classifier(self.dropout(feature)), feature=feature, attention=attention, ms=None)


# LSTA's main_rgb.py trains the whole LSTA cell, and in stage 2 also layer4's conv1/conv2 and the ImageNet fc. Two of
# those only move argmaxes (the cell's coupling_fc, the fc bias): torch leaves their .grad None and its Adam skips
# them, so they keep their initial values. Leaving them out of the trainable sets keeps them there under the
# coupled weight decay too.
CELL = (r"lsta/(att_s_conv|att_cam_conv|x_conv|h_conv|o_conv|c_classifier)/.*",)
FINETUNE = CELL + (r"backbone/layer4/\d+/conv[12]/kernel", r"backbone/fc/kernel")

streams.register(
    streams.Stream(
        "lsta",
        LSTA,
        {"rgb": streams.normalize_rgb},
        loader="rgb",
        protocol="rgb",
        layout="lsta",
        speed_only=("scan_unroll",),
        finetune=FINETUNE,
    )
)
