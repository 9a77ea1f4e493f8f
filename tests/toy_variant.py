"""A user's model variant added the documented way: a model, its stream-table entry, a config (nothing else).

The file registers its kind when it is loaded, so `scripts/train.py --config path/to/this_file.py` trains it from
anywhere (tests/test_train_e2e.py copies it out of the repository to show that). ToyRGB reads the RGB clip like
EgoRNN (so the loader 'rgb' feeds it and the 'rgb' protocol scores it): per-frame conv -> BatchNorm -> ReLU ->
mean over time and space -> linear.
"""

import jax.numpy as jnp
from flax import nnx

from ego_jax import recipes, streams


class ToyRGB(nnx.Module):
    def __init__(self, num_classes: int, *, width: int = 4, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, width, (3, 3), dtype=dtype, rngs=rngs)
        self.bn = nnx.BatchNorm(width, momentum=0.9, dtype=dtype, rngs=rngs)
        self.classifier = nnx.Linear(width, num_classes, dtype=dtype, rngs=rngs)

    def __call__(self, rgb):
        """rgb (B, T, S, S, 3) normalised -> dict(logits (B, C), feature (B, width))."""
        feature = nnx.relu(self.bn(self.conv(rgb))).mean(axis=(1, 2, 3))
        return {"logits": self.classifier(feature), "feature": feature}


STREAM = streams.register(
    streams.Stream(kind="toy_rgb", model=ToyRGB, inputs={"rgb": streams.normalize_rgb}, loader="rgb", protocol="rgb")
)


def get_config(arg=None):
    """One stage training the whole ToyRGB (BatchNorm in training mode) with the reference Adam."""
    args = recipes.parse_args(arg)
    c = recipes.base(args)
    toy = dict(
        model=dict(kind="toy_rgb", kwargs=dict(width=4)),
        init_from={},
        trainable=(".*",),
        bn_train=(".*",),
        dropout_train=(),
        optimizer=recipes.adam(1e-2, ()),
        epochs=2,
        loss=recipes.NO_MS_LOSS,
    )
    return recipes.finish(c, args, dict(toy=toy))
