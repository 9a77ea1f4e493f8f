"""ego-jax-make-synthetic from a checkout; the code and its --help: ego_jax/cli/make_synthetic.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from ego_jax.cli.make_synthetic import main  # noqa: E402

if __name__ == "__main__":
    main()
