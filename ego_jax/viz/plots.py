"""Confusion-matrix and learning-curve images drawn with OpenCV (no plotting library needed); uint8 RGB arrays."""
import json
import math
from collections.abc import Iterable, Sequence

import cv2
import numpy as np
from etils import epath

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BLACK = (0, 0, 0)
_GREY = (160, 160, 160)
# Light-to-dark blue ramp (ends of matplotlib's "Blues") so the diagonal stands out on white.
_LOW = np.array([247, 251, 255], np.float32)
_HIGH = np.array([8, 48, 107], np.float32)
_LINE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def _text(image, text, org, scale, colour=_BLACK, thickness=1):
    cv2.putText(image, text, org, _FONT, scale, colour, thickness, cv2.LINE_AA)


def _text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, _FONT, scale, 1)[0][0]


def write_png(path: str | epath.Path, image: np.ndarray) -> epath.Path:
    """Writes an (H, W, 3) uint8 RGB image as PNG (parents created); returns the path."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode PNG {path}")
    path.write_bytes(png.tobytes())
    return path


def confusion_image(
    confusion: np.ndarray, class_names: Sequence[str], *, title: str = "", cell: int = 14
) -> np.ndarray:
    """(C, C) counts (rows true, columns predicted) -> (H, W, 3) uint8 image, cells shaded by row-normalised rate."""
    confusion = np.asarray(confusion)
    num = len(class_names)
    if confusion.shape != (num, num):
        raise ValueError(f"confusion_image: confusion shape {confusion.shape} does not match {num} class names")
    rows = confusion.sum(axis=1, keepdims=True)
    # Rows of classes absent from the test split stay white instead of dividing by zero.
    rate = np.divide(confusion, rows, out=np.zeros(confusion.shape, np.float32), where=rows > 0)

    scale = cell / 36.0
    label_w = max(_text_width(n, scale) for n in class_names) + 6
    title_h = 3 * cell  # title line, then the "predicted" axis title
    axis_w = cell + 4  # room for the vertical "true" axis title
    top, left = title_h + label_w, axis_w + label_w
    image = np.full((top + num * cell + cell, left + num * cell + cell, 3), 255, np.uint8)

    colours = (_LOW + rate[..., None] * (_HIGH - _LOW)).astype(np.uint8)
    matrix = np.repeat(np.repeat(colours, cell, axis=0), cell, axis=1)
    image[top:top + num * cell, left:left + num * cell] = matrix
    for i in range(num + 1):
        cv2.line(image, (left, top + i * cell), (left + num * cell, top + i * cell), (220, 220, 220), 1)
        cv2.line(image, (left + i * cell, top), (left + i * cell, top + num * cell), (220, 220, 220), 1)
    for i, j in zip(*np.nonzero(confusion)):
        count = str(int(confusion[i, j]))
        colour = (255, 255, 255) if rate[i, j] > 0.5 else _BLACK
        x = left + j * cell + (cell - _text_width(count, scale * 0.9)) // 2
        _text(image, count, (x, top + i * cell + int(cell * 0.7)), scale * 0.9, colour)

    for i, name in enumerate(class_names):
        _text(image, name, (left - 3 - _text_width(name, scale), top + i * cell + int(cell * 0.7)), scale)
    # Column names: draw horizontally on a strip, then rotate it so they read bottom-to-top above the columns.
    strip = np.full((num * cell, label_w, 3), 255, np.uint8)
    for j, name in enumerate(class_names):
        _text(strip, name, (3, j * cell + int(cell * 0.7)), scale)
    image[title_h:title_h + label_w, left:left + num * cell] = np.rot90(strip)

    _text(image, "predicted", (left, title_h - 4), scale * 1.2)
    true_strip = np.full((axis_w, _text_width("true", scale * 1.2) + 4, 3), 255, np.uint8)
    _text(true_strip, "true", (2, axis_w - 5), scale * 1.2)
    image[top:top + true_strip.shape[1], 0:axis_w] = np.rot90(true_strip)
    if title:
        _text(image, title, (4, int(cell * 1.3)), scale * 1.4)
    return image


def read_metrics(path: str | epath.Path) -> list[dict]:
    """metrics.jsonl (one JSON object per line) -> list of dicts; blank lines skipped."""
    path = epath.Path(path)
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON object per line ({e}); is this a metrics.jsonl?") from None
    return records


def numeric_keys(records: Iterable[dict], x: str) -> list[str]:
    """Keys with a number (not a bool) in some record, other than `x`, in first-seen order."""
    keys = {}
    for r in records:
        for k, v in r.items():
            if k != x and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.setdefault(k, None)
    return list(keys)


_SPLITS = ("train", "eval", "test", "val")


def _metric_name(key: str) -> str:
    """'train_loss', 'eval/loss' -> 'loss'; keys without a split prefix ('learning_rate') stay whole."""
    for split in _SPLITS:
        for sep in ("_", "/"):
            if key.startswith(split + sep):
                return key[len(split) + 1:]
    return key


def _panel(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, size: tuple[int, int], x: str) -> np.ndarray:
    """One axis box with one polyline per series, min/max ticks on both axes."""
    height, width = size
    image = np.full((height, width, 3), 255, np.uint8)
    scale = 0.4
    left, right, top, bottom = 60, 10, 22, 24
    xs = np.concatenate([s[0] for s in series.values()])
    ys = np.concatenate([s[1] for s in series.values()])
    finite = np.isfinite(ys)
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = (float(ys[finite].min()), float(ys[finite].max())) if finite.any() else (0.0, 1.0)
    if x1 == x0:
        x1 = x0 + 1.0
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def to_px(x, y):
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return np.stack([px, py], axis=-1)

    cv2.rectangle(image, (left, top), (width - right, height - bottom), _GREY, 1)
    _text(image, title, (left, 15), 0.45)
    _text(image, f"{y1:.4g}", (2, top + 8), scale)
    _text(image, f"{y0:.4g}", (2, height - bottom), scale)
    _text(image, f"{x0:.6g}", (left, height - 6), scale)
    label = f"{x1:.6g}"
    _text(image, label, (width - right - _text_width(label, scale), height - 6), scale)
    _text(image, x, ((left + width - right - _text_width(x, scale)) // 2, height - 6), scale, _GREY)
    for n, (name, (x, y)) in enumerate(series.items()):
        colour = _LINE_COLOURS[n % len(_LINE_COLOURS)]
        ok = np.isfinite(y)
        points = np.rint(to_px(x[ok], y[ok])).astype(np.int32)
        if len(points) == 1:
            cv2.circle(image, tuple(int(v) for v in points[0]), 3, colour, -1)
        else:
            cv2.polylines(image, [points.reshape(-1, 1, 2)], False, colour, 1, cv2.LINE_AA)
        if len(series) > 1:
            _text(image, name, (width - right - 4 - _text_width(name, scale), top + 14 * (n + 1)), scale, colour)
    return image


def curves_image(
    records: Sequence[dict], *, x: str = "step", keys: Sequence[str] | None = None, panel: tuple[int, int] = (220, 360)
) -> np.ndarray:
    """Metric records (dicts with an `x` key) -> (H, W, 3) uint8 grid of panels, one per metric, points in order.

    A panel per key (default: every numeric key); records lacking a key (e.g. eval metrics logged once an
    epoch) are skipped for that key. Keys '<split>_<metric>' or '<split>/<metric>' (split train, eval, test
    or val) sharing a metric are drawn in one panel (train_accuracy with eval_accuracy).
    """
    keys = list(keys) if keys is not None else numeric_keys(records, x)
    if not keys:
        raise ValueError(f"curves_image: no numeric metrics besides {x!r} in {len(records)} records")
    groups: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for key in keys:
        points = [(r[x], r[key]) for r in records if key in r and x in r and r[key] is not None]
        if not points:
            raise ValueError(f"curves_image: no record has both {x!r} and {key!r}")
        metric = _metric_name(key)
        xy = np.asarray(points, np.float64)
        groups.setdefault(metric, {})[key] = (xy[:, 0], xy[:, 1])
    panels = [_panel(series, metric, panel, x) for metric, series in groups.items()]
    columns = min(3, len(panels))
    panels += [np.full_like(panels[0], 255)] * (math.ceil(len(panels) / columns) * columns - len(panels))
    return np.concatenate(
        [np.concatenate(panels[i:i + columns], axis=1) for i in range(0, len(panels), columns)], axis=0
    )


def bar_chart_image(categories: Sequence[str], series: dict[str, tuple[Sequence[float], Sequence[float]]], *,
                    title: str = "", ylabel: str = "", height: int = 320, bar: int = 18) -> np.ndarray:
    """Grouped bars: categories along x, one bar per series in each, error bars +-err -> (H, W, 3) uint8 image.

    series: name -> (values, errors), each of len(categories); NaN values draw no bar. Negative values go below
    the zero line (for differences).
    """
    values = {k: np.asarray(v, np.float64) for k, (v, _) in series.items()}
    errors = {k: np.nan_to_num(np.asarray(e, np.float64)) for k, (_, e) in series.items()}
    for name, v in values.items():
        if v.shape != (len(categories),) or errors[name].shape != (len(categories),):
            raise ValueError(f"bar_chart_image: series {name!r} needs {len(categories)} values and errors, got "
                             f"{v.shape} and {errors[name].shape}")
    lo = min([0.0] + [float(np.nanmin(v - errors[k])) for k, v in values.items() if np.isfinite(v).any()])
    hi = max([0.0] + [float(np.nanmax(v + errors[k])) for k, v in values.items() if np.isfinite(v).any()])
    hi = hi if hi > lo else lo + 1.0
    scale, left, top, bottom, gap = 0.4, 60, 24 + 14 * len(series), 90, 14
    group = bar * len(series) + gap
    width = left + group * len(categories) + 10
    image = np.full((height, max(width, 320), 3), 255, np.uint8)

    def y_px(y):
        return int(round(height - bottom - (y - lo) / (hi - lo) * (height - top - bottom)))

    _text(image, title, (left, 15), 0.45)
    for y in (lo, 0.0, hi):
        _text(image, f"{y:.3g}", (2, y_px(y) + 4), scale)
    _text(image, ylabel, (2, top - 6), scale, _GREY)
    cv2.line(image, (left, y_px(0.0)), (width - 10, y_px(0.0)), _GREY, 1)
    for n, name in enumerate(series):
        colour = _LINE_COLOURS[n % len(_LINE_COLOURS)]
        _text(image, name, (left, 30 + 14 * n), scale, colour)
        for i, (v, e) in enumerate(zip(values[name], errors[name])):
            if not np.isfinite(v):
                continue
            x0 = left + gap // 2 + i * group + n * bar
            cv2.rectangle(image, (x0, y_px(v)), (x0 + bar - 3, y_px(0.0)), colour, -1)
            if e > 0:
                xc = x0 + (bar - 3) // 2
                cv2.line(image, (xc, y_px(v - e)), (xc, y_px(v + e)), _BLACK, 1)
                for y in (v - e, v + e):
                    cv2.line(image, (xc - 3, y_px(y)), (xc + 3, y_px(y)), _BLACK, 1)
    for i, cat in enumerate(categories):  # labels written downwards (rotated), so long class names fit
        label = np.full((14, bottom - 6, 3), 255, np.uint8)
        _text(label, cat[: (bottom - 6) // 7], (0, 10), scale)
        label = np.rot90(label, k=-1)
        x0 = left + i * group + (group - label.shape[1]) // 2
        image[height - bottom + 4: height - 2, x0: x0 + label.shape[1]] = label[: bottom - 6]
    return image
