"""Evaluation figures of the shipped NPO models (report 06, section 5, and beyond).

``python -m npo.neural.eval`` prints, with threads pinned to 1 (iteration
counts are deterministic at a fixed thread count):

* canonical: ``poisson_2d(32)``, ``b = grf_rhs(32, seed=42)``, rtol 1e-10 --
  CG, NPO + FCG, and NPO + plain PCG (the negative control, maxiter 2000);
* resolution transfer: NPO + FCG next to CG at several n;
* variable coefficients: jump (contrast 100) and lognormal (1e2, seed 0) at
  n = 32, NPO + FCG next to CG and Jacobi-PCG;
* apply cost: median apply time, FLOPs and the fraction of float32 GEMM rate.

``--json PATH`` also writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import warnings

from npo.env import pinned_threads
from npo.krylov import fcg, pcg
from npo.precond import get
from npo.problems import coefficient, diffusion_2d, grf_rhs, poisson_2d

__all__ = ["canonical", "transfer", "varcoef"]

RTOL = 1e-10


def _row(res) -> dict:
    return {"iterations": res.iterations, "converged": res.converged, "reason": res.reason,
            "relres": res.relres, "true_relres": res.true_relres}


def canonical(checkpoint: str = "poisson32", n: int = 32, seed: int = 42,
              device: str = "cpu") -> dict:
    """CG, NPO+FCG and NPO+PCG (maxiter 2000) on ``poisson_2d(n)``."""
    A = poisson_2d(n)
    b = grf_rhs(n, seed=seed)
    with pinned_threads(1):
        M = get("npo", checkpoint=checkpoint, device=device).setup(A)
        out = {"checkpoint": checkpoint, "n": n, "device": device,
               "cg": _row(pcg(A, b, rtol=RTOL)),
               "npo_fcg": _row(fcg(A, b, M, rtol=RTOL))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the expected nonlinear-M warning
            out["npo_pcg"] = _row(pcg(A, b, M, rtol=RTOL, maxiter=2000))
    return out


def transfer(checkpoint: str = "poisson", ns=(32, 64, 128, 256), seed: int = 42,
             device: str = "cpu") -> list[dict]:
    """NPO + FCG iterations next to CG's on ``poisson_2d(n)`` for each n.

    FCG is capped at CG's own iteration count: a preconditioner that needs
    more is no use, and each NPO iteration costs a network forward pass.
    """
    rows = []
    with pinned_threads(1):
        for n in ns:
            A = poisson_2d(n)
            b = grf_rhs(n, seed=seed)
            M = get("npo", checkpoint=checkpoint, device=device).setup(A)
            c = pcg(A, b, rtol=RTOL)
            f = fcg(A, b, M, rtol=RTOL, maxiter=c.iterations)
            rows.append({"n": n, "cg": c.iterations, "npo_fcg": f.iterations,
                         "converged": f.converged, "reason": f.reason,
                         "ratio": c.iterations / f.iterations if f.converged else None})
    return rows


def varcoef(checkpoint: str = "varcoef", n: int = 32, seed: int = 42,
            device: str = "cpu") -> list[dict]:
    """Jump (100) and lognormal (1e2, field seed 0): NPO+FCG vs CG and Jacobi-PCG."""
    rows = []
    with pinned_threads(1):
        for field, contrast, fseed in (("jump", 100.0, 0), ("lognormal", 100.0, 0)):
            A = diffusion_2d(n, coefficient(field, n, contrast, fseed))
            b = grf_rhs(n, seed=seed)
            M = get("npo", checkpoint=checkpoint, device=device).setup(A)
            rows.append({
                "field": field, "contrast": contrast, "n": n,
                "cg": pcg(A, b, rtol=RTOL).iterations,
                "jacobi": pcg(A, b, get("jacobi").setup(A), rtol=RTOL).iterations,
                "npo_fcg": _row(fcg(A, b, M, rtol=RTOL, maxiter=4000)),
            })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m npo.neural.eval", description=__doc__.split("\n")[0])
    ap.add_argument("--canonical", default="poisson32", help="model for the canonical check")
    ap.add_argument("--transfer", nargs="*", default=["poisson32", "poisson"],
                    help="models for the resolution-transfer table")
    ap.add_argument("--ns", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--varcoef", default="varcoef")
    ap.add_argument("--cost", default="poisson", help="model for the apply-cost table ('' to skip)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:k] (the network only)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    report = {}
    c = canonical(a.canonical, device=a.device)
    report["canonical"] = c
    print(f"canonical poisson_2d(32), b = grf_rhs(32, seed=42), rtol 1e-10, model {a.canonical!r}:")
    for k in ("cg", "npo_fcg", "npo_pcg"):
        r = c[k]
        print(f"  {k:8s} {r['iterations']:5d} its  {r['reason']:9s} relres {r['relres']:.3e}")
    report["transfer"] = {}
    for name in a.transfer:
        rows = transfer(name, a.ns, device=a.device)
        report["transfer"][name] = rows
        print(f"resolution transfer, model {name!r}:")
        for r in rows:
            tail = (f"ratio {r['ratio']:.2f}x" if r["converged"]
                    else f"not converged ({r['reason']}; capped at CG's count)")
            print(f"  n={r['n']:4d}  CG {r['cg']:5d}  NPO+FCG {r['npo_fcg']:5d}  {tail}")
    if a.varcoef:
        rows = varcoef(a.varcoef, device=a.device)
        report["varcoef"] = rows
        print(f"variable coefficients, n=32, model {a.varcoef!r}:")
        for r in rows:
            f = r["npo_fcg"]
            print(f"  {r['field']:9s} {r['contrast']:g}: CG {r['cg']}  Jacobi {r['jacobi']}  "
                  f"NPO+FCG {f['iterations']} ({f['reason']})")
    if a.cost:
        from npo.neural.flops import apply_cost

        report["cost"] = []
        print(f"apply cost, model {a.cost!r}, 1 thread, device {a.device}:")
        for n in (32, 128, 256):
            r = apply_cost(a.cost, n, device=a.device)
            report["cost"].append(r)
            print(f"  n={n:4d}  apply {r['apply_s'] * 1e3:8.3f} ms  {r['flops'] / 1e6:8.1f} MFLOP  "
                  f"{r['flops_per_s'] / 1e9:6.1f} GFLOP/s  mm {r['mm_flops_per_s'] / 1e9:6.1f} "
                  f"GFLOP/s  fraction {r['mm_fraction']:.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
