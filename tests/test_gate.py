"""Power of the gate: injected regressions must fail it, naming the case and the metric.

Time is simulated, not measured: :class:`FakeCost` replaces
``npo.timing.ratio_samples`` (through which the protocol's
``cost_samples`` takes every cost ratio) with a deterministic cost model,
so these tests cannot fail under load. Code injected into a preconditioner
"costs" extra by calling :meth:`FakeCost.spend`. The one end-to-end check
with a real clock is the gate's own CI step (``.ci/gate-power``).
"""

import json

import numpy as np
import pytest

from npo import cases, gate, krylov, timing
from npo.cli import main
from npo.precond.amg import AMG
from npo.precond.basic import Jacobi
from npo.precond.ilu import ILU0


class FakeCost:
    """Every timed call costs 1 unit, plus what injected code spends while it runs."""

    def __init__(self):
        self.extra = 0.0

    def spend(self, units: float) -> None:
        self.extra += units

    def ratio_samples(self, fn, ref, repeats, **kw):
        before = self.extra
        fn()
        cost = 1.0 + (self.extra - before)
        # a deterministic, tie-free spread of 0.1% (Mann-Whitney needs no ties)
        return [cost * (1 + 0.001 * ((7 * i) % repeats)) for i in range(repeats)]


@pytest.fixture()
def fake(monkeypatch):
    f = FakeCost()
    monkeypatch.setattr(timing, "ratio_samples", f.ratio_samples)
    return f


def _baseline(tmp_path, case_ids, repeats=5):
    selected = [cases.get_case(c) for c in case_ids]
    data = gate.collect(selected, repeats=repeats)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(data))
    return path, data


def _gate(capsys, path, case_ids, *extra):
    code = main(["gate", "--baseline", str(path), "--repeats", "5", "--case", *case_ids, *extra])
    return code, capsys.readouterr().out


def _row(out, cid, metric):
    return next(r for r in out.splitlines() if cid in r and f"| {metric} " in r)


def test_clean_run_passes_every_metric(tmp_path, capsys, fake):
    ids = ["n32-constant-cg", "n32-jump1e2-jacobi", "n64-constant-amg_rs"]
    path, _ = _baseline(tmp_path, ids)
    code, out = _gate(capsys, path, ids)
    assert code == 0, out
    assert "# Performance gate: PASS" in out and "same platform, exact" in out
    for metric in ("iterations", "true_relres", "nbytes", "setup_per_spmv", "iter_per_spmv"):
        assert "pass" in _row(out, "n64-constant-amg_rs", metric), metric


def test_2x_slower_apply_fails(tmp_path, capsys, monkeypatch, fake):
    cid = "n64-constant-amg_sa"
    path, _ = _baseline(tmp_path, [cid])
    original = AMG._apply

    def slower(self, r):
        fake.spend(1.0)
        return original(self, r)

    monkeypatch.setattr(AMG, "_apply", slower)
    code, out = _gate(capsys, path, [cid])
    assert code == 1, out
    assert f"{cid}: apply_per_spmv" in out and "FAIL: slower" in _row(out, cid, "apply_per_spmv")
    assert "pass" in _row(out, cid, "iterations")  # the iteration count itself did not move


def test_3x_slower_setup_fails(tmp_path, capsys, monkeypatch, fake):
    cid = "n32-constant-ilu0"
    path, _ = _baseline(tmp_path, [cid])
    original = ILU0._setup

    def thrice(self, A):  # e.g. a factorisation done three times
        fake.spend(2.0)
        return original(self, A)

    monkeypatch.setattr(ILU0, "_setup", thrice)
    code, out = _gate(capsys, path, [cid])
    assert code == 1, out
    assert f"{cid}: setup_per_spmv" in out
    assert "FAIL: slower" in _row(out, cid, "setup_per_spmv")
    assert "pass" in _row(out, cid, "apply_per_spmv") and "pass" in _row(out, cid, "iterations")


def test_2x_slower_iteration_fails(tmp_path, capsys, monkeypatch, fake):
    cid = "n32-jump1e2-amg_rs"
    path, _ = _baseline(tmp_path, [cid])
    original = krylov.pcg

    def slower_loop(*a, **kw):
        fake.spend(1.0)
        return original(*a, **kw)

    monkeypatch.setattr(krylov, "pcg", slower_loop)
    code, out = _gate(capsys, path, [cid])
    assert code == 1 and "FAIL: slower" in _row(out, cid, "iter_per_spmv"), out


def test_loosened_stopping_test_fails_accuracy(tmp_path, capsys, monkeypatch, fake):
    ids = ["n32-constant-cg", "n32-jump1e2-jacobi"]
    path, base = _baseline(tmp_path, ids)
    original = krylov.pcg

    def loose(A, b, M=None, *, rtol, **kw):  # stops 30x early
        return original(A, b, M, rtol=30 * rtol, **kw)

    monkeypatch.setattr(krylov, "pcg", loose)
    code, out = _gate(capsys, path, ids, "--no-time")
    assert code == 1, out
    for cid in ids:
        assert f"{cid}: accuracy: true relres" in out and f"(baseline {base['cases'][cid]['true_relres']:.2e}" in out
        assert "FAIL: accuracy" in _row(out, cid, "true_relres")
        # the iteration drop is NOT an improvement when the answer got worse
        assert "improved" not in _row(out, cid, "iterations")
    assert "## Improvements" not in out


def test_doubled_nbytes_fails(tmp_path, capsys, monkeypatch, fake):
    cid = "n32-constant-nystrom"
    path, base = _baseline(tmp_path, [cid])
    from npo.precond.nystrom import Nystrom

    original = Nystrom.nbytes
    monkeypatch.setattr(Nystrom, "nbytes", property(lambda self: 2 * original.fget(self)))
    code, out = _gate(capsys, path, [cid], "--no-time")
    assert code == 1, out
    nb = base["cases"][cid]["nbytes"]
    assert f"{cid}: nbytes {nb:,} -> {2 * nb:,}" in out and "FAIL: more memory" in out


class WeakILU0(ILU0):
    """ILU(0) of A + 0.5 diag(A): a deliberately weakened preconditioner."""

    def _setup(self, A):
        import scipy.sparse as sp

        ILU0_SETUP(self, A + 0.5 * sp.diags(A.diagonal()))


ILU0_SETUP = ILU0._setup


def test_iteration_regression_fails(tmp_path, capsys, monkeypatch, fake):
    cid = "n32-constant-ilu0"
    path, base = _baseline(tmp_path, [cid])
    monkeypatch.setattr(ILU0, "_setup", WeakILU0._setup)
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

    def _apply(self, r):
        return self.lower.solve(r)


def test_lost_convergence_fails(tmp_path, capsys, monkeypatch, fake):
    cid = "n32-jump1e2-jacobi"
    path, _ = _baseline(tmp_path, [cid])
    monkeypatch.setattr(Jacobi, "_setup", ForwardGaussSeidel._setup)
    monkeypatch.setattr(Jacobi, "_apply", ForwardGaussSeidel._apply)
    code, out = _gate(capsys, path, [cid], "--no-time")
    assert code == 1, out
    assert f"{cid}: lost convergence" in out


def test_subset_on_own_platform_is_exact(tmp_path, capsys, fake):
    # a subset without any NPO case must not turn the gate cross-platform
    cid = "n32-constant-cg"
    path, base = _baseline(tmp_path, ["n32-constant-npo", cid])
    base["cases"][cid]["iterations"] = 114  # the baseline says 114; we take 116
    path.write_text(json.dumps(base))
    code, out = _gate(capsys, path, [cid], "--no-time")
    assert code == 1 and "same platform, exact" in out, out
    assert f"{cid}: iterations 114 -> 116 (+2, tolerance 0)" in out


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


def test_cross_platform_widens_npo_tolerance_time_threshold_and_memory():
    s = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01]
    base = {"platform": {"cpu": "x"}, "cases": {
        "n64-constant-npo": {"iterations": 72, "converged": True, "apply_per_spmv": s,
                             "nbytes": 1000}}}
    now = {"platform": {"cpu": "y"}, "cases": {
        "n64-constant-npo": {"iterations": 79, "converged": True,
                             "apply_per_spmv": [2 * v for v in s], "nbytes": 1100}}}
    r = gate.compare(base, now)  # +7 <= max(3, 10% of 72); 2x < 1.5**2; +10% memory
    assert r["passed"] and r["threshold"] == pytest.approx(2.25)
    now["cases"]["n64-constant-npo"]["apply_per_spmv"] = [2.5 * v for v in s]
    assert not gate.compare(base, now)["passed"]
    now["cases"]["n64-constant-npo"]["apply_per_spmv"] = s
    now["cases"]["n64-constant-npo"]["nbytes"] = 1101
    assert not gate.compare(base, now)["passed"]
    now["cases"]["n64-constant-npo"]["nbytes"] = 1000
    now["platform"] = base["platform"]
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


def test_every_time_metric_is_gated():
    s = [1.0, 1.01, 0.99, 1.02, 0.98]
    for metric in gate.TIME_METRICS:
        base = {"platform": {}, "cases": {"n32-constant-amg_sa": {
            "iterations": 9, "converged": True, metric: s}}}
        now = {"platform": {}, "cases": {"n32-constant-amg_sa": {
            "iterations": 9, "converged": True, metric: [2 * v for v in s]}}}
        r = gate.compare(base, now)
        assert r["failures"] and metric in r["failures"][0], metric


@pytest.mark.parametrize("content, match", [
    ("", "corrupt"), ("{}", "not a gate baseline"), (None, "not found"),
    ('{"format": 2, "cases": {}, "platform": {}, "commit": "x", "machine": "m"}', "no cases"),
    ('{"format": 2, "cases": {"n32-constant-cg": {"iterations": "116", "converged": true}}, '
     '"platform": {}, "commit": "x", "machine": "m"}', "'iterations' is '116'"),
    ('{"format": 2, "cases": {"bogus": {"iterations": 1, "converged": true}}, '
     '"platform": {}, "commit": "x", "machine": "m"}', "malformed case id"),
    ('{"format": 2, "cases": {"n32-constant-cg": {"iterations": 1, "converged": true, '
     '"apply_per_spmv": [1.0]}}, "platform": {}, "commit": "x", "machine": "m"}', "at least 3"),
])
def test_bad_baseline_exit_2_before_any_work(tmp_path, capsys, monkeypatch, content, match):
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    _no_measuring(monkeypatch)
    code = main(["gate", "--baseline", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and match in err and "Traceback" not in err, err


def _no_measuring(monkeypatch):
    # errors must come before any work: collecting a case here fails the test (deterministic,
    # unlike a wall-clock bound, which a loaded CI machine can break)
    def refuse(*a, **k):
        raise AssertionError("a case was measured before the options were validated")
    monkeypatch.setattr(gate, "collect", refuse)


@pytest.mark.parametrize("argv, match", [
    (["--threshold", "0"], "--threshold must be a ratio > 1"),
    (["--threshold", "1"], "--threshold must be a ratio > 1"),
    (["--alpha", "-5"], "--alpha must be in (0, 1)"),
    (["--alpha", "1"], "--alpha must be in (0, 1)"),
    (["--repeats", "2"], "--repeats must be >= 3"),
    (["--case", "n32-constant-nope"], "unknown case"),
    (["--method", "sor"], "unknown method 'sor'"),
    (["--update-baseline", "--case", "n32-constant-cg"], "drop --method/--case"),
])
def test_bad_gate_options_exit_2_before_any_work(capsys, monkeypatch, argv, match):
    _no_measuring(monkeypatch)
    code = main(["gate", *argv])
    err = capsys.readouterr().err
    assert code == 2 and match in err, err


def test_update_baseline_refuses_a_dirty_tree(monkeypatch, tmp_path, capsys):
    from npo import env

    monkeypatch.setattr(env, "is_dirty", lambda: True)
    code = main(["gate", "--update-baseline", "--baseline", str(tmp_path / "b.json")])
    assert code == 2 and "uncommitted changes" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
