"""matplotlib charts: what each figure holds (its artists: texts, lines, bars, scales), and the files save() writes
(formats, sizes); never pixels."""

import json
import os

import cv2
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from PIL import Image

from ego_jax.viz import charts


def _png_shape(path):
    image = cv2.imread(str(path))
    assert image is not None, path
    return image.shape


def _outside_right(fig, legend, ax) -> bool:
    fig.canvas.draw()
    return legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_confusion_matrix_counts_rates_and_names_on_both_axes(tmp_path):
    names = [f"class_{i:02d}" for i in range(25)]
    confusion = np.zeros((25, 25), np.int64)
    confusion[np.arange(25), np.arange(25)] = 3
    confusion[10, 20] = 3  # class 10: half right
    fig = charts.confusion_matrix(confusion, names, title="test")
    ax = fig.axes[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert len(texts) == 26 and texts[0, 0] == "3\n100%" and texts[10, 10] == texts[10, 20] == "3\n50%"
    assert [t.get_text() for t in ax.get_xticklabels()] == names == [t.get_text() for t in ax.get_yticklabels()]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("predicted", "true", "test")
    [png] = charts.save(fig, tmp_path / "sub" / "confusion.png")
    big = _png_shape(png)
    small = _png_shape(charts.save(charts.confusion_matrix(confusion[:7, :7], names[:7]), tmp_path / "c7.png")[0])
    assert big[0] > 25 * 40 and small[1] < big[1]  # grows with the classes: every name stays readable
    with pytest.raises(ValueError, match="class names"):
        charts.confusion_matrix(confusion, names[:24])
    present = np.zeros((61, 61), np.int64)
    present[2, 2], present[3, 40] = 1, 1
    assert np.flatnonzero(charts.present_classes(present)).tolist() == [2, 3, 40]


def test_curves_share_splits_mark_eval_steps_and_put_the_lr_on_a_log_scale(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [
        {
            "step": s,
            "train/loss": 2.0 / s,
            "train/accuracy": s / 20,
            "lr": 1e-3 * 0.1 ** (s > 5),
            "lr/head": 1e-2,
            "epoch": s // 5,
        }
        for s in range(1, 11)
    ]
    lines += [{"step": 5, "eval/accuracy": 0.3}, {"step": 10, "eval/accuracy": 0.5}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    records = charts.read_metrics(path)
    assert len(records) == 12
    keys = [k for k in charts.numeric_keys(records, "step") if k != "epoch"]
    fig = charts.curves(records, keys=keys)
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert set(axes) == {"loss", "accuracy", "learning rate"}
    lines = {line.get_label(): line for line in axes["accuracy"].get_lines()}
    assert set(lines) == {"train/accuracy", "eval/accuracy"}
    assert lines["eval/accuracy"].get_marker() == "o" and lines["train/accuracy"].get_marker() in ("None", None, "")
    np.testing.assert_array_equal(lines["eval/accuracy"].get_xdata(), [5, 10])
    assert axes["learning rate"].get_yscale() == "log" and len(axes["learning rate"].get_lines()) == 2
    assert axes["loss"].get_yscale() == "linear" and axes["loss"].xaxis.get_gridlines()[0].get_visible()
    assert _png_shape(charts.save(fig, tmp_path / "curves.png")[0])[1] >= 1000
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="metrics.jsonl"):
        charts.read_metrics(path)


def test_accuracy_bars_mean_std_seeds_published_legend_outside_and_vector_copies(tmp_path):
    series = {
        "a": dict(points=[[40.0, 50.0, 60.0], [70.0]], published=[(55, 61), None]),
        "b": dict(points=[[20.0, 30.0], []]),
    }
    fig = charts.accuracy_bars(["7 frames", "16 frames"], series, title="t", published_label="published (range)")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights[:2], [50.0, 70.0])  # series a: means
    assert heights[2] == 25.0 and np.isnan(heights[3])  # series b: no points in group 2 -> no bar
    caps = sorted(round(y, 6) for line in ax.get_lines() for y in line.get_ydata())
    assert 40.0 in caps and 60.0 in caps  # a's error bar: 50 +- sample std 10
    dots = sorted(y for c in ax.collections if isinstance(c, PathCollection) for _, y in c.get_offsets())
    assert dots == [20.0, 30.0, 40.0, 50.0, 60.0, 70.0]  # every seed's accuracy
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b", "seeds", "published (range)"]
    assert _outside_right(fig, legend, ax) and "%" in ax.get_ylabel()
    written = charts.save(fig, tmp_path / "results.png", vector=("svg", "pdf"))
    assert [p.name for p in written] == ["results.png", "results.svg", "results.pdf"]
    assert _png_shape(written[0])[1] >= 1000 and all(os.path.getsize(p) > 1000 for p in written)
    with pytest.raises(ValueError, match="expected 2"):
        charts.accuracy_bars(["x", "y"], {"a": dict(points=[[1.0]])})


def test_differences_rank_classes_and_skip_missing_values(tmp_path):
    fig = charts.differences(["up", "down", "flat"], {"7": [10.0, -5.0, 0.0], "16": [20.0, np.nan, 0.0]})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["up", "flat", "down"]
    assert _outside_right(fig, ax.get_legend(), ax)
    assert _png_shape(charts.save(fig, tmp_path / "d.png")[0])[1] >= 1000


def test_image_grid_rows_titles_captions_and_a_shared_colorbar(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    flow = np.linspace(0, 4, 600).reshape(20, 30)
    fig = charts.image_grid(
        [[rgb, rgb, rgb], [flow, flow]], ["frames", "flow"], captions=[None, ["a", "b"]], colorbar=("px", 4.0)
    )
    tiles, bar = fig.axes[:5], fig.axes[5:]  # a tile per image, row after row, then the colorbar
    assert [ax.get_ylabel() for ax in tiles] == ["frames", "", "", "flow", ""] and tiles[4].get_xlabel() == "b"
    assert len(bar) == 1 and bar[0].get_ylabel() == "px" and tiles[3].get_images()[0].get_clim() == (0, 4.0)
    [full] = charts.save(fig, tmp_path / "full.png")
    [small] = charts.save(fig, tmp_path / "small.png", colors=16)  # docs' pictures: a palette PNG
    assert Image.open(small).mode == "P" and os.path.getsize(small) < os.path.getsize(full)
    first, second = (ax.get_position() for ax in tiles[:2])
    assert second.x0 > first.x1 and tiles[3].get_position().y1 < first.y0  # columns left to right, rows downwards
