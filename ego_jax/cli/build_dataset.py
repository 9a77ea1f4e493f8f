"""Builds the gtea61 tfds dataset (array_record) from a GTEA61 folder; TensorFlow is not needed (installed as
ego-jax-build-dataset; from a checkout: python scripts/build_dataset.py).

  ego-jax-build-dataset --manual_dir data/manual/GTEA61 --data_dir data/tfds --config all

Configs: all (rgb, flow_x, flow_y, mmaps), rgb_flow, rgb_mmaps, rgb, flow. Splits S1..S4.
(The `tfds build` CLI of tfds 4.9.10 does not start without apache-beam installed; use this script.)
"""
import argparse
import logging
import sys
import time

from ego_jax.data import gtea61


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manual_dir", default=gtea61.DEFAULT_MANUAL_DIR, help="the GTEA61 download")
    parser.add_argument("--data_dir", default=gtea61.DEFAULT_DATA_DIR, help="where the built dataset goes")
    parser.add_argument("--config", default="all", choices=sorted(gtea61.CONFIGS), help="modalities to build")
    args = parser.parse_args(argv)
    # What the builder found, filled and ignored in the manual folder.
    logger = logging.getLogger("ego_jax")
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
        logger.propagate = False
    existing = gtea61.Gtea61(config=args.config, data_dir=args.data_dir)
    if existing.is_prepared():
        print(f"gtea61/{args.config} is already built in {existing.data_dir}; delete that folder to rebuild it")
        return
    start = time.time()
    try:
        builder = gtea61.build(manual_dir=args.manual_dir, data_dir=args.data_dir, config=args.config)
    except gtea61.ManualDirError as e:
        sys.exit(f"error: {e}")
    splits = ", ".join(f"{name} {split.num_examples}" for name, split in sorted(builder.info.splits.items()))
    print(f"built gtea61/{args.config} in {builder.data_dir} ({time.time() - start:.0f} s): clips per split {splits}")
    for old in gtea61.older_builds(args.config, args.data_dir):
        print(f"{old} is a build of an earlier ego_jax that this one does not read; delete it to free its space")


if __name__ == "__main__":
    main()
