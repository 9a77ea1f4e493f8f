"""A tiny NNX model with the structure the train code cares about (nested BNs, an nnx.List, dropout, a head).

It stands in for the stream models in the step/checkpoint tests so they exercise the train code alone: like
FlowResNet it maps a uint8-loaded stack of 2*stack = 4 channels to dict(logits), so evaluate.py's 'flow'
protocol runs it.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ego_jax.streams import normalize_flow

CHANNELS = 4


class Block(nnx.Module):
    def __init__(self, c, rngs):
        self.conv = nnx.Conv(c, c, (3, 3), use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(c, momentum=0.9, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.bn(self.conv(x))) + x


class StandIn(nnx.Module):
    def __init__(self, num_classes=5, c=4, *, rngs):
        self.conv1 = nnx.Conv(CHANNELS, c, (3, 3), use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(c, momentum=0.9, rngs=rngs)
        self.layer = nnx.List([Block(c, rngs), Block(c, rngs)])
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.classifier = nnx.Linear(c, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        for block in self.layer:
            x = block(x)
        return {"logits": self.classifier(self.dropout(x.mean((1, 2))))}


def loss_fn(model, batch):
    """uint8 stacks -> cross-entropy (what stage.make_loss_fn does for the real models)."""
    logits = model(normalize_flow(batch["flow"]))["logits"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, dict(accuracy=jnp.mean(jnp.argmax(logits, -1) == batch["label"]))


def batches(n, *, batch_size=8, size=8, seed=0):
    """n deterministic uint8 batches."""
    key = jax.random.key(seed)
    out = []
    for i in range(n):
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        out.append(
            dict(
                flow=jax.random.randint(k1, (batch_size, size, size, CHANNELS), 0, 256).astype(jnp.uint8),
                label=jax.random.randint(k2, (batch_size,), 0, 5),
                mask=jnp.ones((batch_size,), bool),
            )
        )
    return out
