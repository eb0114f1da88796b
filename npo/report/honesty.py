"""The wall-clock honesty table.

For each case (grid size, field) one row per method: iterations, setup,
per-apply cost (ms and in SpMVs of the same matrix), solve, total time to
solution, and the speed-up over plain CG in iterations *and* in wall-clock,
side by side. The verdict is decided by wall-clock alone: a method that
saves iterations but takes longer reads as losing. For the NPO the table adds
the training time and the break-even number of solves,
``train_s / (CG total - NPO total)``, or "never" when the NPO is not faster.

When plain CG itself hits the iteration cap, its time is a lower bound, so
the speed-ups against it are shown as lower bounds (">=").
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

__all__ = ["honesty_frame", "honesty_markdown", "honesty_text", "footnotes"]

BASELINE = "cg"

DISPLAY_COLUMNS = [
    "method", "krylov", "iterations", "converged", "setup_ms", "apply_ms", "apply_x_spmv",
    "solve_ms", "total_ms", "speedup_iters", "speedup_wall", "verdict", "memory",
    "train_s", "break_even",
]  # fmt: skip


def _fmt_bytes(b) -> str:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return ""
    b = float(b)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return ""


def _fmt_num(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if x == 0:
        return "0"
    mag = abs(x)
    if mag >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _speedup(base_value, base_ok, value, ok) -> tuple[float, str]:
    """Speed-up base/value; a lower bound when the baseline did not converge."""
    if not ok or not np.isfinite(value) or value <= 0 or not np.isfinite(base_value):
        return math.nan, "-"
    s = base_value / value
    return s, (f"{s:.2f}x" if base_ok else f">={s:.2f}x")


def honesty_frame(records: pd.DataFrame) -> pd.DataFrame:
    """Add speed-ups, verdicts and break-even solves to tidy run records.

    ``records`` has one row per (n, field, method) with the RECORD_COLUMNS of
    :mod:`npo.measure`. Returns a new frame, sorted by case, with numeric
    ``speedup_iters_x``/``speedup_wall_x`` and display columns.
    """
    if records.empty:
        raise ValueError("no records to tabulate")
    df = records.copy()
    df["converged"] = df["converged"].astype(bool)
    out = []
    for (_, _), g in df.groupby(["n", "field"], sort=False):
        base = g[g["method"] == BASELINE]
        if base.empty:
            b_its, b_time, b_ok = math.nan, math.nan, False
        else:
            b = base.iloc[0]
            b_ok = bool(b["converged"])
            b_its = float(b["iterations"])
            # an unconverged CG ran to the cap: its elapsed time is a lower bound
            b_time = float(b["total_s"] if b_ok else b["setup_s"] + b["elapsed_s"])
        for _, r in g.iterrows():
            r = r.copy()
            ok = bool(r["converged"])
            s_it, s_it_txt = _speedup(b_its, b_ok, float(r["iterations"]), ok)
            s_w, s_w_txt = _speedup(b_time, b_ok, float(r["total_s"]), ok)
            r["speedup_iters_x"], r["speedup_iters"] = s_it, s_it_txt
            r["speedup_wall_x"], r["speedup_wall"] = s_w, s_w_txt
            r["verdict"] = _verdict(r["method"], ok, s_it, s_w, b_ok)
            r["break_even"] = _break_even(r, b_time, b_ok)
            out.append(r)
    res = pd.DataFrame(out).reset_index(drop=True)
    res["setup_ms"] = res["setup_s"] * 1e3
    res["apply_ms"] = res["apply_s"] * 1e3
    res["apply_x_spmv"] = res["apply_per_spmv"]
    res["solve_ms"] = res["solve_s"] * 1e3
    res["total_ms"] = res["total_s"] * 1e3
    res["memory"] = res["nbytes"].map(_fmt_bytes)
    return res


def _verdict(method, ok, s_it, s_w, base_ok) -> str:
    if method == BASELINE:
        return "baseline" if ok else "baseline (not converged)"
    if not ok:
        return "FAILS: not converged"
    if s_w > 1:
        return "wins" if base_ok else "wins (CG did not converge)"
    if np.isfinite(s_it) and s_it > 1:
        return f"LOSES despite {s_it:.1f}x fewer iterations"
    return "LOSES"


def _break_even(r, base_total, base_ok) -> str:
    train = r.get("train_s", math.nan)
    if train is None or not np.isfinite(train):
        return ""
    if not r["converged"] or not np.isfinite(base_total):
        return "never"
    saved = base_total - float(r["total_s"])
    if saved <= 0:
        return "never"
    solves = math.ceil(train / saved)
    return f"{solves:,}" if base_ok else f"<={solves:,}"


def _display(df: pd.DataFrame) -> pd.DataFrame:
    d = pd.DataFrame(
        {
            "method": df["method"],
            "krylov": df["krylov"],
            "its": df["iterations"].map(lambda v: f"{int(v):,}"),
            "conv": df["converged"].map(lambda v: "yes" if v else "NO"),
            # recurrence and true residual part ways near 1e-10 on high contrast
            "true relres": df.get("true_relres", pd.Series(np.nan, index=df.index)).map(
                lambda v: f"{v:.1e}" if np.isfinite(v) else "-"
            ),
            "setup ms": df["setup_ms"].map(_fmt_num),
            "apply ms": df["apply_ms"].map(_fmt_num),
            "apply xSpMV": df["apply_x_spmv"].map(lambda v: _fmt_num(v, 2)),
            "solve ms": df["solve_ms"].map(_fmt_num),
            "total ms": df["total_ms"].map(_fmt_num),
            "speed-up its": df["speedup_iters"],
            "speed-up wall": df["speedup_wall"],
            "verdict": df["verdict"],
            "memory": df["memory"],
            "train s": df["train_s"].map(lambda v: _fmt_num(v, 3) if np.isfinite(v) else ""),
            "break-even solves": df["break_even"],
        }
    )
    return d


def footnotes(records: pd.DataFrame) -> list[str]:
    """Machine, threads, device, commit, versions and protocol of the records."""

    def uniq(col):
        vals = sorted({str(v) for v in records[col].dropna()}) if col in records else []
        return ", ".join(vals) if vals else "unknown"

    versions = {}
    for v in records.get("versions", pd.Series(dtype=str)).dropna().unique():
        try:
            versions.update(json.loads(v))
        except (TypeError, ValueError):
            pass
    vtxt = ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "unknown"
    rtol = uniq("rtol")
    return [
        f"machine: {uniq('machine')}; device: {uniq('device')}; threads (BLAS/OpenMP/torch): "
        f"{uniq('threads')}",
        f"commit: {uniq('commit')} ({uniq('commit_date')}); measured {_span(records)}",
        f"versions: {vtxt}",
        f"protocol: rtol {rtol} on the recurrence residual, x0 = 0, b = grf_rhs(n, seed=42); "
        "times are medians of repeats; total = setup + solve; apply xSpMV = apply time / "
        "time of one A@v in the same process; speed-ups are plain CG / method; true relres = "
        "||b - Ax||/||b|| at the end (the stopping test is on the recurrence residual). A method that "
        "did not converge has no solve or total time. NPO training time is not in total; "
        "break-even = training / (CG total - NPO total).",
    ]


def _span(records: pd.DataFrame) -> str:
    ts = sorted(str(t) for t in records.get("timestamp", pd.Series(dtype=str)).dropna() if str(t))
    if not ts:
        return "unknown"
    return ts[0] if ts[0] == ts[-1] else f"{ts[0]} to {ts[-1]}"


def _sections(df: pd.DataFrame):
    for (n, field), g in df.groupby(["n", "field"], sort=False):
        yield n, field, g


def _not_run(skipped, n, field) -> list[str]:
    rows = [(m, why) for (sn, sf, m, why) in skipped or () if sn == n and sf == field]
    if not rows:
        return []
    return ["Not run here (the catalogue's reasons): "
            + "; ".join(f"`{m}`: {why}" for m, why in rows) + ".", ""]


def honesty_markdown(df: pd.DataFrame, title: str = "Wall-clock honesty table",
                     skipped=None) -> str:
    """Markdown: one section per case, then the footnotes.

    ``skipped`` is an iterable of ``(n, field, method, reason)`` for the
    combinations the catalogue does not run; each section lists its own.
    """
    lines = [f"# {title}", ""]
    for n, field, g in _sections(df):
        N = int(g["N"].iloc[0])
        lines += [f"## n = {n} (N = {N:,}), field {field}", ""]
        lines.append(_display(g).to_markdown(index=False))
        lines.append("")
        lines += _not_run(skipped, n, field)
    lines += ["---", ""] + [f"- {f}" for f in footnotes(df)] + [""]
    return "\n".join(lines)


def honesty_text(df: pd.DataFrame) -> str:
    """A terminal rendering: one block per case."""
    from tabulate import tabulate

    blocks = []
    for n, field, g in _sections(df):
        d = _display(g).drop(columns=["krylov", "memory", "true relres"])
        blocks.append(f"n = {n}, field {field}\n" + tabulate(d, headers="keys", showindex=False))
    notes = "\n".join(f"  * {f}" for f in footnotes(df))
    return "\n\n".join(blocks) + "\n\n" + notes + "\n"
