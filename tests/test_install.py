"""`pip install .` (not editable) gives a package that imports without the checkout: every ego_jax module imports
from another folder, where neither configs/ nor tests/ exist."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_module_of_a_non_editable_install_imports_from_another_folder(tmp_path):
    source = tmp_path / "source"  # what `pip install .` sees, copied so the build leaves nothing in the checkout
    shutil.copytree(os.path.join(ROOT, "ego_jax"), source / "ego_jax", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source)
    target = tmp_path / "site"
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    modules = sorted(
        os.path.relpath(os.path.join(d, f), target)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        for d, _, files in os.walk(target / "ego_jax")
        for f in files
        if f.endswith(".py")
    )
    assert "ego_jax.specs" in modules and "ego_jax.recipes" in modules
    # -I: no PYTHONPATH, no user site, not the working directory; the installed copy goes first on sys.path.
    code = (
        f"import importlib, sys; sys.path.insert(0, {str(target)!r})\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import ego_jax; print(ego_jax.__file__)\n"
        "assert 'configs' not in sys.modules and 'tests' not in sys.modules"
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == str(target / "ego_jax" / "__init__.py")
