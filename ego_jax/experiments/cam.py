"""CAM comparison: several trained (workdir, stage) models on the same clips, one PNG per clip (+ TensorBoard).

Clips are found by id through the clip index of the run's dataset (loaders.clip_ids: gtea61, egtea, ...): one record
is read per clip; labels and predictions are named by the dataset's classes (loaders.class_names).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers
from etils import epath
from flax import nnx

from ego_jax.data.pipeline import build_loader
from ego_jax.specs import DataSpec, RunSpec
from ego_jax.train import clips, distributed, loaders, sharding, workdir as workdir_lib
from ego_jax.viz import cam


def find_clip(data: DataSpec, split: str, clip: str) -> int:
    """Clip id ('S2/take_bread/1') or decimal index -> index in `split`; a clear error listing some ids."""
    ids = loaders.clip_ids(data, split)
    if clip.isdigit():
        if int(clip) >= len(ids):
            raise ValueError(f"clip {clip}: the split has {len(ids)} clips (indices 0..{len(ids) - 1})")
        return int(clip)
    if clip not in ids:
        raise ValueError(f"clip {clip!r} is not in split {split}; its clips look like {ids[:5]} (or pass an index)")
    return ids.index(clip)


def _maps(run: RunSpec, workdir: str, stage: str, example, allow_unfinished: bool) -> tuple[dict, dict]:
    """One model on one example -> (compare_grid entry without label, batch); meta in the entry."""
    spec = run.stage(stage).model
    if not spec.stream.reads_rgb:
        raise ValueError(
            f"stage {stage!r} is a {spec.kind} model without RGB input: it has no CAM; pick an RGB or two_stream stage"
        )
    # A model reading more than RGB (two_stream) shows the attention of its RGB stream (its entry names it).
    inner = spec.stream.rgb_stream(spec.kwargs)
    if inner is None:
        raise ValueError(
            f"stage {stage!r}: its {spec.kind} model has no RGB-only stream (itself or a part in its "
            "stream entry) whose attention could be drawn"
        )
    attribute, rgb_stream = inner
    model, meta = workdir_lib.load_stage_model(run, workdir, stage, allow_unfinished=allow_unfinished)
    rgb_model = model if attribute is None else getattr(model, attribute)
    grid = clips.ms_grid(run.data, rgb_model, rgb_stream)
    clip_spec = run.data.clip_spec(rgb_stream.loader, train=False, ms_grid=grid, ms_target=spec.ms_target)
    loader = build_loader(
        [example], clip_spec, global_batch_size=1, num_epochs=1, sharding=sharding.replicated(sharding.make_mesh())
    )  # every process: the whole clip
    batch = next(iter(loader))
    out = nnx.jit(lambda m, b: rgb_stream.forward(m, b, jnp.dtype(run.dtype)))(rgb_model, {"rgb": batch["rgb"]})
    batch, out = jax.tree.map(np.asarray, (batch, out))  # replicated: every process holds the whole result
    if out.get("attention") is None and out.get("ms") is None:
        raise ValueError(
            f"stage {stage!r}: its EgoRNN has no attention (the ConvLSTM ablation) and no MS head; nothing to draw"
        )
    # a two_stream stage's RGB classifier is not the joint model's: no prediction shown
    pred = int(np.argmax(out["logits"][0])) if rgb_model is model else None
    return dict(
        attention=None if out.get("attention") is None else np.asarray(out["attention"][0]),
        ms_pred=None if out.get("ms") is None else np.asarray(out["ms"][0]),
        ms_target=batch["ms_target"][0] if "ms_target" in batch else None,
        step=meta["step"],
        finished=meta["finished"],
        pred=pred,
    ), batch


def draw(
    models: list[tuple],
    clips: list[str],
    *,
    out_dir,
    tensorboard_dir=None,
    split: str | None = None,
    allow_unfinished: bool = False,
    min_size: int = 160,
) -> list[str]:
    """models: (run spec, workdir, stage, label) -> one PNG per clip in out_dir -> paths; images also to TensorBoard
    in tensorboard_dir (default out_dir), tag cam/<clip id>.

    The frames of the first model's data are shown; every model must read the same frames and crop.
    """
    first = models[0][0]
    for run, workdir, _, _ in models[1:]:
        if (run.data.frames, run.data.crop) != (first.data.frames, first.data.crop):
            raise ValueError(
                f"{workdir}: frames/crop {run.data.frames}/{run.data.crop} differ from "
                f"{first.data.frames}/{first.data.crop}; compare models that see the same frames"
            )
    split = split or first.data.test_split
    source, names = loaders.test_source(first, split), loaders.class_names(first)
    writer = (
        metric_writers.create_default_writer(str(tensorboard_dir or out_dir), asynchronous=False)
        if distributed.is_writer()
        else None
    )
    paths = []
    for clip in clips:
        example = source[find_clip(first.data, split, clip)]
        clip_id = example["clip_id"].decode() if isinstance(example["clip_id"], bytes) else str(example["clip_id"])
        entries, lines = [], [clip_id]
        for run, workdir, stage, label in models:
            entry, batch = _maps(run, workdir, stage, example, allow_unfinished)
            entries.append(dict(entry, label=label))
            lines.append(
                f"{label or stage}: step {entry['step']}"
                + ("" if entry["finished"] else " (unfinished)")
                + (f", pred {names[entry['pred']]}" if entry["pred"] is not None else "")
            )
        lines.insert(1, f"true {names[int(batch['label'][0])]}")
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
        chosen = [
            next(r for r in runs if r.row == key and r.column in (column, None) and r.seed == s.seeds[0])
            for key in s.cam.rows
        ]
        models = [(r.spec, os.path.join(p.workdir, r.path), p.rows[r.row].stage, r.row) for r in chosen]
        paths += draw(models, list(s.cam.clips), out_dir=os.path.join(p.workdir, "cam", f"{s.column_key}{column}"))
    return paths
