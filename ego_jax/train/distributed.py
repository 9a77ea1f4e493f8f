"""Multi-process mode, JAX's own: every process calls jax.distributed.initialize() before any computation.

A launch is either auto-detected by JAX (TPU pod slices, SLURM, Open MPI) or given explicitly with
--coordinator_address/--num_processes/--process_id; a single process needs nothing. All processes then see one
global mesh, each feeds its own rows, orbax writes global arrays and process 0 alone writes reports. Any decision
that changes control flow (stop on a signal, stage done, resume step) goes through `any_process` or
`from_process_0`, so every process takes the same branch.
"""

import logging

import jax
import numpy as np
from jax.experimental import multihost_utils

MODES = ("auto", "off")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    mode: str = "auto",
) -> None:
    """Start multi-process mode if asked for (all three arguments) or detected; otherwise stay one process."""
    given = dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    if mode not in MODES:
        raise ValueError(f"distributed mode {mode!r}; expected one of {MODES}")
    if mode == "off":
        if any(v is not None for v in given.values()):
            raise ValueError(
                f"--distributed=off but {sorted(k for k, v in given.items() if v is not None)} given; "
                "drop them, or drop --distributed=off"
            )
        return
    if any(v is not None for v in given.values()):
        missing = sorted(k for k, v in given.items() if v is None)
        if missing:
            raise ValueError(
                f"multi-process launch: --{', --'.join(missing)} missing; give all of "
                "--coordinator_address=HOST:PORT --num_processes=N --process_id=I (I = 0 .. N-1)"
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id={process_id} must be in 0 .. {num_processes - 1} (--num_processes)")
    # CPU processes reach each other through gloo (jax's default today; explicit so that a change shows here).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if any(v is not None for v in given.values()):
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif not _initialize_detected():
        return
    logging.info(
        "multi-process mode: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def _initialize_detected() -> bool:
    """jax.distributed.initialize() with JAX's own launcher detection (TPU pod slices, SLURM, Open MPI, Kubernetes
    with the kubernetes package) -> whether it found one and started multi-process mode.

    Without a launcher JAX raises ValueError for the parameters it could not detect (the coordinator address first)
    before it starts anything: that is one process.
    """
    try:
        jax.distributed.initialize()
    except ValueError as e:
        logging.info("no multi-process launcher detected (jax: %s): one process", e)
        return False
    return True


def is_writer() -> bool:
    """Whether this process writes the shared files (reports, markers, config): process 0."""
    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (one all-gather of a scalar; free with one process)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.bool_))))


def from_process_0(value: int) -> int:
    """Process 0's value of an integer, on every process (free with one process)."""
    if jax.process_count() == 1:
        return int(value)
    return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))


def on_process_0(write, what: str, *, error: type[Exception] = OSError) -> None:
    """Run `write()` (a write to the shared workdir) on process 0 only; every process returns once it is done.

    If it raised, process 0 re-raises its error and every other process raises `error` saying process 0 could not
    `what`, so none waits for a process that gave up.
    """
    failure = None
    if is_writer():
        try:
            write()
        except Exception as e:  # noqa: BLE001  (re-raised below, after the others have heard of it)
            failure = e
    if any_process(failure is not None):
        raise failure or error(f"process 0 could not {what} (see the log of process 0)")
