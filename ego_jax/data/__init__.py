"""GTEA61 data: tfds builder, synthetic generator, sampling, transforms and grain pipelines."""
