"""The commands, each installed as an entry point (pyproject [project.scripts]) and as scripts/<name>.py:

  ego-jax-extract-flow     frames and (warp) optical flow of videos, in the authors' layout
Each has --help with its flags and an example.
"""
