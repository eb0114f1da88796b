"""Report sets: what ``npo-bench run`` and ``npo-bench report`` write, each as one commit.

Both writers stage every file of their set in a :class:`npo.fileio.ReportSet`
and commit it as a whole: the previous set or the new one is present in
full, never a mix.

Names. The canonical honesty table ``honesty.md`` belongs to the full
``standard`` suite; other suites write ``honesty-<suite>.md``. A run narrowed
by ``--n/--field/--method`` is *filtered*: it writes
``honesty-<suite>-filtered-<hash>.md`` (the hash names the filter), records
the filter in the run store, and is never chosen as a suite's latest table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from npo.fileio import ReportSet, recover
from npo.report import history as hist
from npo.report import honesty, plots
from npo.report.load import load_all
from npo.report.store import filter_tag, stage_run
from npo.schema import SAMPLE_COLUMNS

__all__ = ["COMMITTED", "DEFAULT_SOURCES", "KEYED", "WORKSPACE", "build_reports",
           "read_measurements", "estimate_run_bytes", "latest_honesty",
           "report_stem", "write_run_reports"]

#: Where ``run`` and ``report`` write unless told otherwise: a git-ignored workspace, so that
#: following the README leaves a clone clean. The committed set is written only when asked
#: (``--out reports``).
WORKSPACE = ".npo-bench"
#: The committed report set.
COMMITTED = "reports"
DEFAULT_SOURCES = {"asv_dir": ".asv/results", "benchmarks_dir": ".benchmarks",
                   "runs_dir": ("reports/runs", f"{WORKSPACE}/runs")}
#: the suite whose table is the canonical ``honesty.md``
CANONICAL_SUITE = "standard"


def report_stem(suite: str, filter_text: str = "") -> str:
    """``honesty`` (full standard suite), ``honesty-<suite>``, or ``...-filtered-<hash>``."""
    stem = "honesty" if suite == CANONICAL_SUITE else f"honesty-{suite}"
    return f"{stem}-filtered-{filter_tag(filter_text)}" if filter_text else stem


def estimate_run_bytes(n_cases: int) -> int:
    """Rough size of a run's report set: tables and store rows plus two plots."""
    return 4096 * n_cases + 2 * 400 * 1024 + 64 * 1024


def write_run_reports(records: list[dict], out, *, suite: str, filter_text: str = "",
                      skipped=(), rs: ReportSet | None = None,
                      token: str | None = None) -> ReportSet:
    """Stage the honesty table (md, csv), its plots and the run-store file, then commit."""
    out = Path(out)
    df = pd.DataFrame(records)
    table = honesty.honesty_frame(df)
    stem = report_stem(suite, filter_text)
    title = f"Wall-clock honesty table: suite {suite}"
    note = (f"Filtered run (`{filter_text}`): not the suite's canonical table." if filter_text
            else "")
    plot_stem = stem.removeprefix("honesty").lstrip("-") or suite
    rs = rs if rs is not None else ReportSet(out)
    with rs:
        rs.text(f"{stem}.md", honesty.honesty_markdown(table, title, skipped, note))
        rs.csv(f"{stem}.csv", table)
        plots.plot_iterations(table, f"plots/{plot_stem}-iterations.png", rs=rs)
        if table["total_s"].notna().any():
            plots.plot_time_to_solution(table, f"plots/{plot_stem}-time-to-solution.png", rs=rs)
        stage_run(rs, records, suite, filter_text, token=token)
    return rs


def latest_honesty(df: pd.DataFrame) -> pd.DataFrame | None:
    """Honesty frame of the newest unfiltered CLI run, else the newest asv commit; None when
    no chosen record has a convergence flag (timings only: nothing to judge).

    Filtered runs (a non-empty ``filter``) are never promoted to "latest".
    """
    cli = df[(df["source"] == "cli") & (df["filter"].fillna("") == "")]
    if not cli.empty:
        newest = cli.sort_values("timestamp").iloc[-1]
        d = cli[(cli["machine"] == newest["machine"]) & (cli["commit"] == newest["commit"])
                & (cli["suite"] == newest["suite"]) & (cli["device"] == newest["device"])]
        d = d.sort_values("timestamp").drop_duplicates("case", keep="last")
    else:
        d = hist.latest(df[df["source"] == df["source"].iloc[0]])
        d = d[d["machine"] == d["machine"].iloc[0]]
    # timings without an iteration count (a pytest-benchmark file of timings only) cannot be
    # judged: they stay in measurements.csv and history, not in the honesty table
    d = d[d["converged"].notna()]
    if d.empty:
        return None
    return honesty.honesty_frame(d.sort_values(["problem", "n", "field"], kind="stable"))


#: Columns whose long values repeat on every row (a handful of distinct library-version sets,
#: asv environments and benchmark-code hashes): the committed frame holds a short key, and
#: ``measurements-keys.csv`` the value (:func:`read_measurements` joins them back).
KEYED = ("versions", "code_version", "env")


def _keyed(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    import hashlib

    out, rows = df.copy(), []
    for col in KEYED:
        if col not in out:
            continue
        vals = out[col].astype("string")
        ids = {v: f"{col}:{hashlib.sha256(v.encode()).hexdigest()[:10]}"
               for v in sorted(vals.dropna().unique()) if v}
        out[col] = vals.map(lambda v, ids=ids: ids.get(v, v) if isinstance(v, str) else v)
        rows += [{"key": k, "value": v} for v, k in ids.items()]
    return out, pd.DataFrame(rows, columns=["key", "value"])


def read_measurements(folder) -> pd.DataFrame:
    """A committed ``measurements.csv`` with its keyed columns joined back (as text)."""
    folder = Path(folder)
    df = pd.read_csv(folder / "measurements.csv", dtype=str, keep_default_na=False).replace(
        {"": None})
    keys = folder / "measurements-keys.csv"
    if keys.is_file():
        table = dict(pd.read_csv(keys, dtype=str, keep_default_na=False).itertuples(
            index=False, name=None))
        for col in KEYED:
            if col in df:
                df[col] = df[col].map(lambda v: table.get(v, v) if isinstance(v, str) else v)
    return df


def _flat(values) -> list[str]:
    out = []
    for v in values:
        out += [v] if isinstance(v, str | Path) else list(v)
    return [str(v) for v in out]


#: The sources of the committed frame, by the default place that feeds each.
_SOURCE_OF = {"asv_dir": "asv", "benchmarks_dir": "pytest-benchmark"}


def _keep_committed(df: pd.DataFrame, given: dict, notes: list) -> pd.DataFrame:
    """A default source that is absent here (no ``.benchmarks/`` in a fresh clone) keeps the
    rows the committed frame has from it, with a note: a report never drops a section
    silently."""
    committed = Path(COMMITTED) / "measurements.csv"
    # absent, or present but empty (a `.benchmarks/` a test run left behind)
    missing = [src for src in _SOURCE_OF.values() if not (df["source"] == src).any()]
    if not missing or not committed.is_file():
        return df
    from npo.report.load import COLUMNS
    from npo.report.store import coerce_dtypes

    old = read_measurements(committed.parent)
    keep = old[old["source"].isin(missing)]
    for src in missing:
        k = int((keep["source"] == src).sum())
        where = DEFAULT_SOURCES["benchmarks_dir" if src == "pytest-benchmark" else "asv_dir"]
        notes.append(f"{src}: {where} is absent here; " + (
            f"the {k} rows of the committed {committed} are kept" if k else
            f"the committed {committed} has none either"))
    if keep.empty:
        return df
    typed = coerce_dtypes(keep.drop(columns=[c for c in keep if c not in COLUMNS]))
    for c in ("code_version", "env"):
        typed[c] = keep[c].astype("string") if c in keep else pd.Series(
            "", index=typed.index, dtype="string")
    return pd.concat([df, typed[COLUMNS]], ignore_index=True)[COLUMNS]


def build_reports(asv_dir=None, benchmarks_dir=None, runs_dir=None, out=WORKSPACE, *,
                  skip_bad: bool = False, notes: list | None = None,
                  parquet: bool = False) -> list[Path]:
    """Load every source, then commit history, tables, measurements and plots as one set."""
    given = {"asv_dir": asv_dir, "benchmarks_dir": benchmarks_dir, "runs_dir": runs_dir}
    notes = notes if notes is not None else []
    defaults = all(v is None for v in given.values())
    if defaults:
        given = {}
        for k, v in DEFAULT_SOURCES.items():
            found = [p for p in ((v,) if isinstance(v, str) else v) if Path(p).exists()]
            if found:
                given[k] = found[0] if isinstance(v, str) else found
        if not given:
            raise ValueError(
                "no results found at the default places "
                f"({', '.join(_flat(DEFAULT_SOURCES.values()))}); pass --asv, --benchmarks or "
                "--runs")
    for d in _flat([given.get("runs_dir")] if given.get("runs_dir") is not None else []):
        recover(d)  # finish or undo what a killed writer left there
    df = load_all(**given, skip_bad=skip_bad, notes=notes)
    if defaults:
        df = _keep_committed(df, given, notes)
    h = hist.history(df)
    table = latest_honesty(df)
    out = Path(out)
    with ReportSet(out) as rs:
        # the raw samples stay in their sources (run store, asv results) and in the optional
        # Parquet file, and floats are written to 7 significant digits (timings are recorded to
        # 6): the committed frame stays reviewable (under 1 MB)
        frame, keys = _keyed(df.drop(columns=SAMPLE_COLUMNS, errors="ignore"))
        rs.csv("measurements.csv", frame, float_format="%.7g")
        rs.csv("measurements-keys.csv", keys)
        if parquet:
            with rs.stage("measurements.parquet") as tmp:
                df.to_parquet(tmp, index=False)
        rs.csv("history.csv", h)
        rs.text("history.md", hist.history_markdown(h))
        rs.text("latest-honesty.md", honesty.honesty_markdown(
            table, "Latest honesty table (from `npo-bench report`)") if table is not None else
            "# Latest honesty table (from `npo-bench report`)\n\nNo record of these sources "
            "has an iteration count and a convergence flag: there is nothing to judge.\n")
        # a source without iteration counts (pytest-benchmark's apply stage alone) has no
        # iterations history: plot what there is
        for value, name in (("iterations", "history-iterations.png"),
                            ("solve_s", "history-solve.png"),
                            ("apply_per_spmv", "history-apply-per-spmv.png")):
            if h[value].notna().any():
                plots.plot_history(h, f"plots/{name}", value, rs=rs)
        if table is not None:
            plots.plot_iterations(table, "plots/latest-iterations.png", rs=rs)
        if table is not None and table["total_s"].notna().any():
            plots.plot_time_to_solution(table, "plots/latest-time-to-solution.png", rs=rs)
    return rs.committed
