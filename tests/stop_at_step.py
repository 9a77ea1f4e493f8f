"""A stop from outside at a known train step: `signum` (SIGTERM) to this process as the loader hands out that step's
batch, so the stop lands between the same two steps however fast the machine is (a signal sent when a file appears
can arrive after a tiny run has ended). In-process, `signal_at` replaces loaders.train_loader; as a script,
`python tests/stop_at_step.py STEP <train.py flags>` is train.py with that stop."""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from ego_jax.train import loaders  # noqa: E402


def signal_at(step: int, signum=signal.SIGTERM):
    """loaders.train_loader, sending this process `signum` as it hands out the batch of train step `step`."""
    real = loaders.train_loader

    def signalling(*args, start_step, **kwargs):
        for i, batch in enumerate(real(*args, start_step=start_step, **kwargs), start_step + 1):
            if i == step:
                os.kill(os.getpid(), signum)
            yield batch

    return signalling


if __name__ == "__main__":
    from ego_jax.cli import train

    loaders.train_loader = signal_at(int(sys.argv.pop(1)))
    train.main()
