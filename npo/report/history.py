"""History over commits: per machine, source and case, the values in commit order.

A time series never mixes machines (timings are not comparable across them)
or sources. Each row is one commit; changes against the previous commit of
the same series are flagged:

- ``iterations_changed``: the deterministic iteration count moved (the
  sharpest regression signal);
- ``converged_changed``: convergence was gained or lost;
- ``time_flag``: the median solve time (or setup time when there is no solve
  time) moved by more than :data:`TIME_FLAG_RATIO` either way;
- ``discontinuity``: the benchmark code itself changed (asv's code version),
  so the step may be the benchmark's and not the solver's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["TIME_FLAG_RATIO", "history", "history_markdown", "latest"]

TIME_FLAG_RATIO = 1.5
SERIES = ["machine", "source", "case"]
VALUES = ["iterations", "converged", "setup_s", "apply_s", "solve_s", "apply_per_spmv"]


def _commit_order(df: pd.DataFrame) -> pd.Series:
    # commit_date is ISO-8601 (sortable); ties keep first appearance
    dates = pd.to_datetime(df["commit_date"], utc=True, errors="coerce", format="ISO8601")
    order = (
        pd.DataFrame({"commit": df["commit"], "date": dates})
        .drop_duplicates("commit")
        .sort_values("date", kind="stable")
    )
    rank = {c: i for i, c in enumerate(order["commit"])}
    return df["commit"].map(rank)


def history(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (machine, source, case, commit), in commit order, with change flags."""
    if df.empty:
        raise ValueError("no measurements to build a history from")
    d = df.copy()
    d["commit_order"] = _commit_order(d)
    agg = {v: "median" for v in VALUES if v != "converged"}
    agg["converged"] = "min"
    agg["code_version"] = "last"
    agg["commit_date"] = "first"
    agg["commit_order"] = "first"
    for c in ("n", "field", "method"):
        agg[c] = "first"
    d["converged"] = d["converged"].astype(float)
    h = d.groupby(SERIES + ["commit"], sort=False, dropna=False).agg(agg).reset_index()
    h = h.sort_values(SERIES + ["commit_order"], kind="stable").reset_index(drop=True)
    h["commit_short"] = h["commit"].astype(str).str[:8]
    g = h.groupby(SERIES, sort=False, dropna=False)
    prev_it = g["iterations"].shift()
    prev_conv = g["converged"].shift()
    h["iterations_changed"] = prev_it.notna() & h["iterations"].notna() & (h["iterations"] != prev_it)
    h["converged_changed"] = prev_conv.notna() & h["converged"].notna() & (
        h["converged"] != prev_conv
    )
    t = h["solve_s"].fillna(h["setup_s"])
    ratio = t / g["solve_s"].shift().fillna(g["setup_s"].shift())
    h["time_ratio"] = ratio
    h["time_flag"] = ratio.notna() & (
        (ratio > TIME_FLAG_RATIO) | (ratio < 1.0 / TIME_FLAG_RATIO)
    )
    prev_ver = g["code_version"].shift()
    h["discontinuity"] = (
        prev_ver.notna() & h["code_version"].astype(str).ne("")
        & h["code_version"].ne(prev_ver)
    )  # fmt: skip
    h["converged"] = h["converged"].map(lambda v: bool(v) if np.isfinite(v) else np.nan)
    return h


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """The newest commit's rows of each (machine, source)."""
    d = df.copy()
    d["commit_order"] = _commit_order(d)
    newest = d.groupby(["machine", "source"])["commit_order"].transform("max")
    return d[d["commit_order"] == newest].drop(columns="commit_order")


def _cell(r) -> str:
    if pd.isna(r["iterations"]):
        txt = "-"
    else:
        txt = f"{int(r['iterations'])}"
        if r["converged"] is False:
            txt += " (nc)"
    if pd.notna(r["solve_s"]):
        txt += f" / {r['solve_s'] * 1e3:.3g} ms"
    flags = []
    if r["iterations_changed"] or r["converged_changed"]:
        flags.append("**Δits**")
    if r["time_flag"]:
        flags.append(f"**×{r['time_ratio']:.2f}**")
    if r["discontinuity"]:
        flags.append("†")
    return txt + (" " + " ".join(flags) if flags else "")


def history_markdown(h: pd.DataFrame) -> str:
    """Markdown: per machine and source, cases x commits (iterations / median solve time)."""
    lines = [
        "# History over commits",
        "",
        "Cells: iterations (nc = not converged) / median solve time. Flags against the previous "
        f"commit: **Δits** iteration count or convergence changed; **×r** solve time moved by more "
        f"than {TIME_FLAG_RATIO}x; † benchmark code changed (discontinuity). Machines and sources "
        "are never mixed.",
        "",
    ]
    for (machine, source), g in h.groupby(["machine", "source"], sort=False):
        commits = (
            g[["commit_short", "commit_order", "commit_date"]]
            .drop_duplicates("commit_short")
            .sort_values("commit_order")
        )
        cols = list(commits["commit_short"])
        table = {}
        for case, c in g.groupby("case", sort=False):
            table[case] = {r["commit_short"]: _cell(r) for _, r in c.iterrows()}
        frame = pd.DataFrame.from_dict(table, orient="index").reindex(columns=cols).fillna("")
        frame.index.name = "case"
        n_changes = int(g["iterations_changed"].sum() + g["converged_changed"].sum())
        lines += [
            f"## {source} on {machine}",
            "",
            f"{len(cols)} commits, {len(table)} cases, {n_changes} iteration/convergence changes, "
            f"{int(g['time_flag'].sum())} time flags, {int(g['discontinuity'].sum())} "
            "discontinuities.",
            "",
            "Commits in order: "
            + ", ".join(f"`{s}` ({d[:10]})" for s, d in zip(commits["commit_short"],
                                                              commits["commit_date"].astype(str),
                                                              strict=True)),
            "",
            frame.reset_index().to_markdown(index=False),
            "",
        ]
    return "\n".join(lines)
