"""The commands: every [project.scripts] entry point resolves to an ego_jax.cli main(), has a scripts/ wrapper that
runs the same main() from a checkout, and answers --help with its flags and an example of itself."""

import json
import os
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    SCRIPTS = tomllib.load(f)["project"]["scripts"]

# One process for every command's --help: absl flags are defined when a command starts, so each command's flags
# are removed again before the next one starts (as separate processes would have them).
HELP = """
import contextlib, importlib, io, json, sys
from absl import app, flags, logging  # noqa: F401  (logging: its flags stay too)
app.define_help_flags()  # absl's own flags, defined once per process, stay
out = {}
for command, target in json.loads(sys.argv[1]).items():
    module, attr = target.split(":")
    before, text = set(flags.FLAGS), io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            getattr(importlib.import_module(module), attr)([command, "--help"])
        except SystemExit as e:
            out[command] = [e.code, text.getvalue()]
    for name in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, name)
print(json.dumps(out))
"""


def test_entry_points_have_wrappers_and_help():
    assert {
        "ego-jax-train",
        "ego-jax-evaluate",
        "ego-jax-experiment",
        "ego-jax-visualize",
        "ego-jax-build-dataset",
    } <= set(SCRIPTS)
    for target in SCRIPTS.values():
        module, attr = target.split(":")
        assert module.startswith("ego_jax.cli.") and attr == "main", target
        wrapper = os.path.join(ROOT, "scripts", module.rpartition(".")[2] + ".py")
        with open(wrapper) as f:
            assert f"from {module} import main" in f.read(), wrapper
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", HELP, json.dumps(SCRIPTS)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    helps = json.loads(proc.stdout.splitlines()[-1])
    assert set(helps) == set(SCRIPTS)
    for command, (code, text) in helps.items():
        assert code == 0, (command, text)
        assert f"\n  {command} " in text, f"{command} --help shows no example of itself:\n{text}"
        assert "--" in text.split(f"  {command} ", 1)[1], f"{command} --help lists no flags:\n{text}"
