"""Iteration parity of the Krylov loop on torch tensors against numpy, every quick case.

    python tools/torch-parity.py [--device torch:cpu] > reports/gpu-cpu/parity.md

Each case is solved twice with the same CPU preconditioner (``npo.measure.krylov_parity``):
on numpy arrays and on torch tensors of ``--device``, float64. Solves that never converge
(not converged in the gate baseline) are compared over their first 200 iterations, as in
``tests/test_devices.py::test_torch_krylov_takes_numpy_iterations``, which asserts what this
table shows. Threads are pinned to 1, as in every measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from npo import cases, env, measure  # noqa: E402

STALL_CAP = 200


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="torch:cpu")
    args = ap.parse_args()
    env.pin_process(1)
    baseline = json.loads((ROOT / "benchmarks" / "gate_baseline.json").read_text())["cases"]
    rows, same = [], 0
    for case in cases.cases("quick"):
        if case.method.solver is not None:
            continue
        stalls = not baseline.get(case.id, {"converged": True})["converged"]
        ref, res = measure.krylov_parity(case, maxiter=STALL_CAP if stalls else None,
                                         device=args.device)
        d = res.iterations - ref.iterations
        same += d == 0
        rows.append(f"| {case.id} | {case.method.krylov} | {ref.iterations} | {res.iterations} "
                    f"| {d:+d} | {ref.reason} | {res.reason} | {ref.true_relres:.2e} "
                    f"| {res.true_relres:.2e} |")
    print(f"# Krylov iterations: numpy vs torch tensors ({args.device}), quick suite\n")
    print(f"{same} of {len(rows)} cases take the same number of iterations. Cap: "
          f"{STALL_CAP} iterations for solves that do not converge in the gate baseline.\n")
    print("| case | krylov | numpy its | torch its | diff | numpy stop | torch stop "
          "| numpy true relres | torch true relres |")
    print("|---|---|---:|---:|---:|---|---|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
