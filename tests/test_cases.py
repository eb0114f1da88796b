import json
import math

import pandas as pd
import pytest

from npo import cases, measure
from npo.methods import get_method, methods
from npo.problemkinds import get_kind
from npo.schema import RECORD_COLUMNS, case_id, parse_case_id

BUILTIN = ["cg", "jacobi", "ilu", "ilu_sym", "ilu0", "amg_sa", "amg_rs", "nystrom", "npo",
           "npo_pcg"]


def test_suites_and_axes():
    full = cases.get_suite("full")
    assert set(full.sizes) == {32, 64, 128, 256, 512, 1024}
    assert set(full.fields) == {"constant", "jump1e2", "lognormal1e2", "lognormal1e4",
                                "binary1e4", "checkerboard1e4"}
    assert set(BUILTIN) <= set(full.methods)
    quick = cases.get_suite("quick")
    assert quick.sizes == (32, 64) and quick.fields == ("constant", "jump1e2")
    petsc = {"petsc_hypre", "petsc_gamg", "petsc_icc", "petsc_jacobi", "petsc_none"}
    assert set(quick.methods) == set(full.methods) | petsc  # PETSc's are opt-in elsewhere
    # every built-in suite is a sub-product of the full one (the npo suite adds a variant)
    for name in ("quick", "standard", "history"):
        s = cases.get_suite(name)
        assert set(s.sizes) <= set(full.sizes) and set(s.fields) <= set(full.fields)
    assert {m for m in cases.get_suite("npo").methods} >= {"cg", "jacobi", "npo", "npo_pcg",
                                                           "npo_poisson32"}


def test_quick_suite_is_the_40_cases_of_before():
    # plugins installed in this environment (the example SSOR) add their own cases
    ids = [c.id for c in cases.cases("quick") if c.method.label in BUILTIN]
    assert len(ids) == 40 and ids[:3] == ["n32-constant-cg", "n32-constant-jacobi",
                                          "n32-constant-ilu"]


def test_skips_are_explicit_with_reasons():
    runnable = {c.id for c in cases.cases("full")}
    skipped = cases.skipped("full")
    assert skipped and all(isinstance(why, str) and why for _, why in skipped)
    assert len(runnable) + len(skipped) == len(cases.get_suite("full").all())
    reasons = {c.id: why for c, why in skipped}
    assert "MiB" in reasons["n512-constant-nystrom"]
    assert "binary" in reasons["n32-binary1e4-npo"]
    assert "small n" in reasons["n128-constant-npo_pcg"]
    assert "n <= 256" in reasons["n512-constant-npo"] and "trained" in reasons["n512-constant-npo"]
    assert "n32-constant-nystrom" in runnable


def test_each_method_runs_what_its_label_says():
    # the catalogue entry's adapter, Krylov method, options and iteration cap
    expect = {
        "cg": ("none", "pcg", {}, 20000), "jacobi": ("jacobi", "pcg", {}, 20000),
        "ilu": ("ilu", "pcg", {}, 20000), "ilu0": ("ilu0", "pcg", {}, 20000),
        "amg_sa": ("amg", "pcg", {"solver": "sa", "seed": 0}, 20000),
        "amg_rs": ("amg", "pcg", {"solver": "rs"}, 20000),
        "nystrom": ("nystrom", "pcg", {"rank": 64, "seed": 0}, 20000),
        "npo": ("npo", "fcg", {}, 2000), "npo_pcg": ("npo", "pcg", {}, 2000),
    }
    for label, (precond, krylov, opts, maxiter) in expect.items():
        m = get_method(label)
        assert (m.precond, m.krylov, dict(m.options), m.maxiter) == (precond, krylov, opts,
                                                                     maxiter), label
    sym = dict(get_method("ilu_sym").options)
    assert sym["permc_spec"] == "MMD_AT_PLUS_A" and sym["diag_pivot_thresh"] == 0.0
    # the built preconditioners are what the labels say, with their options applied
    built = {}
    for c in cases.cases("quick", sizes=[32], fields=["constant"]):
        M = measure.make_preconditioner(c)
        built[c.method.label] = M.setup(measure.problem(c).A)
    assert built["amg_rs"].info["solver"] == "rs" and built["amg_sa"].info["solver"] == "sa"
    assert built["nystrom"].info["rank"] == 64
    assert built["ilu_sym"].symmetric and not built["ilu"].symmetric
    assert built["npo"].info["checkpoint"] == "poisson"
    jump = cases.get_case("n32-jump1e2-npo")
    assert measure.make_preconditioner(jump).checkpoint == "varcoef"


def test_case_ids_roundtrip_and_errors():
    for c in cases.cases("quick"):
        assert cases.get_case(c.id).id == c.id
    assert parse_case_id(case_id("poisson_3d", 16, "constant", "cg")) == (
        "poisson_3d", 16, "constant", "cg", 1)
    with pytest.raises(ValueError, match="unknown method 'sor'"):
        cases.get_case("n32-constant-sor")
    with pytest.raises(ValueError, match="unknown field 'wavy'"):
        cases.cases("quick", fields=["wavy"])
    with pytest.raises(ValueError, match="unknown suite 'huge'"):
        cases.cases("huge")
    with pytest.raises(ValueError, match="malformed"):
        cases.get_case("constant")
    with pytest.raises(ValueError, match="not in suite"):
        cases.cases("quick", sizes=[512])


def test_measure_record_schema_and_protocol():
    c = cases.get_case("n32-jump1e2-jacobi")
    rec = measure.measure(c, suite="test", repeats=3)
    assert list(rec) == RECORD_COLUMNS
    assert rec["iterations"] == 137 and rec["converged"] and rec["reason"] == "converged"
    assert rec["threads"] == 1 and rec["N"] == 1024 and rec["nnz"] == 4992
    assert rec["relres"] <= 1e-10 and rec["true_relres"] <= 1e-9 and rec["relerr"] < 1e-8
    for k in ("setup_s", "apply_s", "solve_s", "spmv_s"):
        assert rec[k] > 0
    assert rec["total_s"] == pytest.approx(rec["setup_s"] + rec["solve_s"], rel=1e-12)
    assert rec["apply_per_spmv"] == pytest.approx(rec["apply_s"] / rec["spmv_s"], rel=1e-12)
    assert rec["setup_per_spmv"] == pytest.approx(rec["setup_s"] / rec["spmv_s"], rel=1e-12)
    assert len(json.loads(rec["solve_samples"])) == 3 and len(json.loads(rec["setup_samples"])) == 3
    assert rec["solve_s_lo"] <= rec["solve_s"] <= rec["solve_s_hi"]
    assert math.isnan(rec["train_s"]) and rec["nbytes"] == 8 * 1024
    assert rec["protocol_version"] == 3 and rec["rhs"] == "grf(seed=42)"
    assert rec["cores"] >= 1 and rec["cpu"] and "openblas" in rec["blas"].lower() or rec["blas"]
    pd.DataFrame([rec], columns=RECORD_COLUMNS)  # tidy


def test_true_residual_is_the_true_one():
    # the record's true relres is ||b - Ax||/||b|| of the returned x, not the recurrence one
    c = cases.get_case("n32-jump1e2-cg")
    p = measure.problem(c)
    M = measure.make_preconditioner(c, p).setup(p.A)
    res = measure.solve(c, p.A, p.b, M)
    import numpy as np

    true = float(np.linalg.norm(p.b - p.A @ res.x) / np.linalg.norm(p.b))
    assert res.true_relres == pytest.approx(true, rel=1e-12, abs=0)
    assert res.true_relres != res.relres


def test_unconverged_solve_has_no_valid_time():
    c = cases.get_case("n64-constant-ilu")
    rec = measure.measure(c, repeats=1)
    assert not rec["converged"] and rec["iterations"] == c.maxiter
    assert math.isnan(rec["solve_s"]) and math.isnan(rec["total_s"])
    assert rec["solve_samples"] == "[]" and math.isnan(rec["solve_s_lo"])
    assert rec["elapsed_s"] > 0  # what it cost is still visible, but not as a solve time


def test_problem_cache_is_read_only():
    p = measure.problem(cases.get_case("n32-constant-cg"))
    with pytest.raises(ValueError):
        p.b[0] = 1.0


def test_setup_is_independent_of_global_rng():
    import numpy as np

    c = cases.get_case("n32-jump1e2-amg_sa")
    p = measure.problem(c)
    outs = []
    for seed in (1, 2):
        np.random.seed(seed)
        M = measure.make_preconditioner(c, p).setup(p.A)
        outs.append(M.apply(np.ones(p.N)))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_registry_lists_builtins_with_descriptors():
    ms = methods()
    assert [m for m in ms if m in BUILTIN] == BUILTIN
    assert all(m.source for m in ms.values())
    assert get_kind("diffusion_2d").fields["jump1e2"].contrast == 100.0
