"""CAM comparison: several trained (workdir, stage) models on the same clips, one PNG per clip (+ TensorBoard).

Clips are found by id through the dataset's clip index (gtea61.clip_ids): one record is read per clip.
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from clu import metric_writers
from etils import epath
from flax import nnx

from ego_jax import streams
from ego_jax.data import gtea61
from ego_jax.data.pipeline import build_loader
from ego_jax.train import clips, distributed, evaluate, recipes, sharding
from ego_jax.viz import cam


def workdir_config(workdir) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (W/config.json, written by train.py and experiment.py)."""
    path = epath.Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass --config (the config {workdir} was trained with)")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def find_clip(config, split: str, clip: str) -> int:
    """Clip id ('S2/take_bread/1') or decimal index -> index in `split`; a clear error listing some ids."""
    ids = gtea61.clip_ids(split, data_dir=config.data.data_dir, config=config.data.builder_config)
    if clip.isdigit():
        if int(clip) >= len(ids):
            raise ValueError(f"clip {clip}: the split has {len(ids)} clips (indices 0..{len(ids) - 1})")
        return int(clip)
    if clip not in ids:
        raise ValueError(f"clip {clip!r} is not in split {split}; its clips look like {ids[:5]} (or pass an index)")
    return ids.index(clip)


def _maps(config, workdir: str, stage: str, example, allow_unfinished: bool) -> tuple[dict, dict]:
    """One model on one example -> (compare_grid entry without label, batch); meta in the entry."""
    kind = config.stages[stage].model.kind
    if "rgb" not in streams.get(kind).inputs:
        raise ValueError(f"stage {stage!r} is a {kind} model without RGB input: it has no CAM; pick an RGB or "
                         "two_stream stage")
    model, meta = evaluate.load_stage_model(config, workdir, stage, allow_unfinished=allow_unfinished)
    # A model reading more than RGB (two_stream) shows the attention of its RGB stream, held as `.rgb`.
    rgb_model = model if tuple(streams.get(kind).inputs) == ("rgb",) else getattr(model, "rgb", None)
    rgb_stream = streams.of_model(rgb_model) if rgb_model is not None else None
    if rgb_stream is None or tuple(rgb_stream.inputs) != ("rgb",):
        raise ValueError(f"stage {stage!r}: its {kind} model has no registered RGB stream (an RGB-only stream "
                         "kind, itself or as its `.rgb`) whose attention could be drawn")
    grid = clips.ms_grid(config, rgb_model, rgb_stream.kind)
    spec = clips.clip_spec(config, rgb_stream.loader, train=False, ms_grid=grid,
                             ms_head=recipes.ms_kind(config.stages[stage]))
    loader = build_loader([example], spec, global_batch_size=1, num_epochs=1,
                          sharding=sharding.replicated(sharding.make_mesh()))  # every process: the whole clip
    batch = next(iter(loader))
    out = nnx.jit(lambda m, b: rgb_stream.forward(m, b, jnp.dtype(config.dtype)))(rgb_model, {"rgb": batch["rgb"]})
    batch, out = jax.tree.map(np.asarray, (batch, out))  # replicated: every process holds the whole result
    if out.get("attention") is None and out.get("ms") is None:
        raise ValueError(f"stage {stage!r}: its EgoRNN has no attention (the ConvLSTM ablation) and no MS head; "
                         "nothing to draw")
    # a two_stream stage's RGB classifier is not the joint model's: no prediction shown
    pred = int(np.argmax(out["logits"][0])) if rgb_model is model else None
    return dict(attention=None if out.get("attention") is None else np.asarray(out["attention"][0]),
                ms_pred=None if out.get("ms") is None else np.asarray(out["ms"][0]),
                ms_target=batch["ms_target"][0] if "ms_target" in batch else None,
                step=meta["step"], finished=meta["finished"], pred=pred), batch


def draw(models: list[tuple], clips: list[str], *, out_dir, tensorboard_dir=None,
         split: str | None = None, allow_unfinished: bool = False, min_size: int = 160) -> list[str]:
    """models: (config, workdir, stage, label) -> one PNG per clip in out_dir -> paths; images also to TensorBoard
    in tensorboard_dir (default out_dir), tag cam/<clip id>.

    The frames of the first model's data config are shown; every model must read the same frames and crop.
    """
    from ego_jax.data.gtea61.classes import CLASSES  # noqa: PLC0415

    first = models[0][0]
    for config, workdir, _, _ in models[1:]:
        if (config.data.frames, config.data.crop) != (first.data.frames, first.data.crop):
            raise ValueError(f"{workdir}: frames/crop {config.data.frames}/{config.data.crop} differ from "
                             f"{first.data.frames}/{first.data.crop}; compare models that see the same frames")
    split = split or first.data.test_split
    source = evaluate.test_source(first, split)
    writer = (metric_writers.create_default_writer(str(tensorboard_dir or out_dir), asynchronous=False)
              if distributed.is_writer() else None)
    paths = []
    for clip in clips:
        example = source[find_clip(first, split, clip)]
        clip_id = example["clip_id"].decode() if isinstance(example["clip_id"], bytes) else str(example["clip_id"])
        entries, lines = [], [clip_id]
        for config, workdir, stage, label in models:
            entry, batch = _maps(config, workdir, stage, example, allow_unfinished)
            entries.append(dict(entry, label=label))
            lines.append(f"{label or stage}: step {entry['step']}" + ("" if entry["finished"] else " (unfinished)")
                         + (f", pred {CLASSES[entry['pred']]}" if entry["pred"] is not None else ""))
        lines.insert(1, f"true {CLASSES[int(batch['label'][0])]}")
        image = cam.compare_grid(batch["rgb"][0], entries, title="\n".join(lines), min_size=min_size)
        paths.append(str(epath.Path(out_dir) / (clip_id.replace("/", "_") + ".png")))
        if writer:  # one writer of the shared workdir
            cam.write_png(paths[-1], image)
            writer.write_images(entries[0]["step"], {f"cam/{clip_id}": image[None]})
    if writer:
        writer.close()
    return paths


def draw_suite(p, runs) -> list[str]:
    """The suite's CAM comparison: per column, seed-0 table runs of suite.cam.rows on suite.cam.clips -> W/cam/."""
    s, paths = p.suite, []
    for column in s.columns:
        chosen = [next(r for r in runs if r.row == key and r.column in (column, None) and r.seed == s.seeds[0])
                  for key in s.cam["rows"]]
        models = [(r.config, os.path.join(p.workdir, r.path), p.rows[r.row]["stage"], r.row) for r in chosen]
        paths += draw(models, list(s.cam["clips"]), out_dir=os.path.join(p.workdir, "cam", f"{s.column_key}{column}"))
    return paths
