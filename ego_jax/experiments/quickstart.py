"""The quickstart's summary and its verdict: what must hold on any machine after `bash scripts/quickstart.sh`.

The quickstart set (ego_jax.data.synthetic, preset 'quickstart') has 6 classes = 2 verbs x 3 objects told apart only
by colour: flow sees the motion (the verb), RGB frames the coloured object, only both together tell every class. The
accuracies move between machines (XLA's CPU kernels differ per instruction set) and seeds; INVARIANTS hold on each.

  python -m ego_jax.experiments.quickstart W/train W/summary.json   # prints the table and the verdict line
"""

import sys
from collections.abc import Mapping

import numpy as np
from etils import epath

from ego_jax.data.synthetic import verb_object
from ego_jax.train import paths

STAGES = ("rgb_stage1", "rgb_stage2", "flow", "joint")
REMEDY = "rerun `bash scripts/quickstart.sh W` (finished stages are kept; the evaluation runs again)"


def stage_summary(metrics: Mapping, confusion: Mapping) -> dict:
    """A stage's eval/metrics.json and eval/confusion.json -> accuracy, correct, clips, and the clips whose predicted
    class has the right object / the right verb."""
    names, counts = [verb_object(n) for n in confusion["classes"]], np.asarray(confusion["matrix"])
    pairs = [(names[i], names[j], int(counts[i, j])) for i, j in zip(*counts.nonzero())]
    return dict(
        accuracy=metrics["accuracy"],
        correct=metrics["num_correct"],
        clips=metrics["num_examples"],
        object=sum(n for a, b, n in pairs if a[1][0] == b[1][0]),  # the same moving item
        verb=sum(n for a, b, n in pairs if a[0] == b[0]),
    )


def summarize(train_dir: str | epath.Path, stages=STAGES) -> dict:
    """W/train (the quickstart's workdir) -> {stage: stage_summary} from each stage's eval/ files."""
    summary = {}
    for stage in stages:
        found = []
        for name in ("metrics.json", "confusion.json"):
            path = epath.Path(train_dir) / stage / "eval" / name
            if not path.exists():
                raise FileNotFoundError(f"{path} not found (the evaluation of stage {stage!r}): {REMEDY}")
            found.append(paths.read_json(path, REMEDY))
        summary[stage] = stage_summary(*found)
    return summary


# What holds on any machine and seed (README, the quickstart): name -> test of a summarize() dict. Measured over seeds
# 0-4 on the development machine: flow and joint told the verb of 36/36 clips; RGB stage 2 beat flow by 28-47 points
# and joint beat flow by 33-67. Not an invariant: joint beat RGB stage 2 in 4 of the 5 seeds, not in seed 0.
VERB_SHARE = 0.9
INVARIANTS = {
    "flow tells the verb of >= 90% of clips": lambda s: s["flow"]["verb"] >= VERB_SHARE * s["flow"]["clips"],
    "RGB stage 2 beats flow": lambda s: s["rgb_stage2"]["accuracy"] > s["flow"]["accuracy"],
    "joint tells the verb of >= 90% of clips": lambda s: s["joint"]["verb"] >= VERB_SHARE * s["joint"]["clips"],
    "joint beats flow": lambda s: s["joint"]["accuracy"] > s["flow"]["accuracy"],
}


def verdict(summary: Mapping) -> tuple[bool, str]:
    """A summarize() dict -> (every invariant holds, one line naming each invariant as held or failed)."""
    held = {name: bool(test(summary)) for name, test in INVARIANTS.items()}
    failed = [name for name, ok in held.items() if not ok]
    return not failed, (
        f"quickstart verdict: {'PASS' if not failed else 'FAIL'} ("
        + "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in held.items())
        + ")"
    )


def table(summary: Mapping) -> str:
    """The summary as the text table quickstart.sh prints."""
    lines = [
        "Test accuracy on the held-out synthetic subject S2 (final epoch of each stage). object / verb: clips whose",
        "predicted class has the right moving object / the right verb (flow sees only the verb, RGB "
        "frames the object).",
        f"{'stage':<12} {'accuracy':>9} {'correct':>7} {'object':>7} {'verb':>5}",
    ]
    lines += [
        f"{stage:<12} {100 * s['accuracy']:>8.2f}% {s['correct']:>3}/{s['clips']:<3} {s['object']:>7} {s['verb']:>5}"
        for stage, s in summary.items()
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """argv: [train_dir, summary_json] -> prints the table and the verdict, writes the summary; 0 if it holds."""
    train_dir, out = argv
    summary = summarize(train_dir)
    ok, line = verdict(summary)
    paths.write_json(epath.Path(out), {**summary, "verdict": line})
    print(table(summary) + "\n" + line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
