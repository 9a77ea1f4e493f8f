"""ego_jax: Ego-RNN and motion-segmentation self-supervision for egocentric action recognition in JAX/Flax."""
