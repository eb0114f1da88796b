import math

import pandas as pd
import pytest

from npo import cases, measure
from npo.measure import RECORD_COLUMNS


def test_suites_and_axes():
    assert set(cases.SUITES) == {"quick", "standard", "full"}
    full = cases.get_suite("full")
    assert set(full.sizes) == {32, 64, 128, 256, 512, 1024}
    assert set(full.fields) == {"constant", "jump1e2", "lognormal1e2", "lognormal1e4", "binary1e4",
                                "checkerboard1e4"}
    assert set(full.methods) == {"cg", "jacobi", "ilu", "ilu_sym", "ilu0", "amg_sa", "amg_rs",
                                 "nystrom", "npo", "npo_pcg"}
    quick = cases.get_suite("quick")
    assert len(quick.fields) >= 2 and set(quick.methods) == set(full.methods)
    # every suite is a sub-product of the full one
    for s in cases.SUITES.values():
        assert set(s.sizes) <= set(full.sizes) and set(s.fields) <= set(full.fields)


def test_skips_are_explicit_with_reasons():
    runnable = {c.id for c in cases.cases("full")}
    skipped = cases.skipped("full")
    assert skipped and all(isinstance(why, str) and why for _, why in skipped)
    assert len(runnable) + len(skipped) == len(cases.get_suite("full").all())
    reasons = {c.id: why for c, why in skipped}
    assert "MiB" in reasons["n512-constant-nystrom"]
    assert "binary" in reasons["n32-binary1e4-npo"]
    assert "small n" in reasons["n128-constant-npo_pcg"]
    assert "n32-constant-nystrom" in runnable


def test_case_ids_roundtrip_and_errors():
    for c in cases.cases("quick"):
        assert cases.get_case(c.id) == c
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
    rec = measure.measure(c, suite="test", repeats=2)
    assert list(rec) == RECORD_COLUMNS
    assert rec["iterations"] == 137 and rec["converged"] and rec["reason"] == "converged"
    assert rec["threads"] == 1 and rec["N"] == 1024 and rec["nnz"] == 4992
    assert rec["relres"] <= 1e-10 and rec["true_relres"] <= 1e-9 and rec["relerr"] < 1e-8
    for k in ("setup_s", "apply_s", "solve_s", "spmv_s"):
        assert rec[k] > 0
    assert rec["total_s"] == pytest.approx(rec["setup_s"] + rec["solve_s"])
    assert rec["apply_per_spmv"] == pytest.approx(rec["apply_s"] / rec["spmv_s"])
    assert math.isnan(rec["train_s"])
    pd.DataFrame([rec], columns=RECORD_COLUMNS)  # tidy


def test_unconverged_solve_has_no_valid_time():
    c = cases.get_case("n64-constant-ilu")
    rec = measure.measure(c, repeats=1)
    assert not rec["converged"] and rec["iterations"] == c.maxiter
    assert math.isnan(rec["solve_s"]) and math.isnan(rec["total_s"])
    assert rec["elapsed_s"] > 0  # what it cost is still visible, but not as a solve time


def test_problem_cache_is_read_only():
    p = measure.problem(cases.get_case("n32-constant-cg"))
    with pytest.raises(ValueError):
        p.b[0] = 1.0
