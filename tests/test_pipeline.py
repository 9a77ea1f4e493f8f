"""grain loaders on in-memory fake clips: batch format, sampling through the pipeline, determinism, restart, padding, sharding."""
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
    batch = next(iter(pipeline.make_loader(source, kind=kind, train=train, global_batch_size=4, **SMALL, **extra)))
    dtypes = {"rgb": np.uint8, "flow": np.uint8, "ms_target": np.float32}
    expected = {k: (s, dtypes[k]) for k, s in shapes.items()} | {
        "label": ((4,), np.int32), "mask": ((4,), np.bool_), "index": ((4,), np.int32)}
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected


def test_eval_batches_follow_the_reference_sampling(source):
    loader = pipeline.make_loader(source, kind="two_stream", train=False, global_batch_size=4, **SMALL)
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


def test_eval_pads_the_last_batch_with_mask_false(source):
    last = list(pipeline.make_loader(source, kind="rgb", train=False, global_batch_size=4, **SMALL))[-1]
    np.testing.assert_array_equal(last["mask"], [True, True, True, False])
    np.testing.assert_array_equal(last["index"], [4, 5, 6, -1])
    assert not last["rgb"][3].any()


def test_k_stack_eval_uses_evenly_spread_starts(source):
    batch = next(iter(pipeline.make_loader(source, kind="flow", train=False, global_batch_size=4, eval_stacks=3, **SMALL)))
    # Clip 3 has 40 frames: starts floor(linspace(1, 38, 3, endpoint=False)) = 1, 13, 25 (1-based).
    np.testing.assert_array_equal(batch["flow"][3, :, 0, 0, 1::2], 10 + np.array([[0, 1, 2], [12, 13, 14], [24, 25, 26]]))


def test_train_epochs_are_reshuffled_and_drop_the_remainder(source):
    loader = pipeline.make_loader(source, kind="rgb", train=True, global_batch_size=3, num_epochs=2, **SMALL)
    assert loader.steps_per_epoch == 2 and len(loader) == 4
    batches = list(loader)
    epochs = [np.concatenate([b["index"] for b in batches[:2]]), np.concatenate([b["index"] for b in batches[2:]])]
    for e in epochs:
        assert len(set(e)) == 6 and set(e) <= set(range(7))
    assert not np.array_equal(epochs[0], epochs[1])
    assert all(b["mask"].all() for b in batches)


def test_two_stream_shares_crop_and_flip_between_modalities(source):
    loader = pipeline.make_loader(source, kind="two_stream", train=True, global_batch_size=7, num_epochs=3, **SMALL)
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
    kwargs = dict(kind="two_stream", train=True, global_batch_size=3, ms_grid=(2, 2), seed=7, **SMALL)
    serial = _take(pipeline.make_loader(source, **kwargs), 5)  # crosses an epoch boundary (2 steps per epoch)
    parallel = _take(pipeline.make_loader(source, worker_count=2, **kwargs), 5)
    _assert_batches_equal(serial, parallel)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_restart_at_step_k_yields_the_uninterrupted_batches(source, k):
    kwargs = dict(kind="two_stream", train=True, global_batch_size=3, ms_grid=(2, 2), seed=3, **SMALL)
    full = _take(pipeline.make_loader(source, **kwargs), 5)
    _assert_batches_equal(_take(pipeline.make_loader(source, start_step=k, **kwargs), 5 - k), full[k:])


def test_seed_changes_the_batches(source):
    a, b = (next(iter(pipeline.make_loader(source, kind="rgb", train=True, global_batch_size=3, seed=s, **SMALL)))
            for s in (0, 1))
    assert not all(np.array_equal(a[k], b[k]) for k in a)


def test_sharded_batches_are_global_arrays(source):
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    kwargs = dict(kind="two_stream", train=False, global_batch_size=8, ms_grid=(2, 2), **SMALL)
    host = next(iter(pipeline.make_loader(source, **kwargs)))
    batch = next(iter(pipeline.make_loader(source, sharding=sharding, **kwargs)))
    assert len(jax.devices()) == 4
    for k, v in batch.items():
        assert isinstance(v, jax.Array) and v.sharding == sharding, k
        assert v.shape == host[k].shape and v.shape[0] == 8
        assert v.addressable_shards[0].data.shape[0] == 2
        np.testing.assert_array_equal(np.asarray(v), host[k])


def test_missing_modality_names_the_key():
    source = fake_source([4, 4], modalities=("rgb",))
    with pytest.raises(KeyError, match="flow_x"):
        next(iter(pipeline.make_loader(source, kind="flow", train=False, global_batch_size=2, **SMALL)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="audio"), "kind"),
    (dict(kind="flow", ms_grid=(2, 2)), "ms_grid"),
    (dict(ms_threshold=0.5), "ms_grid"),
    (dict(global_batch_size=8, train=True), "full batch"),
    (dict(start_step=9), "start_step"),
])
def test_bad_arguments_raise(source, kwargs, match):
    args = dict(kind="rgb", train=False, global_batch_size=4, **SMALL) | kwargs
    with pytest.raises(ValueError, match=match):
        pipeline.make_loader(source, **args)
