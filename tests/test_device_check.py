"""scripts/device_check.sh --smoke: the accelerator check runs end to end on CPU (tiny shapes) and prints its table."""

import json
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 900


def test_step_benchmark_imports_nothing_that_needs_tensorflow():
    """The accelerator machine has no TensorFlow, grain or tfds: the step benchmark must not import them."""
    code = (
        "import sys; sys.argv = ['benchmark']; import runpy; runpy.run_path('scripts/benchmark.py'); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'grain', 'tensorflow_datasets', "
        "'clu', 'array_record'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_convs_benchmark_smoke(tmp_path, monkeypatch):
    """benchmark.py convs at tiny shapes: the flow ResNet-18's 20 convolutions found in its loss (input gradients
    for all but the stem's), and the four rows and three ratios, timed."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # torch_stages, as when run as a script; restored after
    benchmark = runpy.run_path(str(ROOT / "scripts" / "benchmark.py"))
    sizes = ["--batch", "4", "--frames", "1", "--size", "16", "--steps", "1", "--set", "model.depth=18"]
    benchmark["main"](["convs", *sizes, "--set", "model.width=4", "--json", str(tmp_path / "convs.json")])
    out = json.loads((tmp_path / "convs.json").read_text())
    assert (out["stage"], out["convolutions"], out["input_gradients"]) == ("flow", 20, 19), out
    assert [r["row"] for r in out["rows"]] == ["a", "b", "c", "d"], out
    assert all(r["wall_s"] > 0 and r["cpu_s"] > 0 for r in out["rows"]), out
    assert set(out["ratios"]) == {"a/b", "a/c", "d/c"} and all(r["cpu"] > 0 for r in out["ratios"].values()), out


def test_device_check_smoke(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    # Its own session, so a timeout ends the script and every process it started.
    proc = subprocess.Popen(
        ["bash", "scripts/device_check.sh", "--smoke"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output = proc.communicate(timeout=TIMEOUT_S)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0]
        raise AssertionError(f"device_check.sh --smoke ran past {TIMEOUT_S} s; output:\n{output}") from None
    assert proc.returncode == 0, output
    step = json.loads((tmp_path / "step.json").read_text())
    impls = {(r["stage"], r["impl"]) for r in step["rows"]}
    assert {("rgb_stage1", "ego_jax float32"), ("rgb_stage1", "ego_jax bfloat16")} <= impls, impls
    assert all(r["clips_per_s"] > 0 and r["first_step_s"] > 0 for r in step["rows"])
    layers = json.loads((tmp_path / "layers.json").read_text())["rows"]
    assert len(layers) == 2 and all(r["ego_jax_ms"] > 0 and r["autodiff_ms"] > 0 for r in layers), layers
    table = output[output.index("== table") :]
    assert "| rgb_stage1 | ego_jax bfloat16 |" in table, output
    flow = json.loads((tmp_path / "flow.json").read_text())  # OpenCV-contrib, PyAV, matplotlib: dependencies here
    assert {(r["backend"], r["method"]) for r in flow["rows"]} == {("opencv", "warp_tvl1"), ("jax", "warp_tvl1")}
    assert all(r["pairs_per_s"] > 0 for r in flow["rows"]), flow
    has_loader = "loader benchmark skipped" not in output
    assert has_loader == (tmp_path / "data.json").exists(), output
    assert "fast tests under jax" in output and "passed" in (tmp_path / "tests.log").read_text(), output
