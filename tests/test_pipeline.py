"""grain loaders on fake clips and a built tiny dataset: batch format, sampling, determinism, restart, padding,
sharding, errors."""

import multiprocessing
import time

import jax
import numpy as np
import pytest
from fake_clips import fake_source
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ego_jax.data import pipeline, sampling

# Tiny settings: 48x80 frames, shorter side kept at 48, 32 px crops, 4 frames, stacks of 3.
SMALL = dict(frames=4, stack=3, crop=32, resize=48)
COUNTS = [5, 3, 12, 40, 7, 2, 9]


@pytest.fixture(scope="module")
def source():
    return fake_source(COUNTS)


def _take(loader, n):
    return [b for _, b in zip(range(n), loader)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


@pytest.mark.parametrize(
    "kind, train, extra, shapes",
    [
        ("rgb", True, dict(ms_grid=(2, 2)), {"rgb": (4, 4, 32, 32, 3), "ms_target": (4, 4, 2, 2)}),
        ("flow", True, {}, {"flow": (4, 32, 32, 6)}),
        ("flow", False, dict(eval_stacks=5), {"flow": (4, 5, 32, 32, 6)}),
        ("two_stream", False, {}, {"rgb": (4, 4, 32, 32, 3), "flow": (4, 32, 32, 6)}),
    ],
)
def test_batch_keys_shapes_and_dtypes(source, kind, train, extra, shapes):
    batch = next(iter(pipeline.make_loader(source, loader=kind, train=train, global_batch_size=4, **SMALL, **extra)))
    dtypes = {"rgb": np.uint8, "flow": np.uint8, "ms_target": np.float32}
    expected = {k: (s, dtypes[k]) for k, s in shapes.items()} | {
        "label": ((4,), np.int32),
        "mask": ((4,), np.bool_),
        "index": ((4,), np.int32),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected


def test_eval_batches_follow_the_reference_sampling(source):
    loader = pipeline.make_loader(source, loader="two_stream", train=False, global_batch_size=4, **SMALL)
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    for batch in batches:
        for b, index in enumerate(batch["index"]):
            if index < 0:
                continue
            n = COUNTS[index]
            assert batch["label"][b] == index % 61
            # Fake RGB frames store their frame index in green, fake y-flow stores 10 + frame index.
            np.testing.assert_array_equal(batch["rgb"][b, :, 16, 16, 1], sampling.rgb_indices(n, 4))
            frames = sampling.stack_indices(sampling.flow_start_test(n, 3), n, 3)
            np.testing.assert_array_equal(batch["flow"][b, 16, 16, 1::2], 10 + frames)


def test_lsta_frame_sampling_includes_the_last_frame(source):
    spec = pipeline.ClipSpec("rgb", False, **SMALL, rgb_endpoint=True)
    for index, n in enumerate(COUNTS):
        frames = pipeline.load_clip(source[index], spec, None)["rgb"][:, 16, 16, 1]
        np.testing.assert_array_equal(frames, sampling.rgb_indices(n, 4, endpoint=True))
        assert frames[-1] == n - 1


def test_motion_targets_through_the_loader(source):
    batch = next(
        iter(pipeline.make_loader(source, loader="rgb", train=False, global_batch_size=2, ms_grid=(2, 2), **SMALL))
    )
    # Fake maps move in columns 0:26 of 80; the centre crop takes columns 24:56 in two 16-wide cells: 2 / 16 moving.
    np.testing.assert_allclose(batch["ms_target"], np.broadcast_to([[0.125, 0], [0.125, 0]], (2, 4, 2, 2)), atol=1e-6)
    binary = next(
        iter(
            pipeline.make_loader(
                source, loader="rgb", train=False, global_batch_size=2, ms_grid=(2, 2), ms_threshold=0.2, **SMALL
            )
        )
    )
    assert not binary["ms_target"].any()


def test_eval_pads_the_last_batch_with_mask_false(source):
    last = list(pipeline.make_loader(source, loader="rgb", train=False, global_batch_size=4, **SMALL))[-1]
    np.testing.assert_array_equal(last["mask"], [True, True, True, False])
    np.testing.assert_array_equal(last["index"], [4, 5, 6, -1])
    assert not last["rgb"][3].any()


def test_k_stack_eval_uses_evenly_spread_starts(source):
    batch = next(
        iter(pipeline.make_loader(source, loader="flow", train=False, global_batch_size=4, eval_stacks=3, **SMALL))
    )
    # Clip 3 has 40 frames: starts floor(linspace(1, 38, 3, endpoint=False)) = 1, 13, 25 (1-based).
    expected = 10 + np.array([[0, 1, 2], [12, 13, 14], [24, 25, 26]])
    np.testing.assert_array_equal(batch["flow"][3, :, 0, 0, 1::2], expected)


def test_train_epochs_are_reshuffled_and_drop_the_remainder(source):
    loader = pipeline.make_loader(source, loader="rgb", train=True, global_batch_size=3, num_epochs=2, **SMALL)
    assert loader.steps_per_epoch == 2 and len(loader) == 4
    batches = list(loader)
    epochs = [np.concatenate([b["index"] for b in batches[:2]]), np.concatenate([b["index"] for b in batches[2:]])]
    for e in epochs:
        assert len(set(e)) == 6 and set(e) <= set(range(7))
    assert not np.array_equal(epochs[0], epochs[1])
    assert all(b["mask"].all() for b in batches)


def test_two_stream_shares_crop_and_flip_between_modalities(source):
    loader = pipeline.make_loader(source, loader="two_stream", train=True, global_batch_size=7, num_epochs=3, **SMALL)
    flips = []
    for batch in loader:
        red = batch["rgb"][:, 0, :, :, 0].astype(int)  # 3 * x ramp
        flow_x = batch["flow"][..., 0].astype(int)  # 1.5 * x + 64 ramp
        for r, f in zip(red, flow_x):
            kept, flipped = np.abs(f - (r / 2 + 64)).max(), np.abs(f - (255 - (r / 2 + 64))).max()
            assert min(kept, flipped) <= 1.5
            flips.append(flipped <= 1.5)
    assert 0 < sum(flips) < len(flips)


def test_same_batches_for_any_worker_count(source):
    kwargs = dict(loader="two_stream", train=True, global_batch_size=3, ms_grid=(2, 2), seed=7, **SMALL)
    serial = _take(pipeline.make_loader(source, **kwargs), 5)  # crosses an epoch boundary (2 steps per epoch)
    _assert_batches_equal(_take(pipeline.make_loader(source, worker_count=2, **kwargs), 5), serial)
    _assert_batches_equal(_take(pipeline.make_loader(source, read_threads=3, **kwargs), 5), serial)


def _workers() -> set[int]:
    return {p.pid for p in multiprocessing.active_children()}


def _wait_gone(pids, seconds=60) -> set[int]:
    """The processes of `pids` still running after up to `seconds` (a stopped worker may take a moment to exit)."""
    deadline = time.monotonic() + seconds
    while pids & _workers() and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids & _workers()


def test_a_loader_that_keeps_its_workers_starts_them_once(source):
    kwargs = dict(loader="rgb", train=False, global_batch_size=3, **SMALL)
    once = list(pipeline.make_loader(source, **kwargs))
    before = _workers()
    loader = pipeline.make_loader(source, worker_count=1, keep_workers=True, **kwargs)
    try:
        _assert_batches_equal(list(loader), once)
        worker = _workers() - before
        assert len(worker) == 1
        _assert_batches_equal(list(loader), once)
        assert _workers() - before == worker
    finally:
        loader.close()
    assert not _wait_gone(worker)


def test_a_loader_that_keeps_its_workers_repeats_its_batches_even_after_an_early_exit(source):
    kwargs = dict(loader="two_stream", train=True, global_batch_size=3, num_epochs=2, start_step=1, seed=4, **SMALL)
    once = list(pipeline.make_loader(source, **kwargs))
    loader = pipeline.make_loader(source, keep_workers=True, **kwargs)
    for _ in range(2):
        _assert_batches_equal(list(loader), once)
    _assert_batches_equal(_take(loader, 2), once[:2])
    _assert_batches_equal(list(loader), once)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_restart_at_step_k_yields_the_uninterrupted_batches(source, k):
    kwargs = dict(loader="two_stream", train=True, global_batch_size=3, ms_grid=(2, 2), seed=3, **SMALL)
    full = _take(pipeline.make_loader(source, **kwargs), 5)
    _assert_batches_equal(_take(pipeline.make_loader(source, start_step=k, **kwargs), 5 - k), full[k:])


def test_seed_changes_the_batches(source):
    a, b = (
        next(iter(pipeline.make_loader(source, loader="rgb", train=True, global_batch_size=3, seed=s, **SMALL)))
        for s in (0, 1)
    )
    assert not all(np.array_equal(a[k], b[k]) for k in a)


def test_sharded_batches_are_global_arrays(source):
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    kwargs = dict(loader="two_stream", train=False, global_batch_size=8, ms_grid=(2, 2), **SMALL)
    host = next(iter(pipeline.make_loader(source, **kwargs)))
    batch = next(iter(pipeline.make_loader(source, sharding=sharding, **kwargs)))
    assert len(jax.devices()) == 4
    for k, v in batch.items():
        assert isinstance(v, jax.Array) and v.sharding == sharding, k
        assert v.shape == host[k].shape and v.shape[0] == 8
        assert v.addressable_shards[0].data.shape[0] == 2
        np.testing.assert_array_equal(np.asarray(v), host[k])


def test_a_batch_the_sharding_cannot_split_is_refused(source):
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    with pytest.raises(ValueError, match="cannot split a batch of 6"):
        pipeline.make_loader(source, loader="rgb", train=False, global_batch_size=6, sharding=sharding, **SMALL)


def test_a_corrupt_frame_names_its_example_and_frame():
    from ego_jax.data.decode import DecodeError

    source = fake_source([4, 4])
    source[1]["rgb"][2] = b"not a png"
    with pytest.raises(DecodeError, match=r"example 1 rgb\[2\]"):
        list(pipeline.make_loader(source, loader="rgb", train=False, global_batch_size=2, **SMALL))


def test_missing_modality_names_the_key():
    source = fake_source([4, 4], modalities=("rgb",))
    with pytest.raises(KeyError, match="flow_x"):
        next(iter(pipeline.make_loader(source, loader="flow", train=False, global_batch_size=2, **SMALL)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(loader="audio"), "unknown loader"),
        (dict(loader="flow", ms_grid=(2, 2)), "ms_grid"),
        (dict(ms_threshold=0.5), "ms_grid"),
        (dict(global_batch_size=8, train=True), "full batch"),
        (dict(start_step=9), "start_step"),
        (dict(frames=0), "frames"),
        (dict(eval_stacks=0), "eval_stacks"),
        (dict(ms_grid=(7,)), "ms_grid"),
    ],
)
def test_bad_arguments_raise(source, kwargs, match):
    args = dict(loader="rgb", train=False, global_batch_size=4, **SMALL) | kwargs
    with pytest.raises(ValueError, match=match):
        pipeline.make_loader(source, **args)


class _StubSharding:
    """What process 1 of 2 sees: its devices hold rows 4:6 and 6:8 of a global batch of 8."""

    def addressable_devices_indices_map(self, shape):
        return {"d2": (slice(4, 6),), "d3": (slice(6, 8),)}


def test_each_process_reads_its_rows_of_the_same_global_batch(source, monkeypatch):
    assert pipeline._local_rows(_StubSharding(), 8) == (4, 5, 6, 7)
    kwargs = dict(loader="rgb", train=True, global_batch_size=4 * 2, drop_remainder=False, **SMALL)
    global_batches = _take(pipeline.make_loader(source, **kwargs), 2)
    monkeypatch.setattr(pipeline, "_local_rows", lambda sharding, n: (4, 5, 6, 7))
    local_batches = _take(pipeline.make_loader(source, **kwargs), 2)
    _assert_batches_equal(local_batches, [{k: v[4:] for k, v in b.items()} for b in global_batches])


def test_interleaved_device_order_reads_its_blocks_in_ascending_order(source, monkeypatch):
    """A mesh that interleaves processes (as jax.make_mesh may on a pod) gives a process several blocks of rows."""

    class Interleaved:
        def addressable_devices_indices_map(self, shape):
            return {"d0": (slice(4, 6),), "d1": (slice(0, 2),)}

    assert pipeline._local_rows(Interleaved(), 8) == (0, 1, 4, 5)
    kwargs = dict(loader="rgb", train=True, global_batch_size=8, drop_remainder=False, **SMALL)
    global_batches = _take(pipeline.make_loader(source, **kwargs), 2)
    monkeypatch.setattr(pipeline, "_local_rows", lambda sharding, n: (0, 1, 4, 5))
    local_batches = _take(pipeline.make_loader(source, **kwargs), 2)
    _assert_batches_equal(local_batches, [{k: v[[0, 1, 4, 5]] for k, v in b.items()} for b in global_batches])


def test_frames_of_different_sizes_in_one_clip_are_refused():
    clip = fake_source([4])[0] | {"flow_x": fake_source([4], height=40)[0]["flow_x"]}
    with pytest.raises(ValueError, match="one size"):
        next(iter(pipeline.make_loader([clip], loader="two_stream", train=False, global_batch_size=1, **SMALL)))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny synthetic release (80x48 frames, with short clips and missing first maps) built with tfds."""
    from ego_jax.data import gtea61
    from ego_jax.data.synthetic import make_synthetic

    tmp = tmp_path_factory.mktemp("gtea61")
    make_synthetic(
        tmp / "GTEA61",
        preset="tiny",
        classes=gtea61.CLASSES[:4],
        subjects=["S1", "S2"],
        seed=1,
        short_clips=2,
        missing_first_maps=1,
    )
    gtea61.build(manual_dir=tmp / "GTEA61", data_dir=tmp / "tfds", config="all")
    return tmp / "tfds"


@pytest.mark.parametrize("kind", pipeline.LOADERS)
def test_loaders_on_a_built_tfds_dataset(built, kind):
    from ego_jax.data import gtea61

    train_source = gtea61.load_source("S1", data_dir=built)
    test_source = gtea61.load_source("S2", data_dir=built)
    ms = dict(ms_grid=(2, 2), ms_threshold=0.0) if kind != "flow" else {}
    train = pipeline.make_loader(
        train_source,
        loader=kind,
        train=True,
        global_batch_size=2,
        num_epochs=1,
        seed=5,
        worker_count=1 if kind == "two_stream" else 0,
        **ms,
        **SMALL,
    )
    batches = list(train)
    assert len(batches) == len(train_source) // 2
    labels = {int(train_source[i]["label"]) for b in batches for i in b["index"]}
    assert labels <= set(range(4)) and all(b["mask"].all() for b in batches)
    if ms:
        assert set(np.unique(np.concatenate([b["ms_target"].ravel() for b in batches]))) <= {0.0, 1.0}
    evaluated = list(pipeline.make_loader(test_source, loader=kind, train=False, global_batch_size=3, **ms, **SMALL))
    indices = np.concatenate([b["index"] for b in evaluated])
    masks = np.concatenate([b["mask"] for b in evaluated])
    assert sorted(indices[masks]) == list(range(len(test_source))) and (indices[~masks] == -1).all()
    for b in evaluated:
        for i, m, label in zip(b["index"], b["mask"], b["label"]):
            if m:
                assert label == test_source[int(i)]["label"]


@pytest.mark.parametrize("kind", pipeline.LOADERS)
def test_a_sample_of_a_built_dataset_reads_only_the_frames_it_decodes(built, kind, monkeypatch):
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    from ego_jax.data import decode, gtea61

    source = gtea61.load_source("S1+S2", data_dir=built)
    longest = max(range(len(source)), key=lambda i: source[i]["num_frames"])
    whole_clip = sum(len(f) for m in ("rgb", "flow_x", "flow_y", "mmaps") for f in source[longest][m])
    reads, decoded = [], []
    getitem = ArrayRecordDataSource.__getitem__

    def counted_read(self, key):
        record = getitem(self, key)
        reads.append(len(record))
        return record

    def counted(fn):
        return lambda data, what: decoded.append(len(data)) or fn(data, what)

    monkeypatch.setattr(ArrayRecordDataSource, "__getitem__", counted_read)
    monkeypatch.setattr(decode, "decode_rgb", counted(decode.decode_rgb))
    monkeypatch.setattr(decode, "decode_gray", counted(decode.decode_gray))
    pipeline.load_clip(source[longest], pipeline.ClipSpec(kind, train=True, **SMALL), np.random.default_rng(0))
    # The clip record (metadata, under 1 kB), then exactly the frames decoded: a small part of the clip.
    assert reads[0] < 1000 and sorted(reads[1:]) == sorted(decoded) and sum(decoded) < whole_clip / 3
