"""Frames and optical / warp flow of videos in the authors' layout: ego_jax/cli/extract_flow.py (also installed as
ego-jax-extract-flow)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from ego_jax.cli.extract_flow import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
