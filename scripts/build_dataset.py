"""Builds the gtea61 tfds dataset (array_record) from a GTEA61 folder; TensorFlow is not needed.

  python scripts/build_dataset.py --manual_dir data/manual/GTEA61 --data_dir data/tfds --config all

Configs: all (rgb, flow_x, flow_y, mmaps), rgb_flow, rgb_mmaps, rgb, flow. Splits S1..S4.
Equivalent tfds CLI: tfds build gtea61 --imports ego_jax.data.gtea61 --manual_dir ... --data_dir ...
  --config all --file_format array_record
"""
import argparse
import sys
import time

from ego_jax.data import gtea61


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manual_dir", default=gtea61.DEFAULT_MANUAL_DIR, help="the GTEA61 download")
    parser.add_argument("--data_dir", default=gtea61.DEFAULT_DATA_DIR, help="where the built dataset goes")
    parser.add_argument("--config", default="all", choices=sorted(gtea61.CONFIGS), help="modalities to build")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        builder = gtea61.build(manual_dir=args.manual_dir, data_dir=args.data_dir, config=args.config)
    except gtea61.ManualDirError as e:
        sys.exit(f"error: {e}")
    splits = ", ".join(f"{name} {split.num_examples}" for name, split in sorted(builder.info.splits.items()))
    print(f"built gtea61/{args.config} in {builder.data_dir} ({time.time() - start:.0f} s): clips per split {splits}")


if __name__ == "__main__":
    main()
