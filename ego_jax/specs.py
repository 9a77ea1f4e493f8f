"""Typed, frozen specs of a run, built once from its ml_collections config where the run starts.

    run = specs.RunSpec.from_config(config)   # every range checked; ValueError listing every problem
    run.batch_size, run.data.crop, run.stage("rgb_stage2").optimizer.lr, run.stage("flow").model.stream
    specs.identity(run, "rgb_stage2")          # what determines the stage's trained parameters (a dict)
    specs.RunSpec.from_config(json.loads(W/config.json))   # a workdir's recorded run (`run.to_dict()`)

RunSpec   seed, num_classes, batch sizes, dtype, cadences, data (DataSpec), model (the shared sizes the
          recipe's stages reference), recipe (stage names in order), stages {name: StageSpec}
DataSpec  which dataset build and splits, the clip sizes and sampling; `clip_spec(loader, ...)` -> ClipSpec
StageSpec model (ModelSpec: kind, kwargs; its `stream` entry), init_from, trainable / bn_train / dropout_train
          regexes, optimizer (OptimSpec, ScheduleSpec, ParamGroupSpec), epochs, loss (LossSpec)

Library code takes these specs (or plain values), never the config. Each field declares in its metadata what
it affects (`affects`): RESULT (the stage's trained parameters), REPORT (what its evaluation reports, not its
parameters) or None (harmless: cadences, paths, workers, speed choices), optionally only `when` a predicate on
the stage holds (the frame count matters to stages that read RGB). `identity` and `report` are derived from
that metadata alone, so a new field cannot be forgotten by the resume check or the suites' stage sharing: it
must say what it affects (tests/test_specs.py checks that every field does). A None value, and a field at its
declared default, are left out of an identity: a new field gets the default that keeps the behaviour before it
(a config recorded without it reads back with it), so adding a field keeps every existing stage's key.
"""

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
from flax.core import FrozenDict

from ego_jax import streams
from ego_jax.data.clip_spec import ClipSpec, features
from ego_jax.data.transforms import METHODS

RESULT, REPORT = "result", "report"
OPTIMIZERS = ("adam", "sgd")


def field(
    affects: str | None, *, when: Callable[["StageSpec"], bool] | None = None, view=None, default=dataclasses.MISSING
):
    """A spec field that determines a stage's RESULT, its REPORT, or neither (None), optionally only `when`.

    view(spec) -> the value an identity records instead of the field's own (e.g. model kwargs minus speed-only).
    """
    return dataclasses.field(default=default, metadata=dict(affects=affects, when=when, view=view))


class SpecError(ValueError):
    """Problems of a config, each 'key=value: expected ...'; the message lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("config problems:\n  " + "\n  ".join(self.problems))


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise SpecError(problems)


def _is_int(x, low: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= low


def _ints(spec, names, low: int = 1) -> list[str]:
    word = "an integer >= 1" if low == 1 else f"an integer >= {low}"
    return [f"{n}={getattr(spec, n)!r}: expected {word}" for n in names if not _is_int(getattr(spec, n), low)]


def _freeze(x):
    """Nested dicts / lists -> FrozenDicts / tuples (specs are immutable and picklable)."""
    if isinstance(x, Mapping):
        return FrozenDict({k: _freeze(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    return x


def plain(x):
    """Spec / FrozenDict / tuple -> JSON-normal dicts and lists (as a recorded identity reads back)."""
    if dataclasses.is_dataclass(x):
        return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Mapping):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


def _reads_rgb(stage: "StageSpec") -> bool:
    return stage.model.stream.reads_rgb


def _ms_classification(stage: "StageSpec") -> bool:
    return stage.model.ms_target == "cls"


def _flow_protocol(stage: "StageSpec") -> bool:  # the protocol that averages flow stacks
    return stage.model.stream.protocol == "flow"


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """config.data: the dataset build, its splits and the clips a loader makes of it."""

    name: str = field(RESULT)  # 'gtea61' | 'synthetic' (recipes.DATA)
    data_dir: str = field(None)  # where the build lives, not what it is
    manual_dir: str = field(None)
    builder_config: str = field(RESULT)  # tfds build config ('all', 'rgb_flow', ...)
    train_split: str = field(RESULT)  # e.g. 'S1+S3+S4'
    test_split: str = field(REPORT)
    frames: int = field(RESULT, when=_reads_rgb)  # RGB frames per clip (a flow stage samples flow stacks only)
    # Flow frames per stack: it reaches the stages that read flow through their model kwargs (the flow stem).
    stack: int = field(None)
    crop: int = field(RESULT)
    resize: int = field(RESULT)
    flow_eval_stacks: int = field(REPORT, when=_flow_protocol)  # the flow protocol averages this many stacks
    ms_threshold: float = field(RESULT, when=_ms_classification)  # MS classification target: moving above this
    worker_count: int = field(None)
    resize_method: str = field(RESULT)  # 'pil' (reference) | 'cv2' (data.transforms)
    rgb_endpoint: bool = field(RESULT, when=_reads_rgb)  # RGB frames at floor(linspace(1, N, T, endpoint))
    target: str = field(RESULT, default="action")  # the label field: EGTEA's 'verb' or 'noun', else 'action'

    def __post_init__(self):
        problems = _ints(self, ("frames", "stack", "crop", "resize", "flow_eval_stacks"))
        problems += _ints(self, ("worker_count",), low=0)
        if _is_int(self.crop, 1) and _is_int(self.resize, 1) and self.crop > self.resize:
            problems.append(f"crop={self.crop} is larger than resize={self.resize}")
        if self.resize_method not in METHODS:
            problems.append(f"resize_method={self.resize_method!r}: expected one of {METHODS}")
        _raise_if(problems)

    def clip_spec(
        self, loader: str, *, train: bool, ms_grid=None, ms_target: str | None = None, eval_stacks: int = 1
    ) -> ClipSpec:
        """The clips of a `loader` ('rgb' | 'flow' | 'two_stream') over this data.

        ms_grid (h, w): also make motion-map targets on that grid, binarised at ms_threshold for an MS
        classification head (ms_target 'cls'), moving fractions otherwise. eval_stacks: flow stacks per eval clip.
        """
        return ClipSpec(
            loader,
            train,
            frames=self.frames,
            stack=self.stack,
            crop=self.crop,
            resize=self.resize,
            ms_grid=None if ms_grid is None else tuple(ms_grid),
            ms_threshold=self.ms_threshold if ms_grid and ms_target == "cls" else None,
            eval_stacks=eval_stacks,
            method=self.resize_method,
            rgb_endpoint=self.rgb_endpoint,
        )


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A stage's model: its stream kind (ego_jax.streams) and the kwargs its entry builds it with."""

    kind: str = field(RESULT)
    kwargs: Mapping[str, Any] = field(RESULT, view=lambda m: m.stream.result_kwargs(m.kwargs))

    def __post_init__(self):
        try:
            streams.get(self.kind)
        except ValueError as e:
            raise SpecError([f"kind={self.kind!r}: {e}"]) from None
        object.__setattr__(self, "kwargs", _freeze(self.kwargs))

    @property
    def stream(self) -> streams.Stream:
        return streams.get(self.kind)

    @property
    def ms_head(self) -> Mapping | None:
        """The motion-segmentation head's kwargs (its entry knows where they are), or None."""
        return self.stream.ms_head_of(self.kwargs)

    @property
    def ms_target(self) -> str | None:
        """'cls' | 'reg': what the MS head predicts (moving or not / the moving fraction per cell), or None."""
        return self.ms_head["kind"] if self.ms_head else None

    def features(self) -> tuple[str, ...]:
        """Dataset features its training and evaluation read (e.g. ('rgb', 'mmaps'))."""
        return features(self.stream.loader, motion_maps=self.ms_head is not None)

    def build_kwargs(self) -> dict:
        """Its kwargs as plain (mutable) dicts, for the stream's builder."""
        return {k: _thaw(v) for k, v in self.kwargs.items()}


def _thaw(x):
    return {k: _thaw(v) for k, v in x.items()} if isinstance(x, Mapping) else x


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """lr x gamma at each milestone epoch, or every step_size epochs (ego_jax.train.optim.lr_schedule)."""

    milestones: tuple[int, ...] = field(RESULT)
    step_size: int = field(RESULT)
    gamma: float = field(RESULT)

    def __post_init__(self):
        object.__setattr__(self, "milestones", tuple(self.milestones))
        problems = _ints(self, ("step_size",), low=0)
        if self.milestones and self.step_size:
            problems.append(f"milestones={self.milestones} and step_size={self.step_size}: give one, not both")
        if not all(_is_int(m, 1) for m in self.milestones):
            problems.append(f"milestones={self.milestones}: expected epochs (integers >= 1)")
        _raise_if(problems)


@dataclasses.dataclass(frozen=True)
class ParamGroupSpec:
    """Trainable parameters (path regexes) optimised at their own base lr."""

    params: tuple[str, ...] = field(RESULT)
    lr: float = field(RESULT)

    def __post_init__(self):
        object.__setattr__(self, "params", tuple(self.params))


@dataclasses.dataclass(frozen=True)
class OptimSpec:
    """The reference optimisers: coupled weight decay, parameter groups (ego_jax.train.optim.make_optimizer)."""

    name: str = field(RESULT)  # 'adam' | 'sgd'
    lr: float = field(RESULT)  # the base lr of the trainable parameters no group claims
    weight_decay: float = field(RESULT)  # coupled L2, added to the gradient (torch's weight_decay)
    eps: float = field(RESULT)  # Adam's
    momentum: float = field(RESULT)  # SGD's (0: plain SGD)
    schedule: ScheduleSpec = field(RESULT)
    param_groups: Mapping[str, ParamGroupSpec] = field(RESULT)  # {group: its params and base lr}

    def __post_init__(self):
        object.__setattr__(self, "param_groups", FrozenDict(self.param_groups))
        _raise_if([f"name={self.name!r}: expected one of {OPTIMIZERS}"] if self.name not in OPTIMIZERS else [])


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """Cross-entropy + ms_alpha * the MS loss (ms_reg_loss: the regression head's loss)."""

    ms_alpha: float = field(RESULT)
    ms_reg_loss: str = field(RESULT)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage of a recipe (ego_jax.recipes): what it trains, from where, how long, with what."""

    name: str = field(None)  # its directory W/<name>; the suites' store key starts with it
    model: ModelSpec = field(RESULT)
    init_from: Mapping[str, str] = field(RESULT)  # {target ('model' or a submodule path): 'imagenet'|stage|path}
    trainable: tuple[str, ...] = field(RESULT)  # regexes over '/'-joined nnx state paths
    bn_train: tuple[str, ...] = field(RESULT)  # regexes over module paths: BatchNorms in training mode
    dropout_train: tuple[str, ...] = field(RESULT)
    optimizer: OptimSpec = field(RESULT)
    epochs: int = field(RESULT)
    loss: LossSpec = field(RESULT)

    def __post_init__(self):
        for name in ("trainable", "bn_train", "dropout_train"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "init_from", FrozenDict(self.init_from))
        _raise_if(_ints(self, ("epochs",)))


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A whole run: the settings every stage shares, the data, and the recipe's stages."""

    seed: int = field(RESULT)
    num_classes: int = field(RESULT)  # 0: the dataset build's class count (data=folder; loaders.resolve_classes)
    batch_size: int = field(RESULT)  # global, over every device and process
    eval_batch_size: int = field(None)  # padding is excluded from every count
    dtype: str = field(RESULT)  # compute dtype ('float32', 'bfloat16'); parameters stay float32
    compiler_options: str = field(None)  # XLA options of the train step: speed only (ego_jax.train.step)
    schedule_quirk: bool = field(RESULT)  # the reference steps its lr scheduler at the start of each epoch
    # ImageNet artifact: recorded in the identity of the stages that start from it (see `identity`).
    imagenet_weights: str = field(None)
    log_every_steps: int = field(None)
    eval_every_epochs: int = field(None)
    checkpoint_every_epochs: int = field(None)
    data: DataSpec = field(RESULT)
    # The sizes the recipe's stages share (depth, width, ...): they reach a result through each stage's kwargs.
    model: Mapping[str, Any] = field(None)
    recipe: tuple[str, ...] = field(None)  # the stages train.py runs, in order
    stages: Mapping[str, StageSpec] = field(None)  # each stage's own identity holds what determines it

    def __post_init__(self):
        object.__setattr__(self, "recipe", tuple(self.recipe))
        object.__setattr__(self, "model", _freeze(self.model))
        object.__setattr__(self, "stages", FrozenDict(self.stages))
        problems = _ints(
            self, ("batch_size", "eval_batch_size", "log_every_steps", "eval_every_epochs", "checkpoint_every_epochs")
        )
        problems += _ints(self, ("seed", "num_classes"), low=0)
        try:
            if not jnp.issubdtype(jnp.dtype(self.dtype), jnp.floating):
                raise TypeError
        except TypeError:
            problems.append(f"dtype={self.dtype!r}: expected a float dtype name, e.g. 'float32' or 'bfloat16'")
        problems += [
            f"recipe names stage {n!r}; defined stages: {list(self.stages)}"
            for n in self.recipe
            if n not in self.stages
        ]
        _raise_if(problems)

    def stage(self, name: str) -> StageSpec:
        """The stage `name`; a clear error listing the stages."""
        if name not in self.stages:
            raise ValueError(f"stage {name!r} is not in the config; its stages are {list(self.stages)}")
        return self.stages[name]

    def to_dict(self) -> dict:
        """JSON-able dict of every field; `from_config` reads it back (W/config.json)."""
        return plain(self)

    @classmethod
    def from_config(cls, config) -> "RunSpec":
        """ml_collections ConfigDict (or its to_dict / JSON) -> RunSpec; SpecError listing every problem."""
        return _build(cls, config.to_dict() if hasattr(config, "to_dict") else config, "config")


# Nested specs of each spec's fields (the rest are plain values).
_NESTED = {
    RunSpec: dict(data=DataSpec, stages=StageSpec),
    StageSpec: dict(model=ModelSpec, optimizer=OptimSpec, loss=LossSpec),
    OptimSpec: dict(schedule=ScheduleSpec, param_groups=ParamGroupSpec),
}
_MAPS = {(RunSpec, "stages"), (OptimSpec, "param_groups")}  # name -> spec mappings


def _build(cls, values, where: str, problems: list | None = None):
    """values (a dict) -> cls, its nested specs built first; every problem named by its config key (None: some)."""
    outer, problems = problems is None, [] if problems is None else problems
    before = len(problems)
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(values, Mapping):
        problems.append(f"{where}={values!r}: expected a dict with the keys {names}")
        values = {}
    if cls is StageSpec:  # a stage is named by its key in config.stages
        values = {**values, "name": where.rpartition(".")[2]}
    problems += [
        f"{where}.{k}: not a field of {cls.__name__} (ego_jax/specs.py), whose fields are {names}"
        for k in sorted(set(values) - set(names))
    ]
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values and f.default is dataclasses.MISSING]
    problems += [f"{where}.{k}: missing" for k in missing]
    kwargs = {k: values[k] for k in names if k in values}
    for key, sub in _NESTED.get(cls, {}).items():
        if key in kwargs and (cls, key) in _MAPS:
            kwargs[key] = {n: _build(sub, v, f"{where}.{key}.{n}", problems) for n, v in (kwargs[key] or {}).items()}
        elif key in kwargs:
            kwargs[key] = _build(sub, kwargs[key], f"{where}.{key}", problems)
    built = None
    if not missing:  # checked even when a nested spec failed (None), so every problem is listed at once
        try:
            built = cls(**kwargs)
        except SpecError as e:
            problems += [f"{where}.{p}" for p in e.problems]
    if outer:
        _raise_if(problems)
    return built if len(problems) == before else None


def _fields(spec, stage: StageSpec, affects: str) -> dict:
    """{field: value} of `spec`'s fields that affect `affects` for `stage`, nested specs recursed (RESULT)."""
    out = {}
    for f in dataclasses.fields(spec):
        meta = f.metadata
        if meta["affects"] != affects or (meta["when"] is not None and not meta["when"](stage)):
            continue
        value = meta["view"](spec) if meta["view"] else getattr(spec, f.name)
        if f.default is not dataclasses.MISSING and value == f.default:
            continue
        out[f.name] = _fields(value, stage, RESULT) if dataclasses.is_dataclass(value) else plain(value)
    return out


def normalise(tree):
    """An identity (or one recorded by an earlier ego_jax) with its None values left out, recursively."""
    if isinstance(tree, Mapping):
        return {k: normalise(v) for k, v in tree.items() if v is not None}
    if isinstance(tree, (list, tuple)):
        return [normalise(v) for v in tree]
    return tree


def identity(run: RunSpec, name: str) -> dict:
    """-> JSON-able dict of everything that determines stage `name`'s trained parameters.

    The RESULT fields of the run, of its data (those whose `when` holds for this stage) and of the stage, and the
    identity of each source it initialises from: another stage's (recursively), the ImageNet weights file, or
    a checkpoint path. None values are left out (see `normalise`).
    """
    stage = run.stage(name)
    ident = _fields(run, stage, RESULT)
    ident["stage"] = _fields(stage, stage, RESULT)
    sources = {}
    for target, source in stage.init_from.items():
        if source == "imagenet":
            sources[target] = {"imagenet": run.imagenet_weights}
        elif source in run.stages:
            sources[target] = identity(run, source)
        else:
            sources[target] = {"checkpoint": source}
    ident["init_from"] = sources
    return normalise(ident)


def report(run: RunSpec, name: str) -> dict:
    """-> the REPORT fields of stage `name`: what its evaluation report depends on beyond its parameters."""
    stage = run.stage(name)
    return normalise({**_fields(run, stage, REPORT), **_fields(run.data, stage, REPORT)})


def _flat(tree, prefix=""):
    if isinstance(tree, dict) and tree:
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def diff(recorded: dict, current: dict) -> list[str]:
    """Two identities -> ['stage.optimizer.lr: 0.001 -> 0.01', ...] for every key that differs (empty: same)."""
    a, b = _flat(json.loads(json.dumps(recorded))), _flat(json.loads(json.dumps(current)))
    missing = "(absent)"
    return [
        f"{k}: {a.get(k, missing)} -> {b.get(k, missing)}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k, missing) != b.get(k, missing)
    ]
