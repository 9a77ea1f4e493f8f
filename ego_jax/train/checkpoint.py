"""orbax checkpoints of a stage: items 'state' (whole model nnx.State, BN stats included), 'opt_state', 'meta'.

StageCheckpoints saves and resumes a stage; restore_state reads a stage's newest good model state for init_from
and evaluation, whatever device count wrote it.

Integrity: orbax checks only its shard index (crc32c), not the array bytes, so a flipped byte restores silently.
Each saved step therefore gets DIGEST (sha256 and size of every file of the step, written after orbax committed
it), and every restore verifies the digest and that every floating array is finite. A step that fails is
reported by path and skipped for the newest good one; it is never used and never deleted (a writer that must
reuse its step number moves it to W/<stage>/rejected_checkpoints/).
"""

import errno
import hashlib
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from ego_jax.train import paths
from ego_jax.train.sharding import make_mesh, replicated


def model_tree(model: nnx.Module) -> dict:
    """Whole model state as a nested dict of arrays; PRNG keys as raw key data (orbax stores plain arrays)."""
    return jax.tree.map(_unwrap_key, nnx.to_pure_dict(nnx.state(model)))


def load_model_tree(model: nnx.Module, tree: dict, source: str = "checkpoint") -> None:
    """Inverse of model_tree: write `tree` (matched by path) into `model`; other paths or shapes: a clear error."""
    state = nnx.state(model)
    like = nnx.to_pure_dict(state)
    # By '/'-joined path: orbax restores list indices (nnx.List) as string keys.
    got = {_path(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    want = {_path(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(jax.tree.map(_unwrap_key, like))[0]}
    if want != {k: x.shape for k, x in got.items()}:
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        shapes = [
            f"{k} {got[k].shape} (model {want[k]})" for k in sorted(want.keys() & got.keys()) if got[k].shape != want[k]
        ]
        raise ValueError(
            f"{source} does not fit the model: missing {missing[:4]}, unexpected {extra[:4]}, "
            f"other shapes {shapes[:4]}; was it written with a different config?"
        )
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(lambda p, x: _wrap_key(x, got[_path(p)]), like))
    nnx.update(model, state)


def _path(keys) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in keys)


def _unwrap_key(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def _wrap_key(like, x):
    if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(x, impl=jax.random.key_impl(like))
    return x


def _abstract(tree, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


DIGEST = "ego_jax_digest.json"


def disk_full(e: BaseException) -> bool:
    """Whether `e` or an exception it was raised from says the disk or quota is full (OSError, or tensorstore's
    ValueError text: 'No space left on device [os_error_code=...]')."""
    full = {errno.ENOSPC, errno.EDQUOT}
    while e is not None:
        if (isinstance(e, OSError) and e.errno in full) or any(os.strerror(n) in str(e) for n in full):
            return True
        e = e.__cause__ or e.__context__
    return False


class BadCheckpoint(ValueError):
    """A saved step that fails verification (damaged, incomplete or non-finite); the message names its path."""


def _files(step_dir: epath.Path) -> dict[str, epath.Path]:
    files = (root / name for root, _, names in step_dir.walk() for name in names if name != DIGEST)
    return {str(p.relative_to(step_dir)): p for p in files}


def _sha256(path: epath.Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_digest(step_dir: str | epath.Path) -> None:
    """Record {file: [size, sha256]} of a committed step in step_dir/DIGEST (atomically: tmp file + rename)."""
    step_dir = epath.Path(step_dir)
    digest = {rel: [path.stat().length, _sha256(path)] for rel, path in sorted(_files(step_dir).items())}
    paths.write_atomic(step_dir / DIGEST, json.dumps(dict(files=digest)))


def verify_digest(step_dir: str | epath.Path) -> None:
    """Raise BadCheckpoint naming step_dir and the first differing files unless every file matches DIGEST."""
    step_dir = epath.Path(step_dir)
    try:
        recorded = json.loads((step_dir / DIGEST).read_text())["files"]
    except FileNotFoundError:
        raise BadCheckpoint(
            f"checkpoint {step_dir} has no {DIGEST} (its save did not complete, or it was written "
            "before ego_jax recorded digests): cannot verify it"
        ) from None
    except (ValueError, KeyError) as e:
        raise BadCheckpoint(f"checkpoint {step_dir}: unreadable {DIGEST} ({e})") from None
    present = _files(step_dir)
    problems = []
    for rel, (size, sha) in recorded.items():
        path = present.get(rel)
        if path is None:
            problems.append(f"{rel} missing")
        elif path.stat().length != size:
            problems.append(f"{rel} has {path.stat().length} bytes, {size} when saved")
        elif _sha256(path) != sha:
            problems.append(f"{rel} content changed since it was saved")
    if problems:
        raise BadCheckpoint(
            f"checkpoint {step_dir} is damaged: {'; '.join(problems[:3])}"
            + (f" (and {len(problems) - 3} more files)" if len(problems) > 3 else "")
        )


def check_finite(tree, where: str) -> None:
    """Raise BadCheckpoint naming the arrays of `tree` that hold NaN or inf (floating arrays only)."""
    bad = [
        _path(p)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        if jnp.issubdtype(x.dtype, jnp.floating) and not bool(jnp.all(jnp.isfinite(x)))
    ]
    if bad:
        raise BadCheckpoint(f"{where} holds non-finite values in {bad[:4]}" + (" ..." if len(bad) > 4 else ""))


def _manager(directory: epath.Path, *, read_only: bool, max_to_keep: int | None = None) -> ocp.CheckpointManager:
    # Handlers named up front: a manager that only knows item names cannot read item metadata (and warns).
    # The writer (one per workdir) removes the temporary folders of saves that never completed (killed, disk full).
    handlers = dict(
        state=ocp.StandardCheckpointHandler(),
        opt_state=ocp.StandardCheckpointHandler(),
        meta=ocp.JsonCheckpointHandler(),
    )
    return ocp.CheckpointManager(
        directory,
        item_handlers=handlers,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=False,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
        ),
    )


def _newest_good(manager: ocp.CheckpointManager, restore, steps=None):
    """restore(step) (which verifies) on the newest step it accepts -> (step, result).

    Each failing step is logged by path and skipped. -> (None, None) with no steps; BadCheckpoint naming every
    failure when steps exist but none is good.
    """
    directory, failures = epath.Path(manager.directory), []
    for step in sorted(manager.all_steps() if steps is None else steps, reverse=True):
        try:
            return step, restore(step)
        except BadCheckpoint as e:
            failures.append(str(e))
        except Exception as e:  # noqa: BLE001  (orbax/tensorstore raise many types on damaged files)
            failures.append(f"checkpoint {directory / str(step)} cannot be read: {type(e).__name__}: {str(e)[:300]}")
        logging.error("%s; skipping it for an older step", failures[-1])
    if failures:
        raise BadCheckpoint(f"no good checkpoint left in {directory}:\n  " + "\n  ".join(failures))
    return None, None


class StageCheckpoints:
    """CheckpointManager for W/<stage>/checkpoints; saves are synchronous so the next step may donate buffers."""

    def __init__(self, directory: str | epath.Path, *, max_to_keep: int = 2):
        self.directory = paths.absolute(directory)
        self.max_to_keep = max_to_keep
        self.manager = _manager(self.directory, read_only=False, max_to_keep=max_to_keep)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, model: nnx.Module, opt_state, meta: dict) -> None:
        """Write checkpoint `step` and its digest (overwrites nothing: a step already saved is skipped)."""
        if step in self.manager.all_steps():
            return
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(model_tree(model)),
                    opt_state=ocp.args.StandardSave(opt_state),
                    meta=ocp.args.JsonSave(meta),
                ),
                force=True,
            )
            self.manager.wait_until_finished()
            if jax.process_index() == 0:
                write_digest(self.directory / str(step))
        except Exception as e:
            if not disk_full(e):
                raise
            latest = self.latest_step()
            raise OSError(
                errno.ENOSPC,
                f"no space left on the device of {self.directory} while saving checkpoint "
                f"step {step}: free space there (or move the workdir to a larger disk) and "
                "rerun the same command; the stage resumes from its newest good checkpoint "
                f"({'none yet' if latest is None else f'step {latest}'})",
            ) from e

    def verify(self, step: int) -> None:
        """Raise BadCheckpoint unless step's files are the ones saved (digest only; restore checks finiteness)."""
        verify_digest(self.directory / str(step))

    def restore(self, step: int, model: nnx.Module, opt_state, sharding) -> tuple:
        """Load verified checkpoint `step` into `model`; -> (opt_state shaped like the given one, meta dict)."""
        self.verify(step)
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(model_tree(model), sharding)),
                opt_state=ocp.args.StandardRestore(_abstract(opt_state, sharding)),
                meta=ocp.args.JsonRestore(),
            ),
        )
        where = self.directory / str(step)
        check_finite(out["state"], f"checkpoint {where}")
        check_finite(out["opt_state"], f"checkpoint {where} (optimiser state)")
        load_model_tree(model, out["state"])
        return out["opt_state"], out["meta"]

    def restore_newest_good(self, model: nnx.Module, opt_state, sharding) -> tuple:
        """Resume: restore the newest good step -> (step, opt_state, meta), or (None, None, None) without steps.

        Damaged steps newer than it are moved to rejected_checkpoints/ (they would block re-saving their step).
        """
        step, out = _newest_good(self.manager, lambda s: self.restore(s, model, opt_state, sharding))
        newer = [s for s in self.manager.all_steps() if step is not None and s > step]
        if newer:
            self.set_aside(newer)
        return (step, *out) if step is not None else (None, None, None)

    def set_aside(self, steps) -> None:
        """Move `steps` to W/<stage>/rejected_checkpoints/<step>[-<time>] (kept for inspection, never deleted)."""
        if jax.process_index() == 0:
            rejected = self.directory.parent / "rejected_checkpoints"
            rejected.mkdir(parents=True, exist_ok=True)
            for step in steps:
                target = rejected / str(step)
                if target.exists():
                    target = rejected / (str(step) + time.strftime("-%Y%m%dT%H%M%S"))
                (self.directory / str(step)).rename(target)
                logging.warning("moved damaged checkpoint step %d to %s", step, target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils  # noqa: PLC0415

            multihost_utils.sync_global_devices("ego_jax set_aside")
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()


def restore_state(directory: str | epath.Path, *, step: int | None = None) -> tuple[dict, int]:
    """Newest good 'state' item of a checkpoint directory (or exactly `step`) -> (nested dict of arrays, its step).

    Read-only. Good = digest verified and every floating array finite; a damaged step is logged and skipped
    (BadCheckpoint if none is good). The target is the checkpoint's own metadata, replicated over this process's
    devices: the run that wrote it may have used a device count that does not exist here. For init_from and
    evaluation (resume: StageCheckpoints).
    """
    directory = paths.absolute(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoint in {directory} (no such directory)")
    manager = _manager(directory, read_only=True)

    def restore(s):
        verify_digest(directory / str(s))
        saved = manager.item_metadata(s)["state"]
        target = _abstract(saved, replicated(make_mesh()))
        tree = manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
        check_finite(tree, f"checkpoint {directory / str(s)}")
        return tree

    try:
        found, tree = _newest_good(manager, restore, None if step is None else [step])
    finally:
        manager.close()
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {directory}" + ("" if step is None else f" at step {step}"))
    return tree, int(found)


def load_final_state(directory: str | epath.Path, *, step: int | None = None) -> dict[str, np.ndarray]:
    """Newest good (or exactly `step`) 'state' of a checkpoint directory -> flat {'/'-joined nnx path: array}."""
    flat = jax.tree_util.tree_flatten_with_path(restore_state(directory, step=step)[0])[0]
    return {_path(path): np.asarray(v) for path, v in flat}


# orbax warnings that say nothing wrong: a tree item's own metadata file (orbax keeps it per step), and the
# notes that a read-only manager (evaluation) will not save.
_ORBAX_NOISE = ("Metadata file does not exist", "read_only=True", "directory is read only")


def _through_orbax(record: logging.LogRecord) -> bool:
    """Whether the record's exception was raised in orbax's code (its traceback passes through orbax)."""
    tb = record.exc_info[2] if record.exc_info else None
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


class _QuietOrbax(logging.Filter):
    """orbax logs every step of every save at INFO and some warnings that are not problems; keep the others.

    A failed save (a full disk) is raised to the caller, which reports it once: the tracebacks orbax's threads log
    on the way, and asyncio's of the futures the failure left behind (at exit), are dropped.
    """

    def filter(self, record):
        if record.exc_info and _through_orbax(record):
            return False
        if "orbax" not in record.pathname:
            return True
        return record.levelno >= logging.WARNING and not any(n in str(record.msg) for n in _ORBAX_NOISE)


def quiet_orbax_logs(handler: logging.Handler) -> None:
    """Attach the orbax filter to a log handler (the scripts pass absl's)."""
    handler.addFilter(_QuietOrbax())
