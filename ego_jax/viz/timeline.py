"""Sliding-window predictions over a long video: a CSV row per window and a plot of the top classes over time.

The plot is drawn like every other chart (ego_jax.viz.charts: Agg canvas, no pyplot, PNG at charts.DPI).
"""

import csv

import numpy as np

from ego_jax.viz import charts


def shown_classes(probs: np.ndarray, top: int) -> np.ndarray:
    """(N, C) probabilities -> the `top` classes with the highest peak over the windows, highest first."""
    return np.argsort(-np.asarray(probs).max(axis=0), kind="stable")[:top]


def write_csv(path, starts, ends, probs: np.ndarray, class_names, top: int = 5) -> None:
    """One row per window: start_s, end_s, then the window's `top` best classes and probabilities, best first."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start_s", "end_s"] + [f"{what}_{k}" for k in range(1, top + 1) for what in ("class", "prob")])
        for start, end, row in zip(starts, ends, np.asarray(probs)):
            best = np.argsort(-row, kind="stable")[:top]
            writer.writerow(
                [f"{start:.3f}", f"{end:.3f}"] + [v for c in best for v in (class_names[c], f"{row[c]:.6f}")]
            )


def plot(path, starts, ends, probs: np.ndarray, class_names, top: int = 5, title: str = "") -> None:
    """PNG of the probability of the `top` classes (highest peak first) at each window's centre, over time (s)."""
    probs = np.asarray(probs)
    centres = (np.asarray(starts) + np.asarray(ends)) / 2
    fig = charts.figure(8, 3.5)
    ax = fig.add_subplot()
    for c in shown_classes(probs, top):
        ax.plot(centres, probs[:, c], marker="o", markersize=3, label=class_names[c])
    ax.set(xlabel="time (s, window centre)", ylabel="probability", ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    charts.save(fig, path)
