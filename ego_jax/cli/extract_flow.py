"""Frames and optical / warp flow of videos (or frame folders) in the authors' layout, as dense_flow made GTEA61's
(installed as ego-jax-extract-flow; from a checkout: python scripts/extract_flow.py).

  ego-jax-extract-flow --input videos/ --out data/manual/mine              # every video under videos/
  ego-jax-extract-flow --input clip.mp4 --out OUT --method tvl1 --backend jax --batch 128
  ego-jax-extract-flow --input videos/ --out OUT --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
  ego-jax-extract-flow --input videos/ --out OUT --executor slurm --shards 16 --slurm.partition=gpu \
      --slurm.gpus_per_job=1        # 16 jobs (a SLURM job array), each this command with its --shard I/16

Writes OUT/frames/<clip>/image_00001.jpg, OUT/flow_x/<clip>/flow_x_00001.jpg and OUT/flow_y/<clip>/flow_y_00001.jpg
(clip = the source's path under --input without extension), which scripts/build_dataset.py reads as the authors'
layout when clips are named <S>/<class>/<instance>. T frames give T - 1 pairs; image k is the pair's second frame.
Resumable: finished clips are skipped, half-written ones redone. A source that cannot be read is reported, skipped
and listed at the end (exit status 1). Library: ego_jax.data.flow (extract_clip, extract_all).
--executor local|slurm --shards N: N jobs (local processes at once, or a SLURM job array), each the same command with
its --shard I/N, their records and logs in OUT/jobs/; rerun the command after a crash: finished shards are skipped.
"""

import argparse
import os
import sys

from ego_jax.data import flow
from ego_jax.data.flow import dataset
from ego_jax.experiments import executors


def _backend(name: str, method: str) -> str:
    if name != "auto":
        return name
    import jax

    return "jax" if method != "farneback" and jax.default_backend() != "cpu" else "opencv"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="a video, a folder of videos (recursively) or of frame folders")
    p.add_argument("--out", required=True, help="output folder (frames/, flow_x/, flow_y/)")
    p.add_argument(
        "--method",
        default="warp_tvl1",
        choices=flow.METHODS,
        help="warp_tvl1: TV-L1 after removing the camera's motion (GTEA61's flow); tvl1; farneback",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", *flow.BACKENDS),
        help="opencv: CPU, one pair at a time per worker; jax: batched on the accelerator (TV-L1); "
        "auto: jax when an accelerator is present",
    )
    p.add_argument("--bound", type=float, default=flow.BOUND, help="px mapped to 0 / 255 (dense_flow: 20)")
    p.add_argument("--short_side", type=int, help="resize frames so that their shorter side has N px (default: as is)")
    p.add_argument("--shard", default="0/1", help="I/N: extract every N-th clip from the I-th (0 <= I < N)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="opencv: processes (one clip each); jax: threads that decode and fit homographies",
    )
    p.add_argument("--batch", type=int, default=64, help="jax: frame pairs per device call")
    p.add_argument(
        "--tvl1",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a TV-L1 parameter (default: dense_flow's {flow.DENSE_FLOW}), repeatable",
    )
    p.add_argument("--image_ext", default=".jpg", choices=(".jpg", ".png"))
    p.add_argument(
        "--no_quirks", action="store_true", help="fix dense_flow's warp-tool quirks (ego_jax/data/flow/warp.py)"
    )
    executors.add_arguments(p)
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        executor = executors.from_args(args)
    except ValueError as e:
        p.error(str(e))
    if executor is not None:  # --shards jobs, each this command with its --shard I/N
        try:
            return executors.run_sharded(
                executor,
                "ego_jax.cli.extract_flow",
                sys.argv[1:] if argv is None else argv,
                args.shards,
                os.path.join(args.out, "jobs"),
            )
        except executors.JobsFailed as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    try:
        spec = flow.FlowSpec(
            method=args.method,
            backend=_backend(args.backend, args.method),
            tvl1=flow.TVL1.parse(args.tvl1),
            bound=args.bound,
            quirks=not args.no_quirks,
            short_side=args.short_side,
            image_ext=args.image_ext,
        )
        index, count = dataset.parse_shard(args.shard)
        every = dataset.list_sources(args.input, args.out)
    except ValueError as e:  # VideoError too
        p.error(str(e))
    sources = dataset.shard(every, index, count)
    print(
        f"{len(sources)} clips (shard {index}/{count} of {len(every)}) -> {args.out}: {spec.method}, "
        f"{spec.backend} backend, bound {spec.bound}",
        flush=True,
    )
    from tqdm import tqdm

    with tqdm(total=len(sources), unit="clip", file=sys.stderr, dynamic_ncols=True) as bar:
        pairs = [0]

        def progress(source, result):
            pairs[0] += 0 if isinstance(result, str) else result.pairs
            bar.set_postfix(pairs_per_s=f"{pairs[0] / max(bar.format_dict['elapsed'], 1e-9):.1f}", refresh=False)
            bar.update(1)

        try:
            summary = dataset.extract_all(
                sources, args.out, spec, batch=args.batch, workers=args.workers, progress=progress
            )
        except flow.FlowSpecMismatch as e:
            bar.close()
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(
        f"{len(summary.extracted)} clips extracted ({summary.pairs} pairs, "
        f"{summary.pairs / max(summary.seconds, 1e-9):.1f} pairs/s), {len(summary.skipped)} already done, "
        f"{len(summary.failed)} failed"
    )
    for clip, reason in summary.failed:
        print(f"failed: {clip}: {reason}", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
