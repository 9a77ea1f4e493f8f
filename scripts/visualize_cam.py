"""CAM attention (and, for MS models, predicted vs target motion maps) of a trained stage on one test clip.

  python scripts/visualize_cam.py --config configs/attention.py[:args] --workdir W --stage rgb_stage2 \\
      --clip S2/take_bread/1        (a clip id of the test split, or its index in the split)

Rows of the PNG grid: the T centre-cropped frames the model sees, the CAM of each frame (bilinear
upsampling, JET, blended), the MS head's moving probability and the motion-map target (MS models only).
Writes W/<stage>/cam/<clip>.png and the same image to TensorBoard (W/<stage>, tag cam/<clip>).
A two_stream stage shows the attention of its RGB stream; flow stages have no CAM.
Multi-process (see README, "Scaling out"): launched like scripts/train.py, with the same launch flags.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ego_jax.train import cli, distributed  # noqa: E402

config_flags.DEFINE_config_file("config", None, "experiment config file[:key=value,...]", lock_config=True)
flags.DEFINE_string("workdir", None, "the training workdir (W/<stage>/checkpoints)")
flags.DEFINE_string("stage", None, "stage whose final checkpoint to show (default: the recipe's last stage)")
flags.DEFINE_string("clip", "0", "clip id of the test split (e.g. S2/take_bread/1) or its index in the split")
flags.DEFINE_string("split", None, "split the clip is taken from (default: config.data.test_split)")
flags.DEFINE_bool("allow_unfinished", False, "use the newest good checkpoint, finished or not (the title names "
                  "its step)")
flags.DEFINE_integer("min_size", 160, "frames smaller than this (px) are enlarged for display")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()
FLAGS = flags.FLAGS


def find_clip(source, clip: str) -> int:
    """Clip id ('S2/take_bread/1') or decimal index -> index in `source`; a clear error listing some ids."""
    if clip.isdigit():
        if int(clip) >= len(source):
            raise ValueError(f"--clip {clip}: the split has {len(source)} clips (indices 0..{len(source) - 1})")
        return int(clip)
    ids = [source[i]["clip_id"] for i in range(len(source))]
    ids = [x.decode() if isinstance(x, bytes) else str(x) for x in ids]
    if clip not in ids:
        raise ValueError(f"--clip {clip!r} is not in the split; its clips look like {ids[:5]} (or pass an index)")
    return ids.index(clip)


def visualize(config, workdir: str, *, stage: str | None, clip: str, split: str | None = None,
              allow_unfinished: bool = False, min_size: int = 160) -> str:
    """Draws the grid of one clip for a stage's final checkpoint; -> path of the PNG."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415  (heavy imports after flag parsing)
    import numpy as np  # noqa: PLC0415
    from clu import metric_writers  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    from ego_jax import streams  # noqa: PLC0415
    from ego_jax.data.gtea61.classes import CLASSES  # noqa: PLC0415
    from ego_jax.data.pipeline import build_loader  # noqa: PLC0415
    from ego_jax.train import evaluate, loaders, recipes, sharding  # noqa: PLC0415
    from ego_jax.viz import cam, plots  # noqa: PLC0415

    stage = evaluate.stage_of(config, stage)
    kind = config.stages[stage].model.kind
    if "rgb" not in streams.get(kind).inputs:
        raise ValueError(f"stage {stage!r} is a {kind} model without RGB input: it has no CAM; pick a stage whose "
                         "model reads RGB frames")
    model, meta = evaluate.load_stage_model(config, workdir, stage, allow_unfinished=allow_unfinished)
    # A model reading more than RGB (two_stream) shows the attention of its RGB stream, held as `.rgb`.
    rgb_model = model if tuple(streams.get(kind).inputs) == ("rgb",) else getattr(model, "rgb", None)
    rgb_stream = streams.of_model(rgb_model) if rgb_model is not None else None
    if rgb_stream is None or tuple(rgb_stream.inputs) != ("rgb",):
        raise ValueError(f"stage {stage!r}: its {kind} model has no registered RGB stream (an RGB-only stream "
                         "kind, itself or as its `.rgb`) whose attention could be drawn")
    source = evaluate.test_source(config, split)
    index = find_clip(source, clip)
    example = source[index]
    clip_id = example["clip_id"].decode() if isinstance(example["clip_id"], bytes) else str(example["clip_id"])

    grid = loaders.ms_grid(config, rgb_model, rgb_stream.kind)
    spec = loaders.clip_spec(config, rgb_stream.loader, train=False, ms_grid=grid, ms_head=recipes.ms_kind(
        config.stages[stage]))
    loader = build_loader([example], spec, global_batch_size=1, num_epochs=1,
                          sharding=sharding.replicated(sharding.make_mesh()))  # every process: the whole clip
    batch = next(iter(loader))
    out = nnx.jit(lambda m, b: rgb_stream.forward(m, b, jnp.dtype(config.dtype)))(rgb_model, {"rgb": batch["rgb"]})
    batch, out = jax.tree.map(np.asarray, (batch, out))  # replicated: every process holds the whole result
    if out.get("attention") is None and out.get("ms") is None:
        raise ValueError(f"stage {stage!r}: its {rgb_stream.kind} model has no attention (the ConvLSTM ablation) and "
                         "no MS head; nothing to draw")

    label = int(batch["label"][0])
    step = f"step {meta['step']}" + ("" if meta["finished"] else " (unfinished)")
    title = f"{stage} {step}\n{clip_id}\ntrue {CLASSES[label]}"
    if rgb_model is model:  # a two_stream stage's RGB classifier is not the joint model's: no prediction shown
        title += f"\npred {CLASSES[int(np.argmax(out['logits'][0]))]}"
    image = cam.cam_grid(
        batch["rgb"][0],
        attention=None if out.get("attention") is None else out["attention"][0],
        ms_pred=None if out.get("ms") is None else out["ms"][0],
        ms_target=batch["ms_target"][0] if "ms_target" in batch else None,
        title=title, min_size=min_size)
    path = os.path.join(workdir, stage, "cam", clip_id.replace("/", "_") + ".png")
    if not distributed.is_writer():  # one writer of the shared workdir
        return path
    plots.write_png(path, image)
    writer = metric_writers.create_default_writer(os.path.join(workdir, stage), asynchronous=False)
    writer.write_images(meta["step"], {f"cam/{clip_id}": image[None]})
    writer.close()
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    cli.setup_logs()
    distributed.initialize_from_flags()
    try:
        path = visualize(FLAGS.config, os.path.abspath(FLAGS.workdir), stage=FLAGS.stage, clip=FLAGS.clip,
                         split=FLAGS.split, allow_unfinished=FLAGS.allow_unfinished, min_size=FLAGS.min_size)
    except (FileNotFoundError, ValueError) as e:
        logging.error("%s", e)
        sys.exit(f"error: {e}")
    print(path)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
