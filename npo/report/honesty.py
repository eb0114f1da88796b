"""The wall-clock honesty table.

For each case (device, problem, size, field) one row per method: iterations,
setup, per-apply cost (ms and in SpMVs of the same matrix on the same
device), solve, total time to solution, and the speed-up over plain CG in
iterations *and* in wall-clock, side by side, with the wall-clock speed-up's
confidence interval. The verdict is decided by wall-clock alone, with a
noise band:

* "wins" / "LOSES" only when the 95% bootstrap confidence interval of the
  speed-up (CG total / method total; setup and solve samples resampled
  independently, :func:`npo.stats.speedup_ci`) lies entirely above
  :data:`TIE_BAND` / below its inverse;
* "tie" otherwise: the difference is within the run-to-run noise.

A method that saves iterations but loses wall-clock reads "LOSES despite
Nx fewer iterations". A method with training cost (``train_s``) adds the
break-even number of solves, ``train_s / (CG total - method total)``, or
"never" when it is not faster. When plain CG itself hits the iteration cap,
its time is a lower bound, so the speed-ups against it are lower bounds
(">="). A table never mixes devices: a device is a section of its own.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from npo.schema import decode_samples as _samples
from npo.schema import harness_outcome
from npo.stats import MIN_SAMPLES, drift, paired_ratio_ci, speedup_ci, verdict_band

__all__ = ["BASELINE", "DRIFT_BAND", "TIE_BAND", "footnotes", "honesty_frame", "honesty_markdown",
           "honesty_text"]

#: The reference method of every section.
BASELINE = "cg"
#: Speed-ups inside [1/TIE_BAND, TIE_BAND] are ties whatever the CI says: the
#: run-to-run spread of one method's total on this kind of machine (Jacobi
#: vs CG at n = 32 read 0.95x in one run and 1.02x in the next).
TIE_BAND = 1.10
#: How far CG's own rounds may move during a section before its verdicts read "unstable
#: (machine load)": on a quiet machine they drift by up to 14% (the quick suite at n = 32, as
#: caches and clocks settle), while a passing load slows them 1.5-2x.
DRIFT_BAND = 1.25
CI_LEVEL = 0.95
SECTION = ["device", "problem", "n", "field"]


def _fmt_bytes(b) -> str:
    if b is None or pd.isna(b):
        return ""
    b = float(b)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return ""


def _fmt_num(x, digits=3) -> str:
    if x is None or pd.isna(x):
        return "-"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _groups(r) -> list[list[float]]:
    """[setup samples, solve samples] of a row, falling back to the medians."""
    setup = _samples(r.get("setup_samples")) or [float(r["setup_s"])]
    solve = _samples(r.get("solve_samples"))
    if not solve:
        solve = [float(r["solve_s"])] if pd.notna(r.get("solve_s")) else [
            float(r.get("elapsed_s", math.nan))]
    return [setup, solve]


def honesty_frame(records: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Add speed-ups, their confidence intervals, verdicts and break-even solves.

    ``records`` has one row per case with the record columns
    (:data:`npo.schema.RECORD_COLUMNS`). Returns a new frame, sorted by
    section, with numeric ``speedup_iters_x``/``speedup_wall_x``/
    ``wall_ci_lo``/``wall_ci_hi`` and display columns.
    """
    if records.empty:
        raise ValueError("no records to tabulate")
    df = records.copy()
    for c, default in (("device", "cpu"), ("problem", "diffusion_2d"), ("ranks", 1)):
        if c not in df:
            df[c] = default
        df[c] = df[c].fillna(default)
    df["converged"] = df["converged"].astype(bool)
    ended = (df["reason"].map(harness_outcome).astype(bool) if "reason" in df
             else pd.Series(False, index=df.index))
    out = []
    for _, g in df.groupby(SECTION, sort=False):
        base = g[(g["method"] == baseline) & (g["ranks"] == 1) & ~ended[g.index]]
        b = base.iloc[0] if not base.empty else None
        b_ok = bool(b["converged"]) if b is not None else False
        b_its = float(b["iterations"]) if b is not None else math.nan
        # an unconverged CG ran to the cap: its elapsed time is a lower bound
        b_groups = _groups(b) if b is not None else None
        for i, r in g.iterrows():
            r = r.copy()
            if ended[i]:  # out of memory, timed out, error: the reason is the verdict
                r["speedup_iters_x"] = r["speedup_wall_x"] = math.nan
                r["wall_ci_lo"] = r["wall_ci_hi"] = math.nan
                r["speedup_iters"] = r["speedup_wall"] = "-"
                r["verdict"], r["break_even"] = str(r["reason"]), ""
                out.append(r)
                continue
            ok = bool(r["converged"])
            unstable = False
            its = float(r["iterations"])
            s_it = b_its / its if ok and its > 0 and np.isfinite(b_its) else math.nan
            is_base = r["method"] == baseline and r["ranks"] == 1
            if is_base:  # the reference against itself: 1 by definition, no interval
                s_w, lo, hi, few = (1.0, 1.0, 1.0, True) if ok else (math.nan,) * 3 + (False,)
            elif ok and b_groups is not None and pd.notna(r["total_s"]):
                pair = _paired(b, r)
                if pair is not None:  # rounds taken side by side: compare round by round
                    s_w, lo, hi = paired_ratio_ci(*pair, level=CI_LEVEL)
                    few = len(pair[0]) < MIN_SAMPLES
                    unstable = _unstable(pair[0])
                else:
                    groups = _groups(r)
                    s_w, lo, hi = speedup_ci(b_groups, groups, level=CI_LEVEL)
                    few = min(len(x) for x in (*b_groups, *groups)) < MIN_SAMPLES
            else:
                s_w = lo = hi = math.nan
                few = False
            if few:  # not enough samples for an interval: the point estimate stands alone
                lo = hi = s_w
            r["speedup_iters_x"], r["speedup_wall_x"] = s_it, s_w
            r["wall_ci_lo"], r["wall_ci_hi"] = lo, hi
            prefix = "" if b_ok else ">="
            r["speedup_iters"] = "-" if math.isnan(s_it) else f"{prefix}{s_it:.2f}x"
            r["speedup_wall"] = "-" if math.isnan(s_w) else (
                f"{prefix}{s_w:.2f}x" + ("" if few or math.isnan(lo) or not b_ok
                                         else f" [{lo:.2f}, {hi:.2f}]"))
            r["verdict"] = ("unstable (machine load)" if unstable and not is_base
                            else _verdict(is_base, ok, s_it, lo, hi, b_ok, few) if b is not None
                            else ("converged" if ok else "FAILS: not converged")
                            + f" ({baseline} not run: no speed-up)")
            r["break_even"] = _break_even(r, b, b_ok)
            out.append(r)
    res = pd.DataFrame(out).reset_index(drop=True)
    res["setup_ms"] = res["setup_s"] * 1e3
    res["apply_ms"] = res["apply_s"] * 1e3
    res["apply_x_spmv"] = res["apply_per_spmv"]
    res["solve_ms"] = res["solve_s"] * 1e3
    res["total_ms"] = res["total_s"] * 1e3
    res["memory"] = res["nbytes"].map(_fmt_bytes)
    return res


def _totals(r) -> list[float]:
    """Round totals (setup + solve sample of the same round) of a record."""
    setup, solve = _samples(r.get("setup_samples")), _samples(r.get("solve_samples"))
    return [a + b for a, b in zip(setup, solve, strict=False)]


def _paired(b, r):
    """The round totals of baseline and method when their samples were taken in the same
    interleaved rounds (same ``paired``), else None."""
    key, other = r.get("paired"), b.get("paired")
    if not isinstance(key, str) or not key or key != other:
        return None
    bt, mt = _totals(b), _totals(r)
    n = min(len(bt), len(mt))
    return (bt[:n], mt[:n]) if n else None


def _unstable(base_totals) -> bool:
    """The baseline's own rounds moved beyond the noise band during the section: the machine's
    speed changed under the measurement."""
    d = drift(base_totals)
    return bool(np.isfinite(d) and (d > DRIFT_BAND or d < 1 / DRIFT_BAND))


def _verdict(is_baseline, ok, s_it, lo, hi, base_ok, few) -> str:
    if is_baseline:
        return "baseline" if ok else "baseline (not converged)"
    if not ok:
        return "FAILS: not converged"
    if not base_ok:
        return "wins (CG did not converge)" if lo > TIE_BAND else "converges (CG did not)"
    if math.isnan(lo) or math.isnan(hi):  # converged, but without a total time to compare
        return "no wall-clock time"
    if few:  # no interval, no claim: the speed-up column still shows the point estimate
        return f"too few samples (< {MIN_SAMPLES})"
    band = verdict_band(lo, hi, TIE_BAND)
    if band == "wins":
        return "wins"
    if band == "loses":
        # "despite fewer iterations" only when the saving is beyond the same noise band:
        # 759 against 771 iterations is no saving worth a "despite" (it read "1.0x fewer")
        if np.isfinite(s_it) and s_it >= TIE_BAND:
            return f"LOSES despite {s_it:.1f}x fewer iterations"
        return "LOSES"
    return "tie"


def _break_even(r, b, base_ok) -> str:
    train = r.get("train_s", math.nan)
    if train is None or pd.isna(train):
        return ""
    if b is None or not r["converged"] or not base_ok or pd.isna(b["total_s"]):
        return "never" if b is not None and base_ok else "-"
    saved = float(b["total_s"]) - float(r["total_s"])
    if saved <= 0:
        return "never"
    return f"{math.ceil(float(train) / saved):,}"


def _controls(labels) -> dict[str, str]:
    """The negative controls among ``labels`` and why (their descriptors say so; a method
    that is not installed here is not marked)."""
    from npo.methods import methods

    try:
        known = methods()
    except ValueError:  # a broken plugin must not take the table down
        return {}
    return {m: known[m].control for m in set(labels) if m in known and known[m].control}


def _display(df: pd.DataFrame) -> pd.DataFrame:
    method = df["method"].astype(str)
    controls = _controls(method)
    method = [f"{m} [control]" if m in controls else m for m in method]
    if "ranks" in df and (df["ranks"].fillna(1) > 1).any():
        method = [m if int(k) == 1 else f"{m} ({int(k)} ranks)"
                  for m, k in zip(method, df["ranks"].fillna(1), strict=True)]
    return pd.DataFrame(
        {
            "method": method,
            "krylov": df["krylov"],
            "its": [("-" if harness_outcome(why) else f"{int(v):,}")
                    for v, why in zip(df["iterations"], _reasons(df), strict=True)],
            "conv": [("-" if harness_outcome(why) else "yes" if v else "NO")
                     for v, why in zip(df["converged"], _reasons(df), strict=True)],
            # recurrence and true residual part ways near 1e-10 on high contrast
            "true relres": df.get("true_relres", pd.Series(np.nan, index=df.index)).map(
                lambda v: f"{v:.1e}" if pd.notna(v) and np.isfinite(v) else "-"),
            "setup ms": df["setup_ms"].map(_fmt_num),
            "apply ms": df["apply_ms"].map(_fmt_num),
            "apply xSpMV": df["apply_x_spmv"].map(lambda v: _fmt_num(v, 2)),
            "solve ms": df["solve_ms"].map(_fmt_num),
            "total ms": df["total_ms"].map(_fmt_num),
            "speed-up its": df["speedup_iters"],
            "speed-up wall [95% CI]": df["speedup_wall"],
            "verdict": df["verdict"],
            "memory": df["memory"],
            "train s": df["train_s"].map(lambda v: _fmt_num(v, 3) if pd.notna(v) else ""),
            "break-even solves": df["break_even"],
        }
    )


def _reasons(df: pd.DataFrame):
    return df["reason"] if "reason" in df else pd.Series("", index=df.index)


def footnotes(records: pd.DataFrame) -> list[str]:
    """Machine, CPU, threads, device, commit, versions, protocol and the verdict rule."""

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
    return [
        f"machine: {uniq('machine')} ({uniq('cpu')}, {uniq('cores')} cores); device: "
        f"{uniq('device')}; threads (BLAS/OpenMP/torch): {uniq('threads')}; BLAS: {uniq('blas')}",
        f"commit: {uniq('commit')} ({uniq('commit_date')}); measured {_span(records)}",
        f"versions: {vtxt}",
        f"protocol {uniq('protocol_version')}: rtol {uniq('rtol')} on the recurrence residual, "
        f"x0 = 0, b = {uniq('rhs')}; times are medians of repeats (setup on fresh objects); "
        "total = setup + solve; apply xSpMV = apply time / time of one A@v on the same device "
        "in the same process; speed-ups are plain CG / method; true relres = ||b - Ax||/||b|| "
        "at the end (the stopping test is on the recurrence residual). A method that did not "
        "converge has no solve or total time. Training time is not in total; break-even = "
        "training / (CG total - method total).",
        f"verdict: 'wins' or 'LOSES' only when the {CI_LEVEL:.0%} bootstrap confidence interval "
        f"of the wall-clock speed-up lies entirely above {TIE_BAND:g} or below "
        f"{1 / TIE_BAND:.3g} (methods measured in the same interleaved rounds as CG: the "
        "median of the per-round ratios, rounds resampled; otherwise setup and solve samples "
        f"of both methods resampled independently); 'unstable (machine load)' when CG's own "
        f"rounds moved by more than {DRIFT_BAND:g}x during the section; otherwise "
        f"'tie'. With fewer than {MIN_SAMPLES} samples there is no verdict: it reads 'too few "
        "samples'. A converged method without a total time reads 'no wall-clock time'.",
    ] + _rank_note(records) + _ended_note(records) + _control_note(records)


def _rank_note(records: pd.DataFrame) -> list[str]:
    ranks = sorted({int(k) for k in records.get("ranks", pd.Series(dtype=float)).dropna()
                    if int(k) > 1})
    if not ranks:
        return []
    return [f"ranks: a row marked '(P ranks)' ran on P = {', '.join(map(str, ranks))} MPI "
            f"processes; its speed-ups are against {BASELINE} on 1 rank, so they include the "
            "gain from the extra cores and are not a like-for-like comparison of methods."]


def _control_note(records: pd.DataFrame) -> list[str]:
    controls = _controls(records["method"].astype(str)) if "method" in records else {}
    if not controls:
        return []
    return ["[control] marks a negative control, run to show what goes wrong, not a candidate: "
            + "; ".join(f"`{m}` is {why}" for m, why in sorted(controls.items())) + "."]


def _ended_note(records: pd.DataFrame) -> list[str]:
    if not _reasons(records).map(harness_outcome).astype(bool).any():
        return []
    return ["'out of memory', 'timed out', 'killed' and 'error' rows are cases the harness "
            "ended (each case runs in a child process with a memory and a time budget; an "
            "exception is recorded as that case's outcome): they have no iterations or times, "
            "and the rest of the run went on."]


def _span(records: pd.DataFrame) -> str:
    ts = sorted(str(t) for t in records.get("timestamp", pd.Series(dtype=str)).dropna() if str(t))
    if not ts:
        return "unknown"
    return ts[0] if ts[0] == ts[-1] else f"{ts[0]} to {ts[-1]}"


def _sections(df: pd.DataFrame):
    for key, g in df.groupby(SECTION, sort=False):
        yield dict(zip(SECTION, key, strict=True)), g


def _title(sec: dict, g) -> str:
    N = int(g["N"].iloc[0]) if pd.notna(g["N"].iloc[0]) else None
    where = "" if sec["problem"] == "diffusion_2d" else f"{sec['problem']}, "
    size = f"n = {sec['n']}" + (f" (N = {N:,})" if N is not None else "")
    dev = "" if sec["device"] == "cpu" else f" [device {sec['device']}]"
    return f"{where}{size}, field {sec['field']}{dev}"


def _not_run(skipped, sec) -> list[str]:
    rows = [(m, why) for (sp, sn, sf, m, why) in skipped or ()
            if sp == sec["problem"] and sn == sec["n"] and sf == sec["field"]]
    if not rows:
        return []
    return ["Not run here (the catalogue's reasons): "
            + "; ".join(f"`{m}`: {why}" for m, why in rows) + ".", ""]


def honesty_markdown(df: pd.DataFrame, title: str = "Wall-clock honesty table",
                     skipped=None, note: str = "") -> str:
    """Markdown: one section per case, then the footnotes.

    ``skipped`` is an iterable of ``(problem, n, field, method, reason)`` for
    the combinations the catalogue does not run; each section lists its own.
    """
    lines = [f"# {title}", ""] + ([note, ""] if note else [])
    for sec, g in _sections(df):
        lines += [f"## {_title(sec, g)}", "", _display(g).to_markdown(index=False), ""]
        lines += _not_run(skipped, sec)
    lines += ["---", ""] + [f"- {f}" for f in footnotes(df)] + [""]
    return "\n".join(lines)


def honesty_text(df: pd.DataFrame, skipped=None) -> str:
    """A terminal rendering: one block per case, with what was not run and why; the same
    columns as the Markdown table, so every column the footnotes explain is there."""
    from tabulate import tabulate

    blocks = []
    for sec, g in _sections(df):
        d = _display(g)
        why = "".join(f"\n{line}" for line in _not_run(skipped, sec) if line)
        blocks.append(_title(sec, g) + "\n" + tabulate(d, headers="keys", showindex=False) + why)
    notes = "\n".join(f"  * {f}" for f in footnotes(df))
    return "\n\n".join(blocks) + "\n\n" + notes + "\n"
