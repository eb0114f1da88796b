"""Power of the gate: injected regressions must fail it, naming the case.

Baselines are measured here, in the same process, so the tests do not depend
on the machine that wrote the committed baseline.
"""

import json

import numpy as np
import pytest

from npo import cases, gate
from npo.cli import main
from npo.precond import base as registry
from npo.precond.amg import AMG
from npo.precond.basic import Jacobi
from npo.precond.ilu import ILU0


def _baseline(tmp_path, case_ids, repeats=5):
    selected = [cases.get_case(c) for c in case_ids]
    data = gate.collect(selected, repeats=repeats)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(data))
    return path, data


def _gate(capsys, path, case_ids, *extra):
    code = main(["gate", "--baseline", str(path), "--repeats", "5", "--case", *case_ids, *extra])
    return code, capsys.readouterr().out


def test_clean_run_passes_iteration_gate(tmp_path, capsys):
    ids = ["n32-constant-cg", "n32-jump1e2-jacobi", "n64-constant-amg_rs"]
    path, _ = _baseline(tmp_path, ids)
    code, out = _gate(capsys, path, ids, "--no-time")
    assert code == 0, out
    assert "# Performance gate: PASS" in out and "exact (same platform" in out


def test_2x_slower_apply_fails(tmp_path, capsys, monkeypatch):
    cid = "n64-constant-amg_sa"
    path, _ = _baseline(tmp_path, [cid])
    original = AMG.apply

    def twice(self, r):
        original(self, r)
        return original(self, r)

    monkeypatch.setattr(AMG, "apply", twice)
    code, out = _gate(capsys, path, [cid])
    assert code == 1, out
    assert f"{cid}: apply_per_spmv" in out and "FAIL: slower" in out
    assert "iterations" in out  # the iteration count itself did not move
    row = [r for r in out.splitlines() if cid in r and "| iterations" in r][0]
    assert "pass" in row


class WeakILU0(ILU0):
    """ILU(0) of A + 0.5 diag(A): a deliberately weakened preconditioner."""

    def _setup(self, A):
        import scipy.sparse as sp

        super()._setup(A + 0.5 * sp.diags(A.diagonal()))


def test_iteration_regression_fails(tmp_path, capsys, monkeypatch):
    cid = "n32-constant-ilu0"
    path, base = _baseline(tmp_path, [cid])
    monkeypatch.setitem(registry._REGISTRY, "ilu0", WeakILU0)
    now = gate.collect([cases.get_case(cid)], repeats=3, timing=False)
    assert now["cases"][cid]["iterations"] >= 1.25 * base["cases"][cid]["iterations"]
    code, out = _gate(capsys, path, [cid])
    assert code == 1, out
    assert f"{cid}: iterations {base['cases'][cid]['iterations']} ->" in out


class ForwardGaussSeidel(Jacobi):
    """A "jacobi" that became one forward Gauss-Seidel sweep: nonsymmetric, so PCG stalls."""

    def _setup(self, A):
        import scipy.sparse as sp
        import scipy.sparse.linalg as sla

        self.lower = sla.splu(sp.tril(A).tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0)

    def apply(self, r):
        return self.lower.solve(r)


def test_lost_convergence_fails(tmp_path, capsys, monkeypatch):
    cid = "n32-jump1e2-jacobi"
    path, _ = _baseline(tmp_path, [cid])
    monkeypatch.setitem(registry._REGISTRY, "jacobi", ForwardGaussSeidel)
    code, out = _gate(capsys, path, [cid], "--no-time")
    assert code == 1, out
    assert f"{cid}: lost convergence" in out


def test_cross_platform_tolerance_and_improvements():
    base = {"platform": {"a": 1}, "cases": {
        "n32-jump1e2-cg": {"iterations": 774, "converged": True},
        "n32-constant-ilu0": {"iterations": 43, "converged": True},
        "n32-constant-cg": {"iterations": 116, "converged": True}}}
    now = {"platform": {"a": 2}, "cases": {
        "n32-jump1e2-cg": {"iterations": 771, "converged": True},   # rounding on another CPU
        "n32-constant-ilu0": {"iterations": 45, "converged": True},  # within max(2, 2%)
        "n32-constant-cg": {"iterations": 100, "converged": True}}}  # a real improvement
    r = gate.compare(base, now)
    assert r["passed"] and not r["same_platform"]
    assert r["improvements"] == ["n32-constant-cg"]
    now["cases"]["n32-constant-ilu0"]["iterations"] = 46
    assert not gate.compare(base, now)["passed"]
    now["platform"] = base["platform"]  # same platform: exact
    now["cases"]["n32-constant-ilu0"]["iterations"] = 44
    assert gate.compare(base, now)["failures"] == [
        "n32-constant-ilu0: iterations 43 -> 44 (+1, tolerance 0)"]


def test_cross_platform_widens_npo_tolerance_and_time_threshold():
    s = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01]
    base = {"platform": {"cpu": "x"}, "cases": {
        "n64-constant-npo": {"iterations": 72, "converged": True, "apply_per_spmv": s}}}
    now = {"platform": {"cpu": "y"}, "cases": {
        "n64-constant-npo": {"iterations": 79, "converged": True,
                             "apply_per_spmv": [2 * v for v in s]}}}
    r = gate.compare(base, now)  # +7 <= max(3, 10% of 72); 2x < 1.5**2
    assert r["passed"] and r["threshold"] == pytest.approx(2.25)
    now["cases"]["n64-constant-npo"]["apply_per_spmv"] = [2.5 * v for v in s]
    assert not gate.compare(base, now)["passed"]
    now["platform"] = base["platform"]
    now["cases"]["n64-constant-npo"]["apply_per_spmv"] = s
    assert not gate.compare(base, now)["passed"]  # same platform: the +7 is exact-gated


def test_missing_case_fails_and_time_noise_passes():
    rng = np.random.default_rng(0)
    s = list(1.0 + 0.05 * rng.standard_normal(7))
    base = {"platform": {}, "cases": {
        "n32-constant-amg_sa": {"iterations": 9, "converged": True, "apply_per_spmv": s},
        "n32-constant-cg": {"iterations": 116, "converged": True}}}
    noisy = [v * 1.2 for v in s]  # 20% slower: inside the 1.5x threshold
    now = {"platform": {}, "cases": {
        "n32-constant-amg_sa": {"iterations": 9, "converged": True, "apply_per_spmv": noisy}}}
    r = gate.compare(base, now)
    assert r["failures"] == ["n32-constant-cg: in the baseline but no longer runs"]


@pytest.mark.parametrize("content, match", [("", "corrupt"), ("{}", "not a format-1"),
                                            (None, "not found")])
def test_bad_baseline_exit_2(tmp_path, capsys, content, match):
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    code = main(["gate", "--baseline", str(path), "--case", "n32-constant-cg", "--no-time"])
    err = capsys.readouterr().err
    assert code == 2 and match in err and "Traceback" not in err
