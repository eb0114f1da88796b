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
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.ravel()[k:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def plot_iterations(df: pd.DataFrame, path) -> Path:
    """Iterations vs n, log-log, one panel per field; unconverged points hollow."""
    fields = list(dict.fromkeys(df["field"]))
    fig, axes = _grid(len(fields))
    for ax, field in zip(axes, fields, strict=False):
        g = df[df["field"] == field]
        for method, m in g.groupby("method", sort=False):
            m = m.sort_values("n")
            line = ax.loglog(m["n"], m["iterations"], "-", label=method, alpha=0.8)[0]
            ok = m["converged"].astype(bool)
            ax.loglog(m["n"][ok], m["iterations"][ok], "o", color=line.get_color())
            ax.loglog(m["n"][~ok], m["iterations"][~ok], "o", mfc="none", color=line.get_color())
        ax.set_title(f"{field}")
        ax.set_xlabel("n (grid points per side)")
        ax.set_ylabel("iterations to rtol (hollow: not converged)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("Iterations vs grid size")
    return _save(fig, path)


def plot_time_to_solution(df: pd.DataFrame, path) -> Path:
    """Total time to solution (setup + solve) vs N, log-log, one panel per field."""
    fields = list(dict.fromkeys(df["field"]))
    fig, axes = _grid(len(fields))
    for ax, field in zip(axes, fields, strict=False):
        g = df[(df["field"] == field) & df["converged"].astype(bool)]
        for method, m in g.groupby("method", sort=False):
            m = m.sort_values("N")
            ax.loglog(m["N"], m["total_s"], "o-", label=method, alpha=0.8)
        ax.set_title(f"{field}")
        ax.set_xlabel("N (unknowns)")
        ax.set_ylabel("setup + solve [s] (converged only)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("Time to solution vs problem size")
    return _save(fig, path)


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

