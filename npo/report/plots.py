"""PNG plots from tidy records (matplotlib, Agg backend, atomic writes)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from npo.report.io import atomic_path

__all__ = ["plot_history", "plot_iterations", "plot_time_to_solution"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)
    return Path(path)


def _grid(k: int):
    plt = _plt()
    cols = min(k, 2)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.2 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[k:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _per_field(df: pd.DataFrame, path, draw, xcol: str, xlabel: str, ylabel: str,
               title: str) -> Path:
    """One log-log panel per field; ``draw(ax, rows_of_one_method, method)`` plots a line."""
    from matplotlib.ticker import NullFormatter

    fields = list(dict.fromkeys(df["field"]))
    fig, axes = _grid(len(fields))
    for ax, field in zip(axes, fields, strict=False):
        g = df[df["field"] == field]
        for method, m in g.groupby("method", sort=False):
            draw(ax, m, method)
        ticks = sorted(set(g[xcol].astype(int)))
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks])  # the measured sizes, no log clutter
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{field}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    return _save(fig, path)


def plot_iterations(df: pd.DataFrame, path) -> Path:
    """Iterations vs n, log-log, one panel per field; unconverged points hollow."""

    def draw(ax, m, method):
        m = m.sort_values("n")
        line = ax.loglog(m["n"], m["iterations"], "-", label=method, alpha=0.8)[0]
        ok = m["converged"].astype(bool)
        ax.loglog(m["n"][ok], m["iterations"][ok], "o", color=line.get_color())
        ax.loglog(m["n"][~ok], m["iterations"][~ok], "o", mfc="none", color=line.get_color())

    return _per_field(df, path, draw, "n", "n (grid points per side)",
                      "iterations to rtol (hollow: not converged)", "Iterations vs grid size")


def plot_time_to_solution(df: pd.DataFrame, path) -> Path:
    """Total time to solution (setup + solve) vs N, log-log, one panel per field."""

    def draw(ax, m, method):
        m = m[m["converged"].astype(bool)].sort_values("N")
        if not m.empty:
            ax.loglog(m["N"], m["total_s"], "o-", label=method, alpha=0.8)

    return _per_field(df, path, draw, "N", "N (unknowns)", "setup + solve [s] (converged only)",
                      "Time to solution vs problem size")


def plot_history(hist: pd.DataFrame, path, value: str = "iterations", max_panels: int = 6) -> Path:
    """``value`` per commit (in commit order), one line per case, panels per method."""
    methods = list(dict.fromkeys(hist["method"]))[:max_panels]
    fig, axes = _grid(max(len(methods), 1))
    order = list(dict.fromkeys(hist.sort_values("commit_order")["commit_short"]))
    for ax, method in zip(axes, methods, strict=False):
        g = hist[hist["method"] == method]
        for case, c in g.groupby("case", sort=False):
            c = c[c[value].notna()].sort_values("commit_order")
            if c.empty:
                continue
            x = [order.index(s) for s in c["commit_short"]]
            ax.plot(x, c[value], "o-", label=case, alpha=0.8)
        ax.set_xticks(range(len(order)))  # every commit, in order, even without data
        ax.set_xticklabels(order, rotation=45, ha="right", fontsize=7)
        ax.set_title(method)
        ax.set_ylabel(value)
        if value.endswith("_s") and (g[value] > 0).any():
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle(f"{value} over commits")
    return _save(fig, path)

