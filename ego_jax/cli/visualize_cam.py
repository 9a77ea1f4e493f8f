"""CAM attention (and, for MS models, predicted vs target motion maps) of trained stages on test clips (installed
as ego-jax-visualize; from a checkout: python scripts/visualize_cam.py).

  ego-jax-visualize --config configs/attention.py[:args] --workdir W --stage rgb_stage2 \\
      --clips S2/take_bread/1,S2/open_coffee/1        (clip ids of the test split, or indices in it)
  ego-jax-visualize --workdir W1 --stage rgb_stage2 --compare W2:rgb_stage2 --compare W3:rgb_stage2 \\
      --clips S2/take_bread/1 --out cams/       (several models side by side; configs from each W/config.json)

Rows of the PNG grid: the T centre-cropped frames, then per model the CAM of each frame (bilinear upsampling,
JET, blended), and for MS models the MS head's moving probability and the motion-map target. Clips are found
through the dataset's clip-id index (one record read per clip). One model: W/<stage>/cam/<clip>.png and
TensorBoard (W/<stage>, tag cam/<clip>); several: <out>/<clip>.png and TensorBoard in <out>. A two_stream stage
shows the attention of its RGB stream; flow stages have no CAM.
Multi-process (see README, "Scaling out"): launched like ego-jax-train, with the same launch flags.
"""

from absl import flags

from ego_jax.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    common.define_workdir_flags()
    flags.DEFINE_string("stage", None, "stage whose final checkpoint to show (default: the recipe's last stage)")
    flags.DEFINE_multi_string("compare", [], "more models WORKDIR:STAGE drawn under the first (config: W/config.json)")
    flags.DEFINE_list("clips", ["0"], "clip ids of the test split (e.g. S2/take_bread/1) or indices in it")
    flags.DEFINE_string("out", None, "output folder with --compare (default: W/<stage>/cam of the first model)")
    flags.DEFINE_string("split", None, "split the clips are taken from (default: config.data.test_split)")
    flags.DEFINE_bool(
        "allow_unfinished", False, "use the newest good checkpoint, finished or not (the title names its step)"
    )
    flags.DEFINE_integer("min_size", 160, "frames smaller than this (px) are enlarged for display")
    flags.mark_flags_as_required(["workdir"])
    common.define_launch_flags()


def visualize(argv: list[str]) -> None:
    common.setup_logs()
    common.initialize_from_flags()
    from ego_jax.experiments import cam  # noqa: PLC0415  (heavy imports after flag parsing)
    from ego_jax.train import paths, workdir as workdir_lib  # noqa: PLC0415

    with common.one_line_errors(ValueError):
        workdir = paths.absolute(FLAGS.workdir)
        run = common.run_of_flags()
        stage = workdir_lib.stage_of(run, FLAGS.stage)
        models = [(run, workdir, stage, workdir.name if FLAGS.compare else "")]
        for spec in FLAGS.compare:
            path, sep, other = spec.rpartition(":")
            if not sep:
                raise ValueError(f"--compare {spec!r}: expected WORKDIR:STAGE")
            other_dir = paths.absolute(path)
            other_run = workdir_lib.workdir_run(other_dir)
            models.append((other_run, other_dir, workdir_lib.stage_of(other_run, other), other_dir.name))
        out = paths.absolute(FLAGS.out) if FLAGS.out else workdir / stage / "cam"
        pictures = cam.draw(
            models,
            FLAGS.clips,
            out_dir=out,
            split=FLAGS.split,
            tensorboard_dir=None if FLAGS.compare else workdir / stage,
            allow_unfinished=FLAGS.allow_unfinished,
            min_size=FLAGS.min_size,
        )
    print("\n".join(pictures))


def main(argv: list[str] | None = None) -> None:
    common.run(visualize, __doc__, define_flags, argv)


if __name__ == "__main__":
    main()
