"""The course's Step-1 table: ConvLSTM, ConvLSTM-attention, temporal warp flow, two-stream (joint), 7 and 16 frames.

  python scripts/experiment.py --suite configs/experiments/step1.py[:seeds=3,data=gtea61|synthetic,
      preset=reference|quickstart,rows=convlstm+attention+flow+two_stream] --workdir W [--dry_run]

Each cell: test accuracy on S2 of the row's last stage (train S1+S3+S4), mean +- std over the seeds. Shared
stages are trained once: two-stream's RGB stages are the attention row's, its flow stage is the flow row's.
"""

from ego_jax.experiments import suite

FLOW_NOTE = (
    "Flow row: the flow stream reads stacks of 5 warp-flow frame pairs, whatever the RGB frame count (the "
    "reference samples flow independently of seqLen), so it is trained once per seed and the same runs "
    "are shown in both columns. The two-stream rows use that same flow stage."
)


def get_config(arg=None):
    args = suite.parse_args(arg)
    rows = [
        dict(key="convlstm", name="ConvLSTM", config="configs/convlstm.py"),
        dict(key="attention", name="ConvLSTM-attention", config="configs/attention.py"),
        dict(key="flow", name="temporal warp flow", config="configs/flow.py", stage="flow", per_column=False),
        dict(key="two_stream", name="two-stream (joint train)", config="configs/two_stream.py", stage="joint"),
    ]
    return suite.suite(
        args,
        name="step1",
        title="Step 1: Ego-RNN ablations on GTEA61 (test subject S2)",
        rows=rows,
        diff=("convlstm", "attention"),
        notes=[FLOW_NOTE],
    )
