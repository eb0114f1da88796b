"""History over commits: per series, the values in commit order, with honest flags.

A series is (machine, source, device, case): timings never compare across
machines, sources or devices, so no line or flag ever joins them. Each row is
one commit of a series; changes against the previous commit of the same
series are flagged:

- ``iterations_changed``: the deterministic iteration count moved (the
  sharpest regression signal; exact, no statistics needed);
- ``converged_changed``: convergence was gained or lost;
- ``time_flag``: a timed metric (setup, apply, solve) changed by more than
  :data:`TIME_FLAG_RATIO` either way *and* significantly
  (:func:`npo.stats.significant_change`: Mann-Whitney U on the raw samples,
  or disjoint 99% confidence intervals). A single sample is never flagged;
  its cell is marked as a single sample instead. The direction (better or
  worse) comes from :data:`npo.schema.METRICS`;
- ``discontinuity``: the measurement protocol (its version) or the benchmark
  code changed, so the step may be the benchmark's and not the solver's; a
  discontinuity is never a regression.
"""

from __future__ import annotations

import json
import math
import re
import subprocess

import numpy as np
import pandas as pd

from npo.schema import METRICS, harness_outcome
from npo.schema import decode_samples as _samples
from npo.stats import ALPHA, MIN_SAMPLES, drift, significant_change

__all__ = ["TIME_FLAG_RATIO", "TIMED", "history", "history_markdown", "latest", "pair_summary"]

TIME_FLAG_RATIO = 1.5
SERIES = ["machine", "source", "device", "case"]
#: timed metrics checked for significant changes, with their sample columns
TIMED = {"setup_s": "setup_samples", "apply_s": "apply_samples", "solve_s": "solve_samples"}
VALUES = ["iterations", "converged", "setup_s", "apply_s", "solve_s", "apply_per_spmv",
          "iter_per_spmv", "setup_per_spmv", "true_relres", "nbytes"]


def _commit_order(df: pd.DataFrame) -> pd.Series:
    # ISO-8601 commit dates sort; ties keep first appearance
    dates = pd.to_datetime(df["commit_date"], utc=True, errors="coerce", format="ISO8601")
    order = (
        pd.DataFrame({"commit": df["commit"], "date": dates})
        .drop_duplicates("commit")
        .sort_values("date", kind="stable")
    )
    rank = {c: i for i, c in enumerate(order["commit"])}
    return df["commit"].map(rank)


_THREADS = re.compile(r" threads=\d+")


def _fingerprint(r) -> tuple:
    """(CPU model, cores, BLAS kernels) of a row; '' where the source did not record it."""
    def text(v):
        return "" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) \
            else str(v)

    blas = "; ".join(sorted({_THREADS.sub("", b).strip()
                             for b in text(r.get("blas")).split(";") if b.strip()}))
    cores = text(r.get("cores"))
    return text(r.get("cpu")), cores.removesuffix(".0"), blas


def _compatible(a: tuple, b: tuple) -> bool:
    return all(x == y or not x or not y for x, y in zip(a, b, strict=True))


def _describe(fp: tuple) -> str:
    cpu, cores, blas = fp
    kernel = "; ".join(" ".join(b.split()[::2]) for b in blas.split("; ") if b)  # lib + kernel
    return ", ".join(x for x in (cpu, f"{cores} cores" if cores else "", kernel) if x)


def split_machines(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One series per machine name *and* platform: rows whose CPU model, core count or BLAS
    kernel differ from those first measured under the same name get the machine label
    ``"<name> [<platform>]"``; the notes say why. Unrecorded parts match anything."""
    if df.empty or "machine" not in df:
        return df, []
    out, notes = df.copy(), []
    when = pd.to_datetime(out.get("timestamp"), utc=True, errors="coerce")
    for machine, g in out.groupby("machine", sort=False, dropna=True):
        fps = pd.Series([_fingerprint(r) for _, r in g.iterrows()], index=g.index)
        order = when[g.index].sort_values(kind="stable", na_position="last").index
        clusters: list[tuple] = []
        for i in order:
            if not any(_compatible(fps[i], c) for c in clusters):
                clusters.append(fps[i])
        if len(clusters) < 2:
            continue
        for i in g.index:
            k = next(j for j, c in enumerate(clusters) if _compatible(fps[i], c))
            if k:
                out.at[i, "machine"] = f"{machine} [{_describe(clusters[k])}]"
        notes.append(f"machine name {machine!r} was used on {len(clusters)} platforms: the rows "
                     f"of {_describe(clusters[0])} keep it; "
                     + "; ".join(f"{_describe(c)} forms the series '{machine} [{_describe(c)}]'"
                                 for c in clusters[1:])
                     + " (name a machine with NPO_MACHINE)")
    return out, notes


def _drifted(samples: list[float]) -> bool:
    from npo.report.honesty import DRIFT_BAND

    d = drift(samples)
    return bool(np.isfinite(d) and (d > DRIFT_BAND or d < 1 / DRIFT_BAND))


def _pool(group: pd.DataFrame, col: str) -> str:
    out = []
    for v in group[col]:
        out += _samples(v)
    return json.dumps(out)


def history(df: pd.DataFrame, *, threshold: float = TIME_FLAG_RATIO,
            alpha: float = ALPHA) -> pd.DataFrame:
    """One row per (machine, source, device, case, commit), in commit order, with flags."""
    if df.empty:
        raise ValueError("no measurements to build a history from")
    # a case the harness ended (out of memory, timed out, error) measured nothing: no history
    d = df[~df["reason"].map(harness_outcome).astype(bool)].copy() if "reason" in df else df.copy()
    if d.empty:
        raise ValueError("no measurements to build a history from (every case ended early)")
    d["device"] = d["device"].fillna("cpu")
    d, machine_notes = split_machines(d)
    d["commit_order"] = _commit_order(d)
    d["converged"] = d["converged"].astype("float64")
    keys = SERIES + ["commit"]
    g = d.groupby(keys, sort=False, dropna=False)
    agg = {v: "median" for v in VALUES if v not in ("converged",)}
    agg.update(converged="min", commit_date="first", commit_order="first", n="first",
               field="first", method="first", problem="first", protocol_version="max",
               code_version="last")
    for m in TIMED:
        agg[f"{m}_lo"] = "min"
        agg[f"{m}_hi"] = "max"
    h = g.agg(agg).reset_index()
    for col in TIMED.values():
        h[col] = g.apply(_pool, col, include_groups=False).reset_index(drop=True)
    h = h.sort_values(SERIES + ["commit_order"], kind="stable").reset_index(drop=True)
    h["commit_short"] = h["commit"].astype(str).str[:8]
    s = h.groupby(SERIES, sort=False, dropna=False)
    prev_it, prev_conv = s["iterations"].shift(), s["converged"].shift()
    h["iterations_changed"] = prev_it.notna() & h["iterations"].notna() & (h["iterations"] != prev_it)
    h["converged_changed"] = prev_conv.notna() & h["converged"].notna() & (
        h["converged"] != prev_conv)
    prev_ver = s["code_version"].shift()
    prev_proto = s["protocol_version"].shift()
    h["discontinuity"] = (
        (prev_proto.notna() & h["protocol_version"].notna() & (h["protocol_version"] != prev_proto))
        | (prev_ver.notna() & h["code_version"].fillna("").ne("") & h["code_version"].ne(prev_ver))
    ).astype(bool)
    flags, details, single, ratios = [], [], [], []
    prev_row: dict = {}
    for _, r in h.iterrows():
        key = tuple(r[k] for k in SERIES)
        p = prev_row.get(key)
        prev_row[key] = r
        one = all(len(_samples(r[c])) < MIN_SAMPLES and not _finite_ci(r, m)
                  for m, c in TIMED.items() if pd.notna(r[m]))
        single.append(bool(one))
        if p is None:
            flags.append(False)
            details.append("")
            ratios.append(math.nan)
            continue
        hit, texts, main_ratio = False, [], math.nan
        for m, col in TIMED.items():
            if pd.isna(r[m]) or pd.isna(p[m]):
                continue
            if _drifted(_samples(p[col])) or _drifted(_samples(r[col])):
                # the machine's speed moved while one side was measured (the honesty table's
                # rule): no flag either way
                texts.append(f"{m.removesuffix('_s')} unstable (machine load)")
                continue
            ch = significant_change(
                _samples(p[col]) or [p[m]], _samples(r[col]) or [r[m]], threshold=threshold,
                alpha=alpha, old_ci=(p[f"{m}_lo"], p[f"{m}_hi"]),
                new_ci=(r[f"{m}_lo"], r[f"{m}_hi"]))
            if m == "solve_s" or (m == "setup_s" and math.isnan(main_ratio)):
                main_ratio = ch.ratio
            if ch.flagged and not r["discontinuity"]:  # a new protocol is no regression
                hit = True
                worse = METRICS[m].worse(1.0, ch.ratio)
                texts.append(f"{m.removesuffix('_s')} x{ch.ratio:.2f} "
                             f"({'worse' if worse else 'better'})")
        flags.append(hit)
        details.append("; ".join(texts))
        ratios.append(main_ratio)
    h["time_flag"] = flags
    h["time_detail"] = details
    h["time_ratio"] = ratios
    h["single_sample"] = single
    h["converged"] = h["converged"].map(lambda v: bool(v) if np.isfinite(v) else np.nan)
    h.attrs["machine_notes"] = machine_notes
    return h


def _finite_ci(r, m) -> bool:
    lo, hi = r.get(f"{m}_lo"), r.get(f"{m}_hi")
    return lo is not None and hi is not None and pd.notna(lo) and pd.notna(hi) and \
        math.isfinite(float(lo)) and math.isfinite(float(hi)) and float(hi) > float(lo)


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """The newest commit's rows of each (machine, source, device)."""
    d = df.copy()
    d["commit_order"] = _commit_order(d)
    newest = d.groupby(["machine", "source", "device"], dropna=False)["commit_order"].transform("max")
    return d[d["commit_order"] == newest].drop(columns="commit_order")


def pair_summary(h: pd.DataFrame) -> pd.DataFrame:
    """Per (machine, source, device) and consecutive commit pair: flags and changed files."""
    rows = []
    for (machine, source, device), g in h.groupby(["machine", "source", "device"], sort=False,
                                                  dropna=False):
        commits = g.drop_duplicates("commit").sort_values("commit_order")["commit"].tolist()
        for a, b in zip(commits, commits[1:], strict=False):
            at_b = g[g["commit"] == b]
            rows.append({
                "machine": machine, "source": source, "device": device,
                "from": str(a)[:8], "to": str(b)[:8],
                "iteration_changes": int(at_b["iterations_changed"].sum()
                                         + at_b["converged_changed"].sum()),
                "time_flags": int(at_b["time_flag"].sum()),
                "discontinuities": int(at_b["discontinuity"].sum()),
                "measured_code_changed": _code_changed(str(a), str(b)),
            })
    return pd.DataFrame(rows)


def _code_changed(a: str, b: str) -> str:
    """'yes'/'no' when git can tell whether npo/ changed between the commits, else '?'."""
    from npo.env import project_root

    root = project_root()
    if root is None or "+" in a or "+" in b:
        return "?"
    try:
        out = subprocess.run(["git", "-C", str(root), "diff", "--name-only", a, b, "--", "npo"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    files = [f for f in out.split() if f.endswith(".py")]
    return "yes: " + ", ".join(f.removeprefix("npo/") for f in files[:4]) + (
        " ..." if len(files) > 4 else "") if files else "no"


def _date(d) -> str:
    """The day of an ISO date, or 'date unknown' (a run outside the project's checkout)."""
    return str(d)[:10] if isinstance(d, str) and d else "date unknown"


def _cell(r) -> str:
    if pd.isna(r["iterations"]):
        txt = "-"
    else:
        txt = f"{int(r['iterations'])}"
        if r["converged"] is False:
            txt += " (nc)"
    if pd.notna(r["solve_s"]):
        txt += f" / {r['solve_s'] * 1e3:.3g} ms"
    if pd.notna(r.get("apply_per_spmv")):
        txt += f" / {r['apply_per_spmv']:.2g}x"
    if r["single_sample"] and pd.notna(r["solve_s"]):
        txt += " ¹"
    flags = []
    if r["iterations_changed"] or r["converged_changed"]:
        flags.append("**Δits**")
    if r["time_flag"]:
        flags.append(f"**{r['time_detail']}**")
    if r["discontinuity"]:
        flags.append("†")
    return txt + (" " + " ".join(flags) if flags else "")


def history_markdown(h: pd.DataFrame, *, threshold: float = TIME_FLAG_RATIO,
                     alpha: float = ALPHA) -> str:
    """Markdown: per machine, source and device, cases x commits, then the commit pairs."""
    lines = [
        "# History over commits",
        "",
        "Cells: iterations (nc = not converged) / median solve time / apply cost in SpMVs of the "
        "same matrix. Flags against the previous commit of the same series: **Δits** iteration "
        "count or convergence changed (exact); **metric xr** a time change larger than "
        f"{threshold}x either way *and* significant (one-sided Mann-Whitney U, p < {alpha}, on "
        "the raw samples; or disjoint 99% confidence intervals); ¹ single sample (never "
        "flagged: not testable); † measurement protocol or benchmark code changed "
        "(discontinuity, not a regression). Machines (a name and a platform: CPU model, core "
        "count, BLAS kernel), sources and devices are never mixed.",
        "",
    ] + [f"- {n}" for n in h.attrs.get("machine_notes", [])] + (
        [""] if h.attrs.get("machine_notes") else [])
    pairs = pair_summary(h)
    for (machine, source, device), g in h.groupby(["machine", "source", "device"], sort=False,
                                                  dropna=False):
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
            f"## {source} on {machine} ({device})",
            "",
            f"{len(cols)} commits, {len(table)} cases, {n_changes} iteration/convergence changes, "
            f"{int(g['time_flag'].sum())} time flags, {int(g['discontinuity'].sum())} "
            f"discontinuities, {int(g['single_sample'].sum())} single-sample cells.",
            "",
            "Commits in order: "
            + ", ".join(f"`{s}` ({_date(d)})" for s, d in zip(commits["commit_short"],
                                                                commits["commit_date"],
                                                                strict=True)),
            "",
            frame.reset_index().to_markdown(index=False),
            "",
        ]
        p = pairs[(pairs["machine"] == machine) & (pairs["source"] == source)
                  & (pairs["device"] == device)] if not pairs.empty else pairs
        if not p.empty:
            lines += ["Consecutive commits (measured code = `npo/*.py` changed, from git):", "",
                      p.drop(columns=["machine", "source", "device"]).to_markdown(index=False), ""]
    return "\n".join(lines)
