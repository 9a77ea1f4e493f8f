"""Training: recipes, optimisers, jitted steps, loop, checkpoints and sharding."""
