"""The README's test command is the one CI runs, verbatim."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_test_command_is_what_ci_runs():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = [line.strip() for line in f if "python -m pytest" in line]
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = [line.strip() for line in f if "python -m pytest" in line]
    assert len(ci) == 1 and readme == ci, (readme, ci)
