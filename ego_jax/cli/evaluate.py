"""Evaluate a trained stage on the test split with a reference protocol; writes W/<stage>/eval/ (installed as
ego-jax-evaluate; from a checkout: python scripts/evaluate.py).

  ego-jax-evaluate --config configs/two_stream.py:frames=16 --workdir workdir/two_stream_16 --stage all
  ego-jax-evaluate --config configs/two_stream.py[:args] --workdir W [--stage joint]
      [--protocol rgb|flow|joint|late_fusion]

Defaults: the recipe's last stage (--stage all: each stage of the recipe in turn), the protocol of its model
(EgoRNN -> rgb: one clip of T frames; FlowResNet -> flow: logits averaged over config.data.flow_eval_stacks
stacks; TwoStream -> joint: one centre stack + T frames), centre crop, the stage's final checkpoint (the stage
must be DONE). Read-only on checkpoints: it may run while the stage trains (--allow_unfinished), and reports the
step it really evaluated.
late_fusion = flow_weight * flow (averaged over --fusion_stacks stacks) + (1 - flow_weight) * RGB logits
of the recipe's last RGB and flow stages (or --rgb_stage / --flow_stage); it writes W/late_fusion/eval/.
Output: metrics.json (accuracy, per-class accuracy, checkpoint step), confusion.json, confusion.png (the classes
of the split, or --all_classes), and curves.png from the stage's metrics.jsonl.
Multi-process (see README, "Scaling out"): launched like ego-jax-train, with the same launch flags.
"""

import os

from absl import app, flags

from ego_jax.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    common.define_workdir_flags("experiment config file[:key=value,...]")
    flags.DEFINE_string("stage", None, "stage to evaluate (default: the recipe's last stage; 'all': every stage)")
    flags.DEFINE_enum("protocol", None, ["rgb", "flow", "joint", "late_fusion"], "default: the stage's own protocol")
    flags.DEFINE_string("rgb_stage", None, "late_fusion: RGB stage (default: the recipe's last EgoRNN stage)")
    flags.DEFINE_string("flow_stage", None, "late_fusion: flow stage (default: the recipe's last FlowResNet stage)")
    flags.DEFINE_integer("fusion_stacks", 10, "late_fusion: flow stacks averaged (reference: 10)")
    flags.DEFINE_float("flow_weight", 0.5, "late_fusion: weight of the flow logits (reference: 0.5)")
    flags.DEFINE_string("split", None, "test split (default: config.data.test_split)")
    flags.DEFINE_bool(
        "allow_unfinished", False, "evaluate the newest good checkpoint, finished or not (labelled with its step)"
    )
    flags.DEFINE_bool("all_classes", False, "confusion.png: every class of the config, not only those in the split")
    flags.mark_flags_as_required(["config", "workdir"])
    common.define_launch_flags()


def evaluate(argv: list[str]) -> None:
    common.setup_logs()
    common.initialize_from_flags()
    from ego_jax.train import workdir as workdir_lib  # noqa: PLC0415  (after absl parsed the flags: heavy imports)

    if FLAGS.stage == "all" and FLAGS.protocol:
        raise app.UsageError("--stage=all evaluates each stage with its own protocol; drop --protocol")
    with common.one_line_errors(ValueError):
        run = common.run_of_flags()
    for stage in run.recipe if FLAGS.stage == "all" else [FLAGS.stage]:
        with common.one_line_errors(ValueError):
            metrics = workdir_lib.evaluate_workdir(
                run,
                FLAGS.workdir,
                stage=stage,
                protocol=FLAGS.protocol,
                rgb_stage=FLAGS.rgb_stage,
                flow_stage=FLAGS.flow_stage,
                fusion_stacks=FLAGS.fusion_stacks,
                flow_weight=FLAGS.flow_weight,
                split=FLAGS.split,
                allow_unfinished=FLAGS.allow_unfinished,
                all_classes=FLAGS.all_classes,
            )
        steps = ", ".join(f"{name} step {step}" for name, step in metrics["steps"].items())
        print(
            f"{os.path.basename(os.path.dirname(metrics['outdir']))}: {metrics['protocol']} accuracy "
            f"{100 * metrics['accuracy']:.2f}% ({metrics['num_correct']}/{metrics['num_examples']}; {steps}, "
            f"{metrics['checkpoint']}) -> {metrics['outdir']}"
        )


def main(argv: list[str] | None = None) -> None:
    common.run(evaluate, __doc__, define_flags, argv)


if __name__ == "__main__":
    main()
