"""ego-jax-extract-features from a checkout; the code and its --help: ego_jax/cli/extract_features.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from ego_jax.cli.extract_features import main  # noqa: E402

if __name__ == "__main__":
    main()
