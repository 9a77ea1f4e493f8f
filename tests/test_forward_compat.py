"""No deprecated or private jax / flax / optax API in the code: the ones their changelogs name from jax 0.10 on (README,
"Versions"), each with what replaces it. A grep, so it also covers code that the CPU tests do not run; deprecations
that a grep cannot tell apart (nnx.Variable.value) are errors when the tests run (pyproject filterwarnings)."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
KNOWN = {
    r"\bjax\._src\b": "private to jax: use the public API (e.g. jax.distributed.initialize() detects launchers)",
    r"\bwith\s+[\w.]*mesh\s*:": "deprecated since jax 0.10.1: `with jax.set_mesh(mesh):`",
    r"\bjax\.sharding\.use_mesh\b": "removed in jax 0.7.1: jax.set_mesh",
    r"\bjnp\.empty\(": "uninitialised memory since jax 0.11: jnp.zeros where zeros are meant",
    r"\bjax\.tree_map\(": "removed: jax.tree.map",
    r"\bjax\.core\.": "deprecated in jax 0.10: jax.extend.core or public jax APIs",
    r"\bjax\.(lib\.xla_bridge|lib\.xla_client|interpreters)\b": "deprecated internals",
    r"\bjax\.experimental\.(pjit|maps|host_callback|shard_map)\b": "deprecated or removed: jax.jit, jax.shard_map",
    r"\bjax\.clear_backends\b": "deprecated: jax.clear_caches",
    r"\boptax\.global_norm\b": "deprecated: optax.tree.norm",
    r"(?<!nnx)\.(to_pure_dict|replace_by_pure_dict)\(": "nnx.State methods deprecated: nnx.to_pure_dict(state), "
    "nnx.replace_by_pure_dict(state, tree)",
    r"\bState\.from_flat_path\(": "nnx.State methods deprecated: nnx.from_flat_state(flat)",
}
SOURCES = ("ego_jax", "configs", "scripts", "tests")


def test_no_known_deprecated_or_private_api():
    found = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == pathlib.Path(__file__).resolve():
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                found += [
                    f"{path.relative_to(ROOT)}:{n}: {line.strip()}  -> {hint}"
                    for pattern, hint in KNOWN.items()
                    if re.search(pattern, code)
                ]
    assert not found, "deprecated or private APIs:\n" + "\n".join(found)
