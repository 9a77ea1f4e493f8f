"""What determines a stage's trained parameters: `stage_identity(config, name)`; every other key is harmless.

Result-determining: the seed, the global batch size, the compute dtype, the schedule quirk, the number of
classes, what data the stage trains on (dataset name, build config, train split, crop, resize, resize
method; the motion-map threshold for an MS classification stage; for a stage that reads RGB frames, their
count and which ones, data.rgb_endpoint), the stage itself (model, init_from, trainable and mode filters,
optimiser and schedule, epochs, loss; the flow stack size through the flow model's kwargs) and, recursively,
the identity of every stage it initialises from (and the ImageNet weights file when it starts from them).
Harmless (free to change between runs and on resume): logging, evaluation and checkpoint cadence, the eval
batch size, flow eval stacks and test split (they change reports, not parameters), the RGB frame count of a
flow stage (it samples flow stacks only), worker count, the data and manual directories (where the data
lives, not what it is), the scan unroll (a speed choice), and the other stages.
The experiment runner identifies a stage by this dict; a resumed stage must match its recorded one (see
`diff`), except that an unfinished stage may change its epochs (the schedule and the data order of the epochs
already run do not depend on the total; the loop checks the stage has not passed the new end).
"""
import json

# Top-level and data keys that determine every stage's result.
CONFIG_KEYS = ("seed", "num_classes", "batch_size", "dtype", "schedule_quirk")
# data.stack is not here: it reaches the stages that read flow through their model kwargs (the flow stem).
DATA_KEYS = ("name", "builder_config", "train_split", "frames", "crop", "resize", "ms_threshold", "resize_method")
STAGE_KEYS = ("model", "init_from", "trainable", "bn_train", "dropout_train", "optimizer", "epochs", "loss")
# Model kwargs that change speed only.
SPEED_ONLY = ("scan_unroll",)


def _plain(x):
    """ConfigDict / tuples -> JSON-normal dicts and lists (so a recorded identity compares equal to a fresh one)."""
    return json.loads(json.dumps(x.to_dict() if hasattr(x, "to_dict") else x))


def _without(tree, keys):
    if isinstance(tree, dict):
        return {k: _without(v, keys) for k, v in tree.items() if k not in keys}
    return tree


def stage_identity(config, name: str) -> dict:
    """-> JSON-able dict of everything that determines stage `name`'s trained parameters (see module doc)."""
    stage = config.stages[name]
    ident = {k: _plain(config[k]) for k in CONFIG_KEYS}
    head = stage.model.kwargs.get("ms_head")
    reads_rgb = stage.model.kind != "flow"
    ident["data"] = {k: _plain(config.data[k]) for k in DATA_KEYS
                     if (k != "ms_threshold" or (head and head.kind == "cls"))  # the MS classification target
                     and (k != "frames" or reads_rgb)}
    if reads_rgb:  # which RGB frames it reads (a flow stage stays shareable between recipes and frame counts)
        ident["data"]["rgb_endpoint"] = _plain(config.data.rgb_endpoint)
    if config.data.get("target", "action") != "action":  # EGTEA's verb or noun labels (absent: the action)
        ident["data"]["target"] = config.data.target
    ident["stage"] = {k: _without(_plain(stage[k]), SPEED_ONLY) for k in STAGE_KEYS}
    sources = {}
    for target, source in stage.init_from.items():
        if source == "imagenet":
            sources[target] = {"imagenet": config.imagenet_weights}
        elif source in config.stages:
            sources[target] = stage_identity(config, source)
        else:
            sources[target] = {"checkpoint": source}
    ident["init_from"] = sources
    return ident


def _flat(tree, prefix=""):
    if isinstance(tree, dict) and tree:
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def diff(recorded: dict, current: dict) -> list[str]:
    """Two identities -> ['stage.optimizer.lr: 0.001 -> 0.01', ...] for every key that differs (empty: same)."""
    a, b = _flat(recorded), _flat(current)
    missing = "(absent)"
    return [f"{k}: {a.get(k, missing)} -> {b.get(k, missing)}" for k in sorted(a.keys() | b.keys())
            if a.get(k, missing) != b.get(k, missing)]
