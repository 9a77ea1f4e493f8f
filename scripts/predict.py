"""ego-jax-predict from a checkout; the code and its --help: ego_jax/cli/predict.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from ego_jax.cli.predict import main  # noqa: E402

if __name__ == "__main__":
    main()
