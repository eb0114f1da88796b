"""Load every source of measurements into one tidy pandas DataFrame.

Sources: asv results (``.asv/results``), pytest-benchmark JSON
(``.benchmarks``) and the CLI run store (``reports/runs``). Each becomes rows
of the record schema (:data:`npo.measure.RECORD_COLUMNS`) plus three columns
that say where a row came from:

``source``        ``asv`` | ``pytest-benchmark`` | ``cli``
``code_version``  asv's hash of the benchmark code that produced the row
                  (empty for other sources); a change marks a discontinuity
``env``           asv environment name or pytest-benchmark file

One row is one (source, machine, commit, run, case) with the stages side by
side: setup_s, apply_s, solve_s, iterations, converged, apply_per_spmv, ...

asv specifics: a parametrised result is a flat list in ``itertools.product``
order of the parameter lists; a skipped combination is NaN and a failed one
null, and both are dropped; machines are never merged.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from npo.measure import RECORD_COLUMNS
from npo.report.store import load_runs

__all__ = ["COLUMNS", "load_all", "load_asv", "load_pytest_benchmark"]

COLUMNS = RECORD_COLUMNS + ["code_version", "env", "peakmem_setup"]

#: asv benchmark method -> record column
ASV_METRICS = {
    "time_setup": "setup_s",
    "time_apply": "apply_s",
    "time_solve": "solve_s",
    "track_iterations": "iterations",
    "track_converged": "converged",
    "track_apply_per_spmv": "apply_per_spmv",
    "peakmem_setup": "peakmem_setup",
}
PYTEST_STAGES = {"setup": "setup_s", "apply": "apply_s", "solve": "solve_s"}
_CASE_PARAMS = ("n", "field", "method")


def _read_json(path: Path):
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc}") from None
    if not text.strip():
        raise ValueError(f"empty results file {str(path)!r}")
    try:
        return json.loads(text)  # accepts the NaN token asv writes
    except json.JSONDecodeError as exc:
        raise ValueError(f"corrupt results file {str(path)!r}: {exc}") from None


def _iso(ms_or_s, unit: str) -> str:
    if ms_or_s is None:
        return ""
    t = float(ms_or_s) / (1000.0 if unit == "ms" else 1.0)
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _finish(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df:
            df[c] = np.nan
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    if not df.empty:
        df["n"] = df["n"].astype(int)
        df["N"] = df["n"] * df["n"]
        df["total_s"] = df["total_s"].fillna(df["setup_s"] + df["solve_s"])
    return df


def _case_meta(n: int, field: str, method: str) -> dict:
    from npo import cases

    meta = {"case": f"n{n}-{field}-{method}", "n": n, "field": field, "method": method}
    if field in cases.FIELDS:
        meta["contrast"] = cases.FIELDS[field].contrast
    if method in cases.METHODS:
        meta["krylov"] = cases.METHODS[method].krylov
        meta["precond"] = cases.METHODS[method].precond
    return meta


def _asv_param_names(results_root: Path) -> dict[str, list[str]]:
    f = results_root / "benchmarks.json"
    if not f.is_file():
        return {}
    data = _read_json(f)
    return {k: v.get("param_names", []) for k, v in data.items() if isinstance(v, dict)}


def load_asv(results_dir) -> pd.DataFrame:
    """asv results tree (``<dir>/<machine>/<commit>-<env>.json``) -> tidy frame."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ValueError(f"asv results directory {str(root)!r} does not exist")
    names = _asv_param_names(root)
    files = [f for f in sorted(root.glob("*/*.json")) if f.name != "machine.json"]
    if not files:
        raise ValueError(f"no asv result files under {str(root)!r}")
    rows: dict[tuple, dict] = {}
    versions: dict[tuple, list[str]] = {}
    for f in files:
        data = _read_json(f)
        if not isinstance(data, dict) or "results" not in data or "commit_hash" not in data:
            raise ValueError(f"{str(f)!r} is not an asv results file")
        columns = data.get("result_columns", ["result", "params", "version"])
        machine = data.get("params", {}).get("machine") or f.parent.name
        commit = data["commit_hash"]
        base = {
            "source": "asv",
            "machine": machine,
            "commit": commit,
            "commit_date": _iso(data.get("date"), "ms"),
            "env": data.get("env_name", ""),
            "versions": json.dumps(data.get("requirements", {}), sort_keys=True),
        }
        for bench, entry in data["results"].items():
            metric = ASV_METRICS.get(bench.rsplit(".", 1)[-1])
            if metric is None:
                continue
            entry = dict(zip(columns, entry, strict=False))
            params = entry.get("params") or []
            pnames = names.get(bench) or (list(_CASE_PARAMS) if len(params) == 3 else [])
            if set(_CASE_PARAMS) - set(pnames):
                continue  # not a case benchmark (e.g. the NPO apply-cost suite)
            values = entry.get("result")
            if values is None:
                continue  # the whole benchmark failed
            if not isinstance(values, list):
                values = [values]
            combos = list(itertools.product(*params))
            if len(combos) != len(values):
                raise ValueError(
                    f"{str(f)!r}: {bench} has {len(values)} results for {len(combos)} parameter sets"
                )
            for combo, value in zip(combos, values, strict=True):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue  # null = failed, NaN = skipped
                p = dict(zip(pnames, (ast.literal_eval(v) for v in combo), strict=True))
                key = (machine, commit, base["env"], p["n"], p["field"], p["method"])
                row = rows.setdefault(key, {**base, **_case_meta(p["n"], p["field"], p["method"])})
                row[metric] = float(value)
                versions.setdefault(key, []).append(f"{bench}={entry.get('version', '')}")
    out = []
    for key, row in rows.items():
        if "converged" in row:
            row["converged"] = bool(row["converged"])
        row["code_version"] = hashlib.sha1("|".join(sorted(versions[key])).encode()).hexdigest()[:12]
        out.append(row)
    return _finish(out)


def load_pytest_benchmark(bench_dir) -> pd.DataFrame:
    """pytest-benchmark JSON files (``--benchmark-autosave`` tree or single files)."""
    root = Path(bench_dir)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(root.rglob("*.json"))
    else:
        raise ValueError(f"pytest-benchmark path {str(root)!r} does not exist")
    if not files:
        raise ValueError(f"no pytest-benchmark JSON files under {str(root)!r}")
    out = []
    for f in files:
        data = _read_json(f)
        if not isinstance(data, dict) or "benchmarks" not in data:
            raise ValueError(f"{str(f)!r} is not a pytest-benchmark JSON file")
        machine = data.get("machine_info", {}).get("node", "unknown")
        commit_info = data.get("commit_info", {}) or {}
        base = {
            "source": "pytest-benchmark",
            "machine": machine,
            "commit": commit_info.get("id", "unknown"),
            "commit_date": commit_info.get("time", ""),
            "env": f.name,
            "timestamp": data.get("datetime", ""),
        }
        rows: dict[str, dict] = {}
        for b in data["benchmarks"]:
            info = b.get("extra_info", {}) or {}
            stage = info.get("stage")
            if stage not in PYTEST_STAGES or "n" not in info:
                continue
            row = rows.setdefault(
                info["case"], {**base, **_case_meta(int(info["n"]), info["field"], info["method"])}
            )
            median = (b.get("stats") or {}).get("median")
            if median is not None:
                row[PYTEST_STAGES[stage]] = float(median)
            for k in ("threads", "spmv_s", "apply_per_spmv", "relres", "true_relres"):
                if k in info:
                    row[k] = info[k]
            if "solver_iterations" in info:
                row["iterations"] = int(info["solver_iterations"])
                row["converged"] = bool(info["converged"])
        out.extend(rows.values())
    return _finish(out)


def load_all(asv_dir=None, benchmarks_dir=None, runs_dir=None) -> pd.DataFrame:
    """Every given source in one frame with the fixed columns :data:`COLUMNS`."""
    frames = []
    if asv_dir is not None:
        frames.append(load_asv(asv_dir))
    if benchmarks_dir is not None:
        frames.append(load_pytest_benchmark(benchmarks_dir))
    if runs_dir is not None:
        runs = load_runs(runs_dir)
        if runs.empty:
            raise ValueError(f"no run files under {str(runs_dir)!r}")
        runs["source"] = "cli"
        runs["code_version"] = ""
        runs["env"] = ""
        frames.append(_finish(runs.to_dict("records")))
    if not frames:
        raise ValueError("no sources given: pass --asv, --benchmarks and/or --runs")
    frames = [f for f in frames if not f.empty]
    if not frames:
        raise ValueError("the given sources hold no case measurements")
    return pd.concat(frames, ignore_index=True)[COLUMNS]
