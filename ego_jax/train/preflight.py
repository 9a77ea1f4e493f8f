"""Checks of a whole recipe before its first step: batch sizes on the mesh, the dataset, the weights, the workdir's
records (the config's ranges are checked when its specs are built, ego_jax.specs).

Everything here fails in seconds what would otherwise fail after hours (a flow stage after the RGB stages, a
changed learning rate on resume); each error says what was expected, where, and what to do.
"""

import json
import os

import jax

from ego_jax import specs
from ego_jax.specs import RunSpec
from ego_jax.train import loaders, paths, sharding
from ego_jax.train.stage import check_imagenet

RECORD = "config.json"  # W/<stage>/config.json: the stage's identity and the whole run when it started


def check_data(run: RunSpec, train_source, test_source) -> list[str]:
    """-> problems of the recipe with the built dataset: missing features, a train split smaller than a batch."""
    problems = []
    built = set(getattr(train_source, "features", ()))  # a gtea61 ClipSource's example keys
    d = run.data
    for name in run.recipe:
        missing = [f for f in run.stage(name).model.features() if built and f not in built]
        if missing:
            problems.append(
                f"stage {name!r} needs the dataset features {missing}, which gtea61/{d.builder_config} in "
                f"{d.data_dir} does not have (it has {sorted(built)}): build a config with them, e.g. "
                f"`python scripts/build_dataset.py --manual_dir {d.manual_dir} --data_dir "
                f"{d.data_dir} --config all` and --config.data.builder_config=all"
            )
    if len(train_source) < run.batch_size:
        problems.append(
            f"train split {d.train_split!r} has {len(train_source)} clips, fewer than "
            f"batch_size={run.batch_size}: lower --config.batch_size"
        )
    if len(test_source) == 0:
        problems.append(f"test split {d.test_split!r} has no clips")
    return problems


def check_weights(run: RunSpec) -> list[str]:
    """-> problems with the ImageNet artifact of stages that start from it (missing, unreadable, wrong depth)."""
    if not any("imagenet" in run.stage(n).init_from.values() for n in run.recipe):
        return []
    from ego_jax.convert.torchvision import WeightsError, config_of, read_imagenet  # noqa: PLC0415

    try:
        check_imagenet(run.imagenet_weights)
        found = config_of(read_imagenet(run.imagenet_weights)[0])
    except (FileNotFoundError, WeightsError) as e:
        return [str(e)]
    depth = run.model.get("depth")
    if depth is not None and found["depth"] != depth:
        return [f"{run.imagenet_weights} holds a ResNet-{found['depth']} but config.model.depth={depth}"]
    return []


def check_sources(run: RunSpec, workdir: str) -> list[str]:
    """-> problems with init_from stage sources: each must run earlier in the recipe or be finished in workdir."""
    problems = []
    for i, name in enumerate(run.recipe):
        for target, source in run.stage(name).init_from.items():
            if source == "imagenet":
                continue
            if os.sep in source:
                if not paths.absolute(source).is_dir():
                    problems.append(
                        f"stage {name!r} init_from {target}: {source} does not exist (expected a stage "
                        "folder of a trained workdir, or a checkpoint directory)"
                    )
                continue
            if source not in run.stages:
                problems.append(
                    f"stage {name!r} init_from {target}: {source!r} is neither 'imagenet', a stage of the "
                    f"config {list(run.stages)} nor a checkpoint path"
                )
            elif source not in run.recipe[:i] and not (paths.absolute(workdir) / source / "DONE").exists():
                problems.append(
                    f"stage {name!r} starts from stage {source!r}, which neither runs before it in "
                    f"config.recipe {run.recipe} nor is finished in {workdir}"
                )
    return problems


def record(workdir: str, name: str) -> dict | None:
    """The recorded {identity, config} of stage `name` in workdir, or None."""
    path = paths.absolute(workdir) / name / RECORD
    if not path.exists():
        return None
    return paths.read_json(
        path,
        "it records the config the stage was started with: delete it to resume without "
        "checking that the config is unchanged, or start the stage over",
    )


def write_record(run: RunSpec, workdir: str, name: str) -> None:
    """Record stage `name`'s identity and the whole run in W/<stage>/config.json (process 0)."""
    if jax.process_index() == 0:
        stage_dir = paths.absolute(workdir) / name
        stage_dir.mkdir(parents=True, exist_ok=True)
        paths.write_atomic(
            stage_dir / RECORD, json.dumps(dict(identity=specs.identity(run, name), config=run.to_dict()), indent=1)
        )


def check_records(run: RunSpec, workdir: str) -> list[str]:
    """-> refusals for stages whose recorded identity differs from the run's (epochs: unfinished stages only).

    A record of an earlier ego_jax, which kept None values in identities, compares as its normalised form.
    """
    problems = []
    for name in run.recipe:
        recorded = record(workdir, name)
        if recorded is None:
            continue
        old, new = specs.normalise(recorded["identity"]), specs.identity(run, name)
        if not (paths.absolute(workdir) / name / "DONE").exists():  # an unfinished stage may change its length
            old, new = ({**i, "stage": {k: v for k, v in i["stage"].items() if k != "epochs"}} for i in (old, new))
        changes = specs.diff(old, new)
        if changes:
            problems.append(
                f"stage {name!r} in {workdir} was started with another config; these keys determine its result:\n    "
                + "\n    ".join(changes)
                + f"\n  Rerun with the recorded values (in {paths.absolute(workdir) / name / RECORD}), use another "
                f"--workdir, or start the stage over with --restart_stage {name}"
            )
    return problems


def check(run: RunSpec, workdir: str, *, mesh) -> tuple:
    """All checks before the first step -> (train source, test source); ValueError listing every problem."""
    for size, what in ((run.batch_size, "batch_size"), (run.eval_batch_size, "eval_batch_size")):
        sharding.check_batch_size(size, mesh, what)
    train_source, test_source = loaders.load_sources(run.data)
    problems = (
        check_sources(run, workdir)
        + check_data(run, train_source, test_source)
        + check_weights(run)
        + check_records(run, workdir)
    )
    if problems:
        raise ValueError("the recipe cannot run:\n  " + "\n  ".join(problems))
    return train_source, test_source
