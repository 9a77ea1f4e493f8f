#!/usr/bin/env bash
# Quickstart: synthetic GTEA61 stand-in -> tfds build -> the four two-stream stages from scratch -> evaluation of
# every stage on the held-out subject S2 -> a CAM picture; about 10 minutes on 2 CPU cores.
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

"$PYTHON" - "$TRAIN" "$WORKDIR/summary.json" <<'EOF'
import json, pathlib, sys
import numpy as np
from ego_jax.data.synthetic import verb_object
train, summary = pathlib.Path(sys.argv[1]), {}
print("\nTest accuracy on the held-out synthetic subject S2 (final epoch of each stage). object / verb: clips whose")
print("predicted class has the right moving object / the right verb (flow sees only the verb, RGB frames the object).")
print(f"{'stage':<12} {'protocol':<8} {'accuracy':>9} {'correct':>7} {'object':>7} {'verb':>5}")
for stage in ("rgb_stage1", "rgb_stage2", "flow", "joint"):
    m = json.loads((train / stage / "eval" / "metrics.json").read_text())
    c = json.loads((train / stage / "eval" / "confusion.json").read_text())
    names, counts = [verb_object(n) for n in c["classes"]], np.array(c["matrix"])
    pairs = [(names[i], names[j], counts[i, j]) for i, j in zip(*counts.nonzero())]
    obj = int(sum(n for a, b, n in pairs if a[1][0] == b[1][0]))  # same moving item
    verb = int(sum(n for a, b, n in pairs if a[0] == b[0]))
    summary[stage] = dict(accuracy=m["accuracy"], correct=m["num_correct"], clips=m["num_examples"], object=obj,
                          verb=verb)
    print(f"{stage:<12} {m['protocol']:<8} {100 * m['accuracy']:>8.2f}% {m['num_correct']:>3}/{m['num_examples']:<3}"
          f" {obj:>7} {verb:>5}")
pathlib.Path(sys.argv[2]).write_text(json.dumps(summary, indent=1) + "\n")
EOF
echo "[quickstart] total $(($(date +%s) - start)) s; confusion matrices and curves in $TRAIN/<stage>/eval, CAM in $CAM"
