"""configs/experiments/step3.py: its runs, and what they share (the tiny suites of test_experiment run the runner)."""

from configs.experiments import step3
from ego_jax.experiments import plan
from ego_jax.experiments.suite import SuiteSpec

ROWS = ("attention", "lsta", "ms_cls", "motion_guided")


def test_rows_share_ego_rnn_stage_1_and_differ_in_stage_2(tmp_path):
    p = plan.Plan(SuiteSpec.from_config(step3.get_config("seeds=1")), str(tmp_path))
    for frames in (7, 16):
        runs = {row: p.run(row, frames, 0) for row in ROWS}
        first = {row: plan.stage_key(run.spec, "rgb_stage1") for row, run in runs.items()}
        # Ego-RNN's three rows train one stage 1 (the runner shares it); LSTA has its own.
        assert first["attention"] == first["ms_cls"] == first["motion_guided"] != first["lsta"]
        assert len({plan.stage_key(run.spec, "rgb_stage2") for run in runs.values()}) == len(ROWS)
        ms, guided = runs["ms_cls"].spec.stage("rgb_stage2"), runs["motion_guided"].spec.stage("rgb_stage2")
        # The MS row is the motion-guided model without its guide: same head, data, loss and stage-2 lr.
        assert ms.model.ms_head == guided.model.ms_head and ms.loss == guided.loss
        assert ms.optimizer.lr == guided.optimizer.lr and runs["ms_cls"].spec.data == runs["motion_guided"].spec.data
        assert ms.model.kwargs["motion_guide"] is None and guided.model.kwargs["motion_guide"]["detach"]
    assert plan.stage_key(p.run("motion_guided", 7, 0).spec, "rgb_stage1") != plan.stage_key(
        p.run("motion_guided", 16, 0).spec, "rgb_stage1"
    )


def test_suite_arguments():
    assert [r["key"] for r in step3.get_config("rows=motion_guided+attention").rows] == ["attention", "motion_guided"]
    suite = step3.get_config("preset=quickstart,seeds=2")
    assert suite.seeds == (0, 1) and suite.diff == ("ms_cls", "motion_guided")
    assert set(suite.cam.rows) <= set(ROWS) and suite.cam.clips
