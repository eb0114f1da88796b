"""CI performance gates on the ``quick`` suite, against a committed baseline.

Every rule below reads its constants from this module; the summary prints
them from the same constants.

**Iterations.** Iteration counts are deterministic at fixed seeds and a
pinned thread count, so on the platform that wrote the baseline (same CPU,
vector extensions, BLAS kernels and library versions: the fingerprint of
:func:`npo.env.platform_fingerprint`, which does not depend on which cases
run) the gate is exact: any increase fails, and so does any lost
convergence. Against another platform's baseline a long ill-conditioned solve
can move by a few iterations from rounding alone; there each method's
descriptor states the allowance (``iteration_tolerance``: ``max(2, 2%)`` by
default, ``max(3, 10%)`` for the float32 NPO).

**Accuracy.** Fewer iterations must not hide a worse answer. A converged case
fails when its true relative residual ``||b - Ax||/||b||`` exceeds
``max(ACCURACY_RTOL_FACTOR * rtol, TRUE_RELRES_GROWTH * baseline's)``, or when
its error against the direct solution grew by more than ``RELERR_GROWTH``.
An iteration drop counts as an improvement only when accuracy holds.

**Memory.** Each preconditioner's own ``nbytes``: exact on the baseline's
platform, ``+NBYTES_CROSS_PLATFORM`` relative elsewhere.

**Time.** Wall-clock seconds do not compare across machines or even across
minutes on a shared one, so the gate compares *ratios measured in the same
process*: per-apply time, per-iteration time and setup time (on fresh
objects), each divided by the time of one SpMV of the same matrix measured
right next to it (:func:`npo.measure.cost_samples`). Each is sampled
``repeats`` times; a case fails only if the median ratio grew by more than
``threshold`` *and* a one-sided Mann-Whitney U test says the new samples are
larger at level ``alpha`` (:func:`npo.stats.significant_change`). Costs below
a floor (apply under 0.5 SpMV: Python call overhead) are not gated;
per-iteration costs are gated for converged solves under a second. Against
another platform's baseline the cost ratios also carry the difference between
the two CPUs, so there the threshold is squared.

Exit codes: 0 pass, 1 regression, 2 error (bad option or baseline, found
before anything is measured).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from npo import cases, env, measure
from npo.schema import METRICS, PROTOCOL_VERSION, parse_case_id
from npo.stats import ALPHA, MIN_SAMPLES, mwu_greater, significant_change

__all__ = ["add_arguments", "check_args", "collect", "compare", "load_baseline", "run_gate"]

FORMAT_VERSION = 2
DEFAULT_BASELINE = "benchmarks/gate_baseline.json"
SUITE = "quick"
THRESHOLD = 1.5
REPEATS = 7
#: per-metric floors (x SpMV) below which a cost is call overhead, not gated
MIN_GATED = {"apply_per_spmv": 0.5, "setup_per_spmv": 0.0, "iter_per_spmv": 0.0}
TIME_METRICS = ("apply_per_spmv", "iter_per_spmv", "setup_per_spmv")
MAX_TIMED_SOLVE_S = 1.0
ACCURACY_RTOL_FACTOR = 10.0
TRUE_RELRES_GROWTH = 2.0
RELERR_GROWTH = 10.0
RELERR_FLOOR = 1e-15
NBYTES_CROSS_PLATFORM = 0.10


# --- measuring ------------------------------------------------------------------------


def collect(selected, *, repeats: int = REPEATS, timing: bool = True, progress=None) -> dict:
    """Measure ``selected`` cases under pinned threads; returns a baseline-shaped dict."""
    results = {}
    with env.pinned_threads(env.DEFAULT_THREADS):
        for c in selected:
            if progress is not None:
                progress(c)
            results[c.id] = measure.cost_samples(
                c, repeats=repeats, setup=timing, iteration=timing,
                max_timed_solve_s=MAX_TIMED_SOLVE_S)
        fp = env.platform_fingerprint()
        info = env.environment()
    return {
        "format": FORMAT_VERSION,
        "protocol_version": PROTOCOL_VERSION,
        "suite": SUITE,
        "threads": env.DEFAULT_THREADS,
        "repeats": repeats,
        "platform": fp,
        "machine": info["machine"],
        "commit": info["commit"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "cases": results,
    }


# --- the baseline file ------------------------------------------------------------------------

_CASE_FIELDS = {
    "iterations": (int,), "converged": (bool,), "true_relres": (float, int),
    "relerr": (float, int), "nbytes": (int,),
}


def load_baseline(path) -> dict:
    """Read and validate a gate baseline; ValueError names the file and the field."""
    path = Path(path)
    where = f"baseline {str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{where} not found; create it with --update-baseline")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt {where}: {exc}") from None
    except OSError as exc:
        raise ValueError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if not isinstance(data, dict) or data.get("format") not in (1, FORMAT_VERSION):
        raise ValueError(f"{where} is not a gate baseline (format 1 or {FORMAT_VERSION})")
    for key, typ in (("cases", dict), ("platform", dict), ("commit", str), ("machine", str)):
        if not isinstance(data.get(key), typ):
            raise ValueError(f"{where}: field {key!r} missing or not a {typ.__name__}")
    if not data["cases"]:
        raise ValueError(f"{where}: no cases")
    for cid, row in data["cases"].items():
        try:
            parse_case_id(cid)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: case {cid!r} is not an object")
        for key, types in _CASE_FIELDS.items():
            if key in ("iterations", "converged") and key not in row:
                raise ValueError(f"{where}: case {cid!r} lacks {key!r}")
            if key in row and (not isinstance(row[key], types)
                               or (types == (int,) and isinstance(row[key], bool))):
                raise ValueError(f"{where}: case {cid!r}: {key!r} is {row[key]!r}, not "
                                 f"{'/'.join(t.__name__ for t in types)}")
        if row["iterations"] < 0:
            raise ValueError(f"{where}: case {cid!r}: negative iterations")
        for key in TIME_METRICS:
            if key in row:
                v = row[key]
                if not (isinstance(v, list) and len(v) >= MIN_SAMPLES and all(
                        isinstance(x, float | int) and math.isfinite(x) and x > 0 for x in v)):
                    raise ValueError(f"{where}: case {cid!r}: {key!r} must be a list of at least "
                                     f"{MIN_SAMPLES} positive numbers")
    return data


# --- comparing ----------------------------------------------------------------------------


def _iteration_tolerance(cid: str, iterations: int) -> int:
    spec = _method_of(cid)
    absolute, rel = spec.iteration_tolerance if spec is not None else (2, 0.02)
    return max(absolute, math.ceil(rel * iterations))


def _method_of(cid: str):
    from npo.methods import get_method

    try:
        return get_method(parse_case_id(cid).method)
    except ValueError:
        return None


def _accuracy(cid, b, n) -> str:
    """'' when accuracy holds, else a failure text naming both residuals."""
    if not (b.get("converged") and n.get("converged")):
        return ""
    rtol = cases.RTOL  # every case of the gate's suite solves to the catalogue's rtol
    if "true_relres" in n:
        limit = ACCURACY_RTOL_FACTOR * rtol
        if "true_relres" in b:
            limit = max(limit, TRUE_RELRES_GROWTH * b["true_relres"])
        if n["true_relres"] > limit:
            base = f"{b['true_relres']:.2e}" if "true_relres" in b else "n/a"
            return (f"true relres {n['true_relres']:.2e} > {limit:.2e} (baseline {base}, "
                    f"rtol {rtol:g})")
    if "relerr" in n and "relerr" in b and all(math.isfinite(v) for v in (n["relerr"],
                                                                         b["relerr"])):
        limit = RELERR_GROWTH * max(b["relerr"], RELERR_FLOOR)
        if n["relerr"] > limit:
            return f"error vs direct solve {b['relerr']:.2e} -> {n['relerr']:.2e} (> x{RELERR_GROWTH:g})"
    return ""


def compare(base: dict, now: dict, *, threshold: float = THRESHOLD, alpha: float = ALPHA,
            not_gated: dict | None = None) -> dict:
    """Compare two collections; returns rows, failures, improvements and the verdict.

    ``not_gated`` maps baseline case ids that cannot run here (a method whose
    requirement is not installed) to the reason; they are listed, not failed.
    """
    same_platform = base.get("platform") == now.get("platform")
    if not same_platform:
        threshold = threshold**2
    not_gated = dict(not_gated or {})
    rows, failures, improvements = [], [], []
    for cid in sorted(set(base["cases"]) | set(now["cases"]), key=_case_key):
        b, n = base["cases"].get(cid), now["cases"].get(cid)
        if cid in not_gated:
            rows.append((cid, "cases", "in baseline", "not run here", "", f"not gated: "
                         f"{not_gated[cid]}"))
            continue
        if n is None:
            rows.append((cid, "cases", "in baseline", "did not run", "", "FAIL"))
            failures.append(f"{cid}: in the baseline but no longer runs")
            continue
        if b is None:
            rows.append((cid, "iterations", "-", str(n["iterations"]), "", "new (not gated)"))
            continue
        tol = 0 if same_platform else _iteration_tolerance(cid, b["iterations"])
        acc = _accuracy(cid, b, n)
        diff = n["iterations"] - b["iterations"]
        if b["converged"] and not n["converged"]:
            verdict = "FAIL: lost convergence"
            failures.append(f"{cid}: lost convergence ({n['iterations']} iterations, "
                            "not converged)")
        elif diff > tol:
            verdict = f"FAIL: +{diff} iterations"
            failures.append(f"{cid}: iterations {b['iterations']} -> {n['iterations']} "
                            f"(+{diff}, tolerance {tol})")
        elif (diff < -tol or (n["converged"] and not b["converged"])) and not acc:
            verdict = "improved"
            improvements.append(cid)
        else:
            verdict = "pass"
        ratio = n["iterations"] / b["iterations"] if b["iterations"] else math.nan
        rows.append((cid, "iterations", _its(b), _its(n), f"{ratio:.3f}", verdict))
        if "true_relres" in n and n.get("converged") and b.get("converged"):
            verdict = "pass"
            if acc:
                verdict = "FAIL: accuracy"
                failures.append(f"{cid}: accuracy: {acc}" + (
                    f"; iterations {b['iterations']} -> {n['iterations']}" if diff < 0 else ""))
            base_txt = f"{b['true_relres']:.2e}" if "true_relres" in b else "-"
            rows.append((cid, "true_relres", base_txt, f"{n['true_relres']:.2e}", "", verdict))
        if "nbytes" in n and "nbytes" in b:
            nb, bb = n["nbytes"], b["nbytes"]
            allowed = bb if same_platform else math.floor(bb * (1 + NBYTES_CROSS_PLATFORM))
            if nb > allowed:
                verdict = "FAIL: more memory"
                failures.append(f"{cid}: nbytes {bb:,} -> {nb:,} (allowed {allowed:,})")
            elif nb < bb:
                verdict = "less memory"
            else:
                verdict = "pass"
            r = f"{nb / bb:.3f}" if bb else ""
            rows.append((cid, "nbytes", f"{bb:,}", f"{nb:,}", r, verdict))
        for metric in TIME_METRICS:
            if metric not in b or metric not in n:
                continue
            bm, nm = statistics.median(b[metric]), statistics.median(n[metric])
            if bm < MIN_GATED[metric]:
                continue
            ch = significant_change(b[metric], n[metric], threshold=threshold, alpha=alpha)
            worse = METRICS[metric].worse(bm, nm)
            if ch.flagged and worse:
                verdict = "FAIL: slower"
                failures.append(f"{cid}: {metric} {bm:.3g} -> {nm:.3g} (x{ch.ratio:.2f}, "
                                f"p={ch.p:.2g})")
            elif ch.flagged:
                verdict = "faster"
            else:
                verdict = "pass"
            p_up = mwu_greater(n[metric], b[metric])
            rows.append((cid, metric, f"{bm:.3g}", f"{nm:.3g}", f"{ch.ratio:.3f} (p={p_up:.2g})",
                         verdict))
    return {
        "same_platform": same_platform,
        "rows": rows,
        "failures": failures,
        "improvements": improvements,
        "not_gated": not_gated,
        "passed": not failures,
        "threshold": threshold,
        "alpha": alpha,
    }


def _its(c) -> str:
    return f"{c['iterations']}" + ("" if c["converged"] else " (nc)")


def _case_key(cid: str):
    k = parse_case_id(cid)
    return (k.problem, k.n, k.ranks, k.field, k.method)


def _tol_text(tol) -> str:
    absolute, rel = tol
    return f"{absolute}, {rel:.0%}"


def rules_text(result: dict, now: dict) -> list[str]:
    """Every rule and tolerance of this run, formatted from the constants."""
    from npo.methods import DEFAULT_ITERATION_TOLERANCE, methods

    if result["same_platform"]:
        its = "same platform as the baseline: exact (any increase fails)"
        mem = "same platform: exact (any increase fails)"
    else:
        special = sorted({f"+max({_tol_text(m.iteration_tolerance)}) for {m.label}"
                          for m in methods().values()
                          if tuple(m.iteration_tolerance) != DEFAULT_ITERATION_TOLERANCE})
        its = (f"different platform from the baseline: +max({_tol_text(DEFAULT_ITERATION_TOLERANCE)})"
               f" iterations" + (", " + ", ".join(special) if special else ""))
        mem = f"different platform: +{NBYTES_CROSS_PLATFORM:.0%}"
    floors = ", ".join(f"{k} < {v:g}" for k, v in MIN_GATED.items() if v > 0)
    return [
        f"- iterations: {its}; lost convergence always fails",
        f"- accuracy: true relres <= max({ACCURACY_RTOL_FACTOR:g} x rtol, "
        f"{TRUE_RELRES_GROWTH:g} x baseline), error vs direct solve <= {RELERR_GROWTH:g} x "
        "baseline; an iteration drop is an improvement only when accuracy holds",
        f"- memory (nbytes): {mem}",
        f"- time ({', '.join(TIME_METRICS)}): fail when the median xSpMV ratio > "
        f"{result['threshold']:g} and Mann-Whitney U (one-sided) p < {result['alpha']:g}, "
        f"{now.get('repeats')} samples each; not gated: {floors}, per-iteration cost of "
        f"solves over {MAX_TIMED_SOLVE_S:g} s",
    ]


def _spread(result, metric) -> str:
    ratios = [float(r[4].split()[0]) for r in result["rows"] if r[1] == metric and r[4]]
    if not ratios:
        return f"{metric}: not run"
    return (f"{metric}: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, "
            f"max {max(ratios):.3f} over {len(ratios)} cases")


def summary_markdown(result: dict, base: dict, now: dict) -> str:
    from tabulate import tabulate

    lines = [
        f"# Performance gate: {'PASS' if result['passed'] else 'FAIL'}",
        "",
        f"- suite `{SUITE}`, {len(now['cases'])} cases, threads {now['threads']}; "
        f"baseline from commit `{str(base.get('commit', '?'))[:12]}` on {base.get('machine')} "
        f"({base.get('created')}); now commit `{str(now.get('commit', '?'))[:12]}` on "
        f"{now.get('machine')}",
        "- platform: " + ("same platform, exact" if result["same_platform"] else
                          "different platform from the baseline: tolerances below"),
        *rules_text(result, now),
        "- ratio spread: " + "; ".join(_spread(result, m) for m in (*TIME_METRICS, "nbytes")),
    ]
    if result["not_gated"]:
        lines.append(f"- not gated here ({len(result['not_gated'])} cases): "
                     + "; ".join(sorted(set(result["not_gated"].values()))))
    lines += [
        "",
        tabulate(result["rows"], headers=["case", "metric", "baseline", "now", "ratio", "verdict"],
                 tablefmt="github"),
        "",
    ]
    if result["failures"]:
        lines += ["## Regressions", ""] + [f"- {f}" for f in result["failures"]] + [""]
    if result["improvements"]:
        lines += [
            "## Improvements",
            "",
            f"{len(result['improvements'])} case(s) improved: "
            + ", ".join(result["improvements"])
            + ". If intended, re-baseline with `npo-bench gate --update-baseline` and commit "
            "the baseline file so the change shows in review.",
            "",
        ]
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------


def add_arguments(p) -> None:
    p.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"baseline file ({DEFAULT_BASELINE})")
    p.add_argument("--update-baseline", action="store_true",
                   help="measure and rewrite the baseline (refuses a dirty tree)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="with --update-baseline: accept uncommitted changes")
    p.add_argument("--summary", default=None, help="also write the Markdown summary here")
    p.add_argument("--repeats", type=int, default=REPEATS,
                   help=f"time samples per metric, >= {MIN_SAMPLES} ({REPEATS})")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help=f"time ratio limit, > 1 ({THRESHOLD})")
    p.add_argument("--alpha", type=float, default=ALPHA,
                   help=f"significance level, in (0, 1) ({ALPHA})")
    p.add_argument("--no-time", action="store_true", help="iterations, accuracy, memory only")
    p.add_argument("--method", nargs="+", help="only these methods (default: all of quick)")
    p.add_argument("--case", nargs="+", help="only these case ids")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def check_args(args):
    """Validate every option and the baseline before any case is measured."""
    if not (isinstance(args.repeats, int) and args.repeats >= MIN_SAMPLES):
        raise ValueError(f"--repeats must be >= {MIN_SAMPLES} for the significance test, "
                         f"got {args.repeats}")
    if not (math.isfinite(args.threshold) and args.threshold > 1):
        raise ValueError(f"--threshold must be a ratio > 1, got {args.threshold}")
    if not (0 < args.alpha < 1):
        raise ValueError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.update_baseline:
        if args.method or args.case:
            raise ValueError("--update-baseline rewrites the whole baseline; drop --method/--case")
        if env.is_dirty() and not args.allow_dirty:
            raise ValueError("--update-baseline: the working tree has uncommitted changes; "
                             "commit first (the baseline records the commit) or pass --allow-dirty")
        from npo.fileio import check_output_dir

        check_output_dir(Path(args.baseline).parent, 64 * 1024)
        base = None
    else:
        base = load_baseline(args.baseline)
    if args.summary:
        from npo.fileio import check_output_dir

        check_output_dir(Path(args.summary).parent or ".", 64 * 1024)
    selected, skipped = _select(args)
    return base, selected, skipped


def _select(args):
    every = cases.cases(SUITE, include_skipped=True)
    by_id = {c.id: c for c in every}
    if args.method:
        known = {c.method.label for c in every}
        bad = [m for m in args.method if m not in known]
        if bad:
            raise ValueError(f"unknown method {bad[0]!r} in suite {SUITE!r}; expected one of "
                             f"{sorted(known)}")
    if args.case:
        bad = [c for c in args.case if c not in by_id]
        if bad:
            raise ValueError(f"unknown case {bad[0]!r} in suite {SUITE!r}")
    chosen = [c for c in every if (not args.method or c.method.label in args.method)
              and (not args.case or c.id in args.case)]
    run = [c for c in chosen if c.skip_reason is None]
    # a case whose method cannot run here for want of an install is listed, not failed
    skipped = {c.id: c.method.missing_requirement() for c in chosen
               if c.skip_reason is not None and c.method.missing_requirement()}
    return run, skipped


def run_gate(args) -> int:
    from npo.fileio import write_text

    base, selected, skipped = check_args(args)
    t0 = time.perf_counter()
    now = collect(
        selected,
        repeats=args.repeats,
        timing=not args.no_time,
        progress=lambda c: print(f"  gate: {c.id}", file=sys.stderr),
    )
    if args.update_baseline:
        write_text(args.baseline, json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"wrote baseline {args.baseline} ({len(now['cases'])} cases, commit "
              f"{now['commit'][:12]}, {time.perf_counter() - t0:.0f} s)")
        return 0
    sel = {c.id for c in selected} | set(skipped)
    if args.method or args.case:  # cases outside the selection are not "missing"
        base = {**base, "cases": {k: v for k, v in base["cases"].items() if k in sel}}
    # baseline cases of methods not registered here (a plugin not installed)
    for cid in base["cases"]:
        if cid not in sel and _method_of(cid) is None:
            skipped[cid] = f"method {parse_case_id(cid).method!r} is not installed"
    result = compare(base, now, threshold=args.threshold, alpha=args.alpha,
                     not_gated={k: v for k, v in skipped.items() if k in base["cases"]})
    text = summary_markdown(result, base, now)
    text += f"\n_gate wall-clock: {time.perf_counter() - t0:.0f} s_\n"
    if args.json:
        print(json.dumps({k: v for k, v in result.items()}, indent=1, default=str))
    else:
        print(text)
    if args.summary:
        write_text(args.summary, text)
    return 0 if result["passed"] else 1
