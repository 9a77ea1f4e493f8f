"""The recipes: config arguments, the run defaults and the reference stages, as ml_collections configs.

The user-facing config files (configs/*.py) are thin `get_config(arg)` functions calling these; train.py and the
other commands turn the config into specs (ego_jax.specs) once, where the run starts.
Defaults are the reference recipe (shared/reference/ego-rnn.md, "Training recipes"; sparnet.md for MS).
Paths in `trainable` are regexes over '/'-joined nnx state paths; `bn_train` / `dropout_train` are regexes
over module paths (every BatchNorm / Dropout not matched runs in inference mode).
"""

import importlib.util
import os
import re
import sys

import ml_collections

from ego_jax import streams
from ego_jax.data import datasets
from ego_jax.models.lsta import CELL as LSTA_CELL
from ego_jax.models.two_stream import DEFAULT_RGB as JOINT_DEFAULT_RGB

# stage1_backbone=train is a deviation for runs without ImageNet weights (the quickstart): RGB stage 1 then also
# trains the whole backbone (fc included) with its BatchNorms in training mode, instead of the reference's
# frozen backbone with BN in inference mode, which from a random init leaves the ConvLSTM random features to read.
# data: the dataset (ego_jax/data/datasets.py); split: its protocol split k (0 = the dataset's default: GTEA61's
# fixed test subject S2, EGTEA's split 1, ...), which sets the train/test splits; target: EGTEA's label field.
ARGS = dict(frames=25, data="gtea61", split=0, target="action", seed=0, init="imagenet", stage1_backbone="frozen")
# rgb (the two-stream recipe only): its RGB stream, a kind of RGB_STAGES (below).
# init: 'imagenet', 'scratch', or a trained workdir to fine-tune (see finish).
INITS = ("imagenet", "scratch")
CHOICES = dict(
    frames=None,
    data=datasets.NAMES,
    target=("action", "verb", "noun"),
    init=None,
    stage1_backbone=("frozen", "train"),
    rgb=lambda: tuple(RGB_STAGES),
)


def parse_args(
    arg: str | None,
    *,
    spec: dict = ARGS,
    choices: dict = CHOICES,
    example: str = "configs/two_stream.py:frames=16,data=synthetic",
    **defaults,
) -> ml_collections.ConfigDict:
    """'frames=16,data=synthetic' -> ConfigDict of `spec` (overridden by `defaults`, then by `arg`), typed as spec."""
    args = dict(spec, **defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in args:
            raise ValueError(f"config argument {item!r}: expected key=value with key in {sorted(args)}, e.g. {example}")
        args[key] = type(args[key])(value)
    for key, allowed in choices.items():
        allowed = allowed() if callable(allowed) else allowed
        if allowed and key in args and args[key] not in allowed:
            raise ValueError(f"config argument {key}={args[key]!r}: expected one of {allowed}")
    init = args.get("init")
    if init is not None and init not in INITS and not os.path.isdir(init) and not _is_reference(init):
        raise ValueError(
            f"config argument init={init!r}: expected one of {INITS}, a trained workdir to fine-tune "
            "(a folder holding <stage>/DONE) or an authors' released checkpoint (a .pth file)"
        )
    return ml_collections.ConfigDict(args)


def _is_reference(init: str) -> bool:
    return init.endswith(".pth") and os.path.isfile(init)


def base(args) -> ml_collections.ConfigDict:
    """Everything but the stages: data, batch, logging, checkpoints, shared model sizes."""
    c = ml_collections.ConfigDict()
    c.seed = args.seed
    if args.target != "action" and args.data != "egtea":
        raise ValueError(f"config argument target={args.target}: only egtea has verb and noun labels")
    c.num_classes = {"action": datasets.NUM_CLASSES[args.data], "verb": 19, "noun": 51}[args.target]
    c.batch_size = 32
    c.eval_batch_size = 32
    c.dtype = "float32"  # compute dtype; params stay float32 ('bfloat16' on GPU/TPU)
    # XLA options of the train step, a pure speed choice: 'auto' = the backend's measured defaults for the stage's
    # stream kind (ego_jax.train.step.default_compiler_options), '' = XLA's own, or 'xla_name=value;xla_name=value'.
    c.compiler_options = "auto"
    c.schedule_quirk = True  # reference: scheduler stepped at the start of each epoch (decays one epoch early)
    c.imagenet_weights = "data/weights/resnet34_imagenet.npz"
    c.log_every_steps = 10
    c.eval_every_epochs = 5
    c.checkpoint_every_epochs = 10

    protocol = datasets.protocol(args.data, args.split)
    c.data = ml_collections.ConfigDict(
        dict(
            name=args.data,
            data_dir="data/tfds_synthetic" if args.data == "synthetic" else "data/tfds",
            manual_dir=datasets.MANUAL_DIR[args.data],
            builder_config=datasets.BUILDER_CONFIG.get(args.data, "rgb_flow"),
            # GTEA61: the course / paper's fixed split (train S1+S3+S4, test S2)
            train_split=protocol.train,
            test_split=protocol.test,
            target=args.target,
            frames=args.frames,
            stack=5,
            crop=224,
            resize=256,
            flow_eval_stacks=5,  # reference flow protocol: logits averaged over 5 stacks
            ms_threshold=0.01,  # a cell is "moving" above this moving fraction (MS classification target)
            worker_count=4,
            # 'pil': PIL's antialiased bilinear when shrinking, as the reference's torchvision transforms;
            # 'cv2': plain OpenCV bilinear (deviation: faster, differs on the 256 -> 224 crop by up to 12 levels).
            resize_method="pil",
            # RGB frames at floor(linspace(1, N, T, endpoint)): False is Ego-RNN's makeDataset, True LSTA's.
            rgb_endpoint=False,
        )
    )
    # Sizes shared by every stage (FieldReferences below), so one override changes all stages consistently.
    # pool: the RGB classifier reads the spatial mean of c_T ('c', reference) or of h_T ('h', deviation).
    # scan_unroll: the ConvLSTM time scan's unroll, a pure speed choice; 0 = the backend's measured default
    # (ego_jax.models.convlstm.default_unroll), N = unroll N steps (1 = a rolled loop).
    c.model = ml_collections.ConfigDict(dict(depth=34, width=64, pool="c", scan_unroll=0))
    c.recipe = ()
    c.stages = ml_collections.ConfigDict()
    return c


def ego_rnn(c, *, attention: bool, ms_head=None, motion_guide=None) -> dict:
    """EgoRNN kwargs (RGB stream, reference dropout 0.7)."""
    return dict(
        depth=c.model.get_ref("depth"),
        width=c.model.get_ref("width"),
        attention=attention,
        ms_head=ms_head,
        motion_guide=motion_guide,
        pool=c.model.get_ref("pool"),
        scan_unroll=c.model.get_ref("scan_unroll"),
        dropout=0.7,
    )


def flow_resnet(c) -> dict:
    """FlowResNet kwargs (reference dropout 0.5)."""
    return dict(
        stack=c.data.get_ref("stack"), depth=c.model.get_ref("depth"), width=c.model.get_ref("width"), dropout=0.5
    )


def lsta(c) -> dict:
    """LSTA kwargs (the authors' main_rgb.py: memSize 512 = the backbone's 8*width, outPoolSize 100, dropout 0.7)."""
    return dict(
        depth=c.model.get_ref("depth"),
        width=c.model.get_ref("width"),
        pool_classes=100,
        dropout=0.7,
        scan_unroll=c.model.get_ref("scan_unroll"),
    )


def adam(lr: float, milestones, weight_decay: float = 4e-5) -> dict:
    """Reference Adam: eps 1e-4, coupled L2 (Ego-RNN 4e-5, LSTA 5e-4), lr x0.1 at the milestones."""
    return dict(
        name="adam",
        lr=lr,
        weight_decay=weight_decay,
        eps=1e-4,
        momentum=0.0,
        schedule=dict(milestones=tuple(milestones), step_size=0, gamma=0.1),
        param_groups={},
    )


def sgd(lr: float, *, milestones=(), step_size=0, gamma: float) -> dict:
    """Reference SGD: momentum 0.9, coupled weight decay 5e-4."""
    return dict(
        name="sgd",
        lr=lr,
        weight_decay=5e-4,
        eps=0.0,
        momentum=0.9,
        schedule=dict(milestones=tuple(milestones), step_size=step_size, gamma=gamma),
        param_groups={},
    )


NO_MS_LOSS = dict(ms_alpha=1.0, ms_reg_loss="mse")
# The motion guide's one scalar w: Adam moves a parameter by about lr per step, so at stage 2's 1e-4 it could
# travel at most ~0.17 in GTEA61's 1650 stage-2 steps, too little to weigh the motion expert in or out; 1e-2
# (the top of the MS head lrs that sparnet.md reports searched) lets it reach any useful value early on.
MOTION_GUIDE_LR = 1e-2


def rgb_stage1(c, *, attention: bool) -> dict:
    """ConvLSTM + classifier on a frozen ImageNet backbone (BN inference mode); Adam 1e-3, 300 epochs."""
    return dict(
        model=dict(kind="ego_rnn", kwargs=ego_rnn(c, attention=attention)),
        init_from={"backbone": "imagenet"},
        trainable=(r"lstm/.*", r"classifier/.*"),
        bn_train=(),
        dropout_train=(".*",),
        optimizer=adam(1e-3, (25, 75, 150)),
        epochs=300,
        loss=NO_MS_LOSS,
    )


def rgb_stage2(c, *, attention: bool, ms_head=None, ms_reg_loss="mse", motion_guide=None) -> dict:
    """+ layer4 conv1/conv2 kernels and the ImageNet fc (every BN frozen); Adam 1e-4, 150 epochs.

    With an MS head (sparnet.md) the head trains too and the loss is action + ms_alpha * MS loss.
    With a motion guide (ego_jax/models/motion_guided.py) its weight w trains too, in its own parameter
    group at MOTION_GUIDE_LR.
    """
    optimizer = adam(1e-4, (25, 75))
    if motion_guide is not None:
        optimizer["param_groups"] = {"motion_guide": dict(params=(r"motion_guide/.*",), lr=MOTION_GUIDE_LR)}
    return dict(
        model=dict(kind="ego_rnn", kwargs=ego_rnn(c, attention=attention, ms_head=ms_head, motion_guide=motion_guide)),
        init_from={"model": "rgb_stage1"},
        trainable=streams.get("ego_rnn").finetune
        + (r"classifier/.*",)
        + ((r"ms_head/.*",) if ms_head else ())
        + ((r"motion_guide/.*",) if motion_guide is not None else ()),
        bn_train=(),
        dropout_train=(".*",),
        optimizer=optimizer,
        epochs=150,
        loss=dict(ms_alpha=1.0, ms_reg_loss=ms_reg_loss),
    )


LSTA_ADAM = dict(lr=1e-3, milestones=(25, 75, 150), weight_decay=5e-4)  # train_rgb.sh


def lsta_stage1(c) -> dict:
    """LSTA cell + classifier on a frozen ImageNet backbone (BN inference mode); Adam 1e-3, wd 5e-4, 200 epochs."""
    return dict(
        model=dict(kind="lsta", kwargs=lsta(c)),
        init_from={"backbone": "imagenet"},
        trainable=LSTA_CELL + (r"classifier/.*",),
        bn_train=(),
        dropout_train=(".*",),
        optimizer=adam(**LSTA_ADAM),
        epochs=200,
        loss=NO_MS_LOSS,
    )


def lsta_stage2(c) -> dict:
    """+ layer4 conv1/conv2 kernels and the ImageNet fc kernel (every BN frozen), from stage 1.

    The public code gives no stage-2 command: this is train_rgb.sh with --stage 2 (Adam 1e-3, 200 epochs).
    """
    return dict(
        model=dict(kind="lsta", kwargs=lsta(c)),
        init_from={"model": "rgb_stage1"},
        trainable=streams.get("lsta").finetune + (r"classifier/.*",),
        bn_train=(),
        dropout_train=(".*",),
        optimizer=adam(**LSTA_ADAM),
        epochs=200,
        loss=NO_MS_LOSS,
    )


def lsta_data(c) -> None:
    """config.data of LSTA's makeDataset: RGB frames at floor(linspace(1, N, T)) with the last frame included."""
    c.data.rgb_endpoint = True


def flow(c) -> dict:
    """Whole flow ResNet, BN training mode; SGD 1e-2 x0.5 at 150/300/500, 750 epochs."""
    return dict(
        model=dict(kind="flow", kwargs=flow_resnet(c)),
        init_from={"backbone": "imagenet"},
        trainable=(".*",),
        bn_train=(".*",),
        dropout_train=(".*",),
        optimizer=sgd(1e-2, milestones=(150, 300, 500), gamma=0.5),
        epochs=750,
        loss=NO_MS_LOSS,
    )


def joint(c, rgb_stage2: dict) -> dict:
    """Two-stream over the RGB stream of `rgb_stage2` (a stage dict) and the flow stream: group A (lr 1e-2) the joint
    head + what the RGB stream's entry fine-tunes (Ego-RNN: ConvLSTM, layer4 convs, fc), group B (1e-4) flow layer4."""
    optimizer = sgd(1e-2, step_size=1, gamma=0.99)
    optimizer["param_groups"] = {"flow_layer4": dict(params=(r"flow/backbone/layer4/.*",), lr=1e-4)}
    rgb = streams.get(rgb_stage2["model"]["kind"])
    # a copy (the joint stage's overrides stay its own), sharing the FieldReferences to the common sizes
    rgb_kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in rgb_stage2["model"]["kwargs"].items()}
    kwargs = dict(rgb=rgb_kwargs, flow=flow_resnet(c), dropout=0.5)
    if rgb.kind != JOINT_DEFAULT_RGB:  # kept out of the kwargs (and the identity) when the default
        kwargs["rgb_kind"] = rgb.kind
    return dict(
        model=dict(kind="two_stream", kwargs=kwargs),
        init_from={"rgb": "rgb_stage2", "flow": "flow"},
        trainable=(r"classifier/.*",) + tuple("rgb/" + p for p in rgb.finetune) + (r"flow/backbone/layer4/.*",),
        # The RGB stream is fully in inference mode; only flow layer4's BNs and the joint head's dropout train.
        bn_train=(r"flow/backbone/layer4/.*",),
        dropout_train=(r"dropout",),
        optimizer=optimizer,
        epochs=250,
        loss=NO_MS_LOSS,
    )


def _ego_rnn_stages(c) -> dict:
    return dict(rgb_stage1=rgb_stage1(c, attention=True), rgb_stage2=rgb_stage2(c, attention=True))


def _lsta_stages(c) -> dict:
    lsta_data(c)
    return dict(rgb_stage1=lsta_stage1(c), rgb_stage2=lsta_stage2(c))


# The two-stream recipe's RGB stages for each RGB stream it offers (its `rgb` argument): stage 1 and stage 2 as the
# stream's own RGB recipe trains them; the joint stage starts from that stage 2.
RGB_STAGES = dict(ego_rnn=_ego_rnn_stages, lsta=_lsta_stages)


def two_stream_recipe(arg: str | None) -> ml_collections.ConfigDict:
    """RGB stage 1 -> RGB stage 2, flow, then joint two-stream training; `rgb` picks the RGB stream (RGB_STAGES)."""
    args = parse_args(arg, rgb="ego_rnn")
    c = base(args)
    rgb = RGB_STAGES[args.rgb](c)
    return finish(c, args, dict(rgb, flow=flow(c), joint=joint(c, rgb["rgb_stage2"])))


def rgb_recipe(
    arg: str | None, *, attention: bool, ms_head=None, ms_reg_loss="mse", motion_guide=None
) -> ml_collections.ConfigDict:
    """The RGB stream alone: stage 1 -> stage 2 (optionally with the MS head, and its motion guide, in stage 2)."""
    args = parse_args(arg)
    c = base(args)
    return finish(
        c,
        args,
        dict(
            rgb_stage1=rgb_stage1(c, attention=attention),
            rgb_stage2=rgb_stage2(
                c, attention=attention, ms_head=ms_head, ms_reg_loss=ms_reg_loss, motion_guide=motion_guide
            ),
        ),
    )


def override(c: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
    """Set dotted keys ('data.crop', 'stages.rgb_stage2.optimizer.lr'; 'stages.*.epochs' = every stage) in place.

    Keys must exist (a typo is an error naming the key), as with --config.<key>=value on the command line.
    """

    def node(path: str):
        n = c
        for part in filter(None, path.split(".")):
            if not isinstance(n, ml_collections.ConfigDict) or part not in n:
                return None
            n = n[part]
        return n

    for key, value in values.items():
        head, star, rest = key.partition(".*.")
        keys = [f"{head}.{name}.{rest}" for name in (node(head) or {})] if star else [key]
        for target in keys:
            parent, _, leaf = target.rpartition(".")
            n = node(parent)
            if not isinstance(n, ml_collections.ConfigDict) or leaf not in n:
                raise KeyError(f"override {key!r}: the config has no field {target!r}")
            n[leaf] = value
    return c


def finish(c, args, stages: dict) -> ml_collections.ConfigDict:
    """Attach the stages (run in the given order; init=scratch drops ImageNet inits) and lock the config.

    init=W (a trained workdir): fine-tuning; each stage that starts from ImageNet starts instead from the whole model
    of W's stage of the same name (its final checkpoint; a classifier whose class count differs is replaced, and
    the log says so), the later stages from these as usual. init=P.pth (an authors' released checkpoint, one
    stream's model): the same for the one stage of the recipe that starts from ImageNet.
    stage1_backbone=train adds the whole backbone to rgb_stage1's trainable set and puts its BNs in training mode.
    """
    if args.init == "scratch":
        for stage in stages.values():
            stage["init_from"] = {k: v for k, v in stage["init_from"].items() if v != "imagenet"}
    elif _is_reference(args.init):
        first = [name for name, stage in stages.items() if "imagenet" in stage["init_from"].values()]
        if len(first) != 1:
            raise ValueError(
                f"config argument init={args.init}: an authors' checkpoint is one stream's model, but "
                f"{len(first)} stages of this recipe start from ImageNet ({', '.join(first)}): fine-tune "
                "a one-stream recipe (configs/attention.py, configs/flow.py, ...) from it"
            )
        stages[first[0]]["init_from"] = {"model": os.path.abspath(args.init)}
    elif args.init != "imagenet":
        for name, stage in stages.items():
            if "imagenet" in stage["init_from"].values():
                stage["init_from"] = {"model": os.path.join(os.path.abspath(args.init), name)}
    if args.stage1_backbone == "train":
        if "rgb_stage1" not in stages:
            raise ValueError(
                f"config argument stage1_backbone=train: this recipe has no rgb_stage1 (stages {list(stages)})"
            )
        s1 = stages["rgb_stage1"]
        s1["trainable"], s1["bn_train"] = tuple(s1["trainable"]) + (r"backbone/.*",), (r"backbone/.*",)
    c.recipe = tuple(stages)
    c.stages = ml_collections.ConfigDict(stages)
    c.lock()
    return c


# The quickstart (configs/quickstart.py, scripts/quickstart.sh): the two-stream recipe shrunk to run end to end on
# 2 CPU cores in minutes, on the synthetic set, from scratch. Its sizes are overrides of any recipe config (the
# experiment suites' preset=quickstart uses them too).
QUICKSTART_ARGS = dict(data="synthetic", init="scratch", stage1_backbone="train")
QUICKSTART_SIZES = {
    "model.depth": 18,
    "model.width": 8,
    "data.crop": 64,
    "data.resize": 80,
    "data.stack": 3,
    "data.flow_eval_stacks": 3,
    "data.worker_count": 0,
    "batch_size": 8,
    "eval_batch_size": 8,
    "log_every_steps": 10,
    "eval_every_epochs": 10,
    "checkpoint_every_epochs": 10,
}


def quickstart(arg: str | None) -> ml_collections.ConfigDict:
    """The quickstart's two-stream recipe: QUICKSTART_SIZES, 5 frames, 30-100 epochs with milestones scaled down."""
    args = parse_args(arg, frames=5, **QUICKSTART_ARGS)
    c = base(args)
    override(c, QUICKSTART_SIZES)
    stages = _ego_rnn_stages(c)
    stages.update(flow=flow(c), joint=joint(c, stages["rgb_stage2"]))
    for stage, epochs, milestones in (("rgb_stage1", 40, (30,)), ("rgb_stage2", 30, (20,)), ("flow", 100, (70,))):
        stages[stage]["epochs"] = epochs
        stages[stage]["optimizer"]["schedule"]["milestones"] = milestones
    stages["joint"]["epochs"] = 30
    return finish(c, args, stages)


def from_file(path: str, arg: str | None = None):
    """A config file ('configs/flow.py', relative to the working directory) -> its get_config(arg).

    Each file is executed once per process (as a module named after its path), so a file that registers a stream
    kind (ego_jax.streams) may be read again."""
    path = os.path.abspath(path)
    name = "ego_jax_config_file." + re.sub(r"\W", "_", path)
    if name not in sys.modules:
        if not os.path.exists(path):
            raise FileNotFoundError(f"config file {path} not found (paths are relative to the working directory)")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name].get_config(arg)
