"""The SLURM executor without a cluster: a suite's sbatch submissions checked against the flags, and a rerun.

Fake sbatch, srun, sacct and scontrol on PATH record what submitit hands them: sbatch keeps each script and answers
with a job id, sacct answers the states the test writes. Nothing trains (the driver is stopped after it has
submitted, as after a logout); the local executor, which does train, is tested end to end in test_experiment.py.
"""

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import types

import pytest
import shard_command
import submitit
from test_extract_flow import _panning_frames
from tiny_suite import get_config as tiny_suite

from ego_jax.cli import common, extract_flow
from ego_jax.data import video
from ego_jax.experiments import executors, plan, runner, stage_job
from ego_jax.experiments.suite import SuiteSpec
from ego_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKES = {
    "sbatch": 'n=$(( $(cat "$FAKE/next" 2>/dev/null || echo 100) + 1 )); echo $n > "$FAKE/next"\n'
    'cp "$1" "$FAKE/sbatch-$n.sh"; echo "Submitted batch job $n"\n',
    # sacct -o JobID,State,NodeList --parsable2 -j ID ...: the states of ID and its array elements ID_I in
    # $FAKE/states ("ID STATE" lines), else ID PENDING
    "sacct": 'echo "JobID|State|NodeList"\nwhile [ $# -gt 0 ]; do\n  if [ "$1" = -j ]; then\n'
    '    s=$(awk -v id="$2" \'$1 == id || index($1, id "_") == 1 {print $1 "|" $2 "|node1"}\' '
    '"$FAKE/states" 2>/dev/null)\n'
    '    echo "${s:-$2|PENDING|node1}"; shift\n  fi\n  shift\ndone\n',
    "srun": "exit 0\n",
    "scontrol": 'echo "$@" >> "$FAKE/scontrol"\n',
    "scancel": 'echo "$@" >> "$FAKE/scancel"\n',
}
OPTIONS = dict(
    partition="gpu",
    account="lab",
    gpus_per_job=8,
    nodes_per_job=2,
    cpus_per_task=6,
    mem="64G",
    timeout_min=600,
    signal_delay_s=90,
    setup="module load cuda/12.4",
)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A directory of fake SLURM commands first on PATH; -> that directory (also $FAKE: their records)."""
    fake = tmp_path / "fake_slurm"
    fake.mkdir()
    for name, body in FAKES.items():
        (fake / name).write_text("#!/bin/bash\n" + body)
        (fake / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE", str(fake))
    submitit.SlurmJob.watcher.clear()  # submitit's sacct cache is per process
    return fake


def _stopped() -> loop.StopRequest:
    """A driver that submits what it can, then leaves (as after a logout); the jobs go on."""
    stop = loop.StopRequest()
    stop.requested = True
    return stop


def _scripts(fake) -> dict:
    """{stage name: (job id, sbatch script)} of every submission so far (the last one of a stage wins)."""
    out = {}
    for f in sorted(fake.glob("sbatch-*.sh"), key=lambda f: int(f.stem.split("-")[1])):
        text = f.read_text()
        name = re.search(r"^#SBATCH --job-name=(\S+)$", text, re.M).group(1)
        out[name.split("-")[0]] = (f.stem.split("-")[1], text)
    return out


def _sbatch(text: str) -> dict:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", text, re.M))


def _after(dependency: str | None) -> set | None:
    """'afterok:12:13' -> {'12', '13'} (the jobs it waits for, in any order)."""
    return None if dependency is None else set(dependency.removeprefix("afterok:").split(":"))


def test_slurm_submission_follows_the_flags_and_the_stage_graph(fake_slurm, tmp_path, caplog):
    suite = tiny_suite(f"data_dir={tmp_path}/no_data,rows=attention+flow+two_stream,seeds=1")
    suite.synthetic_preset = ""  # nothing is read or built: the driver only submits
    suite = SuiteSpec.from_config(suite)
    w = str(tmp_path / "w")
    executor = executors.Executor("slurm", options=OPTIONS)
    assert runner.run_suite(suite, w, stop=_stopped(), executor=executor) is None  # submitted, then left

    jobs = _scripts(fake_slurm)
    assert sorted(jobs) == ["flow", "joint", "rgb_stage1", "rgb_stage2"]
    ids = {stage: job_id for stage, (job_id, _) in jobs.items()}
    folder = os.path.join(w, "jobs", "submitit")
    for stage, (job_id, text) in jobs.items():
        params = _sbatch(text)
        assert {
            k: params[k]
            for k in (
                "partition",
                "account",
                "cpus-per-task",
                "mem",
                "time",
                "nodes",
                "ntasks-per-node",
                "gpus-per-node",
                "signal",
                "kill-on-invalid-dep",
            )
        } == {
            "partition": "gpu",
            "account": "lab",
            "cpus-per-task": "6",
            "mem": "64G",
            "time": "600",
            "nodes": "2",
            "ntasks-per-node": "4",
            "gpus-per-node": "4",
            "signal": "USR2@90",
            "kill-on-invalid-dep": "yes",
        }, stage
        assert params["output"] == f"{folder}/%j_0_log.out" and params["error"] == f"{folder}/%j_0_log.err"
        want = {"rgb_stage2": {ids["rgb_stage1"]}, "joint": {ids["rgb_stage2"], ids["flow"]}}.get(stage)
        assert params["dependency"].startswith("afterok:") if want else "dependency" not in params
        assert _after(params.get("dependency")) == want, stage
        assert f"export PYTHONPATH={ROOT}" in text and "module load cuda/12.4" in text
        assert f"export JAX_COMPILATION_CACHE_DIR=${{JAX_COMPILATION_CACHE_DIR:-{w}/jobs/xla_cache}}" in text
        assert re.search(rf"^srun --unbuffered .* -u -m submitit.core._submit {re.escape(folder)}$", text, re.M)
        # the pickled job: StageJob of that stage, through the first run using it, 8 processes (2 nodes x 4 GPUs)
        job = submitit.helpers.DelayedSubmission.load(os.path.join(folder, f"{job_id}_submitted.pkl")).function
        assert isinstance(job, stage_job.StageJob) and job.stage == stage and job.processes == 8
        key = plan.stage_key(job.run.spec, stage)
        record = executors.submissions(os.path.join(w, "jobs"), key)
        assert [r["job_id"] for r in record] == [job_id] and _after(record[0]["dependency"]) == want
        assert record[0]["log"]["err"] == f"{folder}/{job_id}_0_log.err"

    # A rerun (after a crash or logout) keeps the running and pending jobs, resubmits the failed one (its log
    # printed) and the one SLURM cancelled because of it, waiting for the jobs they start from.
    (fake_slurm / "states").write_text(
        f"{ids['rgb_stage1']} RUNNING\n{ids['flow']} FAILED\n{ids['joint']} CANCELLED\n"
    )  # rgb_stage2: PENDING
    with caplog.at_level("INFO"):
        assert runner.run_suite(suite, w, stop=_stopped(), executor=executor) is None
    again = _scripts(fake_slurm)
    assert {s: again[s][0] for s in ("rgb_stage1", "rgb_stage2")} == {s: ids[s] for s in ("rgb_stage1", "rgb_stage2")}
    assert again["flow"][0] not in ids.values() and again["joint"][0] not in ids.values()
    assert _sbatch(again["flow"][1]).get("dependency") is None
    assert _after(_sbatch(again["joint"][1])["dependency"]) == {ids["rgb_stage2"], again["flow"][0]}
    log = f"{folder}/{ids['flow']}_0_log.err"
    assert f"job {ids['flow']} ended without finishing; submitting it again. Its log: {log}" in caplog.text
    assert f"job {ids['rgb_stage1']} (submitted by an earlier driver) is still running" in caplog.text


def test_executor_flags_are_checked(fake_slurm, monkeypatch):
    with pytest.raises(ValueError, match="same GPU count on each"):
        executors.Executor("slurm", options=dict(gpus_per_job=3, nodes_per_job=2))
    with pytest.raises(ValueError, match="--workers=0"):
        executors.Executor("local", workers=0)
    with pytest.raises(ValueError, match=r"--local.partition: not an option of the local executor"):
        executors.Executor("local", options=dict(partition="gpu"))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ValueError, match="no srun on PATH"):
        executors.Executor("slurm")


def test_sharded_command_as_local_jobs(tmp_path, monkeypatch):
    """A --shard I/N command (extract_flow's interface) with --executor local --shards 2: one process per shard."""
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}:{os.path.join(ROOT, 'tests')}")  # the jobs import shard_command
    out, jobs = tmp_path / "out", str(tmp_path / "out" / "jobs")
    argv = [f"--out={out}", "--executor", "local", "--shards=2"]
    with pytest.raises(executors.JobsFailed, match=r"shard-1-of-2: job \d+ ended without finishing: .*_log\.err"):
        shard_command.main([*argv, "--fail=1"])
    assert (out / "shard-0.txt").exists() and not (out / "shard-1.txt").exists()
    assert shard_command.main(argv) == 0  # the rerun submits the failed shard only
    assert [len(executors.submissions(jobs, f"shard-{i}-of-2")) for i in range(2)] == [1, 2]
    pids = [int((out / f"shard-{i}.txt").read_text()) for i in range(2)]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert [a["pid"] for a in executors.attempts(jobs, "shard-0-of-2")] == pids[:1]
    assert [a["argv"] for a in executors.attempts(jobs, "shard-1-of-2")][-1] == [f"--out={out}", "--shard=1/2"]
    assert shard_command.main(argv) == 0 and len(executors.submissions(jobs, "shard-0-of-2")) == 1  # all done


def test_sharded_command_as_a_slurm_job_array(fake_slurm, tmp_path, monkeypatch):
    jobs = str(tmp_path / "jobs")
    command = [f"--out={tmp_path}", "--executor", "slurm", "--shards", "3", "--slurm.partition=cpu"]
    argv = executors.job_argv(command)
    assert argv == [f"--out={tmp_path}"]
    # The driver's first wait for its (pending) jobs brings it a SIGTERM, as a logout would: it stops waiting and
    # exits resumable, as a stopped ego-jax-train.
    logout = types.SimpleNamespace(time=time.time, sleep=lambda s: os.kill(os.getpid(), signal.SIGTERM))
    monkeypatch.setattr(executors, "time", logout)
    assert shard_command.main(command) == common.EXIT_STOPPED
    executor = executors.Executor("slurm", options=dict(partition="cpu"))
    ((array_id, text),) = _scripts(fake_slurm).values()
    params = _sbatch(text)
    assert params["array"] == "0-2%3" and params["partition"] == "cpu" and "dependency" not in params
    assert params["output"].endswith("/%A_%a_0_log.out")
    for i in range(3):
        (record,) = executors.submissions(jobs, f"shard-{i}-of-3")
        assert record["job_id"] == f"{array_id}_{i}"
        job = submitit.helpers.DelayedSubmission.load(
            os.path.join(jobs, "submitit", f"{array_id}_{i}_submitted.pkl")
        ).function
        assert job.argv == [f"--out={tmp_path}", f"--shard={i}/3"]
    (fake_slurm / "states").write_text(f"{array_id}_0 COMPLETED\n{array_id}_1 FAILED\n{array_id}_2 RUNNING\n")
    (tmp_path / "jobs" / "shard-0-of-3" / "DONE").write_text("{}")  # what shard 0's job wrote
    assert not executor.run(
        executors.shards("shard_command", argv, 3, jobs), jobs, stop=_stopped(), array="shard_command"
    )
    assert [len(executors.submissions(jobs, f"shard-{i}-of-3")) for i in range(3)] == [1, 2, 1]


def test_extract_flow_as_local_shard_jobs(tmp_path, monkeypatch):
    """extract_flow --executor local --shards 2: the files of the serial extraction, from two processes."""
    for name in ("S1/a/1", "S1/a/2", "S2/b/1"):
        video.write_video(tmp_path / "in" / f"{name}.mp4", _panning_frames(3, size=(32, 48)), fps=10)
    flow_args = [
        "--input",
        str(tmp_path / "in"),
        "--method",
        "tvl1",
        "--backend",
        "opencv",
        "--tvl1",
        "nscales=1",
        "--tvl1",
        "inner_iterations=5",
    ]
    assert extract_flow.main([*flow_args, "--out", str(tmp_path / "serial")]) == 0
    monkeypatch.setenv("PYTHONPATH", ROOT)
    jobs = str(tmp_path / "sharded" / "jobs")
    assert extract_flow.main([*flow_args, "--out", str(tmp_path / "sharded"), "--executor=local", "--shards=2"]) == 0
    for kind in ("frames", "flow_x", "flow_y"):
        serial = sorted(p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial" / kind).rglob("*.jpg"))
        assert len(serial) == 6 and serial == sorted(
            p.relative_to(tmp_path / "sharded") for p in (tmp_path / "sharded" / kind).rglob("*.jpg")
        )
        for f in serial:
            assert (tmp_path / "sharded" / f).read_bytes() == (tmp_path / "serial" / f).read_bytes(), f
    runs = [executors.attempts(jobs, f"shard-{i}-of-2") for i in range(2)]
    assert [[a["argv"][-1] for a in r] for r in runs] == [["--shard=0/2"], ["--shard=1/2"]]
    assert len({r[0]["pid"] for r in runs} - {os.getpid()}) == 2


def test_a_stage_job_stopped_by_a_signal_requeues_or_exits_resumable(tmp_path, monkeypatch):
    """submitit's preemption signal (USR2) -> submitit's checkpoint-and-requeue handler; SIGTERM (scancel) ->
    EXIT_STOPPED without a requeue. The train loop's side (a checkpoint, an exact resume) is test_experiment.py's."""
    suite = SuiteSpec.from_config(tiny_suite(f"data_dir={tmp_path}/no_data,rows=flow,seeds=1"))
    run = plan.Plan(suite, str(tmp_path / "w")).table_runs({})[0]
    requeued = []

    def submitit_handler(signum, frame):  # what submitit's handler does on process 0: checkpoint, requeue, exit
        requeued.append(signum)
        raise SystemExit(-1)

    def train(self, key, stop):  # the signal arrives while the stage trains; the loop saves and returns
        os.kill(os.getpid(), sent)
        return False

    monkeypatch.setattr(stage_job.StageJob, "_train", train)
    monkeypatch.setattr(stage_job, "_setup_logs", lambda: None)
    usr2 = executors.preempt_signal()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, usr2)}
    try:
        for sent, code, want in ((usr2, -1, [usr2]), (signal.SIGTERM, common.EXIT_STOPPED, [])):
            requeued.clear()
            signal.signal(usr2, submitit_handler)
            with pytest.raises(SystemExit) as stopped:
                stage_job.StageJob(str(tmp_path / "w"), run, "flow")()
            assert (stopped.value.code, requeued) == (code, want), signal.Signals(sent).name
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_multi_task_slurm_job_is_one_multi_process_run():
    """A stage job's tasks (--slurm.nodes_per_job / gpus_per_job): the environment srun gives each task is what
    StageJob's distributed.initialize(mode='auto') starts one run from, through jax.distributed's SLURM detection."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "OMPI_", "TPU_", "JAX_COORDINATOR", "KUBERNETES_", "MEGASCALE_"))
    }
    job_id = next(j for j in range(4096 * 7, 4096 * 8) if _free(61440 + j % 4096))  # jax's coordinator port
    env.update(
        PYTHONPATH=ROOT,
        JAX_PLATFORMS="cpu",
        JAX_NUM_CPU_DEVICES="2",
        SLURM_JOB_ID=str(job_id),
        SLURM_STEP_NODELIST="127.0.0.1",
        SLURM_NTASKS="2",
        SLURM_STEP_NUM_NODES="1",
    )
    code = (
        "from ego_jax.train import distributed; distributed.initialize(mode='auto'); import jax; "
        "print(jax.process_index(), jax.process_count(), jax.device_count())"
    )
    tasks = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=dict(env, SLURM_PROCID=str(i), SLURM_LOCALID=str(i)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outs = [t.communicate(timeout=180) for t in tasks]
    finally:
        for t in tasks:
            if t.poll() is None:
                t.kill()
                t.wait()
    assert [out.strip() for out, _ in outs] == ["0 2 4", "1 2 4"], [err[-2000:] for _, err in outs]


def test_importing_the_executors_keeps_the_process_logging_handlers(tmp_path):
    """submitit's import-time logging.config.dictConfig closes every handler that exists: a FileHandler opened with
    mode "w" then never writes again (and absl's closes pytest's capture file). ego_jax imports it without that."""
    log = tmp_path / "run.log"
    code = (
        "import logging, os\n"
        f"handler = logging.FileHandler({str(log)!r}, mode='w')\n"
        "logging.getLogger().addHandler(handler)\n"
        "import ego_jax.experiments.executors\n"
        "logging.getLogger().warning('logged after the import')\n"
        "print('SUBMITIT_LOG_LEVEL' in os.environ)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SUBMITIT_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=dict(env, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "logged after the import" in log.read_text()
    assert proc.stdout.split() == ["False"]  # the jobs' processes still configure submitit's logging
