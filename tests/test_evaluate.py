"""Evaluation protocols with fake models whose logits are a lookup of a code written into the input pixels."""

import json

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ego_jax.streams import normalize_flow, normalize_rgb
from ego_jax.train import evaluate as ev, workdir as workdir_lib
from ego_jax.viz import charts

S = 8  # spatial size of the fake inputs
STACK_CH = 4  # 2 * stack with stack=2


class CodeLookup(nnx.Module):
    """Fake stream: reads the uint8 code every pixel of an input carries (after normalisation) -> table[code]."""

    def __init__(self, table, normalize):
        channels = 3 if normalize is normalize_rgb else STACK_CH
        codes = jnp.broadcast_to(jnp.arange(256, dtype=jnp.uint8)[:, None], (256, channels))
        # Mean over channels of the normalised code: what the mean over an all-`code` input becomes.
        self.levels = nnx.Variable(normalize(codes).mean(axis=1))
        self.table = nnx.Variable(jnp.asarray(table, jnp.float32))
        self.dropout = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))  # must be off in eval: logits stay exact

    def code(self, x):
        mean = x.reshape(x.shape[0], -1).mean(axis=1)
        return jnp.argmin(jnp.abs(mean[:, None] - self.levels[...][None, :]), axis=1)

    def __call__(self, x):
        return {"logits": self.dropout(self.table[...][self.code(x)])}


class FakeJoint(nnx.Module):
    """Fake two-stream: logits = rgb table[rgb code] + flow table[flow code]; insists on one flow stack."""

    def __init__(self, rgb_table, flow_table):
        self.rgb = CodeLookup(rgb_table, normalize_rgb)
        self.flow = CodeLookup(flow_table, normalize_flow)

    def __call__(self, rgb, flow):
        assert flow.ndim == 4, flow.shape
        return {"logits": self.rgb(rgb)["logits"] + self.flow(flow)["logits"]}


def flow_batch(codes, labels, mask=None):
    """codes (B, k) uint8 -> flow (B, k, S, S, STACK_CH) with every pixel of stack (b, j) equal to codes[b, j]."""
    codes = np.asarray(codes, np.uint8)
    flow = np.broadcast_to(codes[:, :, None, None, None], (*codes.shape, S, S, STACK_CH)).copy()
    batch = {"flow": flow, "label": np.asarray(labels, np.int32)}
    if mask is not None:
        batch["mask"] = np.asarray(mask, bool)
    return batch


def rgb_batch(codes, labels, mask=None, frames=3):
    codes = np.asarray(codes, np.uint8)
    rgb = np.broadcast_to(codes[:, None, None, None, None], (len(codes), frames, S, S, 3)).copy()
    batch = {"rgb": rgb, "label": np.asarray(labels, np.int32)}
    if mask is not None:
        batch["mask"] = np.asarray(mask, bool)
    return batch


# Per-stack logits for 5 stacks, 4 classes, chosen so every other reduction disagrees with the mean:
# stack 0 and the centre stack 2 say class 0, the majority vote says class 0, the max over stacks says
# class 2, and only the mean of the logits says class 1 (means 0.6, 2.54, -6, -20).
PATTERN = np.array(
    [
        [1.0, 0.9, -10.0, -20.0],
        [1.0, 0.9, -10.0, -20.0],
        [1.0, 0.9, -10.0, -20.0],
        [0.0, 5.0, -10.0, -20.0],
        [0.0, 5.0, 10.0, -20.0],
    ]
)


def stack_table():
    """codes 10..14 = example 0's stacks (PATTERN); codes 20..24 = example 1's (PATTERN, classes 0-2 rotated by 1)."""
    table = np.full((256, 4), -50.0)
    table[10:15] = PATTERN
    table[20:25] = PATTERN[:, [2, 0, 1, 3]]  # example 1: the mean says class 2, stacks 0 and 2 say class 1
    return table


STACK_CODES = np.array([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]])


def test_average_over_stacks_runs_model_once_on_b_times_k():
    seen = []

    def logits_fn(x):
        seen.append(x.shape)
        return jnp.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], axis=-1)

    flow = jnp.asarray(flow_batch(STACK_CODES, [0, 0])["flow"], jnp.float32)
    out = ev.average_over_stacks(logits_fn, flow)
    assert seen == [(10, S, S, STACK_CH)]
    np.testing.assert_allclose(out, [[12.0, -12.0], [22.0, -22.0]])


def test_flow_protocol_argmaxes_the_mean_over_k_stacks():
    model = CodeLookup(stack_table(), normalize_flow)
    # The mean over the 5 stacks says class 1 for example 0 and class 2 for example 1 (see PATTERN).
    confusion = ev.evaluate([flow_batch(STACK_CODES, [1, 2])], "flow", {"flow": model}, 4)
    assert ev.summarize(confusion, list("abcd"))["accuracy"] == 1.0
    # With the labels the vote / max / first stack would give, the mean protocol must be wrong on both.
    for wrong in ([0, 1], [2, 0]):
        confusion = ev.evaluate([flow_batch(STACK_CODES, wrong)], "flow", {"flow": model}, 4)
        assert np.trace(confusion) == 0, wrong


def test_flow_k5_differs_from_k1_centre_stack():
    model = CodeLookup(stack_table(), normalize_flow)
    labels = [1, 2]
    k5 = ev.evaluate([flow_batch(STACK_CODES, labels)], "flow", {"flow": model}, 4)
    centre = flow_batch(STACK_CODES[:, 2:3], labels)
    k1 = ev.evaluate([centre], "flow", {"flow": model}, 4)
    # The loader yields (B, S, S, C) for eval_stacks=1: same result as a (B, 1, S, S, C) batch.
    k1_flat = ev.evaluate([{**centre, "flow": centre["flow"][:, 0]}], "flow", {"flow": model}, 4)
    np.testing.assert_array_equal(k1, k1_flat)
    assert np.trace(k5) == 2 and np.trace(k1) == 0
    assert k1[1, 0] == 1 and k1[2, 1] == 1  # the centre stack alone predicts classes 0 and 1


def test_mask_excludes_padding_and_counts_every_real_example():
    table = np.full((256, 3), 0.0)
    table[np.arange(256), np.arange(256) % 3] = 1.0  # code c predicts class c % 3
    model = CodeLookup(table, normalize_rgb)
    batches = [
        rgb_batch([0, 1, 2, 3], [0, 1, 2, 0], [True] * 4),
        # Last batch padded: the padded rows repeat a real example with a *wrong* label, so counting them
        # would both change the total and lower the accuracy.
        rgb_batch([4, 5, 5, 5], [1, 0, 1, 1], [True, True, False, False]),
    ]
    confusion = ev.evaluate(batches, "rgb", {"rgb": model}, 3)
    expected = np.array(
        [
            [2, 0, 1],  # true 0: codes 0, 3 -> class 0; code 5 -> class 2
            [0, 2, 0],  # true 1: codes 1, 4 -> class 1 (the padded code 5 with label 1 is not counted)
            [0, 0, 1],  # true 2: code 2 -> class 2
        ]
    )
    np.testing.assert_array_equal(confusion, expected)
    summary = ev.summarize(confusion, ["x", "y", "z"])
    assert summary["num_examples"] == 6 and summary["num_correct"] == 5
    assert summary["per_class_accuracy"] == {"x": pytest.approx(2 / 3), "y": 1.0, "z": 1.0}


def test_confusion_matrix_and_summary_hand_made():
    labels = jnp.array([0, 0, 1, 1, 1, 2, 0])
    preds = jnp.array([0, 1, 1, 1, 0, 2, 2])
    mask = jnp.array([True, True, True, True, True, True, False])
    confusion = np.asarray(ev.confusion_matrix(labels, preds, mask, 4))
    np.testing.assert_array_equal(
        confusion,
        [
            [1, 1, 0, 0],
            [1, 2, 0, 0],
            [0, 0, 1, 0],
            [0, 0, 0, 0],
        ],
    )
    summary = ev.summarize(confusion, ["a", "b", "c", "d"])
    assert summary["accuracy"] == pytest.approx(4 / 6)
    assert summary["per_class_accuracy"] == {"a": 0.5, "b": pytest.approx(2 / 3), "c": 1.0, "d": None}
    assert summary["per_class_support"] == {"a": 2, "b": 3, "c": 1, "d": 0}
    assert summary["mean_class_accuracy"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)


def test_late_fusion_weights():
    flow = jnp.array([[4.0, 0.0, 3.0]])
    rgb = jnp.array([[0.0, 4.0, 3.0]])
    np.testing.assert_allclose(ev.late_fusion(flow, rgb), [[2.0, 2.0, 3.0]])  # neither stream's own argmax
    np.testing.assert_allclose(ev.late_fusion(flow, rgb, flow_weight=0.75), [[3.0, 1.0, 3.0]])
    np.testing.assert_allclose(ev.late_fusion(flow, rgb, flow_weight=1.0), flow)


def test_late_fusion_protocol_averages_flow_stacks_then_fuses():
    flow_table = np.full((256, 4), -50.0)
    flow_table[10:15] = PATTERN  # mean over the 5 stacks: (0.6, 2.54, -6, -20)
    rgb_table = np.full((256, 4), -50.0)
    rgb_table[7] = [4.0, 0.0, 0.0, -20.0]
    models = {"flow": CodeLookup(flow_table, normalize_flow), "rgb": CodeLookup(rgb_table, normalize_rgb)}
    batch = {**flow_batch(STACK_CODES[:1], [0]), "rgb": rgb_batch([7], [0])["rgb"]}
    # 0.5 * flow + 0.5 * rgb = (2.3, 1.27, -3, -20): class 0, though the flow stream alone says class 1.
    assert np.trace(ev.evaluate([batch], "late_fusion", models, 4)) == 1
    assert np.trace(ev.evaluate([{**batch, "label": np.array([1], np.int32)}], "flow", models, 4)) == 1
    # flow_weight 0.9: (0.94, 2.29, -5.4, -20) -> class 1.
    assert ev.evaluate([batch], "late_fusion", models, 4, flow_weight=0.9)[0, 1] == 1


def test_joint_protocol_uses_one_centre_stack():
    rgb_table = np.zeros((256, 3))
    rgb_table[7] = [1.0, 0.0, 0.0]
    flow_table = np.zeros((256, 3))
    flow_table[12] = [0.0, 3.0, 0.0]
    model = FakeJoint(rgb_table, flow_table)
    batch = {**flow_batch(STACK_CODES[:1, 2:3], [1]), "rgb": rgb_batch([7], [1])["rgb"]}
    assert np.trace(ev.evaluate([batch], "joint", {"joint": model}, 3)) == 1
    with pytest.raises(ValueError, match="eval_stacks=1"):
        ev.evaluate([{**batch, **flow_batch(STACK_CODES[:1], [1])}], "joint", {"joint": model}, 3)


def test_eval_mode_is_local_and_step_compiles_once():
    model = CodeLookup(stack_table(), normalize_flow)
    model.train()
    batch = flow_batch(STACK_CODES, [1, 2])
    first = ev.evaluate([batch], "flow", {"flow": model}, 4)
    size = ev.eval_step._cache_size()
    second = ev.evaluate([batch], "flow", {"flow": model}, 4)
    np.testing.assert_array_equal(first, second)
    assert ev.eval_step._cache_size() == size  # periodic eval in the train loop does not recompile
    assert model.dropout.deterministic is False  # the caller's module keeps its training mode


def test_sharded_batches_equal_unsharded():
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    model = CodeLookup(stack_table(), normalize_flow)
    codes = np.concatenate([STACK_CODES, STACK_CODES[::-1]])
    batch = flow_batch(codes, [1, 2, 2, 1], [True, True, True, False])
    plain = ev.evaluate([batch], "flow", {"flow": model}, 4)
    nnx.update(model, jax.device_put(nnx.state(model), NamedSharding(mesh, P())))
    sharded = {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}
    np.testing.assert_array_equal(ev.evaluate([sharded], "flow", {"flow": model}, 4), plain)
    assert plain.sum() == 3


def test_bad_inputs_say_what_to_do():
    model = CodeLookup(stack_table(), normalize_flow)
    with pytest.raises(ValueError, match="unknown protocol"):
        ev.evaluate([], "fusion", {"flow": model}, 4)
    with pytest.raises(ValueError, match="needs models"):
        ev.evaluate([], "late_fusion", {"flow": model}, 4)
    with pytest.raises(ValueError, match="eval_stacks"):
        ev.evaluate([rgb_batch([1], [0])], "flow", {"flow": model}, 4)
    with pytest.raises(ValueError, match="no batches"):
        ev.evaluate([], "flow", {"flow": model}, 4)
    with pytest.raises(ValueError, match="outside"):
        ev.evaluate([flow_batch(STACK_CODES, [1, 7])], "flow", {"flow": model}, 4)


def test_write_report_files(tmp_path):
    confusion = np.zeros((61, 61), np.int64)
    confusion[np.arange(61), np.arange(61)] = 2
    confusion[3, 5] = 1
    names = [f"class_{i}" for i in range(61)]
    metrics = workdir_lib.write_report(tmp_path / "eval", confusion, names, {"protocol": "rgb", "step": 10})
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["protocol"] == "rgb" and saved["num_examples"] == 123
    assert saved["per_class_accuracy"]["class_3"] == pytest.approx(2 / 3)
    matrix = json.loads((tmp_path / "eval" / "confusion.json").read_text())
    np.testing.assert_array_equal(matrix["matrix"], confusion)
    assert matrix["classes"] == names
    png = cv2.imread(str(tmp_path / "eval" / "confusion.png"))
    assert png is not None and png.shape[0] > 61 * 10 and png.shape[1] > 61 * 10


def test_confusion_png_shows_the_classes_of_the_split_unless_asked_for_all(tmp_path):
    confusion = np.zeros((61, 61), np.int64)
    confusion[np.arange(6), np.arange(6)] = 3
    confusion[2, 40] = 1  # a prediction outside the split's classes stays visible
    names = [f"class_{i}" for i in range(61)]
    workdir_lib.write_report(tmp_path / "some", confusion, names, {"protocol": "rgb"})
    workdir_lib.write_report(tmp_path / "all", confusion, names, {"protocol": "rgb"}, all_classes=True)
    some, every = (cv2.imread(str(tmp_path / d / "confusion.png")) for d in ("some", "all"))
    shown = [0, 1, 2, 3, 4, 5, 40]
    want = charts.confusion_matrix(
        confusion[np.ix_(shown, shown)], [names[i] for i in shown], title="rgb accuracy 94.74% (n=19)"
    )
    want_png = cv2.imread(str(charts.save(want, tmp_path / "want.png")[0]))
    assert some.shape == want_png.shape and every.shape[0] > 2 * some.shape[0]
    np.testing.assert_array_equal(some, want_png)  # the same figure: the 7 classes of the split or predicted
    assert len(json.loads((tmp_path / "some" / "confusion.json").read_text())["classes"]) == 61
