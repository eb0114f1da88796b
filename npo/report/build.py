"""``npo-bench report``: one DataFrame from every source, then history, tables, plots.

All sources are loaded and validated before anything is written, and each
file is written atomically, so a failed report never replaces a good one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from npo.report import history as hist
from npo.report import honesty, plots
from npo.report.io import write_csv, write_text
from npo.report.load import load_all

__all__ = ["DEFAULT_SOURCES", "build_reports", "latest_honesty"]

DEFAULT_SOURCES = {"asv_dir": ".asv/results", "benchmarks_dir": ".benchmarks", "runs_dir": "reports/runs"}


def latest_honesty(df: pd.DataFrame) -> pd.DataFrame:
    """Honesty frame of the newest run: CLI runs first, else the newest asv commit."""
    src = "cli" if (df["source"] == "cli").any() else df["source"].iloc[0]
    d = df[df["source"] == src]
    d = hist.latest(d)
    if src == "cli":
        newest = d.sort_values("timestamp").iloc[-1]
        d = d[(d["machine"] == newest["machine"]) & (d["commit"] == newest["commit"])]
        d = d.sort_values("timestamp").drop_duplicates("case", keep="last")
    else:
        d = d[d["machine"] == d["machine"].iloc[0]]
    return honesty.honesty_frame(d.sort_values(["n", "field"], kind="stable"))


def build_reports(asv_dir=None, benchmarks_dir=None, runs_dir=None, out="reports") -> list[Path]:
    given = {"asv_dir": asv_dir, "benchmarks_dir": benchmarks_dir, "runs_dir": runs_dir}
    if all(v is None for v in given.values()):
        given = {k: v for k, v in DEFAULT_SOURCES.items() if Path(v).exists()}
        if not given:
            raise ValueError(
                "no results found at the default places "
                f"({', '.join(DEFAULT_SOURCES.values())}); pass --asv, --benchmarks or --runs"
            )
    df = load_all(**given)
    h = hist.history(df)
    table = latest_honesty(df)
    out = Path(out)
    md_history = hist.history_markdown(h)
    md_table = honesty.honesty_markdown(table, "Latest honesty table (from `npo-bench report`)")
    paths = [
        write_csv(out / "measurements.csv", df),
        write_csv(out / "history.csv", h),
        write_text(out / "history.md", md_history),
        write_text(out / "latest-honesty.md", md_table),
        plots.plot_history(h, out / "plots" / "history-iterations.png", "iterations"),
    ]
    if h["solve_s"].notna().any():
        paths.append(plots.plot_history(h, out / "plots" / "history-solve.png", "solve_s"))
    paths.append(plots.plot_iterations(table, out / "plots" / "latest-iterations.png"))
    if table["total_s"].notna().any():
        paths.append(plots.plot_time_to_solution(table, out / "plots" / "latest-time-to-solution.png"))
    return paths
