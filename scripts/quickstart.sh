#!/usr/bin/env bash
# Quickstart: synthetic GTEA61 stand-in -> tfds build -> the four two-stream stages from scratch -> evaluation of
# every stage on the held-out subject S2 -> a CAM picture -> the table and a one-line verdict on what must hold on
# any machine (README); 3-10 minutes on 2 CPU cores.
#
#   bash scripts/quickstart.sh [WORKDIR]        (default WORKDIR: workdir_quickstart; SEED=1 bash ... for another seed)
#
# WORKDIR/data holds the generated release and its build (reused when already built), WORKDIR/train the
# stages (finished stages are skipped, an interrupted one resumes: rerun the same command).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKDIR=$(mkdir -p "${1:-workdir_quickstart}" && cd "${1:-workdir_quickstart}" && pwd)
SEED=${SEED:-0}
PYTHON=${PYTHON:-python}
MANUAL=$WORKDIR/data/manual
TFDS=$WORKDIR/data/tfds
TRAIN=$WORKDIR/train
CLIP=S2/open_honey/1
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
CONFIG=(--config "$REPO/configs/quickstart.py:seed=$SEED" --workdir "$TRAIN"
        --config.data.data_dir="$TFDS" --config.data.manual_dir="$MANUAL")
start=$(date +%s)
elapsed() { echo "[quickstart] $1 ($(($(date +%s) - start)) s so far)"; }

if compgen -G "$TFDS/gtea61/all/*/dataset_info.json" > /dev/null; then
  elapsed "dataset already built in $TFDS"
else
  "$PYTHON" "$REPO/scripts/make_synthetic.py" --root "$MANUAL" --preset quickstart
  "$PYTHON" "$REPO/scripts/build_dataset.py" --manual_dir "$MANUAL" --data_dir "$TFDS" --config all
  elapsed "dataset built"
fi
"$PYTHON" "$REPO/scripts/train.py" "${CONFIG[@]}"
elapsed "trained"
"$PYTHON" "$REPO/scripts/evaluate.py" "${CONFIG[@]}" --stage all
elapsed "evaluated"
CAM=$("$PYTHON" "$REPO/scripts/visualize_cam.py" "${CONFIG[@]}" --stage rgb_stage2 --clips "$CLIP" | tail -n 1)
elapsed "CAM of $CLIP: $CAM"

echo "[quickstart] total $(($(date +%s) - start)) s; confusion matrices and curves in $TRAIN/<stage>/eval, CAM in $CAM"
# The table, WORKDIR/summary.json and the last line: the verdict on what must hold on any machine (README,
# "Quickstart"; ego_jax/experiments/quickstart.py); the exit status is 1 when one of those does not hold.
"$PYTHON" -m ego_jax.experiments.quickstart "$TRAIN" "$WORKDIR/summary.json"
