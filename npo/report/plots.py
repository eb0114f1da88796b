"""PNG plots from tidy records (matplotlib, Agg backend).

Every plot draws each method with the one style :func:`style` gives it (a
fixed colour and marker from :data:`METHOD_STYLES`; methods not listed there,
such as plugins, get a stable style derived from their label), and every
figure has exactly one legend, which lists every method drawn. Axes carry
units; values that span decades get log axes. History plots draw one line
per (source, machine, device): sources are never joined.

Functions that write return the path; pass a :class:`npo.fileio.ReportSet`
as ``rs`` to stage the file in a report set instead of writing it directly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from npo.fileio import atomic_path
from npo.schema import harness_outcome

__all__ = ["METHOD_STYLES", "plot_history", "plot_iterations", "plot_time_to_solution", "style"]

#: One colour and marker per built-in method, used by every panel of every plot.
METHOD_STYLES = {
    "cg": ("#000000", "o"),
    "jacobi": ("#7f7f7f", "s"),
    "ilu": ("#d62728", "v"),
    "ilu_sym": ("#ff7f0e", "^"),
    "ilu0": ("#bcbd22", "<"),
    "amg_sa": ("#1f77b4", "D"),
    "amg_rs": ("#17becf", "d"),
    "amg_sa_rbm": ("#393b79", "P"),
    "nystrom": ("#8c564b", "X"),
    "npo": ("#2ca02c", "*"),
    "npo_pcg": ("#98df8a", "h"),
    "npo_mg": ("#006d2c", "*"),
    "npo_mg_fcg": ("#74c476", "*"),
    "gmg": ("#fd8d3c", "s"),
    "petsc_hypre": ("#9467bd", "p"),
    "petsc_gamg": ("#c5b0d5", "H"),
    "petsc_icc": ("#e377c2", ">"),
    "petsc_jacobi": ("#c49c94", "8"),
    "petsc_none": ("#525252", "x"),
}
_EXTRA_COLOURS = ["#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1b9e77", "#7570b3", "#d95f02",
                  "#666666", "#b15928", "#6a3d9a"]
_EXTRA_MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "h", "p"]
#: line style per source in history plots
SOURCE_LINES = {"asv": "-", "cli": "--", "pytest-benchmark": ":"}


def style(method: str) -> dict:
    """``{"color", "marker"}`` of a method: fixed for built-ins, stable for others."""
    if method in METHOD_STYLES:
        c, m = METHOD_STYLES[method]
    else:
        h = int(hashlib.sha256(method.encode()).hexdigest(), 16)
        c = _EXTRA_COLOURS[h % len(_EXTRA_COLOURS)]
        m = _EXTRA_MARKERS[(h // len(_EXTRA_COLOURS)) % len(_EXTRA_MARKERS)]
    return {"color": c, "marker": m}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, rs=None) -> Path:
    plt = _plt()
    try:
        if rs is not None:
            with rs.stage(path, suffix=".png") as tmp:
                fig.savefig(tmp, dpi=110, format="png")
            return rs.root / path
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        return Path(path)
    finally:
        plt.close(fig)


def _grid(k: int, width: float = 6.2, height: float = 4.2):
    plt = _plt()
    cols = min(k, 2) if k <= 4 else 3
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.9),
                             squeeze=False, layout="constrained")
    for ax in axes.ravel()[k:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _legend(fig, handles: dict) -> None:
    """One legend for the whole figure, below the panels, listing every method drawn."""
    if handles:
        labels = list(handles)
        fig.legend([handles[k] for k in labels], labels, loc="outside lower center",
                   ncol=min(len(labels), 6), fontsize=8, frameon=False)


def _spans_decades(values) -> bool:
    v = np.asarray([x for x in values if pd.notna(x) and x > 0], dtype=float)
    return v.size > 1 and v.max() / v.min() > 30


def _panel_title(key) -> str:
    problem, field = key
    return field if problem == "diffusion_2d" else f"{problem}: {field}"


def _per_field(df: pd.DataFrame, path, draw, xcol: str, xlabel: str, ylabel: str, title: str,
               rs=None) -> Path:
    """One panel per (problem, field); ``draw(ax, rows_of_one_method, method)`` draws a line."""
    from matplotlib.ticker import NullFormatter

    d = df.copy()
    d["problem"] = d.get("problem", pd.Series("diffusion_2d", index=d.index)).fillna("diffusion_2d")
    keys = list(dict.fromkeys(zip(d["problem"], d["field"], strict=True)))
    fig, axes = _grid(len(keys))
    handles = {}
    for ax, key in zip(axes, keys, strict=False):
        g = d[(d["problem"] == key[0]) & (d["field"] == key[1])]
        for method, m in g.groupby("method", sort=False):
            h = draw(ax, m, str(method))
            if h is not None:
                handles.setdefault(str(method), h)
        ticks = sorted({int(x) for x in g[xcol].dropna()})
        ax.set_xscale("log")
        if ticks:
            ax.set_xticks(ticks, [f"{t:,}" for t in ticks])  # the measured sizes
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(_panel_title(key))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    _legend(fig, handles)
    fig.suptitle(title)
    return _save(fig, path, rs)


def plot_iterations(df: pd.DataFrame, path, rs=None) -> Path:
    """Iterations vs n, one panel per field; unconverged points hollow and never joined to a
    converged one (a line from a converged point to an iteration cap draws a trend that is
    not there); a case the harness ended (out of memory, timed out) has no point."""

    def draw(ax, m, method):
        m = m.sort_values("n")
        if "reason" in m:
            m = m[~m["reason"].map(harness_outcome).astype(bool)]
        if m.empty:
            return None
        st = style(method)
        ok = m["converged"].astype(bool).to_numpy()
        # NaN breaks the line: it joins consecutive converged points only
        line = ax.plot(m["n"], m["iterations"].astype(float).where(ok), "-", color=st["color"],
                       alpha=0.8, label=method, gid=f"method:{method}")[0]
        ax.plot(m["n"][ok], m["iterations"][ok], linestyle="none", marker=st["marker"],
                color=st["color"], gid=f"method:{method}")
        ax.plot(m["n"][~ok], m["iterations"][~ok], linestyle="none", marker=st["marker"],
                mfc="none", color=st["color"], gid=f"method:{method}")
        ax.set_yscale("log")
        return _handle(method, line)

    return _per_field(df, path, draw, "n", "n (grid points per side)",
                      "iterations to rtol [count] (hollow: not converged)",
                      "Iterations vs grid size", rs)


def plot_time_to_solution(df: pd.DataFrame, path, rs=None) -> Path:
    """Total time to solution (setup + solve) vs N, log-log, one panel per field."""

    def draw(ax, m, method):
        m = m[m["converged"].astype(bool)].sort_values("N")
        if m.empty:
            return None
        st = style(method)
        line = ax.plot(m["N"], m["total_s"], "-", marker=st["marker"], color=st["color"],
                       alpha=0.8, label=method, gid=f"method:{method}")[0]
        ax.set_yscale("log")
        return _handle(method, line)

    return _per_field(df, path, draw, "N", "N (unknowns)", "setup + solve [s] (converged only)",
                      "Time to solution vs problem size", rs)


def _handle(method, line):
    from matplotlib.lines import Line2D

    st = style(method)
    return Line2D([], [], color=st["color"], marker=st["marker"], label=method)


_UNITS = {"iterations": "iterations [count]", "solve_s": "median solve time [s]",
          "setup_s": "median setup time [s]", "apply_s": "median apply time [s]",
          "apply_per_spmv": "apply cost [SpMV]", "iter_per_spmv": "cost per iteration [SpMV]"}


def plot_history(hist: pd.DataFrame, path, value: str = "iterations", rs=None) -> Path:
    """``value`` per commit (in commit order): one panel per case, every method drawn.

    Each method keeps its style; each (source, machine, device) is its own
    line (line style by source), so sources are never joined. Flagged time
    changes are ringed.
    """
    h = hist[hist[value].notna()].copy()
    if h.empty:
        raise ValueError(f"no {value} values to plot")
    # a case seen at one commit only has no history: keep the panels that have one
    span = h.groupby(["case", "source", "machine", "device"], dropna=False)["commit"].transform(
        "nunique")
    if (span > 1).any():
        h = h[h["case"].isin(set(h.loc[span > 1, "case"]))]
    h["panel"] = [f"{p}: n={n}, {f}" if p != "diffusion_2d" else f"n={n}, {f}"
                  for p, n, f in zip(h["problem"].fillna("diffusion_2d"), h["n"], h["field"],
                                     strict=True)]
    panels = list(dict.fromkeys(h.sort_values(["n", "field"], kind="stable")["panel"]))
    order = list(dict.fromkeys(hist.sort_values("commit_order")["commit_short"]))
    fig, axes = _grid(len(panels), width=5.2, height=3.6)
    handles = {}
    for ax, panel in zip(axes, panels, strict=False):
        g = h[h["panel"] == panel]
        for (method, source, _machine, _device), c in g.groupby(
                ["method", "source", "machine", "device"], sort=False, dropna=False):
            c = c.sort_values("commit_order")
            st = style(str(method))
            x = [order.index(s) for s in c["commit_short"]]
            ls = SOURCE_LINES.get(str(source), "-.")
            line = ax.plot(x, c[value], linestyle=ls, marker=st["marker"], color=st["color"],
                           ms=4, alpha=0.85, gid=f"method:{method}")[0]
            handles.setdefault(str(method), _handle(str(method), line))
            flagged = c["time_flag"].to_numpy(bool) if value.endswith(("_s", "_spmv")) else \
                c["iterations_changed"].to_numpy(bool)
            if flagged.any():
                ax.plot(np.asarray(x)[flagged], c[value].to_numpy()[flagged], linestyle="none",
                        marker="o", ms=11, mfc="none", mec="red", mew=1.5)
        ax.set_xticks(range(len(order)))  # every commit, in order, even without data
        ax.set_xticklabels(order, rotation=60, ha="right", fontsize=6)
        ax.set_title(panel, fontsize=9)
        ax.set_ylabel(_UNITS.get(value, value), fontsize=8)
        if _spans_decades(g[value]):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    sources = sorted(set(h["source"].astype(str)))
    src_note = ", ".join(f"{s}: '{SOURCE_LINES.get(s, '-.')}'" for s in sources)
    _legend(fig, handles)
    fig.suptitle(f"{_UNITS.get(value, value)} over commits (line style by source: {src_note}; "
                 "red ring: flagged change)", fontsize=10)
    return _save(fig, path, rs)


def method_colours(fig) -> dict[str, set]:
    """``{method: {colours}}`` of every line drawn in ``fig`` (for the style test)."""
    from matplotlib.colors import to_hex

    out: dict[str, set] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            gid = line.get_gid() or ""
            if gid.startswith("method:"):
                out.setdefault(gid.split(":", 1)[1], set()).add(to_hex(line.get_color()))
    return out
