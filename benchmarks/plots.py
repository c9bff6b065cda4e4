"""Figures of the benchmarks (matplotlib's object API with the Agg canvas: no global backend state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: Path) -> None:
    """Lay out ``fig`` and write it to ``path`` (format from the suffix) at 120 dpi on an Agg canvas."""
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_cumulative(errors: dict[str, np.ndarray], path: Path, max_error: float, xlabel: str, title: str) -> None:
    """Cumulative curves: fraction of items with error <= x, one line per method."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    x = np.linspace(0, max_error, 200)
    for name, err in errors.items():
        err = np.asarray(err, dtype=np.float64)
        y = [(err <= t).mean() * 100 if err.size else 0.0 for t in x]
        ax.plot(x, y, label=name)
    ax.set(xlabel=xlabel, ylabel="% of pairs", title=title, xlim=(0, max_error), ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def plot_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, xlabel: str, ylabel: str, title: str):
    """One ``(x, y)`` line per method (e.g. MMA against the pixel threshold)."""
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for name, (x, y) in curves.items():
        ax.plot(x, y, marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def plot_bars(result: dict, keys: tuple[str, ...], path: Path) -> None:
    """One panel per metric key, one bar per method (for benchmarks without a natural curve)."""
    names = list(result["methods"])
    fig = Figure(figsize=(3 * len(keys), 3.2))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        vals = [result["methods"][n].get(key) for n in names]
        ax.bar(names, [v if v is not None else 0 for v in vals])
        ax.set_title(key)
        ax.tick_params(axis="x", rotation=45)
    save_figure(fig, path)
