"""The report's figures: each function takes plain numbers and labels and returns a matplotlib figure.

They know nothing of the tables: the sections (sections.py) choose what to draw and write the captions. Where a
plot carries many labelled points, the labels stand in a column beside the axes, each joined to its point by a
thin line, because labels set next to their points overlap as soon as a dozen methods share a corner.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FONT = 7              # points: label text
LINE = 1.45 * FONT / 72   # inches between two labels of a column


def save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No Software stamp: the PNG bytes then depend on the data alone.
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def by_method(labels: list[str], means, lows, highs, xlabel: str):
    """Each method's value with its interval, best at the top (labels and values in ranked order)."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(7, 0.35 * n + 1.2))
    y = np.arange(n)[::-1]
    means = np.asarray(means, dtype=float)
    low = np.nan_to_num(means - np.asarray(lows, dtype=float))
    high = np.nan_to_num(np.asarray(highs, dtype=float) - means)
    ax.errorbar(means, y, xerr=[low, high], fmt="o", capsize=3)
    ax.set_yticks(y, labels)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return fig


def pareto_front(x, y, direction: int) -> np.ndarray:
    """Indices of the points no other point beats with less or equal cost, ordered by cost."""
    order = np.lexsort((-direction * y, x))
    front, best = [], -np.inf
    for i in order:
        if direction * y[i] > best:
            front.append(i)
            best = direction * y[i]
    return np.array(front, dtype=int)


def against_cost(points: list[dict], xlabel: str, ylabel: str, direction: int):
    """Value against a cost on a log axis, one colour per group (a method family), the Pareto front drawn.
    `points`: dicts with x (> 0), y, label and group."""
    x = np.array([p["x"] for p in points], dtype=float)
    y = np.array([p["y"] for p in points], dtype=float)
    groups = sorted({p["group"] for p in points})
    colours = {g: plt.get_cmap("tab10")(i % 10) for i, g in enumerate(groups)}
    # Tall enough for the label column to hold every label at its spacing.
    fig, ax = plt.subplots(figsize=(7, max(4.5, 1.3 * LINE * len(points) + 1.5)))
    for group in groups:
        mine = [i for i, p in enumerate(points) if p["group"] == group]
        ax.scatter(x[mine], y[mine], color=colours[group], label=group, zorder=3)
    front = pareto_front(x, y, direction)
    ax.plot(x[front], y[front], "-", color="0.4", alpha=0.6, drawstyle="steps-post", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    legend_below(ax, ncol=min(len(groups) + 1, 4))
    label_column(ax, x, y, [p["label"] for p in points], [colours[p["group"]] for p in points])
    return fig


def legend_below(ax, ncol: int) -> None:
    """The legend under the axis label, a fixed distance below the axes whatever the figure's height (inside
    the axes it would cover points)."""
    below = 0.6 / (ax.get_position().height * ax.figure.get_figheight())   # 0.6 inch in axes fraction
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -below), ncol=ncol, fontsize=8)


def label_column(ax, x, y, labels: list[str], colours) -> None:
    """The labels in a column right of the axes, in the order of their points' heights, none closer to the
    next than one line."""
    ax.set_xlim(ax.get_xlim())   # freeze the limits: the positions below are computed in them
    ax.set_ylim(ax.get_ylim())
    heights = ax.transAxes.inverted().transform(ax.transData.transform(np.column_stack([x, y])))[:, 1]
    gap = LINE / ax.get_position().height / ax.figure.get_figheight()
    order = np.argsort(heights, kind="stable")
    placed = spread(heights[order], gap)
    for i, height in zip(order, placed):
        ax.annotate(labels[i], (x[i], y[i]), xytext=(1.04, height), textcoords="axes fraction", va="center",
                    fontsize=FONT, color=colours[i], annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "0.7", "lw": 0.5, "shrinkA": 0, "shrinkB": 3})


def spread(wanted, gap: float, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Sorted positions moved as little as needed to stand `gap` apart, inside [low, high] when they fit."""
    placed = np.clip(np.asarray(wanted, dtype=float), low, high)
    for i in range(1, len(placed)):           # push up whatever crowds the one below
        placed[i] = max(placed[i], placed[i - 1] + gap)
    if len(placed) and placed[-1] > high:     # then down from the top, so the column ends inside the axes
        placed[-1] = high
        for i in range(len(placed) - 2, -1, -1):
            placed[i] = min(placed[i], placed[i + 1] - gap)
    return placed


def k_shot(series: dict[str, tuple], ylabel: str):
    """One line per series: name → (k, mean, low, high) arrays, k ascending; a tick at every k drawn."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (k, mean, low, high) in series.items():
        mean = np.asarray(mean, dtype=float)
        err = [np.nan_to_num(mean - np.asarray(low, dtype=float)), np.nan_to_num(np.asarray(high, dtype=float) - mean)]
        ax.errorbar(k, mean, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xticks(sorted({int(k) for ks, *_ in series.values() for k in ks}))
    ax.set_xlabel("k")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    legend_below(ax, ncol=2)
    return fig


def learning_rate_trace(pairs: list[tuple[float, float]], chosen: float, title: str, ylabel: str):
    """The dev metric of each learning-rate trial (pairs sorted by rate), the chosen rate starred."""
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([lr for lr, _ in pairs], [v for _, v in pairs], marker="o")
    ax.plot([chosen], [dict(pairs)[chosen]], marker="*", markersize=14, linestyle="none", label="chosen")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def confusion(labels: list[str], matrix, title: str):
    """Rows gold, columns predicted; each cell its count and its share of the gold row (the colour)."""
    matrix = np.asarray(matrix, dtype=float)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = 1.1 * len(labels) + 1.8
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, f"{count:,.0f}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=8,
                color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=10)
    return fig
