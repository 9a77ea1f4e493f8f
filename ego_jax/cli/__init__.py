"""The commands, each installed as an entry point (pyproject [project.scripts]) and as scripts/<name>.py:

  ego-jax-make-synthetic   a generated GTEA61-layout release
  ego-jax-build-dataset    the gtea61 tfds build of a release
  ego-jax-convert-weights  torchvision ImageNet ResNet -> ego_jax's .npz
  ego-jax-train            every stage of a recipe, resumable
  ego-jax-evaluate         a trained stage under a reference protocol
  ego-jax-visualize        CAM attention (and motion maps) of trained stages
  ego-jax-experiment       an experiment suite: a paper's table, each stage trained once
  ego-jax-concept-figures  the figures of docs/concepts.md
  ego-jax-extract-flow     frames and (warp) optical flow of videos, in the authors' layout
Each has --help with its flags and an example.
"""
