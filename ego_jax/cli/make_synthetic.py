"""Writes a synthetic GTEA61 release (course layout) for the quickstart, tests and benchmarks (installed as
ego-jax-make-synthetic; from a checkout: python scripts/make_synthetic.py).

  ego-jax-make-synthetic --root data/manual/synthetic --preset small
  ego-jax-build-dataset --manual_dir data/manual/synthetic --data_dir data/tfds
"""

import argparse
import os
import time

from ego_jax.data import synthetic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="output folder: new, empty, or written by this script")
    parser.add_argument("--preset", default="small", choices=sorted(synthetic.PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", nargs="*", help="class names (default: the preset's, else all 61)")
    parser.add_argument("--subjects", nargs="*", default=list(synthetic.SUBJECTS), help="default: S1 S2 S3 S4")
    parser.add_argument("--clips_per_class", type=int, help="clips per subject and class (default: the preset's)")
    parser.add_argument(
        "--layout",
        default="course",
        choices=["course", "authors", "video"],
        help="video: one H.264 video per clip, the input of scripts/extract_flow.py",
    )
    parser.add_argument(
        "--quirks",
        action="store_true",
        help="inject the release's quirks: missing first maps, .DS_Store, (1) duplicates, short clips",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    quirks = dict(missing_first_maps=4, ds_store=True, duplicates=3, short_clips=4) if args.quirks else {}
    start = time.time()
    out = synthetic.make_synthetic(
        args.root,
        preset=args.preset,
        seed=args.seed,
        classes=args.classes,
        subjects=args.subjects,
        clips_per_class=args.clips_per_class,
        layout=args.layout,
        workers=args.workers,
        **quirks,
    )
    frames = sum(c.num_frames for c in out.clips)
    print(f"wrote {len(out.clips)} clips, {frames} frames to {out.root} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
