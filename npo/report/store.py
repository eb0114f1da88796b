"""The run store: every CLI run adds one file of tidy rows under ``reports/runs/``.

File names are unique per process: ``<machine>/<UTC time with microseconds>_
<commit>_<suite>[_filtered-<hash>]_<pid>-<random>.csv``, and a file is created
exclusively (never renamed over an existing one), so concurrent runs into one
directory keep every run.

Loading validates every file against the schema (:mod:`npo.schema`):
required columns, a parseable timestamp, declared dtypes, no partial rows (a
truncated last line, a row with too few fields). A bad file is an error that
names the file and the row, or, with ``skip_bad``, a warning; it is never
read as data. Temporary files (:func:`npo.fileio.is_temp`) are ignored.
Files written before the protocol had a version load as protocol 1, with the
columns they lack left empty.
"""

from __future__ import annotations

import csv
import hashlib
import os
import secrets
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from npo.fileio import ReportSet, is_temp
from npo.schema import DEFAULT_PROBLEM, DTYPES, RECORD_COLUMNS, case_id

__all__ = ["BadRunFile", "coerce_dtypes", "filter_tag", "find_run_file", "load_runs",
           "read_run_file",
           "run_file_name", "stage_run"]

#: What a stored row must have to mean anything (older files lack the rest).
REQUIRED = ["commit", "machine", "timestamp", "n", "field", "method", "iterations", "converged"]


class BadRunFile(ValueError):
    """A run-store file that does not follow the schema."""


def filter_tag(filter_text: str) -> str:
    """Short stable hash of a run's filter (``--n 32 --method cg`` -> ``3f2a9c1e``)."""
    return hashlib.sha256(filter_text.encode()).hexdigest()[:8]


def run_file_name(machine: str, commit: str, suite: str, filter_text: str = "",
                  token: str | None = None) -> str:
    """``<machine>/<stamp>_<commit>_<suite>[_filtered-<tag>]_<token>.csv``; the token is
    ``<pid>-<rand>`` unless given (a journaled run passes its run id)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    tag = f"_filtered-{filter_tag(filter_text)}" if filter_text else ""
    commit = "".join(ch if ch.isalnum() else "_" for ch in str(commit)[:12]) or "unknown"
    token = token or f"{os.getpid()}-{secrets.token_hex(3)}"
    return f"{machine}/{stamp}_{commit}_{suite}{tag}_{token}.csv"


def find_run_file(runs_dir, token: str) -> Path | None:
    """The run file written with ``token`` (a journaled run's id), or None."""
    root = Path(runs_dir)
    found = sorted(root.glob(f"*/*_{token}.csv")) if root.is_dir() else []
    return found[0] if found else None


def stage_run(rs: ReportSet, records: list[dict], suite: str, filter_text: str = "",
              subdir: str = "runs", token: str | None = None) -> Path:
    """Stage ``records`` as a new run file in the report set ``rs`` (created exclusively)."""
    if not records:
        raise ValueError("no records to store")
    df = pd.DataFrame(records, columns=RECORD_COLUMNS)
    rel = Path(subdir) / run_file_name(str(df["machine"].iloc[0]), str(df["commit"].iloc[0]),
                                       suite, filter_text, token)
    return rs.csv(rel, df, exclusive=True)


def coerce_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Give every schema column its declared dtype (missing columns are added empty)."""
    out = df.copy()
    for col, dtype in DTYPES.items():
        if col not in out:
            out[col] = pd.Series(pd.NA, index=out.index, dtype="object")
        s = out[col]
        if dtype.startswith("datetime64"):
            out[col] = pd.to_datetime(s, utc=True, format="ISO8601", errors="coerce").astype(dtype)
        elif dtype == "boolean":
            out[col] = s.map(_to_bool).astype("boolean")
        elif dtype == "Int64":
            out[col] = pd.to_numeric(s, errors="coerce").round().astype("Int64")
        elif dtype == "float64":
            out[col] = pd.to_numeric(s, errors="coerce").astype("float64")
        else:
            out[col] = s.astype("string")
    return out


def _to_bool(v):
    if v is None or (isinstance(v, float) and v != v) or v is pd.NA:
        return pd.NA
    if isinstance(v, str):
        t = v.strip().lower()
        if t in ("true", "1", "yes"):
            return True
        if t in ("false", "0", "no"):
            return False
        return pd.NA
    return bool(v)


def read_run_file(path) -> pd.DataFrame:
    """One validated run file as a typed frame (:class:`BadRunFile` names the problem)."""
    path = Path(path)
    where = f"run file {str(path)!r}"
    if path.suffix == ".parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
            raise BadRunFile(f"{where}: unreadable Parquet ({type(exc).__name__}: {exc})") from None
        return _validated(df, where, offset=0)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadRunFile(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not raw.strip():
        raise BadRunFile(f"{where}: empty")
    if not raw.endswith(b"\n"):
        raise BadRunFile(f"{where}: the last row is cut off (no final newline): a partial write")
    try:
        rows = list(csv.reader(raw.decode().splitlines()))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadRunFile(f"{where}: not a CSV file ({exc})") from None
    header = rows[0]
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise BadRunFile(f"{where}, line {i}: {len(row)} fields, the header has "
                             f"{len(header)}: a partial or corrupt row")
    df = pd.DataFrame(rows[1:], columns=header).replace({"": None})
    return _validated(df, where, offset=2)


def _validated(df: pd.DataFrame, where: str, offset: int) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise BadRunFile(f"{where}: lacks required column(s) {missing}")
    unknown = [c for c in df.columns if c not in DTYPES]
    if unknown:
        raise BadRunFile(f"{where}: unknown column(s) {unknown[:5]}")
    if df.empty:
        raise BadRunFile(f"{where}: no rows")
    typed = coerce_dtypes(df)
    for col in REQUIRED:
        bad = typed[col].isna()
        if bad.any():
            row = int(bad.to_numpy().argmax()) + offset
            raw = df[col].iloc[row - offset]
            what = "unparseable" if raw is not None and not pd.isna(raw) else "empty"
            raise BadRunFile(f"{where}, line {row}: {what} {col!r} ({raw!r})")
    if "protocol_version" not in df.columns:
        typed["protocol_version"] = typed["protocol_version"].fillna(1)  # before versioning
    typed["problem"] = typed["problem"].fillna(DEFAULT_PROBLEM)
    if typed["case"].isna().any():
        typed["case"] = [
            c if isinstance(c, str) else case_id(p, int(n), f, m)
            for c, p, n, f, m in zip(typed["case"], typed["problem"], typed["n"],
                                     typed["field"], typed["method"], strict=True)
        ]
        typed["case"] = typed["case"].astype("string")
    return typed[RECORD_COLUMNS]


def load_runs(runs_dir, *, skip_bad: bool = False) -> pd.DataFrame:
    """All stored runs under ``runs_dir`` as one typed frame (temporary files ignored)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise ValueError(f"runs directory {str(root)!r} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix in (".csv", ".parquet")
                   and p.is_file() and not is_temp(p))
    frames = []
    for f in files:
        try:
            frames.append(read_run_file(f))
        except BadRunFile as exc:
            if not skip_bad:
                raise ValueError(f"{exc} (pass --skip-bad to load the other files)") from None
            warnings.warn(f"skipped: {exc}", RuntimeWarning, stacklevel=2)
    if not frames:
        return coerce_dtypes(pd.DataFrame(columns=RECORD_COLUMNS))[RECORD_COLUMNS]
    return pd.concat(frames, ignore_index=True)
