"""Test-wide setup: 4 CPU devices for the sharding tests, and quiet TensorFlow."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_platforms", "cpu")
