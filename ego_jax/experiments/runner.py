"""Runs a suite in W: data, validation runs and hyperparameter selection, table runs, results, CAM comparison.

Each run's workdir W/runs/... holds one symlink per stage into W/stages/<stage_key>; a stage is trained by the
first run that needs it (ego_jax.train.loop.train_stage) and found DONE by the others. Everything is resumable:
rerun the same command after a kill and finished stages are skipped, an interrupted one resumes from its
checkpoint, and the results are recomputed from the stages' eval.json files.

Multi-process (scripts/experiment.py takes train.py's launch flags): every process runs the same plan and trains
each stage together with the others; process 0 alone writes the store's links, records and reports
(distributed.on_process_0, after which every process sees them) and decides what is done and chosen.
"""

import functools
import logging
import os
import signal
import time

from ego_jax.experiments import executors, plan as plan_lib, report
from ego_jax.experiments.suite import SuiteSpec
from ego_jax.train import distributed, loaders, loop, paths, preflight, sharding
from ego_jax.train.workdir_lock import run_lock

SELECTION = "selection.json"
JOBS = "jobs"  # W/jobs: the stage jobs' records and submitit's folder (--executor local|slurm)


def prepare_data(p: plan_lib.Plan) -> None:
    """Generate and build the suite's synthetic set in p.data_dir unless it is built already."""
    if not p.suite.synthetic_preset:
        return
    from ego_jax.data import gtea61, synthetic  # noqa: PLC0415

    if gtea61.Gtea61(config="all", data_dir=p.data_dir).is_prepared():
        return
    logging.info("generating the synthetic %r set in %s", p.suite.synthetic_preset, p.manual_dir)
    synthetic.make_synthetic(p.manual_dir, preset=p.suite.synthetic_preset, workers=2)
    gtea61.build(manual_dir=p.manual_dir, data_dir=p.data_dir, config="all")


def filesystem_workdir(workdir: str) -> str:
    """The suite workdir made absolute; a bucket URL is refused (the runs' stages are symlinks into the store)."""
    if not paths.is_local(workdir):
        raise ValueError(
            f"--workdir {workdir}: a suite links each run's stages into its shared store with symlinks, "
            "which a bucket cannot hold; use a filesystem every process sees (local disk, NFS, Lustre). "
            "scripts/train.py takes a bucket workdir"
        )
    return os.path.abspath(workdir)


def stage_dir(workdir: str, spec, stage: str) -> str:
    """W/stages/<stage_key> of `stage` of a run's spec."""
    return os.path.join(workdir, "stages", plan_lib.stage_key(spec, stage))


def link_stages(workdir: str, run: plan_lib.Run) -> str:
    """Make the run's workdir with one symlink per stage into the store; -> the run's absolute workdir."""
    run_dir = os.path.join(workdir, run.path)
    os.makedirs(run_dir, exist_ok=True)
    for name in run.spec.recipe:
        target = stage_dir(workdir, run.spec, name)
        os.makedirs(target, exist_ok=True)
        fields = os.path.join(target, plan_lib.FIELDS)
        if not os.path.exists(fields):
            paths.write_json(fields, plan_lib.stage_fields(run.spec, name))
        link, rel = os.path.join(run_dir, name), os.path.relpath(target, run_dir)
        if os.path.islink(link) and os.readlink(link) != rel:  # the suite changed: point at the current identity
            os.remove(link)
        if not os.path.lexists(link):
            os.symlink(rel, link)
        elif not os.path.islink(link):
            raise FileExistsError(
                f"{link} is a directory, not a link into {workdir}/stages: was this run's workdir "
                f"written by scripts/train.py? Use a fresh --workdir for the suite"
            )
    paths.write_json(os.path.join(run_dir, "config.json"), run.spec.to_dict())
    return run_dir


def train_run(
    workdir: str, run: plan_lib.Run, *, mesh, stop: loop.StopRequest, stages=None, verified: set | None = None
) -> bool:
    """Train every stage of a run (or those in `stages`) not yet DONE in the store; -> True when done (False: stop).

    A DONE stage is reused only once its final checkpoint verifies, as train.py checks it; one that fails is
    trained again from its newest good checkpoint (its DONE and damaged steps kept in rejected_checkpoints/).
    verified: store directories already verified in this session (not read again; this run's are added).
    Each stage trains under its store directory's lock: WorkdirLocked, naming the holder, while another process
    (a stage job of --executor local|slurm) trains it.
    """
    run_dir = os.path.join(workdir, run.path)
    distributed.on_process_0(lambda: link_stages(workdir, run), f"link the stages of {run_dir}")
    spec, verified = run.spec, set() if verified is None else verified
    todo = []
    for name in spec.recipe if stages is None else [n for n in spec.recipe if n in stages]:
        store = os.path.realpath(os.path.join(run_dir, name))
        if store not in verified and not loop.is_done(name, run_dir):
            todo.append(name)
        verified.add(store)  # done after this call (or the suite stops before reading it)
    if not todo:
        return True
    sources = preflight.check(spec, run_dir, mesh=mesh)  # the train loop's checks before any step
    for name in todo:
        store = os.path.realpath(os.path.join(run_dir, name))
        logging.info("run %s: training stage %s (%s)", run.path, name, store)
        t0 = time.perf_counter()
        with run_lock(store):
            done = loop.train_stage(
                spec,
                name,
                run_dir,
                mesh=mesh,
                stop=stop,
                sources=sources,
                restart_hint=(
                    f"Start the stage over: delete {store} (or move it out of {workdir}/stages) and rerun the suite"
                ),
            )
        record = functools.partial(_add_wall_time, os.path.join(run_dir, name), time.perf_counter() - t0)
        distributed.on_process_0(record, f"record the training time of {run_dir}/{name}")
        if not done:
            return False
    return True


def _wall_time(stage_dir: str) -> float | None:
    """The training seconds W/stages/<stage>/wall.json records, or None without one."""
    wall = os.path.join(stage_dir, "wall.json")
    if not os.path.exists(wall):
        return None
    return paths.read_json(
        wall, "delete it (it only sums the stage's training time, which then counts from the next session)"
    )["seconds"]


def _add_wall_time(stage_dir: str, seconds: float) -> None:
    """W/stages/<stage>/wall.json: training seconds summed over sessions (a resumed stage adds up)."""
    paths.write_json(os.path.join(stage_dir, "wall.json"), dict(seconds=(_wall_time(stage_dir) or 0.0) + seconds))


def result_of(workdir: str, run: plan_lib.Run, stage: str) -> dict:
    """A finished run's eval.json of `stage`, and per stage of its recipe the identity and summed training time."""
    run_dir = os.path.join(workdir, run.path)
    stages = {
        name: dict(
            identity=os.path.basename(os.path.realpath(os.path.join(run_dir, name))),
            wall_s=_wall_time(os.path.join(run_dir, name)),
        )
        for name in run.spec.recipe
    }
    stage_dir = os.path.join(run_dir, stage)
    evaluated = paths.read_json(
        os.path.join(stage_dir, "eval.json"),
        f"delete {os.path.join(stage_dir, 'DONE')} and rerun: the stage's final checkpoint is evaluated again",
    )
    return dict(evaluated, stages=stages)


def _train_all(workdir, runs, *, stop, mesh, verified: set) -> bool:
    """The serial executor: every run's stages one after the other in this process (or multi-process launch)."""
    for run in runs:
        if not train_run(workdir, run, mesh=mesh, stop=stop, verified=verified):
            return False
    return True


def select(p: plan_lib.Plan, *, train_all, stop) -> dict | None:
    """Train the validation runs and choose each searched (row, column)'s best set on the validation subject.

    -> {'chosen': {(row, column, fold): set index}, 'validation': [records]} (written to W/selection.json), or None
    when stopped. Each fold chooses on its own validation part. Ties go to the lower set index (set 0 = the
    reference values).
    """
    runs = p.validation_runs()
    if not train_all(p.workdir, runs, stop=stop):
        return None
    records, chosen = [], {}
    for row in p.suite.rows:
        if not row.search:
            continue
        sets = p.sets(row)
        for column in p.columns(row):
            for fold in p.folds():
                scores = []
                for k, hp in enumerate(sets):
                    mine = [r for r in runs if (r.row, r.column, r.set_index, r.fold) == (row.key, column, k, fold)]
                    accs = [result_of(p.workdir, r, row.stage)["accuracy"] for r in mine]
                    scores.append(sum(accs) / len(accs))
                    records.append(
                        dict(
                            row=row.key,
                            column=column,
                            fold=fold,
                            set=k,
                            hyperparameters=hp,
                            accuracies=accs,
                            split=p.fold(fold).val,
                            workdirs=[r.path for r in mine],
                        )
                    )
                best = max(range(len(sets)), key=lambda k: (scores[k], -k))
                # one choice, whatever each process read
                chosen[(row.key, column, fold)] = distributed.from_process_0(best)
    for rec in records:
        rec["chosen"] = chosen[(rec["row"], rec["column"], rec["fold"])] == rec["set"]

    distributed.on_process_0(
        lambda: paths.write_json(os.path.join(p.workdir, SELECTION), dict(validation=records)),
        f"write {p.workdir}/{SELECTION}",
    )
    return dict(chosen=chosen, validation=records)


def check_store(workdir: str) -> None:
    """Refuse a store written by an earlier ego_jax whose stage keys differ, naming the command that re-keys it."""
    stale = plan_lib.stale_keys(workdir)
    if stale:
        raise ValueError(
            f"{workdir}/stages holds {len(stale)} stage(s) keyed by an earlier ego_jax (e.g. "
            f"{next(iter(stale))} is now {next(iter(stale.values()))}); re-key the store once with `"
            f"{plan_lib.rekey_command(workdir)}`, then rerun this command"
        )


def run_suite(
    suite: SuiteSpec, workdir: str, *, stop: loop.StopRequest | None = None, executor: executors.Executor | None = None
) -> dict | None:
    """Run a whole suite in `workdir`; -> the results dict (also W/results.{md,json}, plots), None if stopped.

    executor: None trains in this process; else each distinct stage is a job of it (ego_jax.experiments.stage_job).
    """
    workdir = filesystem_workdir(workdir)
    p = plan_lib.Plan(suite, workdir)
    stop = stop or loop.StopRequest()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with run_lock(workdir):  # one suite run per W (process 0 holds the lock for all of its processes)
            check_store(workdir)
            return _run(p, stop, executor)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(p: plan_lib.Plan, stop, executor) -> dict | None:
    """run_suite's body, under the suite workdir's lock."""
    suite, workdir = p.suite, p.workdir
    # The table is recomputed from the stages at the end: until then, no table their runs may no longer support.
    distributed.on_process_0(lambda: report.remove(p), f"remove the previous results from {workdir}")
    distributed.on_process_0(lambda: prepare_data(p), f"prepare the suite's data in {p.data_dir}")
    if executor is None:
        train_all = functools.partial(_train_all, mesh=sharding.make_mesh(), verified=set())
    else:  # the jobs hold the accelerators: this process initialises none
        from ego_jax.experiments import stage_job  # noqa: PLC0415  (imports this module)

        train_all = functools.partial(stage_job.train_all, executor)
    t0 = time.perf_counter()
    selection = select(p, train_all=train_all, stop=stop)
    if selection is None:
        return None
    runs = p.table_runs(selection["chosen"])
    if not train_all(workdir, runs, stop=stop):
        return None
    results = [
        dict(
            row=r.row,
            column=r.column,
            seed=r.seed,
            set=r.set_index,
            fold=r.fold,
            workdir=r.path,
            **result_of(workdir, r, p.rows[r.row].stage),
        )
        for r in runs
    ]
    jobs = None
    if executor is not None:  # each distinct stage of the suite once, in plan order
        keys = {plan_lib.stage_key(r.spec, n): None for r in p.validation_runs() + runs for n in r.spec.recipe}
        jobs = dict(executor=executor.describe(), jobs=executors.summary(os.path.join(workdir, JOBS), keys))
    out = report.tabulate(
        p,
        results,
        selection["validation"],
        class_names=loaders.class_names(runs[0].spec),
        wall_s=time.perf_counter() - t0,
        jobs=jobs,
    )
    distributed.on_process_0(lambda: report.write(p, out), f"write the results into {workdir}")
    if suite.cam.rows and suite.cam.clips:
        from ego_jax.experiments import cam  # noqa: PLC0415

        out["cam"] = cam.draw_suite(p, runs)
    return out


def dry_run(suite: SuiteSpec, workdir: str) -> str:
    """Every job, the stages it trains or shares, and the train steps per stage; trains nothing."""
    workdir = filesystem_workdir(workdir)
    p = plan_lib.Plan(suite, workdir)
    runs = p.validation_runs()
    provisional = {(r.key, c, f): 0 for r in suite.rows if r.search for c in p.columns(r) for f in p.folds()}
    table = p.table_runs(provisional)
    users: dict[str, list[str]] = {}
    for run in runs + table:
        for name in run.spec.recipe:
            users.setdefault(plan_lib.stage_key(run.spec, name), []).append(run.path)
    lines = [
        f"suite {suite.name}: {len(runs)} validation runs, {len(table)} table runs, {len(users)} unique stages "
        f"(store {workdir}/stages)"
    ]
    steps_cache: dict[str, str] = {}
    for title, group in (
        ("validation runs (hyperparameter selection; test subject never read)", runs),
        (
            "table runs" + (" (searched rows shown with set 0; the chosen set replaces it)" if provisional else ""),
            table,
        ),
    ):
        lines.append(f"\n{title}:")
        for run in group:
            hp = "" if run.set_index is None else f" set {run.set_index} {p.sets(p.rows[run.row])[run.set_index]}"
            lines.append(
                f"  {run.path}: {p.rows[run.row].config}:{run.args} train {run.spec.data.train_split}"
                f" test {run.spec.data.test_split}{hp}"
            )
            for name in run.spec.recipe:
                sid = plan_lib.stage_key(run.spec, name)
                shared = len(set(users[sid])) - 1
                lines.append(
                    f"    {name:<11} {sid}  {_steps(run.spec, name, steps_cache)}"
                    + (f"  shared with {shared} other run(s)" if shared else "")
                )
    return "\n".join(lines)


def _steps(spec, stage: str, cache: dict) -> str:
    """'E epochs x S steps = N steps' (S from the built train split; '?' when the data is not built yet)."""
    epochs = spec.stage(stage).epochs
    key = (spec.data.data_dir, spec.data.train_split, spec.batch_size)
    if key not in cache:
        try:
            cache[key] = str(len(loaders.load_split(spec.data, spec.data.train_split)) // spec.batch_size)
        except (FileNotFoundError, ValueError):
            cache[key] = "?"
    per_epoch = cache[key]
    total = epochs * int(per_epoch) if per_epoch != "?" else "?"
    return f"{epochs} epochs x {per_epoch} steps = {total} steps" + (" (data not built)" if per_epoch == "?" else "")
