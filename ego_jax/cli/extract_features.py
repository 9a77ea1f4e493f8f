"""Features, logits and predictions of a trained stage for every clip of a folder or a dataset split, into one
.npz file (installed as ego-jax-extract-features; from a checkout: python scripts/extract_features.py).

  ego-jax-extract-features --workdir W --stage joint --input split:S2 --out features.npz
  ego-jax-extract-features --workdir W --stage rgb_stage2 --input my_videos/ --out my_features.npz

--input as for ego-jax-predict (a folder of clips, a video, split:NAME[:ID,ID]); clips are read exactly as
evaluate.py reads them, flow computed from the frames where a clip has none (--flow_method, --flow_backend).
The file holds clip (N,) ids, feature (N, F) (the pooled c_T of an RGB stream, the flow stream's pooled layer4
averaged over its stacks, the two-stream concatenation), logits (N, C), prediction (N,), label (N,) (-1 where
unknown), class_names (C,), stage, step, kind; np.load reads it. Resumable: killed, the same command goes on after
the clips saved to <out>.partial.npz (every --save_every clips). A progress bar on stderr.
"""

from absl import flags

from ego_jax.cli import common, predict

FLAGS = flags.FLAGS


def define_flags() -> None:
    common.define_workdir_flags()
    predict.define_predictor_flags()
    flags.DEFINE_string("stage", None, "stage whose features to extract (default: the recipe's last stage)")
    flags.DEFINE_string("input", None, "folder of clips, video, or split:NAME[:ID,ID]")
    flags.DEFINE_string("out", None, "the .npz file to write")
    flags.DEFINE_integer("save_every", 64, "clips between saves of <out>.partial.npz")
    flags.DEFINE_bool("progress", True, "a progress bar on stderr")
    flags.mark_flags_as_required(["workdir", "input", "out"])


def extract(argv: list[str]) -> None:
    common.setup_logs()
    from ego_jax import inference  # noqa: PLC0415  (heavy imports after flag parsing)
    from ego_jax.data import flow  # noqa: PLC0415

    with common.one_line_errors(ValueError):
        run = common.run_of_flags()
        predictor = inference.load(
            FLAGS.workdir, FLAGS.stage, run=run, allow_unfinished=FLAGS.allow_unfinished, batch_size=FLAGS.batch_size
        )
        predict.set_flow(predictor, flow)
        source = inference.input_source(predictor, FLAGS.input, run)
        arrays = inference.extract_features(
            predictor, source, FLAGS.out, save_every=FLAGS.save_every, progress=FLAGS.progress
        )
    print(
        f"{FLAGS.out}: {len(arrays['clip'])} clips, feature {arrays['feature'].shape[1]}, stage "
        f"{arrays['stage']} step {arrays['step']}"
    )


def main(argv: list[str] | None = None) -> None:
    common.run(extract, __doc__, define_flags, argv)


if __name__ == "__main__":
    main()
