"""The run store: every CLI run appends its tidy rows under ``reports/runs/``.

One CSV per run, named by machine, UTC time and commit, so runs never
overwrite each other and history accumulates across commits and machines.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from npo.measure import RECORD_COLUMNS
from npo.report.io import write_csv

__all__ = ["append_run", "load_runs"]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s)) or "unknown"


def append_run(records: list[dict], runs_dir, suite: str) -> Path:
    """Write ``records`` as a new CSV in ``runs_dir/<machine>/``; returns its path."""
    if not records:
        raise ValueError("no records to store")
    df = pd.DataFrame(records, columns=RECORD_COLUMNS)
    machine = _slug(df["machine"].iloc[0])
    commit = _slug(str(df["commit"].iloc[0])[:12])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = Path(runs_dir) / machine / f"{stamp}_{commit}_{_slug(suite)}.csv"
    return write_csv(path, df)


def load_runs(runs_dir) -> pd.DataFrame:
    """All stored runs under ``runs_dir`` as one frame (source 'cli')."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise ValueError(f"runs directory {str(root)!r} does not exist")
    files = sorted(root.rglob("*.csv"))
    frames = []
    for f in files:
        try:
            df = pd.read_csv(f)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"corrupt run file {str(f)!r}: {exc}") from None
        missing = {"commit", "machine", "n", "field", "method", "iterations"} - set(df.columns)
        if missing:
            raise ValueError(f"run file {str(f)!r} lacks columns {sorted(missing)}")
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    return pd.concat(frames, ignore_index=True)
