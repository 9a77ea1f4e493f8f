#!/usr/bin/env bash
# The performance check a machine with an accelerator runs once (README "Performance"), in under 8 minutes:
#   1. scripts/benchmark.py step at the reference shapes (T=16, batch 32, 224 px), float32 and bfloat16, every
#      stage of configs/two_stream.py, with the reference's stages re-stated in torch timed beside when torch imports;
#   1b. scripts/benchmark.py layers: ego_jax's closed-form BatchNorm and elementwise max-pool backward passes
#      against autodiff's at the flow ResNet-34's shapes (batch 32, 224 px), so that an accelerator where either
#      choice (made on CPU) were slower shows it;
#   2. scripts/benchmark.py data on generated full-size clips with every core as grain workers (skipped, with a
#      line saying so, where grain or tensorflow-datasets is missing);
#   3. one table: each stage's clips/s, the reference's, and the loader's clips/s for that stage's input;
#   4. scripts/benchmark.py flow: TV-L1 and warp-flow pairs/s of the opencv (CPU) and jax (all local devices) backends
#      at 340x256 and 224x224 with dense_flow's parameters, and their end-point errors on known motions (skipped,
#      with a line saying so, where OpenCV's contrib modules, PyAV or matplotlib are missing);
#   5. the fast tests (models, train step, checkpoints, the deprecated-API grep) under the machine's own jax and flax,
#      which may be newer than the CPU machines' (README "Versions"); where pytest is missing, a line says so.
#
#   bash scripts/device_check.sh            # on the accelerator machine; writes $OUT (or ./device_check) *.json/log
#   bash scripts/device_check.sh --smoke    # tiny shapes on CPU in seconds (tests/test_device_check.py)
#
# Runs from the checkout (PYTHONPATH), not from an installed package: the machine's jax may be newer than
# pyproject's pin, and step 4 is how a newer jax gets tested. Packages it lacks travel as wheels in .whl/ (installed to a temporary folder first), e.g.
# ml_collections (the configs) and, for the loader part, grain and tensorflow-datasets with their needs:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .whl ml_collections==1.1.0
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
RESULTS=${OUT:-$PWD/device_check}
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3

if compgen -G ".whl/*.whl" >/dev/null; then
  SITE=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:$SITE"  # after the checkout and before nothing else: preinstalled packages win
fi
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
  echo "error: the configs need ml_collections, which this Python lacks. Carry its wheel in .whl/ (see the top of $0)." >&2
  exit 1
fi
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"

if (( SMOKE )); then
  STEP=(--batch 2 --frames 2 --size 32 --steps 1 --stages rgb_stage1 --set model.depth=18 --set model.width=4)
  LAYERS=(--batch 2 --size 32 --depth 18 --width 4 --repeats 1 --dtypes float32)
  DATA_TIMEOUT=120
  FLOW=(--sizes 32x48 --methods warp_tvl1 --pairs 2 --batch 2 --repeats 1 --tvl1 nscales=1 --tvl1 warps=1
        --tvl1 inner_iterations=5)
  FLOW_TIMEOUT=120
  TESTS=(tests/test_forward_compat.py)
else
  STEP=(--batch 32 --frames 16 --size 224 --steps 10)
  LAYERS=(--batch 32 --size 224 --dtypes float32,bfloat16)
  DATA_TIMEOUT=180
  FLOW=(--sizes 256x340,224x224 --pairs 4 --repeats 2 --parity)
  FLOW_TIMEOUT=300
  TESTS=(tests/test_forward_compat.py tests/test_resnet.py tests/test_convlstm.py tests/test_attention.py
         tests/test_ego_rnn.py tests/test_two_stream.py tests/test_lsta.py tests/test_motion_head.py
         tests/test_motion_guided.py tests/test_step.py tests/test_optim.py tests/test_checkpoint.py)
fi
echo "== step ($(date -u +%H:%M:%S))"
"$PY" scripts/benchmark.py step "${STEP[@]}" --dtypes float32,bfloat16 --json "$RESULTS/step.json" \
  | tee "$RESULTS/step.log"

echo "== layers ($(date -u +%H:%M:%S))"
"$PY" scripts/benchmark.py layers "${LAYERS[@]}" --json "$RESULTS/layers.json" \
  | tee "$RESULTS/layers.log"

echo "== data ($(date -u +%H:%M:%S))"
DATA_JSON=""
if ! "$PY" -c "import grain, tensorflow_datasets" 2>/dev/null; then
  echo "loader benchmark skipped: grain or tensorflow-datasets is not importable here (carry their wheels in .whl/)"
else
  WORK=$(mktemp -d)
  if (( SMOKE )); then
    "$PY" scripts/make_synthetic.py --root "$WORK/manual" --preset tiny --subjects S1 --clips_per_class 1 \
      --classes close_chocolate open_chocolate >/dev/null
    DATA=(--manual_dir "$WORK/manual" --kinds rgb --workers 0 --batch 2 --batches 1 --repeats 1
          --frames 2 --crop 32 --resize 36)
  else
    CORES=$(nproc)
    DATA=(--classes "$CORES" --batch "$CORES" --batches 3 --repeats 1 --workers "$CORES" --frames 16)
  fi
  if timeout "$DATA_TIMEOUT" "$PY" scripts/benchmark.py data "${DATA[@]}" --workdir "$WORK" \
      | tee "$RESULTS/data.log"; then
    tail -n 1 "$RESULTS/data.log" >"$RESULTS/data.json"
    DATA_JSON="$RESULTS/data.json"
  else
    echo "loader benchmark failed or ran past ${DATA_TIMEOUT} s (see $RESULTS/data.log)"
  fi
  rm -rf "$WORK"
fi

echo "== flow ($(date -u +%H:%M:%S))"
if ! "$PY" -c "import cv2, av, matplotlib; cv2.optflow" 2>/dev/null; then
  echo "flow benchmark skipped: OpenCV's contrib modules (opencv-contrib-python-headless), PyAV or matplotlib is not importable here (carry their wheels in .whl/)"
elif ! timeout "$FLOW_TIMEOUT" "$PY" scripts/benchmark.py flow "${FLOW[@]}" --json "$RESULTS/flow.json" \
    | tee "$RESULTS/flow.log"; then
  echo "flow benchmark failed or ran past ${FLOW_TIMEOUT} s (see $RESULTS/flow.log)"
fi

echo "== fast tests ($(date -u +%H:%M:%S))"
if "$PY" -c "import pytest" 2>/dev/null; then
  # A file whose imports this machine lacks is reported and the others still run; failures are reported, not fatal.
  "$PY" -m pytest -q -p no:cacheprovider --continue-on-collection-errors "${TESTS[@]}" >"$RESULTS/tests.log" 2>&1 || true
  echo "fast tests under jax $("$PY" -c 'import jax; print(jax.__version__)'): $(tail -n 1 "$RESULTS/tests.log")"
else
  echo "fast tests skipped: pytest is not importable here (carry its wheel in .whl/)"
fi

echo "== table ($(date -u +%H:%M:%S))"
"$PY" - "$RESULTS/step.json" "$DATA_JSON" <<'EOF'
import json
import sys

step = json.load(open(sys.argv[1]))
loader = {}  # loader kind -> best grain clips/s
if sys.argv[2]:
    for r in json.load(open(sys.argv[2]))["results"]:
        if r["loader"].startswith("grain"):
            loader[r["kind"]] = max(loader.get(r["kind"], 0), r["clips_per_s"])
kind = {"rgb_stage1": "rgb", "rgb_stage2": "rgb", "flow": "flow", "joint": "two_stream"}
print(f"{step['devices']} {step['backend']} device(s); batch {step['batch']}, {step['frames']} frames, {step['size']} px")
print("| stage | implementation | clips/s | x reference clips/s | loader clips/s (its input) | loader / step |")
print("|---|---|---|---|---|---|")
for r in step["rows"]:
    speedup = f"{1 / r['vs_reference']:.2f}x" if r["vs_reference"] else "-"
    feed = loader.get(kind.get(r["stage"]))
    feeds = (f"{feed:.1f}", f"{feed / r['clips_per_s']:.2f}") if feed else ("-", "-")
    print(f"| {r['stage']} | {r['impl']} | {r['clips_per_s']:.1f} | {speedup} | {feeds[0]} | {feeds[1]} |")
EOF
