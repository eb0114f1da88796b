"""CI performance gates on the ``quick`` suite, against a committed baseline.

**Iteration gate.** Iteration counts are deterministic at fixed seeds and a
pinned thread count, so on the platform that wrote the baseline the gate is
exact: any increase fails, and so does any lost convergence. On another
platform (a different CPU kernel in OpenBLAS or torch, or other library
versions) a long ill-conditioned solve can move by a few iterations from
rounding alone; there the gate allows ``max(2, 2% of the baseline)`` extra
iterations, and ``max(3, 10%)`` for the NPO, whose float32 network rounds
differently with each CPU's vector kernels; the summary says which. Fewer
iterations are reported as improvements with a hint to re-baseline.

**Time gate.** Wall-clock seconds do not compare across machines or even
across minutes on a shared one, so the gate compares *ratios measured in the
same process*: per-apply time and per-iteration time, each divided by the time
of one SpMV of the same matrix measured right next to it. Each is sampled
``repeats`` times; a case fails only if the median ratio grew by more than
``threshold`` (default 1.5x) *and* a one-sided Mann-Whitney U test says the
new samples are larger than the baseline's at level ``alpha`` (default 0.01).
Apply costs below 0.5 SpMV (identity, Jacobi) are Python call overhead and not
gated; per-iteration costs are gated for converged solves that take under a
second. Against a baseline from another platform the cost ratios also carry
the difference between the two CPUs (cache sizes, vector units), so there the
threshold is squared (2.25x by default).

For an A/B of two commits on the same machine use asv, whose exit code (unlike
``asv compare``) reflects regressions::

    asv continuous --factor 1.5 --bench SolveTime <base> HEAD

Exit codes: 0 pass, 1 regression, 2 error.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from npo import cases, env, measure

__all__ = ["add_arguments", "compare", "collect", "run_gate"]

FORMAT_VERSION = 1
DEFAULT_BASELINE = "benchmarks/gate_baseline.json"
SUITE = "quick"
#: extra iterations allowed against another platform's baseline: (absolute, relative)
CROSS_PLATFORM_TOL = (2, 0.02)
CROSS_PLATFORM_TOL_FLOAT32 = (3, 0.10)  # the NPO's float32 network
THRESHOLD = 1.5
ALPHA = 0.01
REPEATS = 7
MIN_GATED_APPLY = 0.5  # x SpMV
MAX_TIMED_SOLVE_S = 1.0


def platform_fingerprint(uses_torch: bool) -> dict:
    """What decides the last bits of the arithmetic: CPU kernels and library versions."""
    from threadpoolctl import threadpool_info

    fp = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "blas": sorted(
            f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
            for i in threadpool_info()
        ),
    }
    versions = env.environment()["versions"]
    fp.update({k: v for k, v in versions.items() if k in ("numpy", "scipy", "pyamg")})
    if uses_torch:
        import torch

        fp["torch"] = torch.__version__
        fp["torch_cpu"] = torch.backends.cpu.get_cpu_capability()
    return fp


def _ratio_samples(fn, spmv, repeats: int, min_time: float = 0.005) -> list[float]:
    """``repeats`` samples of time(fn)/time(spmv), each pair measured back to back."""
    out = []
    for _ in range(repeats):
        s = measure._median_per_call(spmv, 3, min_time)
        t = measure._median_per_call(fn, 3, min_time)
        out.append(t / s)
    return out


def measure_case(case, *, repeats: int, timing: bool) -> dict:
    """Iterations, convergence and (optionally) x SpMV cost samples of one case."""
    p = measure.problem(case)
    A, b = p.A, p.b
    M = measure.make_preconditioner(case).setup(A)
    t0 = time.perf_counter()
    res = measure.solve(case, A, b, M)
    solve_s = time.perf_counter() - t0
    row = {"iterations": int(res.iterations), "converged": bool(res.converged)}
    if not timing:
        return row
    v = measure.unit_vector(p.N)

    def spmv():
        return A @ v

    apply_samples = _ratio_samples(lambda: M.apply(v), spmv, repeats)
    row["apply_per_spmv"] = apply_samples
    if res.converged and solve_s < MAX_TIMED_SOLVE_S and res.iterations > 0:
        its = res.iterations

        def solve():
            return measure.solve(case, A, b, M)

        iter_samples = []
        for _ in range(repeats):
            s = measure._median_per_call(spmv, 3, 0.005)
            # a batch of solves lasting >= 10 ms (one solve when it is longer),
            # timed like the SpMV (timeit, GC off): a single sub-ms solve was
            # the noisiest number in the gate (x1.43 seen on a clean run)
            t = measure._median_per_call(solve, 1, 0.01)
            iter_samples.append(t / its / s)
        row["iter_per_spmv"] = iter_samples
    return row


def collect(selected, *, repeats: int = REPEATS, timing: bool = True, progress=None) -> dict:
    """Measure ``selected`` cases under pinned threads; returns a baseline-shaped dict."""
    uses_torch = any(c.method.precond == "npo" for c in selected)
    results = {}
    with env.pinned_threads(env.DEFAULT_THREADS):
        for c in selected:
            if progress is not None:
                progress(c)
            results[c.id] = measure_case(c, repeats=repeats, timing=timing)
        fp = platform_fingerprint(uses_torch)
        info = env.environment()
    return {
        "format": FORMAT_VERSION,
        "suite": SUITE,
        "threads": env.DEFAULT_THREADS,
        "repeats": repeats,
        "platform": fp,
        "machine": info["machine"],
        "commit": info["commit"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "cases": results,
    }


def load_baseline(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"baseline {str(path)!r} not found; create it with --update-baseline")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt baseline {str(path)!r}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION or "cases" not in data:
        raise ValueError(f"baseline {str(path)!r} is not a format-{FORMAT_VERSION} gate baseline")
    return data


def _mwu_greater(new, old) -> float:
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(new, old, alternative="greater").pvalue)


def _cross_platform_tol(cid: str, iterations: int) -> int:
    method = cases.get_case(cid).method
    absolute, rel = CROSS_PLATFORM_TOL_FLOAT32 if method.precond == "npo" else CROSS_PLATFORM_TOL
    return max(absolute, math.ceil(rel * iterations))


def compare(base: dict, now: dict, *, threshold: float = THRESHOLD, alpha: float = ALPHA) -> dict:
    """Compare two collections; returns rows and the overall verdict."""
    same_platform = base.get("platform") == now.get("platform")
    if not same_platform:
        threshold = threshold**2
    rows, failures, improvements = [], [], []
    for cid in sorted(set(base["cases"]) | set(now["cases"]), key=_case_key):
        b, n = base["cases"].get(cid), now["cases"].get(cid)
        if n is None:
            rows.append((cid, "cases", "in baseline", "did not run", "", "FAIL"))
            failures.append(f"{cid}: in the baseline but no longer runs")
            continue
        if b is None:
            rows.append((cid, "iterations", "-", str(n["iterations"]), "", "new (not gated)"))
            continue
        tol = 0 if same_platform else _cross_platform_tol(cid, b["iterations"])
        conv_lost = b["converged"] and not n["converged"]
        diff = n["iterations"] - b["iterations"]
        if conv_lost:
            verdict = "FAIL: lost convergence"
            failures.append(f"{cid}: lost convergence ({n['iterations']} iterations, not converged)")
        elif diff > tol:
            verdict = f"FAIL: +{diff} iterations"
            failures.append(f"{cid}: iterations {b['iterations']} -> {n['iterations']} (+{diff}, tolerance {tol})")
        elif diff < -tol or (n["converged"] and not b["converged"]):
            verdict = "improved"
            improvements.append(cid)
        else:
            verdict = "pass"
        ratio = n["iterations"] / b["iterations"] if b["iterations"] else math.nan
        rows.append((cid, "iterations", _its(b), _its(n), f"{ratio:.3f}", verdict))
        for metric in ("apply_per_spmv", "iter_per_spmv"):
            if metric not in b or metric not in n:
                continue
            bm, nm = statistics.median(b[metric]), statistics.median(n[metric])
            if metric == "apply_per_spmv" and bm < MIN_GATED_APPLY:
                continue
            r = nm / bm
            p = _mwu_greater(n[metric], b[metric])
            if r > threshold and p < alpha:
                verdict = "FAIL: slower"
                failures.append(f"{cid}: {metric} {bm:.3g} -> {nm:.3g} (x{r:.2f}, p={p:.2g})")
            elif r < 1 / threshold and _mwu_greater(b[metric], n[metric]) < alpha:
                verdict = "faster"
            else:
                verdict = "pass"
            rows.append((cid, metric, f"{bm:.3g}", f"{nm:.3g}", f"{r:.3f} (p={p:.2g})", verdict))
    return {
        "same_platform": same_platform,
        "rows": rows,
        "failures": failures,
        "improvements": improvements,
        "passed": not failures,
        "threshold": threshold,
    }


def _its(c) -> str:
    return f"{c['iterations']}" + ("" if c["converged"] else " (nc)")


def _case_key(cid: str):
    n, rest = cid.split("-", 1)
    return (int(n[1:]), rest)


def _tol_text(tol) -> str:
    absolute, rel = tol
    return f"{absolute}, {rel:.0%}"


def summary_markdown(result: dict, base: dict, now: dict, *, alpha: float) -> str:
    from tabulate import tabulate

    tol = (
        "exact (same platform as the baseline)"
        if result["same_platform"]
        else f"different platform from the baseline: +max({_tol_text(CROSS_PLATFORM_TOL)}) "
        f"iterations, +max({_tol_text(CROSS_PLATFORM_TOL_FLOAT32)}) for the NPO"
    )
    threshold = result["threshold"]
    ratios = [
        float(r[4].split()[0]) for r in result["rows"] if r[1] != "iterations" and r[4]
    ]
    spread = (
        f"time ratios: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, "
        f"max {max(ratios):.3f} over {len(ratios)} gated metrics"
        if ratios
        else "time gate: not run"
    )
    lines = [
        f"# Performance gate: {'PASS' if result['passed'] else 'FAIL'}",
        "",
        f"- suite `{SUITE}`, {len(now['cases'])} cases, threads {now['threads']}; "
        f"baseline from commit `{str(base.get('commit', '?'))[:12]}` on {base.get('machine')} "
        f"({base.get('created')}); now commit `{str(now.get('commit', '?'))[:12]}` on "
        f"{now.get('machine')}",
        f"- iteration tolerance: {tol}",
        f"- time gate: fail when median xSpMV ratio > {threshold} and Mann-Whitney U "
        f"(one-sided) p < {alpha}, {now.get('repeats')} samples each; {spread}",
        "",
        tabulate(
            result["rows"],
            headers=["case", "metric", "baseline", "now", "ratio", "verdict"],
            tablefmt="github",
        ),
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


def add_arguments(p) -> None:
    p.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"baseline file ({DEFAULT_BASELINE})")
    p.add_argument("--update-baseline", action="store_true", help="measure and rewrite the baseline")
    p.add_argument("--summary", default=None, help="also write the Markdown summary here")
    p.add_argument("--repeats", type=int, default=REPEATS, help=f"time samples per metric ({REPEATS})")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help=f"time ratio limit ({THRESHOLD})")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level ({ALPHA})")
    p.add_argument("--no-time", action="store_true", help="iteration gate only")
    p.add_argument("--method", nargs="+", help="only these methods (default: all of quick)")
    p.add_argument("--case", nargs="+", help="only these case ids")


def _select(args):
    selected = cases.cases(SUITE, methods=args.method)
    if args.case:
        known = {c.id for c in selected}
        bad = [c for c in args.case if c not in known]
        if bad:
            raise ValueError(f"unknown case {bad[0]!r} in suite {SUITE!r}")
        selected = [c for c in selected if c.id in set(args.case)]
    return selected


def run_gate(args) -> int:
    from npo.report.io import write_text

    if args.repeats < 3:
        raise ValueError("--repeats must be >= 3 for the significance test")
    selected = _select(args)
    t0 = time.perf_counter()
    now = collect(
        selected,
        repeats=args.repeats,
        timing=not args.no_time,
        progress=lambda c: print(f"  gate: {c.id}", file=sys.stderr),
    )
    if args.update_baseline:
        if args.method or args.case:
            raise ValueError("--update-baseline rewrites the whole baseline; drop --method/--case")
        write_text(args.baseline, json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"wrote baseline {args.baseline} ({len(now['cases'])} cases, "
              f"{time.perf_counter() - t0:.0f} s)")
        return 0
    base = load_baseline(args.baseline)
    if args.method or args.case:  # cases outside the selection are not "missing"
        sel = {c.id for c in selected}
        base = {**base, "cases": {k: v for k, v in base["cases"].items() if k in sel}}
    result = compare(base, now, threshold=args.threshold, alpha=args.alpha)
    text = summary_markdown(result, base, now, alpha=args.alpha)
    text += f"\n_gate wall-clock: {time.perf_counter() - t0:.0f} s_\n"
    print(text)
    if args.summary:
        write_text(args.summary, text)
    return 0 if result["passed"] else 1

