"""Predict with a trained stage on videos, frame folders or dataset clips: one JSON line per clip on stdout
(installed as ego-jax-predict; from a checkout: python scripts/predict.py).

  ego-jax-predict --workdir W --stage joint --input my_clip.mp4 [--top 5] [--out cams/]
  ego-jax-predict --workdir W --stage rgb_stage2,flow,joint --input split:S2 --logits   (the test subject's clips)
  ego-jax-predict --workdir W --stage rgb_stage2 --input long_video.mp4 --window 2 --stride 1 --out timeline/
  ego-jax-predict --reference model_rgb_state_dict.pth --kind ego_rnn --input my_clip.mp4   (authors' checkpoints)

--input (repeatable): a video file, a folder of frames, a folder in the authors' layout (frames/, flow_x/, flow_y/
with one folder per clip), a folder of any of these (e.g. class-named subfolders of videos), or split:NAME
[:ID,ID] for clips of the config's dataset. A clip is read, sampled and cropped exactly as scripts/evaluate.py
reads a clip of the test split (the stage's frames, crop and flow stacks), so on a built dataset's clips the
logits are evaluate.py's (W/<stage>/eval/predictions.jsonl); flow for flow and two-stream models comes from the
clip's flow frames, or is computed from its frames.
A line: clip, stage, step, checkpoint (final | unfinished), top [[class, probability], ...], label (the true class
of a dataset clip), start / end (s, with --window), logits (with --logits).
--out DIR: per clip a CAM overlay video DIR/<stage>/<clip>.mp4 (or .gif) of the frames the model saw, for models
with CAM attention or a motion head; with --window also DIR/<stage>/<video>_timeline.{csv,png}: the top classes
of each window over time.
"""

import fractions
import json

from absl import app, flags

from ego_jax.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    common.define_workdir_flags()
    flags.DEFINE_list("stage", None, "stages to predict with (default: the recipe's last stage; 'all': every stage)")
    flags.DEFINE_string("reference", None, "an authors' checkpoint (.pth) instead of --workdir, with --kind")
    flags.DEFINE_string("kind", None, "--reference: its stream kind (ego_rnn, flow, two_stream, lsta)")
    flags.DEFINE_multi_string("input", None, "video, frame folder, folder of clips, or split:NAME[:ID,ID]")
    flags.DEFINE_integer("top", 5, "classes per clip, best first")
    flags.DEFINE_string("out", None, "folder for CAM videos (and --window timelines)")
    flags.DEFINE_enum("video_format", "mp4", ["mp4", "gif"], "format of the CAM videos")
    flags.DEFINE_float("window", None, "slide windows of this many seconds over each video (a timeline)")
    flags.DEFINE_float("stride", None, "seconds between windows (default: --window)")
    flags.DEFINE_float("fps", None, "frame rate of frame-folder inputs (windows are in seconds; videos: their own)")
    define_predictor_flags()
    flags.DEFINE_bool("logits", False, "add each clip's logits to its line")
    flags.DEFINE_integer("min_size", 160, "CAM videos: frames smaller than this (px) are enlarged")
    flags.DEFINE_float("cam_fps", 4.0, "CAM videos: frames per second")
    flags.mark_flags_as_required(["input"])


def define_predictor_flags() -> None:
    """How a trained stage predicts (predict, extract_features): its batch size, an unfinished stage's newest
    checkpoint, and how flow is computed from frames."""
    flags.DEFINE_integer("batch_size", None, "clips per batch (default: the config's eval_batch_size)")
    flags.DEFINE_bool("allow_unfinished", False, "use the newest good checkpoint of a stage still training")
    flags.DEFINE_enum(
        "flow_method",
        "warp_tvl1",
        ["warp_tvl1", "tvl1", "farneback"],
        "flow from frames: warp_tvl1 = dense_flow's warp flow, GTEA61's (ego_jax.data.flow)",
    )
    flags.DEFINE_enum("flow_backend", "opencv", ["opencv", "jax"], "flow from frames: OpenCV on the CPU, or JAX")


def set_flow(predictor, flow) -> None:
    """The flow flags -> predictor.flow_spec (flow at the evaluation's frame size)."""
    predictor.flow_spec = flow.FlowSpec(
        method=FLAGS.flow_method, backend=FLAGS.flow_backend, short_side=predictor.spec.resize
    )


def _predictors(inference):
    """(the run's specs or None, [Predictor]) of the flags."""
    if FLAGS.reference:
        if not FLAGS.kind or FLAGS.workdir:
            raise app.UsageError("--reference needs --kind and no --workdir")
        return None, [inference.from_reference(FLAGS.reference, FLAGS.kind, batch_size=FLAGS.batch_size)]
    if not FLAGS.workdir:
        raise app.UsageError("pass --workdir (a trained workdir) or --reference with --kind")
    run = common.run_of_flags()
    stages = list(run.recipe) if FLAGS.stage == ["all"] else FLAGS.stage or [None]
    return run, [
        inference.load(
            FLAGS.workdir, stage, run=run, allow_unfinished=FLAGS.allow_unfinished, batch_size=FLAGS.batch_size
        )
        for stage in stages
    ]


def _line(clip: dict, predictor) -> dict:
    info = predictor.info
    line = {
        "clip": clip["clip"],
        "stage": info.get("stage"),
        "step": info.get("step"),
        "checkpoint": info.get("checkpoint") or ("final" if info.get("finished") else "unfinished"),
        "top": [[name, round(p, 6)] for name, p in clip["top"]],
    }
    line.update({key: clip[key] for key in ("label", "start", "end") if key in clip})
    if FLAGS.logits:
        line["logits"] = clip["logits"].tolist()
    return line


def _cam_video(clip: dict, predictor, folder, viz_cam, video) -> None:
    """CAM overlay video of one clip (models with attention or an MS head)."""
    if clip.get("attention") is None and clip.get("ms") is None:
        return
    best, p = clip["top"][0]
    title = (
        f"{clip['clip']}: {best} {100 * p:.1f}%\n{predictor.info.get('stage', predictor.kind)} step "
        f"{predictor.info.get('step', '-')}"
    )
    frames = viz_cam.cam_video(
        clip["frames"], clip.get("attention"), clip.get("ms"), title=title, min_size=FLAGS.min_size
    )
    path = folder / (clip["clip"].replace("/", "_") + "." + FLAGS.video_format)
    folder.mkdir(parents=True, exist_ok=True)
    if FLAGS.video_format == "gif":
        viz_cam.write_gif(path, frames, FLAGS.cam_fps)
    else:
        # H.264 wants even sizes.
        video.write_video(
            path,
            frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2],
            fps=fractions.Fraction(FLAGS.cam_fps).limit_denominator(1000),
        )


def predict(argv: list[str]) -> None:
    if FLAGS.stride and not FLAGS.window:
        raise app.UsageError("--stride needs --window")
    common.setup_logs()
    from ego_jax import inference  # noqa: PLC0415  (heavy imports after flag parsing)
    from ego_jax.data import flow, video  # noqa: PLC0415
    from ego_jax.train import paths  # noqa: PLC0415
    from ego_jax.viz import cam as viz_cam, timeline  # noqa: PLC0415

    out = paths.absolute(FLAGS.out) if FLAGS.out else None
    with common.one_line_errors(ValueError):  # ClipFilesError, VideoError, WeightsError among them
        run, predictors = _predictors(inference)
        for predictor in predictors:
            set_flow(predictor, flow)
            folder = out / str(predictor.info.get("stage", predictor.kind)) if out else None
            for text in FLAGS.input:
                # Windows slide over one video (file or frame folder); a folder of clips is predicted clip by clip.
                path = paths.absolute(text)
                windows = (
                    FLAGS.window
                    and not text.startswith("split:")
                    and (video.is_video(text) or (path.is_dir() and bool(video.image_files(path))))
                )
                if windows:
                    clips = predictor.video(
                        text, window=FLAGS.window, stride=FLAGS.stride, fps=FLAGS.fps, top=FLAGS.top, frames=bool(out)
                    )
                else:
                    clips = predictor.predict(
                        inference.input_source(predictor, text, run), top=FLAGS.top, frames=bool(out)
                    )
                rows = []
                for clip in clips:
                    print(json.dumps(_line(clip, predictor)), flush=True)
                    if folder:
                        _cam_video(clip, predictor, folder, viz_cam, video)
                    if windows:
                        rows.append((clip["start"], clip["end"], clip["probs"]))
                if windows and folder:
                    starts, ends, probs = zip(*rows)
                    stem = folder / (path.stem + "_timeline")
                    folder.mkdir(parents=True, exist_ok=True)
                    timeline.write_csv(f"{stem}.csv", starts, ends, probs, predictor.class_names, FLAGS.top)
                    timeline.plot(
                        f"{stem}.png",
                        starts,
                        ends,
                        probs,
                        predictor.class_names,
                        FLAGS.top,
                        title=f"{text}: {predictor.info.get('stage', predictor.kind)}",
                    )


def main(argv: list[str] | None = None) -> None:
    common.run(predict, __doc__, define_flags, argv)


if __name__ == "__main__":
    main()
