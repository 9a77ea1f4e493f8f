"""Checks of a whole recipe before its first step: config ranges, the dataset, the weights, the workdir's records.

Everything here fails in seconds what would otherwise fail after hours (a flow stage after the RGB stages, a
zero cadence after an epoch); each error says what was expected, where, and what to do.
"""
import json
import os

import jax

from ego_jax import streams
from ego_jax.data.pipeline import features
from ego_jax.train import loaders, paths, recipes, sharding
from ego_jax.train.stage_identity import diff, stage_identity

# Config values that must be integers >= 1 (>= 0 for the worker count).
POSITIVE = ("batch_size", "eval_batch_size", "log_every_steps", "eval_every_epochs", "checkpoint_every_epochs",
            "data.frames", "data.stack", "data.crop", "data.resize", "data.flow_eval_stacks")
RECORD = "config.json"  # W/<stage>/config.json: the stage's identity and full config when it started


def _get(config, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def check_ranges(config) -> list[str]:
    """-> problems with the config's sizes, cadences and epochs (empty when fine)."""
    problems = [f"config.{k}={_get(config, k)!r}: expected an integer >= 1" for k in POSITIVE
                if not (isinstance(_get(config, k), int) and _get(config, k) >= 1)]
    if not (isinstance(config.data.worker_count, int) and config.data.worker_count >= 0):
        problems.append(f"config.data.worker_count={config.data.worker_count!r}: expected an integer >= 0")
    crop, resize = config.data.crop, config.data.resize
    if isinstance(crop, int) and isinstance(resize, int) and crop > resize:
        problems.append(f"config.data.crop={config.data.crop} is larger than config.data.resize={config.data.resize}")
    for name in config.recipe:
        if name not in config.stages:
            problems.append(f"config.recipe names stage {name!r}; defined stages: {list(config.stages)}")
            continue
        epochs = config.stages[name].epochs
        if not (isinstance(epochs, int) and epochs >= 1):
            problems.append(f"config.stages.{name}.epochs={epochs!r}: expected an integer >= 1")
    return problems


def stage_features(config, name: str) -> tuple[str, ...]:
    """Dataset features stage `name` reads for training and evaluation (e.g. ('rgb', 'mmaps'))."""
    stage = config.stages[name]
    return features(streams.get(stage.model.kind).loader, motion_maps=recipes.ms_kind(stage) is not None)


def check_data(config, train_source, test_source) -> list[str]:
    """-> problems of the recipe with the built dataset: missing features, a train split smaller than a batch."""
    problems = []
    built = set(getattr(train_source, "features", ()))  # a gtea61 ClipSource's example keys
    for name in config.recipe:
        missing = [f for f in stage_features(config, name) if built and f not in built]
        if missing:
            problems.append(
                f"stage {name!r} needs the dataset features {missing}, which gtea61/{config.data.builder_config} in "
                f"{config.data.data_dir} does not have (it has {sorted(built)}): build a config with them, e.g. "
                f"`python scripts/build_dataset.py --manual_dir {config.data.manual_dir} --data_dir "
                f"{config.data.data_dir} --config all` and --config.data.builder_config=all")
    if len(train_source) < config.batch_size:
        problems.append(f"train split {config.data.train_split!r} has {len(train_source)} clips, fewer than "
                        f"batch_size={config.batch_size}: lower --config.batch_size")
    if len(test_source) == 0:
        problems.append(f"test split {config.data.test_split!r} has no clips")
    return problems


def check_weights(config) -> list[str]:
    """-> problems with the ImageNet artifact of stages that start from it (missing, unreadable, wrong depth)."""
    if not any("imagenet" in config.stages[n].init_from.values() for n in config.recipe if n in config.stages):
        return []
    from ego_jax.convert.torchvision import WeightsError, config_of, read_imagenet  # noqa: PLC0415

    try:
        recipes.check_imagenet(config.imagenet_weights)
        found = config_of(read_imagenet(config.imagenet_weights)[0])
    except (FileNotFoundError, WeightsError) as e:
        return [str(e)]
    if found["depth"] != config.model.depth:
        return [f"{config.imagenet_weights} holds a ResNet-{found['depth']} but config.model.depth="
                f"{config.model.depth}"]
    return []


def check_sources(config, workdir: str) -> list[str]:
    """-> problems with init_from stage sources: each must run earlier in the recipe or be finished in workdir."""
    problems = []
    for i, name in enumerate(config.recipe):
        for target, source in config.stages[name].init_from.items():
            if source == "imagenet":
                continue
            if os.sep in source:
                if not paths.absolute(source).is_dir():
                    problems.append(f"stage {name!r} init_from {target}: {source} does not exist (expected a stage "
                                    "folder of a trained workdir, or a checkpoint directory)")
                continue
            if source not in config.stages:
                problems.append(f"stage {name!r} init_from {target}: {source!r} is neither 'imagenet', a stage of the "
                                f"config {list(config.stages)} nor a checkpoint path")
            elif source not in config.recipe[:i] and not (paths.absolute(workdir) / source / "DONE").exists():
                problems.append(f"stage {name!r} starts from stage {source!r}, which neither runs before it in "
                                f"config.recipe {tuple(config.recipe)} nor is finished in {workdir}")
    return problems


def record(workdir: str, name: str) -> dict | None:
    """The recorded {identity, config} of stage `name` in workdir, or None."""
    path = paths.absolute(workdir) / name / RECORD
    if not path.exists():
        return None
    return paths.read_json(path, "it records the config the stage was started with: delete it to resume without "
                                 "checking that the config is unchanged, or start the stage over")


def write_record(config, workdir: str, name: str) -> None:
    """Record stage `name`'s identity and full config in W/<stage>/config.json (process 0)."""
    if jax.process_index() == 0:
        stage_dir = paths.absolute(workdir) / name
        stage_dir.mkdir(parents=True, exist_ok=True)
        paths.write_atomic(stage_dir / RECORD, json.dumps(
            dict(identity=stage_identity(config, name), config=json.loads(config.to_json_best_effort())), indent=1))


def check_records(config, workdir: str) -> list[str]:
    """-> refusals for stages whose recorded identity differs from the config's (epochs: unfinished stages only)."""
    problems = []
    for name in config.recipe:
        recorded = record(workdir, name)
        if recorded is None:
            continue
        old, new = recorded["identity"], stage_identity(config, name)
        if not (paths.absolute(workdir) / name / "DONE").exists():  # an unfinished stage may change its length
            old, new = ({**i, "stage": {k: v for k, v in i["stage"].items() if k != "epochs"}} for i in (old, new))
        changes = diff(old, new)
        if changes:
            problems.append(
                f"stage {name!r} in {workdir} was started with another config; these keys determine its result:\n    "
                + "\n    ".join(changes)
                + f"\n  Rerun with the recorded values (in {paths.absolute(workdir) / name / RECORD}), use another "
                f"--workdir, or start the stage over with --restart_stage {name}")
    return problems


def check(config, workdir: str, *, mesh) -> tuple:
    """All checks before the first step -> (train source, test source); ValueError listing every problem."""
    problems = check_ranges(config)
    if problems:  # the other checks divide by these
        raise ValueError("config problems:\n  " + "\n  ".join(problems))
    for size, what in ((config.batch_size, "batch_size"), (config.eval_batch_size, "eval_batch_size")):
        sharding.check_batch_size(size, mesh, what)
    train_source, test_source = loaders.load_sources(config)
    problems = (check_sources(config, workdir) + check_data(config, train_source, test_source)
                + check_weights(config) + check_records(config, workdir))
    if problems:
        raise ValueError("the recipe cannot run:\n  " + "\n  ".join(problems))
    return train_source, test_source
