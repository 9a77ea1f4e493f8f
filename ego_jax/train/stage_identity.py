"""A stage's identity: the config fields that determine its trained weights and its eval.json, hashed.

Two stages with equal identity train to the same result (same code), so an experiment trains it once and
every run that needs it points at it. What is in: the stage's own config (model, init_from, trainable
filters, BN/dropout modes, optimiser, schedule, epochs, loss when it has an MS head), seed, batch size,
dtype, schedule quirk, the data fields its loader reads (frames only when it reads RGB frames, flow stack
sizes only when it reads flow, the MS threshold only for an MS classification head), the train and test
splits, the ImageNet weights file when it starts from them, and the identities of the stages it
initialises from. What is out: logging / evaluation / checkpoint cadence, eval batch size, loader
workers, the ConvLSTM scan unroll (speed only), model options left at None (absent features), and paths
of the data (moving a dataset must not retrain every stage). The code version is not in: after a change
to what a stage computes, use a fresh workdir.
"""
import hashlib
import json

from ego_jax.train import evaluate, recipes

_SPEED_ONLY_KWARGS = ("scan_unroll",)


def _model(model_cfg) -> dict:
    """Stage model config without speed-only kwargs and without None (absent) features, nested kwargs too.

    Dropping None keeps identities stable when a new optional model feature (default None) is added to the code.
    """
    def strip(kw):
        return {k: strip(v) if isinstance(v, dict) else v for k, v in kw.items()
                if k not in _SPEED_ONLY_KWARGS and v is not None}

    return dict(kind=model_cfg.kind, kwargs=strip(model_cfg.kwargs.to_dict()))


def result_fields(config, stage: str) -> dict:
    """The fields of `config` that determine stage `stage`'s result (JSON-able, init sources resolved)."""
    s = config.stages[stage]
    d = config.data
    loader = evaluate.LOADER[evaluate.PROTOCOL_OF_KIND[s.model.kind]]["kind"]
    data = dict(name=d.name, train_split=d.train_split, test_split=d.test_split, crop=d.crop, resize=d.resize,
                resize_method=d.resize_method)
    if loader in ("rgb", "two_stream"):
        data["frames"] = d.frames
    if loader in ("flow", "two_stream"):
        data["stack"] = d.stack
    if s.model.kind == "flow":
        data["flow_eval_stacks"] = d.flow_eval_stacks
    ms = recipes.ms_kind(s)
    if ms == "cls":
        data["ms_threshold"] = d.ms_threshold
    init = {}
    for target, source in s.init_from.items():
        if source == "imagenet":
            init[target] = dict(imagenet=config.imagenet_weights)
        elif source in config.stages:
            init[target] = dict(stage=identity(config, source))
        else:  # a checkpoint directory outside the recipe: its path is all we know of it
            init[target] = dict(path=source)
    return dict(seed=config.seed, num_classes=config.num_classes, batch_size=config.batch_size, dtype=config.dtype,
                schedule_quirk=config.schedule_quirk, data=data, model=_model(s.model), init_from=init,
                trainable=list(s.trainable), bn_train=list(s.bn_train), dropout_train=list(s.dropout_train),
                optimizer=s.optimizer.to_dict(), epochs=s.epochs, loss=s.loss.to_dict() if ms else None)


def identity(config, stage: str) -> str:
    """'<stage>-<12 hex digits>': the stage name (for people browsing the store) and a hash of result_fields."""
    text = json.dumps(result_fields(config, stage), sort_keys=True)
    return f"{stage}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
