"""A stand-in for a sharded command (extract_flow's --shard I/N) taking the executor arguments as it would.

  python tests/shard_command.py --out OUT [--fail I] [--executor local|slurm --shards N ...]

Shard I writes OUT/shard-I.txt (its pid); shard --fail exits 3.
"""

import argparse
import os
import sys

from ego_jax.experiments import executors


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--shard", default="0/1")
    p.add_argument("--fail", type=int, default=-1)
    executors.add_arguments(p)
    args = p.parse_args(argv)
    executor = executors.from_args(args)
    if executor is not None:
        return executors.run_sharded(executor, "shard_command", argv, args.shards, os.path.join(args.out, "jobs"))
    index = int(args.shard.split("/")[0])
    if index == args.fail:
        return 3
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"shard-{index}.txt"), "w") as f:
        f.write(str(os.getpid()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
