"""Charts of runs and suites with matplotlib: confusion matrices, learning curves, the suites' accuracy bars, per-class
differences and labelled image grids.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so a library call never changes the user's
backend or leaks open figures; save() writes a PNG at DPI and, for papers, vector copies beside it.
"""

import io
import json
import textwrap
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

DPI = 150
_SPLITS = ("train", "eval", "val", "test")  # metric-name prefixes: 'train/loss', 'eval_accuracy'
_EVALUATED = ("eval", "val", "test")  # measured at eval steps only: drawn with a marker at each


def figure(width: float, height: float, **kwargs) -> Figure:
    """A Figure of width x height inches on an Agg canvas, laid out by matplotlib's constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save(
    fig: Figure, path: str | epath.Path, *, vector: Sequence[str] = (), colors: int | None = None
) -> list[epath.Path]:
    """fig -> `path` as PNG at DPI and the same name with each suffix of `vector` ('svg', 'pdf'); parents created.

    colors: a PNG with a palette of that many colours (no dithering), several times smaller (pictures in docs).
    Written through epath (a local folder or a bucket); -> the paths written, the PNG first.
    """
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in ("png", *vector):
        target = path.with_suffix(f".{fmt}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=DPI)
        if fmt == "png" and colors:
            image = Image.open(buffer).convert("RGB").quantize(colors, dither=Image.Dither.NONE)
            buffer = io.BytesIO()
            image.save(buffer, format="png", optimize=True)
        target.write_bytes(buffer.getvalue())
        written.append(target)
    return written


# ------------------------------------------------------------------------------------------------ confusion


def present_classes(confusion: np.ndarray) -> np.ndarray:
    """(C, C) counts -> (C,) bool: the classes that occur as a true label or as a prediction."""
    confusion = np.asarray(confusion)
    return (confusion.sum(0) + confusion.sum(1)) > 0


def confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], *, title: str = "") -> Figure:
    """(C, C) counts (rows true, columns predicted) -> Figure: cells shaded by the row-normalised rate and labelled
    with the count and that rate in %, class names on both axes."""
    confusion = np.asarray(confusion)
    num = len(class_names)
    if confusion.shape != (num, num):
        raise ValueError(f"confusion_matrix: confusion shape {confusion.shape} does not match {num} class names")
    rows = confusion.sum(axis=1, keepdims=True)
    # Rows of classes absent from the split stay white instead of dividing by zero.
    rate = 100 * np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    label_in = 0.07 * max(len(n) for n in class_names)  # room for the longest name (inches)
    side = max(4.0, 0.3 * num)
    fig = figure(side + label_in + 1.6, side + label_in + 0.8)
    ax = fig.add_subplot()
    image = ax.imshow(rate, cmap="Blues", vmin=0, vmax=100)
    font = 7 if num <= 20 else 5
    for i, j in zip(*np.nonzero(confusion)):
        ax.text(
            j,
            i,
            f"{confusion[i, j]}\n{rate[i, j]:.0f}%",
            ha="center",
            va="center",
            fontsize=font,
            color="white" if rate[i, j] > 50 else "black",
        )
    ax.set_xticks(range(num), class_names, rotation=90, fontsize=8 if num <= 20 else 6)
    ax.set_yticks(range(num), class_names, fontsize=8 if num <= 20 else 6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=min(1.0, 6 / side), label="% of the true class (row-normalised)")
    return fig


# -------------------------------------------------------------------------------------------------- curves


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


def _split_metric(key: str) -> tuple[str, str]:
    """'train/loss', 'eval_accuracy' -> (split, metric); 'lr', 'lr/head' -> ('', 'learning rate')."""
    if key == "lr" or key.startswith(("lr/", "learning_rate")):
        return "", "learning rate"
    for split in _SPLITS:
        for sep in ("/", "_"):
            if key.startswith(split + sep):
                return split, key[len(split) + 1 :]
    return "", key


def curves(records: Sequence[dict], *, x: str = "step", keys: Sequence[str] | None = None) -> Figure:
    """Metric records (dicts with an `x` key) -> Figure, one axis per metric with a line per split.

    A metric's splits share an axis (train/accuracy with eval/accuracy); evaluated splits (eval, val, test) get
    a marker at each step they were measured at; learning rates (lr, lr/<group>) share a log-scale axis.
    Records lacking a key are skipped for it.
    """
    keys = list(keys) if keys is not None else numeric_keys(records, x)
    if not keys:
        raise ValueError(f"curves: no numeric metrics besides {x!r} in {len(records)} records")
    panels: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        points = [(r[x], r[key]) for r in records if key in r and x in r and r[key] is not None]
        if not points:
            raise ValueError(f"curves: no record has both {x!r} and {key!r}")
        panels.setdefault(_split_metric(key)[1], {})[key] = np.asarray(points, np.float64)
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig = figure(max(7.0, 4.2 * columns), 3.0 * rows)
    for n, (metric, series) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, columns, n + 1)
        for key, xy in series.items():
            evaluated = _split_metric(key)[0] in _EVALUATED or len(xy) == 1
            ax.plot(xy[:, 0], xy[:, 1], marker="o" if evaluated else None, markersize=4, label=key)
        if metric == "learning rate" and all((xy[:, 1] > 0).all() for xy in series.values()):
            ax.set_yscale("log")
        ax.set(title=metric, xlabel=x)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize="small")
    return fig


# ------------------------------------------------------------------------------------------------------ bars


def accuracy_bars(
    groups: Sequence[str],
    series: Mapping[str, Mapping],
    *,
    title: str = "",
    ylabel: str = "test accuracy (%)",
    published_label: str = "published",
) -> Figure:
    """Grouped bars, one group per entry of `groups` and one bar per series in each -> Figure.

    series: name -> dict(points=[values (%) per group], published=[None | value | (low, high) per group]
    (optional)). A bar is the mean of its points, its error bar their sample std (2 points or more), each point
    is drawn as a dot and a published value or range as a black marker. The legend sits outside the axes.
    """
    width = 0.8 / len(series)
    fig = figure(max(7.5, 3.5 + 0.45 * len(groups) * len(series)), 4.5)
    ax = fig.add_subplot()
    handles = {}  # legend: the series, then one entry per kind of marker
    for k, (name, s) in enumerate(series.items()):
        points = [np.asarray(p, np.float64) for p in s["points"]]
        if len(points) != len(groups):
            raise ValueError(
                f"accuracy_bars: series {name!r} has {len(points)} groups of points, expected "
                f"{len(groups)} ({list(groups)})"
            )
        xs = np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width
        means = [p.mean() if p.size else np.nan for p in points]
        stds = [p.std(ddof=1) if p.size > 1 else 0.0 for p in points]
        handles[name] = ax.bar(
            xs, means, 0.9 * width, yerr=stds, capsize=3, color=f"C{k}", error_kw=dict(elinewidth=1, ecolor="0.2")
        )
        for x, p in zip(xs, points):
            jitter = np.linspace(-0.2, 0.2, p.size) * width if p.size > 1 else np.zeros(p.size)
            handles["seeds"] = ax.scatter(x + jitter, p, s=14, color="black", zorder=3)
        for x, ref in zip(xs, s.get("published") or [None] * len(groups)):
            if ref is None:
                continue
            low, high = (ref, ref) if np.isscalar(ref) else ref
            handles[published_label] = ax.errorbar(
                x, (low + high) / 2, yerr=(high - low) / 2, fmt="D", color="black", mfc="white", capsize=4, zorder=4
            )
    ax.set_xticks(range(len(groups)), groups)
    ax.set(ylabel=ylabel, title=title, ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    order = [*series, *(k for k in handles if k not in series)]
    ax.legend(
        [handles[k] for k in order],
        order,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        borderaxespad=0,
        fontsize="small",
    )
    return fig


def differences(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "difference (percentage points)",
) -> Figure:
    """Horizontal grouped bars: one row per category, one bar per series (NaN: none) -> Figure, rows ordered by
    the mean difference over the series, largest first."""
    values = np.array([np.asarray(v, np.float64) for v in series.values()])
    if values.shape[1:] != (len(categories),):
        raise ValueError(f"differences: every series needs {len(categories)} values, got shape {values.shape}")
    order = np.argsort(-np.nan_to_num(np.nanmean(np.where(np.isnan(values).all(0), 0, values), axis=0)), kind="stable")
    height = 0.8 / len(series)
    fig = figure(7.5, max(3.0, 1.4 + 0.16 * len(categories) * len(series)))
    ax = fig.add_subplot()
    ys = np.arange(len(categories))
    for k, (name, v) in enumerate(zip(series, values)):
        ax.barh(ys + (k - (len(series) - 1) / 2) * height, v[order], 0.9 * height, color=f"C{k}", label=name)
    ax.axvline(0, color="0.2", linewidth=0.8)
    ax.set_yticks(ys, [categories[i] for i in order], fontsize=7 if len(categories) > 30 else 9)
    ax.invert_yaxis()
    ax.set(xlabel=xlabel, title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize="small")
    return fig


# ------------------------------------------------------------------------------------------------ image grids


def image_grid(
    rows: Sequence[Sequence[np.ndarray]],
    row_titles: Sequence[str],
    *,
    title: str = "",
    captions: Sequence[Sequence[str] | None] | None = None,
    tile: float = 1.3,
    colorbar: tuple[str, float] | None = None,
) -> Figure:
    """Rows of images -> Figure, one tile (short side `tile` inches) per image, each row titled on its left.

    Images: (H, W, 3) uint8 RGB, or (H, W) float maps drawn with the 'magma' colormap on one shared scale
    0 .. colorbar[1], explained by one colorbar labelled colorbar[0]. captions: per row, text under each tile.
    """
    columns = max(len(r) for r in rows)
    aspect = max(img.shape[1] / img.shape[0] for r in rows for img in r)
    font = 9
    line = font / 72 * 1.5  # inches per line of text
    left = 0.2 + 0.6 * font / 72 * max(len(t) for t in row_titles)  # ~0.6 em per character
    right = 1.1 if colorbar else 0.15
    gap = 0.06
    below = [line if captions is not None and captions[i] else 0 for i in range(len(rows))]
    w, h = tile * aspect, tile
    width = left + columns * w + (columns - 1) * gap + right
    title = textwrap.fill(title, max(20, int(width * 72 / (font * 0.6))))  # ~0.6 em per character
    top = 0.15 + (line * len(title.splitlines()) if title else 0)
    height = top + sum(h + b + gap for b in below) + 0.1
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    y = height - top
    mappable = None
    for i, row in enumerate(rows):
        y -= h
        for j, image in enumerate(row):
            ax = fig.add_axes(((left + j * (w + gap)) / width, y / height, w / width, h / height))
            ax.set_xticks([])
            ax.set_yticks([])
            if image.ndim == 2:
                mappable = ax.imshow(image, cmap="magma", vmin=0, vmax=colorbar[1] if colorbar else None, aspect="auto")
            else:
                ax.imshow(image, aspect="auto")
            if below[i]:
                ax.set_xlabel(captions[i][j], fontsize=font - 1, labelpad=2)
            if j == 0:
                ax.set_ylabel(row_titles[i], fontsize=font, rotation=0, ha="right", va="center", labelpad=6)
        y -= below[i] + gap
    if colorbar and mappable is not None:
        extent = (height - top - y) / height - 0.04
        bar = fig.add_axes(((width - right + 0.15) / width, y / height + 0.02, 0.12 / width, extent))
        fig.colorbar(mappable, cax=bar, label=colorbar[0])
    if title:
        fig.suptitle(title, fontsize=font + 1, y=1 - 0.05 / height, va="top")
    return fig
