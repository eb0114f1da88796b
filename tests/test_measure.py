"""npo.measure: one record per case whatever happens (budgets, errors, read-only matrices)."""

import math

import pytest

from npo import cases, isolate, measure
from npo.methods import get_method


@pytest.mark.skipif(not isolate.available(), reason="needs fork (Linux)")
def test_a_case_in_its_child_process_measures_what_it_measures_here():
    for cid in ("n32-jump1e2-cg", "n32-jump1e2-amg_sa", "n32-jump1e2-gmg"):
        c = cases.get_case(cid)
        there = measure.measure_case(c, repeats=3, memory=2**31, timeout=120)
        here = measure.measure_case(c, repeats=3, isolated=False)
        for k in ("iterations", "converged", "relres", "true_relres", "nnz", "nbytes"):
            assert there[k] == here[k], (cid, k)
        assert there["reason"] == "converged"


def test_the_memory_estimate_grows_with_the_matrix_and_the_descriptor():
    small, big = cases.get_case("n32-constant-cg"), cases.get_case("n1024-constant-cg")
    assert measure.estimate_bytes(big) > 10 * measure.estimate_bytes(small)
    assert measure.estimate_bytes(big) < measure.estimate_bytes(
        cases.get_case("n1024-constant-npo_mg"))  # a hierarchy holds more than CG
    assert measure.default_timeout(big) > measure.default_timeout(small) >= 600


def test_a_method_whose_library_writes_to_its_input_gets_a_copy():
    # PyAMG's evolution strength calls A.eliminate_zeros(); the harness's matrix is read-only
    spec = get_method("amg_sa").variant("amg_sa_evolution", {"strength": "evolution"})
    from dataclasses import replace

    c = replace(cases.get_case("n32-jump1e2-amg_sa"), method=spec)
    rec = measure.measure_case(c, repeats=3, isolated=False)
    assert rec["converged"] and rec["iterations"] < 30, rec["reason"]
    assert not measure.problem(c).A.data.flags.writeable


def test_an_outcome_record_has_no_measurements():
    c = cases.get_case("n64-constant-amg_sa")
    rec = measure.outcome_record(c, "timed out after 3 s", suite="s")
    assert rec["reason"] == "timed out after 3 s" and rec["converged"] is False
    assert rec["N"] == 4096 and rec["suite"] == "s" and rec["setup_samples"] == "[]"
    assert all(math.isnan(rec[k]) for k in ("setup_s", "solve_s", "total_s", "apply_per_spmv"))


@pytest.mark.skipif(not isolate.available(), reason="needs fork (Linux)")
def test_a_section_is_measured_in_shared_rounds_and_a_bad_case_ends_alone():
    import json as _json
    import sys
    from dataclasses import replace
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import budget_methods

    group = [cases.get_case(f"n32-jump1e2-{m}") for m in ("cg", "jacobi", "amg_sa")]
    raiser = replace(group[0], method=budget_methods.RAISER)  # fine at n = 32
    hog = replace(group[0], method=budget_methods.HOG)
    recs = measure.measure_section(group + [raiser, hog], memory=2**30, repeats=3)
    by = {r["method"]: r for r in recs}
    assert [r["case"] for r in recs] == [c.id for c in group + [raiser, hog]]
    assert by["hog"]["reason"].startswith("out of memory")
    shared = {r["paired"] for m, r in by.items() if m != "hog"}
    assert len(shared) == 1 and shared != {""}  # one section run: rounds are comparable
    for m in ("cg", "jacobi", "amg_sa", "raiser"):
        assert len(_json.loads(by[m]["setup_samples"])) == 3
        assert len(_json.loads(by[m]["solve_samples"])) == 3
    alone = measure.measure(group[2], repeats=3)  # the same protocol, measured alone
    assert by["amg_sa"]["iterations"] == alone["iterations"] and alone["paired"] == ""


def test_sections_group_the_methods_of_one_matrix():
    chosen = cases.cases(cases.get_suite("quick"), sizes=[32], fields=["constant", "jump1e2"],
                         methods=["cg", "amg_sa"])
    groups = measure.sections(chosen)
    assert [[c.id for c in g] for g in groups] == [
        ["n32-constant-cg", "n32-constant-amg_sa"], ["n32-jump1e2-cg", "n32-jump1e2-amg_sa"]]
