"""The quickstart's verdict line, computed from evaluation outputs written by the evaluation's own writer
(workdir.write_report) for made-up confusion matrices: one set where every invariant holds, one where each fails."""

import json

import numpy as np
import pytest

from ego_jax.experiments import quickstart
from ego_jax.train import workdir

CLASSES = ("take_coffee", "take_honey", "take_jam", "open_coffee", "open_honey", "open_jam")  # verb x object


def confusion(*moves) -> np.ndarray:
    """6 clips per class on the diagonal, then each (true, predicted, clips) moved off it."""
    matrix = np.diag(np.full(len(CLASSES), 6))
    for true, predicted, n in moves:
        matrix[true, true] -= n
        matrix[true, predicted] += n
    return matrix


# RGB mistakes keep the object (take_x <-> open_x), flow mistakes keep the verb (x_coffee <-> x_honey <-> x_jam).
RGB = confusion((0, 3, 3), (1, 4, 2), (5, 2, 4))
FLOW = confusion((0, 1, 4), (1, 2, 3), (2, 0, 5), (3, 4, 4), (4, 5, 2), (5, 3, 5))
JOINT = confusion((0, 3, 1))


def write(train_dir, **matrices):
    for stage in quickstart.STAGES:
        matrix = matrices.get(stage, {"flow": FLOW, "joint": JOINT}.get(stage, RGB))
        workdir.write_report(train_dir / stage / "eval", matrix, CLASSES, {"protocol": "made-up"})


def test_verdict_passes_when_every_invariant_holds(tmp_path):
    write(tmp_path / "train")
    assert quickstart.main([str(tmp_path / "train"), str(tmp_path / "summary.json")]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["flow"] == dict(accuracy=13 / 36, correct=13, clips=36, object=13, verb=36)
    assert summary["rgb_stage2"]["object"] == 36 and summary["rgb_stage2"]["verb"] == 27
    assert summary["verdict"].startswith("quickstart verdict: PASS (") and "NO" not in summary["verdict"]
    assert summary["verdict"].count(": yes") == len(quickstart.INVARIANTS)


@pytest.mark.parametrize(
    "stage, matrix, invariant",
    [
        # FLOW with 4 open_jam clips read as take_coffee: the verb of 32 < 0.9 * 36 clips
        (
            "flow",
            confusion((0, 1, 4), (1, 2, 3), (2, 0, 5), (3, 4, 4), (4, 5, 2), (5, 3, 1), (5, 0, 4)),
            "flow tells the verb of >= 90% of clips",
        ),
        ("rgb_stage2", FLOW, "RGB stage 2 beats flow"),  # a tie is not a win
        ("joint", confusion((0, 3, 2), (1, 4, 2)), "joint tells the verb of >= 90% of clips"),  # 32/36 right, verb too
        ("joint", FLOW, "joint beats flow"),
    ],
)
def test_verdict_fails_naming_the_invariant(tmp_path, stage, matrix, invariant):
    write(tmp_path, **{stage: matrix})
    ok, line = quickstart.verdict(quickstart.summarize(tmp_path))
    assert not ok and line.startswith("quickstart verdict: FAIL (") and f"{invariant}: NO" in line
    assert line.count(": NO") == 1


def test_a_missing_evaluation_is_named(tmp_path):
    write(tmp_path)
    (tmp_path / "joint" / "eval" / "confusion.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"joint/eval/confusion.json not found .*'joint'.*rerun"):
        quickstart.summarize(tmp_path)
