"""Builds a dataset (tfds, array_record) from a release downloaded by hand; TensorFlow is not needed (installed as
ego-jax-build-dataset; from a checkout: python scripts/build_dataset.py).

  ego-jax-build-dataset --manual_dir data/manual/GTEA61 --data_dir data/tfds --config all
  ego-jax-build-dataset --dataset egtea --manual_dir data/manual/EGTEA --data_dir data/tfds
  ego-jax-build-dataset --dataset gtea71 --manual_dir data/manual/GTEA --data_dir data/tfds
  ego-jax-build-dataset --dataset gtea_gaze --manual_dir data/manual/GTEA_Gaze_Plus --data_dir data/tfds
  ego-jax-build-dataset --dataset folder --manual_dir my_videos --data_dir data/tfds_folder   (your own videos)

gtea61 configs: all (rgb, flow_x, flow_y, mmaps), rgb_flow, rgb_mmaps, rgb, flow; splits S1..S4. egtea, gtea71,
gtea_gaze, folder configs: rgb_flow (default), rgb, flow; their frames and warp flow are read from folders in the
authors' layout, extracted from the videos first where missing (ego_jax/data/release.py; --extract_dir). folder:
class-named subfolders of videos, train/ and test/ holding such subfolders, or mmaction2 video lists train.txt and
test.txt (ego_jax/data/folder/layout.py); with class folders, --test_fraction of each class is the test split.
(The `tfds build` CLI of tfds 4.9.10 does not start without apache-beam.)
"""

import argparse
import logging
import sys
import time

from ego_jax.data import datasets, gtea61, prepare


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="gtea61", choices=[n for n in datasets.NAMES if n != "synthetic"])
    parser.add_argument("--manual_dir", help="the download (default: data/manual/<dataset's folder>)")
    parser.add_argument("--data_dir", default=gtea61.DEFAULT_DATA_DIR, help="where the built dataset goes")
    parser.add_argument("--config", help="modalities to build (default: gtea61 all, the others rgb_flow)")
    parser.add_argument(
        "--extract_dir",
        help="egtea/gtea71/gtea_gaze: where frames and flow extracted from the "
        "videos go (default: <data_dir>/<dataset>_extracted)",
    )
    parser.add_argument(
        "--test_fraction",
        type=float,
        default=0.2,
        help="folder of class folders: the fraction of each class's videos held out as test split",
    )
    parser.add_argument("--seed", type=int, default=0, help="folder of class folders: the seed of that draw")
    args = parser.parse_args(argv)
    module = datasets.module(args.dataset)
    config = args.config or datasets.BUILDER_CONFIG.get(args.dataset, "rgb_flow")
    if config not in module.CONFIGS:
        parser.error(f"--config {config}: {args.dataset} has configs {', '.join(module.CONFIGS)}")
    manual_dir = args.manual_dir or datasets.MANUAL_DIR[args.dataset]
    # What the builder found, filled and ignored in the manual folder.
    logger = logging.getLogger("ego_jax")
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
        logger.propagate = False
    start = time.time()
    try:
        if args.dataset == "gtea61":
            if gtea61.Gtea61(config=config, data_dir=args.data_dir).is_prepared():
                print(f"gtea61/{config} is already built in {args.data_dir}; delete that folder to rebuild it")
                return
            builder = gtea61.build(manual_dir=manual_dir, data_dir=args.data_dir, config=config)
        else:
            split = {"test_fraction": args.test_fraction, "seed": args.seed} if args.dataset == "folder" else {}
            builder = module.build(
                manual_dir=manual_dir, data_dir=args.data_dir, config=config, extract_dir=args.extract_dir, **split
            )
    except (ValueError, prepare.BuildRunning) as e:  # ManualDirError, a folder built with another split
        sys.exit(f"error: {e}")
    splits = ", ".join(f"{name} {split.num_examples}" for name, split in sorted(builder.info.splits.items()))
    print(
        f"built {args.dataset}/{config} in {builder.data_dir} ({time.time() - start:.0f} s): clips per split {splits}"
    )
    if args.dataset == "gtea61":
        for old in gtea61.older_builds(config, args.data_dir):
            print(f"{old} is a build of an earlier ego_jax that this one does not read; delete it to free its space")


if __name__ == "__main__":
    main()
