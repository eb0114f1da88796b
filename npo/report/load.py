"""Load asv results, pytest-benchmark JSON and the run store into one tidy frame.

Every source becomes rows with the columns of :data:`COLUMNS` (the record
schema of :mod:`npo.schema` plus ``code_version`` and ``env``), typed by the
declared dtypes, one row per (source, machine, commit, run, case). Timed
metrics keep their spread beside the median: ``*_lo``/``*_hi`` hold asv's 99%
confidence interval, pytest-benchmark's min-max, or the range of a CLI run's
samples, and ``*_samples`` the raw samples where the source recorded them
(asv ``--record-samples``, the CLI). The protocol version of an asv row comes
from its benchmark's ``version`` (``protocol-<k>``); older results count as
protocol 1.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from npo.report.store import coerce_dtypes, load_runs
from npo.schema import DEFAULT_PROBLEM, RECORD_COLUMNS, case_id, parse_case_id

__all__ = ["COLUMNS", "load_all", "load_asv", "load_pytest_benchmark"]

COLUMNS = RECORD_COLUMNS + ["code_version", "env"]

#: asv benchmark method -> (record column, how to turn the value into it)
ASV_METRICS = {
    "time_setup": "setup_s",
    "time_apply": "apply_s",
    "time_solve": "solve_s",
    "time_spmv": "spmv_s",
    "track_iterations": "iterations",
    "track_failures": "converged",  # 0 failures = converged
    "track_converged": "converged",  # before protocol 2 (higher was better there)
    "track_true_relres": "true_relres",
    "track_relerr": "relerr",
    "track_apply_per_spmv": "apply_per_spmv",
    "track_iter_per_spmv": "iter_per_spmv",
    "track_setup_per_spmv": "setup_per_spmv",
    "track_nbytes": "nbytes",
    "track_setup_peak_bytes": "setup_peak_bytes",
}
_TIMED = {"setup_s": "setup", "apply_s": "apply", "solve_s": "solve"}
PYTEST_STAGES = {"setup": "setup_s", "apply": "apply_s", "solve": "solve_s"}
_PROTOCOL = re.compile(r"^protocol-(\d+)")


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


def _machine_info(machine_dir: Path) -> dict:
    """asv's ``machine.json`` of a results folder ({} when absent or unreadable)."""
    try:
        data = json.loads((machine_dir / "machine.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _iso(ms_or_s, unit: str) -> str:
    if ms_or_s is None:
        return ""
    t = float(ms_or_s) / (1000.0 if unit == "ms" else 1.0)
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _finish(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df:
            df[c] = None
    df = coerce_dtypes(df)
    for c in ("code_version", "env"):
        df[c] = df[c].astype("string")
    if not df.empty:
        df["total_s"] = df["total_s"].fillna(df["setup_s"] + df["solve_s"])
        df["apply_per_spmv"] = df["apply_per_spmv"].fillna(df["apply_s"] / df["spmv_s"])
    return df[COLUMNS]


def _case_meta(key) -> dict:
    """Record columns a case id implies (problem, size, field, method, contrast, krylov)."""
    meta = {"case": case_id(*key), "problem": key.problem, "n": key.n, "field": key.field,
            "method": key.method, "ranks": key.ranks}
    try:
        from npo.cases import get_case

        c = get_case(meta["case"])
    except ValueError:
        return meta  # a method or field this installation does not know
    meta.update(contrast=c.field.contrast, precond=c.method.precond, maxiter=c.maxiter,
                rtol=c.rtol)
    if c.method.krylov in ("pcg", "fcg"):
        meta["krylov"] = c.method.krylov
    try:
        meta["N"] = c.N
    except (ValueError, KeyError):
        pass
    return meta


def _asv_param_names(results_root: Path) -> dict[str, list[str]]:
    f = results_root / "benchmarks.json"
    if not f.is_file():
        return {}
    data = _read_json(f)
    return {k: v.get("param_names", []) for k, v in data.items() if isinstance(v, dict)}


def _case_key(pnames, values):
    p = dict(zip(pnames, (ast.literal_eval(v) for v in values), strict=True))
    if "case" in p:
        return parse_case_id(p["case"])
    if {"n", "field", "method"} <= set(p):
        return parse_case_id(case_id(p.get("problem", DEFAULT_PROBLEM), int(p["n"]), p["field"],
                                     p["method"]))
    return None


def _at(entry, key, i):
    v = entry.get(key)
    if not isinstance(v, list) or i >= len(v):
        return None
    return v[i]


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
    for f in files:
        data = _read_json(f)
        if not isinstance(data, dict) or "results" not in data or "commit_hash" not in data:
            raise ValueError(f"{str(f)!r} is not an asv results file")
        columns = data.get("result_columns", ["result", "params", "version"])
        machine = data.get("params", {}).get("machine") or f.parent.name
        info = _machine_info(f.parent)
        commit = data["commit_hash"]
        base = {
            "source": "asv",
            "machine": machine,
            "commit": commit,
            "commit_date": _iso(data.get("date"), "ms"),
            "env": data.get("env_name", ""),
            "versions": json.dumps(data.get("requirements", {}), sort_keys=True),
            "device": "cpu",
            # the platform, from asv's machine file: a series is a name *and* a platform
            "cpu": info.get("cpu"),
            "cores": info.get("num_cpu"),
        }
        for bench, raw in data["results"].items():
            metric = ASV_METRICS.get(bench.rsplit(".", 1)[-1])
            if metric is None:
                continue
            entry = dict(zip(columns, raw, strict=False))
            params = entry.get("params") or []
            pnames = names.get(bench) or []
            if len(pnames) != len(params):  # results from before a benchmark's params changed
                pnames = {1: ["case"], 3: ["n", "field", "method"]}.get(len(params), [])
            values = entry.get("result")
            if values is None or not pnames:
                continue  # the whole benchmark failed, or it is not a case benchmark
            if not isinstance(values, list):
                values = [values]
            combos = list(itertools.product(*params))
            if len(combos) != len(values):
                raise ValueError(f"{str(f)!r}: {bench} has {len(values)} results for "
                                 f"{len(combos)} parameter sets")
            version = str(entry.get("version") or "")
            m = _PROTOCOL.match(version)
            for i, (combo, value) in enumerate(zip(combos, values, strict=True)):
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue  # null = failed, NaN = skipped
                key = _case_key(pnames, combo)
                if key is None:
                    continue
                rk = (machine, commit, base["env"], key)
                row = rows.setdefault(rk, {**base, **_case_meta(key), "_versions": {}})
                row[metric] = (float(value) == 0.0) if bench.endswith("track_failures") else (
                    bool(value) if metric == "converged" else float(value))
                row["_versions"][bench.rsplit(".", 1)[-1]] = version
                row["protocol_version"] = int(m.group(1)) if m else 1
                if metric in _TIMED:
                    lo, hi = _at(entry, "stats_ci_99_a", i), _at(entry, "stats_ci_99_b", i)
                    row[f"{metric}_lo"] = lo if lo is not None else math.nan
                    row[f"{metric}_hi"] = hi if hi is not None else math.nan
                    samples = _at(entry, "samples", i)
                    if samples:
                        row[f"{_TIMED[metric]}_samples"] = json.dumps(samples)
    out = []
    for row in rows.values():
        versions = row.pop("_versions")
        row["code_version"] = "|".join(f"{k}={_short_version(v)}"
                                       for k, v in sorted(versions.items()))
        out.append(row)
    return _finish(out)


def _short_version(v) -> str:
    """asv's default benchmark version is the SHA-256 of its code: keep 12 hex digits of it.

    Like a short git hash, that still tells code changes apart, and it keeps the committed
    frame reviewable (the full hashes made up a fifth of ``measurements.csv``).
    """
    v = str(v)
    return v[:12] if re.fullmatch(r"[0-9a-f]{64}", v) else v


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
        commit = commit_info.get("id", "unknown") + ("+dirty" if commit_info.get("dirty") else "")
        base = {
            "source": "pytest-benchmark",
            "machine": machine,
            "commit": commit,
            "commit_date": commit_info.get("time", ""),
            "env": f.name,
            "timestamp": data.get("datetime", ""),
            "device": "cpu",
        }
        rows: dict[str, dict] = {}
        for b in data["benchmarks"]:
            info = b.get("extra_info", {}) or {}
            stage = info.get("stage")
            if stage not in PYTEST_STAGES or "case" not in info:
                continue
            try:
                key = parse_case_id(info["case"])
            except ValueError:
                continue
            row = rows.setdefault(info["case"], {**base, **_case_meta(key)})
            stats = b.get("stats") or {}
            col = PYTEST_STAGES[stage]
            if stats.get("median") is not None:
                row[col] = float(stats["median"])
                row[f"{col}_lo"] = stats.get("min")
                row[f"{col}_hi"] = stats.get("max")
            for k in ("threads", "spmv_s", "apply_per_spmv", "relres", "true_relres", "nbytes",
                      "protocol_version"):
                if info.get(k) is not None:
                    row[k] = info[k]
            if info.get("solver_iterations") is not None:
                row["iterations"] = int(info["solver_iterations"])
                row["converged"] = bool(info.get("converged"))
        out.extend(rows.values())
    return _finish(out)


def load_all(asv_dir=None, benchmarks_dir=None, runs_dir=None, *, skip_bad: bool = False,
             notes: list | None = None) -> pd.DataFrame:
    """Every given source in one frame with the columns :data:`COLUMNS`.

    ``runs_dir`` is one run store or several (the committed one and the workspace's).

    A source that is given but holds nothing yet (an empty ``.benchmarks/``
    left by a test run) is skipped with a line in ``notes`` when at least one
    other source has data.
    """
    frames = []
    notes = notes if notes is not None else []
    loaders = (("asv", asv_dir, load_asv), ("pytest-benchmark", benchmarks_dir,
                                           load_pytest_benchmark))
    for label, where, loader in loaders:
        if where is None:
            continue
        if Path(where).is_dir() and not any(Path(where).rglob("*.json")):
            notes.append(f"{label}: no results under {str(where)!r} yet; skipped")
            continue
        frames.append(loader(where))
    for store in ([] if runs_dir is None else [runs_dir] if isinstance(runs_dir, str | Path)
                  else list(runs_dir)):
        runs = load_runs(store, skip_bad=skip_bad)
        if runs.empty:
            notes.append(f"run store: no run files under {str(store)!r} yet; skipped")
        else:
            runs["source"] = runs["source"].fillna("cli")
            runs["code_version"] = pd.Series("", index=runs.index, dtype="string")
            runs["env"] = pd.Series("", index=runs.index, dtype="string")
            frames.append(runs[COLUMNS])
    frames = [f for f in frames if not f.empty]
    if not frames:
        raise ValueError("the given sources hold no case measurements"
                         + (f" ({'; '.join(notes)})" if notes else ""))
    return pd.concat(frames, ignore_index=True)[COLUMNS]
