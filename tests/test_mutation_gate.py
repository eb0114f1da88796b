"""Mutation-testing tests for npo.gate: every rule, row, message and summary line, exactly.

Nothing is measured: comparisons run on hand-made collections, and ``run_gate`` runs on a fake
``measure.cost_samples`` (deterministic rows), like ``tests/test_gate.py::FakeCost``.
"""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from npo import cases, env, gate, measure
from npo.cli import build_parser
from npo.methods import get_method

S = [1.0, 1.01, 0.99, 1.02, 0.98]


def _base():
    return {"platform": {"cpu": "x"}, "commit": "0123456789abcdef", "machine": "mA",
            "created": "2024-01-02T03:04:05+00:00", "cases": {
                "n32-constant-cg": {"iterations": 116, "converged": True, "true_relres": 5e-11,
                                    "relerr": 1e-9, "nbytes": 0},
                "n32-jump1e2-jacobi": {"iterations": 137, "converged": True,
                                       "true_relres": 4e-11, "nbytes": 8192,
                                       "apply_per_spmv": S, "iter_per_spmv": S,
                                       "setup_per_spmv": S},
                "n32-constant-amg_sa": {"iterations": 9, "converged": True, "nbytes": 1000,
                                        "apply_per_spmv": [0.4 * v for v in S],
                                        "setup_per_spmv": [3 * v for v in S]},
                "n32-constant-ilu": {"iterations": 20, "converged": False},
                "n32-constant-ilu0": {"iterations": 40, "converged": True, "nbytes": 500},
                "n32-constant-nystrom": {"iterations": 0, "converged": True},
                "n64-constant-npo": {"iterations": 72, "converged": True},
                "n32-constant-amg_rs": {"iterations": 7, "converged": True},
            }}


def _now(platform="x"):
    return {"platform": {"cpu": platform}, "commit": "fedcba9876543210", "machine": "mB",
            "threads": 1, "repeats": 5, "cases": {
                "n32-constant-cg": {"iterations": 117, "converged": True, "true_relres": 6e-11,
                                    "relerr": 2e-9, "nbytes": 0},
                "n32-jump1e2-jacobi": {"iterations": 130, "converged": True,
                                       "true_relres": 9e-10, "nbytes": 16384,
                                       "apply_per_spmv": [2 * v for v in S],
                                       "iter_per_spmv": [0.5 * v for v in S],
                                       "setup_per_spmv": S},
                "n32-constant-amg_sa": {"iterations": 9, "converged": True, "nbytes": 900,
                                        "apply_per_spmv": [4 * v for v in S],
                                        "setup_per_spmv": [3 * v for v in S]},
                "n32-constant-ilu": {"iterations": 15, "converged": True},
                "n32-constant-ilu0": {"iterations": 40, "converged": False, "nbytes": 500},
                "n32-constant-nystrom": {"iterations": 0, "converged": True},
                "n32-constant-jacobi": {"iterations": 3, "converged": True},
            }}


ROWS = [
    ("n32-constant-amg_rs", "cases", "in baseline", "not run here", "", "not gated: needs petsc"),
    ("n32-constant-amg_sa", "iterations", "9", "9", "1.000", "pass"),
    ("n32-constant-amg_sa", "nbytes", "1,000", "900", "0.900", "less memory"),
    ("n32-constant-amg_sa", "setup_per_spmv", "3", "3", "1.000 (p=0.54)", "pass"),
    ("n32-constant-cg", "iterations", "116", "117", "1.009", "FAIL: +1 iterations"),
    ("n32-constant-cg", "true_relres", "5.00e-11", "6.00e-11", "", "pass"),
    ("n32-constant-cg", "nbytes", "0", "0", "", "pass"),
    ("n32-constant-ilu", "iterations", "20 (nc)", "15", "0.750", "improved"),
    ("n32-constant-ilu0", "iterations", "40", "40 (nc)", "1.000", "FAIL: lost convergence"),
    ("n32-constant-ilu0", "nbytes", "500", "500", "1.000", "pass"),
    ("n32-constant-jacobi", "iterations", "-", "3", "", "new (not gated)"),
    ("n32-constant-nystrom", "iterations", "0", "0", "nan", "pass"),
    ("n32-jump1e2-jacobi", "iterations", "137", "130", "0.949", "improved"),
    ("n32-jump1e2-jacobi", "true_relres", "4.00e-11", "9.00e-10", "", "pass"),
    ("n32-jump1e2-jacobi", "nbytes", "8,192", "16,384", "2.000", "FAIL: more memory"),
    ("n32-jump1e2-jacobi", "apply_per_spmv", "1", "2", "2.000 (p=0.004)", "FAIL: slower"),
    ("n32-jump1e2-jacobi", "iter_per_spmv", "1", "0.5", "0.500 (p=1)", "faster"),
    ("n32-jump1e2-jacobi", "setup_per_spmv", "1", "1", "1.000 (p=0.54)", "pass"),
    ("n64-constant-npo", "cases", "in baseline", "did not run", "", "FAIL"),
]
FAILURES = [
    "n32-constant-cg: iterations 116 -> 117 (+1, tolerance 0)",
    "n32-constant-ilu0: lost convergence (40 iterations, not converged)",
    "n32-jump1e2-jacobi: nbytes 8,192 -> 16,384 (allowed 8,192)",
    "n32-jump1e2-jacobi: apply_per_spmv 1 -> 2 (x2.00, p=0.004)",
    "n64-constant-npo: in the baseline but no longer runs",
]


def test_constants():
    assert (gate.FORMAT_VERSION, gate.DEFAULT_BASELINE, gate.SUITE, gate.THRESHOLD,
            gate.REPEATS) == (2, "benchmarks/gate_baseline.json", "quick", 1.5, 7)
    assert gate.MIN_GATED == {"apply_per_spmv": 0.5, "setup_per_spmv": 0.0, "iter_per_spmv": 0.0}
    assert gate.TIME_METRICS == ("apply_per_spmv", "iter_per_spmv", "setup_per_spmv")
    assert (gate.MAX_TIMED_SOLVE_S, gate.ACCURACY_RTOL_FACTOR, gate.TRUE_RELRES_GROWTH,
            gate.RELERR_GROWTH, gate.RELERR_FLOOR, gate.NBYTES_CROSS_PLATFORM) == (
        1.0, 10.0, 2.0, 10.0, 1e-15, 0.10)


def test_compare_every_branch_same_platform():
    r = gate.compare(_base(), _now(), not_gated={"n32-constant-amg_rs": "needs petsc"})
    assert r["rows"] == ROWS
    assert r["failures"] == FAILURES
    assert r["improvements"] == ["n32-constant-ilu", "n32-jump1e2-jacobi"]
    assert r["not_gated"] == {"n32-constant-amg_rs": "needs petsc"}
    assert (r["same_platform"], r["passed"], r["threshold"], r["alpha"]) == (True, False, 1.5, 0.01)
    assert list(r) == ["same_platform", "rows", "failures", "improvements", "not_gated", "passed",
                       "threshold", "alpha"]


def test_summary_markdown_exactly():
    base, now = _base(), _now()
    r = gate.compare(base, now, not_gated={"n32-constant-amg_rs": "needs petsc"})
    text = gate.summary_markdown(r, base, now)
    head = text.split("\n\n| case")[0]
    assert head == (
        "# Performance gate: FAIL\n\n"
        "- suite `quick`, 7 cases, threads 1; baseline from commit `0123456789ab` on mA "
        "(2024-01-02T03:04:05+00:00); now commit `fedcba987654` on mB\n"
        "- platform: same platform, exact\n"
        "- iterations: same platform as the baseline: exact (any increase fails); lost "
        "convergence always fails\n"
        "- accuracy: true relres <= max(10 x rtol, 2 x baseline), error vs direct solve <= 10 x "
        "baseline; an iteration drop is an improvement only when accuracy holds\n"
        "- memory (nbytes): same platform: exact (any increase fails)\n"
        "- time (apply_per_spmv, iter_per_spmv, setup_per_spmv): fail when the median xSpMV "
        "ratio > 1.5 and Mann-Whitney U (one-sided) p < 0.01, 5 samples each; not gated: "
        "apply_per_spmv < 0.5, per-iteration cost of solves over 1 s\n"
        "- ratio spread: apply_per_spmv: median 2.000, min 2.000, max 2.000 over 1 cases; "
        "iter_per_spmv: median 0.500, min 0.500, max 0.500 over 1 cases; setup_per_spmv: "
        "median 1.000, min 1.000, max 1.000 over 2 cases; nbytes: median 1.000, min 0.900, "
        "max 2.000 over 3 cases\n"
        "- not gated here (1 cases): needs petsc")
    table = text.split("\n\n")[2]
    assert table.splitlines()[0].split("|")[1:-1] == [
        " case                 ", " metric         ", " baseline    ", " now          ",
        " ratio           ", " verdict                "]
    assert len(table.splitlines()) == 2 + len(ROWS)
    assert "| n32-jump1e2-jacobi   | iter_per_spmv  | 1           | 0.5          | 0.500 (p=1)" \
           in table
    tail = text.split(table)[1]
    assert tail == (
        "\n\n## Regressions\n\n" + "".join(f"- {f}\n" for f in FAILURES) + "\n"
        "## Improvements\n\n2 case(s) improved: n32-constant-ilu, n32-jump1e2-jacobi. If "
        "intended, re-baseline with `npo-bench gate --update-baseline` and commit the baseline "
        "file so the change shows in review.\n")


def test_summary_of_a_clean_pass_and_missing_fields():
    base = {"platform": {}, "cases": {"n32-constant-cg": {"iterations": 5, "converged": True}}}
    now = {"platform": {}, "threads": 1, "cases": {"n32-constant-cg": {"iterations": 5,
                                                                       "converged": True}}}
    r = gate.compare(base, now)
    assert r["passed"] and r["failures"] == [] and r["improvements"] == []
    text = gate.summary_markdown(r, base, now)
    assert text.startswith("# Performance gate: PASS\n\n- suite `quick`, 1 cases, threads 1; "
                           "baseline from commit `?` on None (None); now commit `?` on None\n")
    assert "samples each" in text and "None samples each" in text
    assert ("- ratio spread: apply_per_spmv: not run; iter_per_spmv: not run; setup_per_spmv: not "
            "run; nbytes: not run") in text
    assert "## Regressions" not in text and "## Improvements" not in text
    assert "not gated here" not in text
    assert text.endswith("|\n")


def test_cross_platform_rules_and_thresholds():
    from npo.methods import DEFAULT_ITERATION_TOLERANCE, methods

    base, now = _base(), _now("y")
    r = gate.compare(base, now, threshold=2.0, alpha=0.05)
    assert (r["same_platform"], r["threshold"], r["alpha"]) == (False, 4.0, 0.05)
    assert r["failures"] == [
        "n32-constant-amg_rs: in the baseline but no longer runs",
        "n32-constant-ilu0: lost convergence (40 iterations, not converged)",
        "n32-jump1e2-jacobi: nbytes 8,192 -> 16,384 (allowed 9,011)",
        "n64-constant-npo: in the baseline but no longer runs"]
    special = sorted({f"+max({m.iteration_tolerance[0]}, {m.iteration_tolerance[1]:.0%}) for "
                      f"{m.label}" for m in methods().values()
                      if tuple(m.iteration_tolerance) != DEFAULT_ITERATION_TOLERANCE})
    assert "+max(3, 10%) for npo" in special
    rules = gate.rules_text(r, now)
    assert rules == [
        "- iterations: different platform from the baseline: +max(2, 2%) iterations, "
        + ", ".join(special) + "; lost convergence always fails",
        "- accuracy: true relres <= max(10 x rtol, 2 x baseline), error vs direct solve <= 10 x "
        "baseline; an iteration drop is an improvement only when accuracy holds",
        "- memory (nbytes): different platform: +10%",
        "- time (apply_per_spmv, iter_per_spmv, setup_per_spmv): fail when the median xSpMV "
        "ratio > 4 and Mann-Whitney U (one-sided) p < 0.05, 5 samples each; not gated: "
        "apply_per_spmv < 0.5, per-iteration cost of solves over 1 s"]
    text = gate.summary_markdown(r, base, now)
    assert "- platform: different platform from the baseline: tolerances below\n" in text


def test_cross_platform_tolerance_boundaries():
    def run(b_its, n_its, method="cg"):
        cid = f"n32-constant-{method}"
        base = {"platform": {"a": 1}, "cases": {cid: {"iterations": b_its, "converged": True}}}
        now = {"platform": {"a": 2}, "cases": {cid: {"iterations": n_its, "converged": True}}}
        return gate.compare(base, now)

    assert run(100, 102)["passed"] and not run(100, 103)["passed"]  # max(2, ceil(2.0)) = 2
    assert run(101, 104)["passed"] and not run(101, 105)["passed"]  # ceil(2.02) = 3
    assert run(200, 204)["passed"] and not run(200, 205)["passed"]
    assert run(10, 13, "npo")["passed"] and not run(10, 14, "npo")["passed"]
    assert run(100, 110, "npo")["passed"] and not run(100, 111, "npo")["passed"]
    fail = run(100, 103)["failures"]
    assert fail == ["n32-constant-cg: iterations 100 -> 103 (+3, tolerance 2)"]
    # a drop inside the tolerance is not an improvement; beyond it, it is
    assert run(100, 98)["improvements"] == [] and run(100, 97)["improvements"] == [
        "n32-constant-cg"]
    assert gate._iteration_tolerance("n32-constant-cg", 0) == 2
    assert gate._iteration_tolerance("n32-constant-nope", 1000) == 20  # default (2, 2%)
    assert gate._iteration_tolerance("n32-constant-npo", 45) == 5
    assert gate._method_of("n32-constant-nope") is None
    assert gate._method_of("n32-constant-jacobi") is get_method("jacobi")


def test_same_platform_improvement_needs_a_drop_or_new_convergence():
    base = {"platform": {}, "cases": {"n32-constant-cg": {"iterations": 10, "converged": True}}}
    for its, improved in ((9, True), (10, False)):
        now = {"platform": {}, "cases": {"n32-constant-cg": {"iterations": its,
                                                             "converged": True}}}
        assert (gate.compare(base, now)["improvements"] == ["n32-constant-cg"]) is improved


def test_accuracy_rules():
    acc = gate._accuracy
    ok = {"converged": True}
    assert acc("c", {"converged": False}, {"converged": True, "true_relres": 1.0}) == ""
    assert acc("c", ok, {"converged": False, "true_relres": 1.0}) == ""
    # limit = max(10 rtol, 2 x baseline)
    assert acc("c", ok, {"converged": True, "true_relres": 1e-9}) == ""
    assert acc("c", ok, {"converged": True, "true_relres": 1.1e-9}) == (
        "true relres 1.10e-09 > 1.00e-09 (baseline n/a, rtol 1e-10)")
    b = {"converged": True, "true_relres": 3e-9}
    assert acc("c", b, {"converged": True, "true_relres": 6e-9}) == ""
    assert acc("c", b, {"converged": True, "true_relres": 6.1e-9}) == (
        "true relres 6.10e-09 > 6.00e-09 (baseline 3.00e-09, rtol 1e-10)")
    # relerr: more than 10x (floored at 1e-15)
    b = {"converged": True, "relerr": 1e-9}
    assert acc("c", b, {"converged": True, "relerr": 1e-8}) == ""
    assert acc("c", b, {"converged": True, "relerr": 1.1e-8}) == (
        "error vs direct solve 1.00e-09 -> 1.10e-08 (> x10)")
    b0 = {"converged": True, "relerr": 0.0}
    assert acc("c", b0, {"converged": True, "relerr": 1e-14}) == ""
    assert acc("c", b0, {"converged": True, "relerr": 1.1e-14}).startswith("error vs direct")
    nan = {"converged": True, "relerr": math.nan}
    assert acc("c", nan, {"converged": True, "relerr": 1.0}) == ""
    assert acc("c", {"converged": True, "relerr": 1.0}, nan) == ""
    assert acc("c", ok, {"converged": True, "relerr": 1.0}) == ""


def test_accuracy_failure_rows_and_text():
    base = {"platform": {}, "cases": {"n32-constant-cg": {"iterations": 116, "converged": True,
                                                          "relerr": 1e-9}}}
    now = {"platform": {}, "cases": {"n32-constant-cg": {
        "iterations": 100, "converged": True, "true_relres": 5e-9, "relerr": 2e-8}}}
    r = gate.compare(base, now)
    assert r["failures"] == ["n32-constant-cg: accuracy: true relres 5.00e-09 > 1.00e-09 "
                             "(baseline n/a, rtol 1e-10); iterations 116 -> 100"]
    assert r["rows"] == [("n32-constant-cg", "iterations", "116", "100", "0.862", "pass"),
                         ("n32-constant-cg", "true_relres", "-", "5.00e-09", "", "FAIL: accuracy")]
    assert r["improvements"] == []
    now["cases"]["n32-constant-cg"].update(iterations=116, true_relres=1e-11)
    r = gate.compare(base, now)
    assert r["failures"] == ["n32-constant-cg: accuracy: error vs direct solve 1.00e-09 -> "
                             "2.00e-08 (> x10)"]
    now["cases"]["n32-constant-cg"]["converged"] = False
    r = gate.compare(base, now)
    assert [row[1] for row in r["rows"]] == ["iterations"]


def test_time_floor_and_one_sided_metrics():
    base = {"platform": {}, "cases": {"n32-constant-cg": {
        "iterations": 1, "converged": True, "apply_per_spmv": [0.49 * v for v in S],
        "iter_per_spmv": S}}}
    now = {"platform": {}, "cases": {"n32-constant-cg": {
        "iterations": 1, "converged": True, "apply_per_spmv": [10 * v for v in S],
        "setup_per_spmv": [10 * v for v in S]}}}
    r = gate.compare(base, now)
    assert r["passed"] and [row[1] for row in r["rows"]] == ["iterations"]
    base["cases"]["n32-constant-cg"]["apply_per_spmv"] = [0.5 * v for v in S]
    r = gate.compare(base, now)
    assert not r["passed"] and r["rows"][1][1] == "apply_per_spmv"
    assert r["rows"][1][2:4] == ("0.5", "10")


def test_time_threshold_is_strict():
    base = {"platform": {}, "cases": {"n32-constant-cg": {
        "iterations": 1, "converged": True, "setup_per_spmv": [1.0, 2.0, 3.0, 4.0, 5.0]}}}
    now = {"platform": {}, "cases": {"n32-constant-cg": {
        "iterations": 1, "converged": True, "setup_per_spmv": [5.5, 5.8, 6.0, 7.0, 8.0]}}}
    assert gate.compare(base, now, threshold=2.0)["passed"]
    assert not gate.compare(base, now, threshold=1.99)["passed"]
    assert gate.compare(base, now, threshold=1.99, alpha=0.001)["passed"]


def test_memory_rules():
    def run(bb, nb, same=True):
        base = {"platform": {"a": 1}, "cases": {"n32-constant-cg": {
            "iterations": 1, "converged": True, "nbytes": bb}}}
        now = {"platform": {"a": 1 if same else 2}, "cases": {"n32-constant-cg": {
            "iterations": 1, "converged": True, "nbytes": nb}}}
        return gate.compare(base, now)

    assert run(1000, 1000)["passed"] and not run(1000, 1001)["passed"]
    assert run(1000, 1100, same=False)["passed"] and not run(1000, 1101, same=False)["passed"]
    assert run(999, 1098, same=False)["passed"] and not run(999, 1099, same=False)["passed"]
    assert run(1000, 999)["rows"][1] == ("n32-constant-cg", "nbytes", "1,000", "999", "0.999",
                                         "less memory")
    assert run(0, 1)["rows"][1] == ("n32-constant-cg", "nbytes", "0", "1", "",
                                    "FAIL: more memory")
    base = {"platform": {}, "cases": {"n32-constant-cg": {"iterations": 1, "converged": True}}}
    now = {"platform": {}, "cases": {"n32-constant-cg": {"iterations": 1, "converged": True,
                                                         "nbytes": 5}}}
    assert len(gate.compare(base, now)["rows"]) == 1


def test_case_order_and_keys():
    ids = ["n64-constant-cg", "n32-jump1e2-cg", "poisson_3d-n8-constant-cg", "n32-constant-cg",
           "n32p2-constant-cg", "n32-constant-amg_sa"]
    base = {"platform": {}, "cases": {c: {"iterations": 1, "converged": True} for c in ids}}
    r = gate.compare(base, base)
    assert [row[0] for row in r["rows"]] == [
        "n32-constant-amg_sa", "n32-constant-cg", "n32-jump1e2-cg", "n32p2-constant-cg",
        "n64-constant-cg", "poisson_3d-n8-constant-cg"]
    assert gate._case_key("n32p2-jump-cg") == ("diffusion_2d", 32, 2, "jump", "cg")
    assert gate._its({"iterations": 5, "converged": False}) == "5 (nc)"
    assert gate._its({"iterations": 5, "converged": True}) == "5"
    assert gate._tol_text((3, 0.1)) == "3, 10%"
    assert gate._spread({"rows": [("c", "m", "", "", "1.5 (p=1)", ""), ("c", "m", "", "", "", ""),
                                  ("c", "x", "", "", "9", "")]}, "m") == (
        "m: median 1.500, min 1.500, max 1.500 over 1 cases")


# --- the baseline file --------------------------------------------------------------------

def _write(tmp_path, data):
    p = tmp_path / "b.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def _valid(**case):
    row = {"iterations": 5, "converged": True, **case}
    return {"format": 2, "cases": {"n32-constant-cg": row}, "platform": {}, "commit": "c",
            "machine": "m"}


def test_load_baseline_accepts(tmp_path):
    d = _valid(true_relres=1, relerr=0.5, nbytes=3, apply_per_spmv=[1, 2.0, 3])
    assert gate.load_baseline(_write(tmp_path, d)) == d
    d1 = dict(_valid(), format=1)
    assert gate.load_baseline(str(_write(tmp_path, d1))) == d1
    assert gate.load_baseline(_write(tmp_path, _valid(iterations=0)))["cases"]


@pytest.mark.parametrize("data, tail", [
    ("{", "corrupt {where}: Expecting property name enclosed in double quotes: "
          "line 1 column 2 (char 1)"),
    ([1], "{where} is not a gate baseline (format 1 or 2)"),
    ({"format": 3}, "{where} is not a gate baseline (format 1 or 2)"),
    ({"format": 2, "platform": {}, "commit": "c", "machine": "m"},
     "{where}: field 'cases' missing or not a dict"),
    ({"format": 2, "cases": {"n8-c-m": {}}, "platform": [], "commit": "c", "machine": "m"},
     "{where}: field 'platform' missing or not a dict"),
    ({"format": 2, "cases": {"n8-c-m": {}}, "platform": {}, "commit": 1, "machine": "m"},
     "{where}: field 'commit' missing or not a str"),
    ({"format": 2, "cases": {"n8-c-m": {}}, "platform": {}, "commit": "c"},
     "{where}: field 'machine' missing or not a str"),
    ({"format": 2, "cases": {}, "platform": {}, "commit": "c", "machine": "m"},
     "{where}: no cases"),
    ({"format": 2, "cases": {"n8-c": {}}, "platform": {}, "commit": "c", "machine": "m"},
     "{where}: malformed case id 'n8-c'; expected n<size>-<field>-<method> or "
     "<problem>-n<size>-<field>-<method>"),
    ({"format": 2, "cases": {"n8-c-m": [1]}, "platform": {}, "commit": "c", "machine": "m"},
     "{where}: case 'n8-c-m' is not an object"),
])
def test_load_baseline_refuses(tmp_path, data, tail):
    p = _write(tmp_path, data)
    where = f"baseline {str(p)!r}"
    with pytest.raises(ValueError) as e:
        gate.load_baseline(p)
    want = tail.format(where=where)
    assert str(e.value) == (want[2:] if want.startswith(": ") else want)


@pytest.mark.parametrize("case, tail", [
    ({"iterations": None}, "'iterations' is None, not int"),
    ({"iterations": True}, "'iterations' is True, not int"),
    ({"iterations": 5.0}, "'iterations' is 5.0, not int"),
    ({"converged": 1}, "'converged' is 1, not bool"),
    ({"true_relres": "1"}, "'true_relres' is '1', not float/int"),
    ({"relerr": None}, "'relerr' is None, not float/int"),
    ({"nbytes": False}, "'nbytes' is False, not int"),
    ({"nbytes": 1.5}, "'nbytes' is 1.5, not int"),
    ({"iterations": -1}, "negative iterations"),
])
def test_load_baseline_field_types(tmp_path, case, tail):
    p = _write(tmp_path, _valid(**case))
    with pytest.raises(ValueError) as e:
        gate.load_baseline(p)
    assert str(e.value) == f"baseline {str(p)!r}: case 'n32-constant-cg': {tail}"


@pytest.mark.parametrize("key", ["iterations", "converged"])
def test_load_baseline_required_fields(tmp_path, key):
    d = _valid()
    del d["cases"]["n32-constant-cg"][key]
    p = _write(tmp_path, d)
    with pytest.raises(ValueError) as e:
        gate.load_baseline(p)
    assert str(e.value) == f"baseline {str(p)!r}: case 'n32-constant-cg' lacks {key!r}"


@pytest.mark.parametrize("metric", gate.TIME_METRICS)
@pytest.mark.parametrize("value", [[1.0, 2.0], "1,2,3", [1.0, 2.0, 0.0], [1.0, -2.0, 3.0],
                                   [1.0, math.inf, 2.0], [1.0, "2", 3.0]])
def test_load_baseline_time_samples(tmp_path, metric, value):
    p = _write(tmp_path, _valid(**{metric: value}))
    with pytest.raises(ValueError) as e:
        gate.load_baseline(p)
    assert str(e.value) == (f"baseline {str(p)!r}: case 'n32-constant-cg': {metric!r} must be a "
                            "list of at least 3 positive numbers")


def test_load_baseline_missing_and_unreadable(tmp_path):
    p = tmp_path / "none.json"
    with pytest.raises(ValueError) as e:
        gate.load_baseline(p)
    assert str(e.value) == (f"baseline {str(p)!r} not found; create it with --update-baseline")
    with pytest.raises(ValueError, match="not found"):
        gate.load_baseline(tmp_path)  # a directory
    q = tmp_path / "bin.json"
    q.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match=r"^corrupt baseline '.*bin.json': "):
        gate.load_baseline(q)


# --- measuring and the command ------------------------------------------------------------

def _fake_row(case, **kw):
    its = {"cg": 116, "jacobi": 116, "amg_sa": 9}.get(case.method.label, 20)
    row = {"iterations": its, "converged": True, "true_relres": 1e-11, "relerr": 1e-10,
           "nbytes": 100}
    if kw.get("setup"):
        row.update(apply_per_spmv=[2.0, 2.01, 1.99], setup_per_spmv=[5.0, 5.1, 4.9],
                   iter_per_spmv=[3.0, 3.1, 2.9])
    return row


@pytest.fixture()
def fake_measure(monkeypatch):
    calls = []

    def cost_samples(case, *, repeats, setup=True, iteration=True, max_timed_solve_s=1.0):
        calls.append((case.id, repeats, setup, iteration, max_timed_solve_s, env.threads()))
        return _fake_row(case, setup=setup)

    monkeypatch.setattr(measure, "cost_samples", cost_samples)
    monkeypatch.setattr(env, "platform_fingerprint", lambda: {"cpu": "fake"})
    monkeypatch.setattr(env, "environment", lambda device="cpu": {"machine": "fm",
                                                                  "commit": "abc123def4567890"})
    return calls


def test_collect(fake_measure):
    sel = [cases.get_case("n32-constant-cg"), cases.get_case("n32-constant-amg_sa")]
    seen = []
    out = gate.collect(sel, repeats=4, timing=False, progress=lambda c: seen.append(c.id))
    assert seen == ["n32-constant-cg", "n32-constant-amg_sa"]
    assert fake_measure == [("n32-constant-cg", 4, False, False, 1.0, 1),
                            ("n32-constant-amg_sa", 4, False, False, 1.0, 1)]
    created = out.pop("created")
    assert len(created) == 25 and created.endswith("+00:00") and created[10] == "T"
    assert out == {"format": 2, "protocol_version": 3, "suite": "quick", "threads": 1,
                   "repeats": 4, "platform": {"cpu": "fake"}, "machine": "fm",
                   "commit": "abc123def4567890",
                   "cases": {"n32-constant-cg": _fake_row(sel[0]),
                             "n32-constant-amg_sa": _fake_row(sel[1])}}
    fake_measure.clear()
    assert gate.collect(sel[:1])["repeats"] == 7
    assert fake_measure == [("n32-constant-cg", 7, True, True, 1.0, 1)]


def _args(*argv):
    return build_parser().parse_args(["gate", *argv])


def test_gate_arguments_defaults():
    a = _args()
    assert (a.baseline, a.update_baseline, a.allow_dirty, a.summary, a.repeats, a.threshold,
            a.alpha, a.no_time, a.method, a.case, a.json) == (
        "benchmarks/gate_baseline.json", False, False, None, 7, 1.5, 0.01, False, None, None,
        False)
    a = _args("--repeats", "3", "--threshold", "2", "--alpha", "0.5", "--no-time", "--json",
              "--method", "cg", "jacobi", "--case", "n32-constant-cg", "--summary", "s.md",
              "--allow-dirty", "--update-baseline", "--baseline", "x.json")
    assert (a.baseline, a.update_baseline, a.allow_dirty, a.summary, a.repeats, a.threshold,
            a.alpha, a.no_time, a.method, a.case, a.json) == (
        "x.json", True, True, "s.md", 3, 2.0, 0.5, True, ["cg", "jacobi"], ["n32-constant-cg"],
        True)


@pytest.mark.parametrize("argv, msg", [
    (["--repeats", "2"], "--repeats must be >= 3 for the significance test, got 2"),
    (["--threshold", "1"], "--threshold must be a ratio > 1, got 1.0"),
    (["--threshold", "inf"], "--threshold must be a ratio > 1, got inf"),
    (["--threshold", "nan"], "--threshold must be a ratio > 1, got nan"),
    (["--alpha", "0"], "--alpha must be in (0, 1), got 0.0"),
    (["--alpha", "1"], "--alpha must be in (0, 1), got 1.0"),
    (["--update-baseline", "--method", "cg"],
     "--update-baseline rewrites the whole baseline; drop --method/--case"),
    (["--method", "cg", "sor"], None),
    (["--case", "n32-constant-cg", "n99-constant-cg"],
     "unknown case 'n99-constant-cg' in suite 'quick'"),
])
def test_check_args_messages(tmp_path, argv, msg):
    p = _write(tmp_path, _valid())
    with pytest.raises(ValueError) as e:
        gate.check_args(_args("--baseline", str(p), *argv))
    if msg is None:
        known = sorted({c.method.label for c in cases.cases("quick", include_skipped=True)})
        msg = f"unknown method 'sor' in suite 'quick'; expected one of {known}"
    assert str(e.value) == msg


def test_check_args_dirty_tree(tmp_path, monkeypatch):
    monkeypatch.setattr(env, "is_dirty", lambda: True)
    with pytest.raises(ValueError) as e:
        gate.check_args(_args("--update-baseline", "--baseline", str(tmp_path / "b.json")))
    assert str(e.value) == ("--update-baseline: the working tree has uncommitted changes; commit "
                            "first (the baseline records the commit) or pass --allow-dirty")
    base, sel, skipped = gate.check_args(_args("--update-baseline", "--allow-dirty", "--baseline",
                                               str(tmp_path / "new" / "b.json")))
    assert base is None and (tmp_path / "new").is_dir()
    monkeypatch.setattr(env, "is_dirty", lambda: False)
    base, sel, skipped = gate.check_args(_args("--update-baseline", "--baseline",
                                               str(tmp_path / "b.json")))
    assert base is None and sel


def test_check_args_selects(tmp_path):
    p = _write(tmp_path, _valid())
    base, sel, skipped = gate.check_args(_args("--baseline", str(p), "--method", "cg",
                                               "--case", "n32-constant-cg", "n64-constant-cg",
                                               "n32-constant-jacobi",
                                               "--summary", str(tmp_path / "s" / "sum.md")))
    assert base == _valid() and skipped == {}
    assert [c.id for c in sel] == ["n32-constant-cg", "n64-constant-cg"]
    assert (tmp_path / "s").is_dir()
    every = cases.cases("quick", include_skipped=True)
    _, sel, _ = gate.check_args(_args("--baseline", str(p)))
    assert [c.id for c in sel] == [c.id for c in every if c.skip_reason is None]


def test_select_lists_cases_whose_requirement_is_missing(monkeypatch):
    from dataclasses import replace

    spec = get_method("nystrom")
    fake = replace(spec, requires=("no_such_module_xyz",), install_hint="install xyz")
    real = cases.cases

    seen = []

    def patched(suite, **kw):
        seen.append(kw)
        return [c if c.method.label != "nystrom" else replace(c, method=fake)
                for c in real(suite, **kw)]

    monkeypatch.setattr(gate.cases, "cases", patched)
    run, skipped = gate._select(SimpleNamespace(method=None, case=None))
    assert "nystrom" not in {c.method.label for c in run}
    # only nystrom's cases skip for the fake requirement (PETSc's may skip too, where absent)
    assert {cid for cid, why in skipped.items() if why == "install xyz"} == \
        {c.id for c in real(cases.get_suite("quick")) if c.method.label == "nystrom"}
    assert seen == [{"include_skipped": True}]


def test_run_gate_update_compare_json_and_summary(tmp_path, capsys, fake_measure, monkeypatch):
    monkeypatch.setattr(env, "is_dirty", lambda: False)
    b = tmp_path / "b.json"
    code = gate.run_gate(_args("--update-baseline", "--baseline", str(b), "--repeats", "3",
                               "--no-time"))
    out = capsys.readouterr().out
    data = json.loads(b.read_text())
    assert code == 0 and b.read_text().endswith("}\n") and "\n \"cases\": {" in b.read_text()
    assert out.startswith(f"wrote baseline {b} ({len(data['cases'])} cases, commit abc123def456, ")
    assert out.endswith(" s)\n") and data["repeats"] == 3
    # compare against it, narrowed to two cases: the others are not "missing"
    summary = tmp_path / "sum.md"
    code = gate.run_gate(_args("--baseline", str(b), "--case", "n32-constant-cg",
                               "n32-constant-amg_sa", "--summary", str(summary), "--no-time"))
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("# Performance gate: PASS\n")
    assert "- suite `quick`, 2 cases, threads 1" in out
    assert out.rstrip().endswith("s_") and "_gate wall-clock: " in out
    assert summary.read_text() == out[:-1]
    # JSON: the result dict
    code = gate.run_gate(_args("--baseline", str(b), "--case", "n32-constant-cg", "--json",
                               "--no-time"))
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["passed"] is True and res["failures"] == []
    assert res["rows"] == [["n32-constant-cg", "iterations", "116", "116", "1.000", "pass"],
                           ["n32-constant-cg", "true_relres", "1.00e-11", "1.00e-11", "",
                            "pass"],
                           ["n32-constant-cg", "nbytes", "100", "100", "1.000", "pass"]]
    # a regression: exit 1
    data["cases"]["n32-constant-cg"]["iterations"] = 100
    b.write_text(json.dumps(data))
    code = gate.run_gate(_args("--baseline", str(b), "--no-time", "--method", "cg"))
    out = capsys.readouterr().out
    assert code == 1 and "n32-constant-cg: iterations 100 -> 116 (+16, tolerance 0)" in out


def test_run_gate_names_uninstalled_baseline_methods(tmp_path, capsys, fake_measure):
    d = gate.collect([cases.get_case("n32-constant-cg")], timing=False)
    d["cases"]["n32-constant-plugin_x"] = {"iterations": 3, "converged": True}
    b = _write(tmp_path, d)
    code = gate.run_gate(_args("--baseline", str(b), "--no-time", "--json"))
    res = json.loads(capsys.readouterr().out)
    assert code == 0, res
    assert res["not_gated"] == {"n32-constant-plugin_x": "method 'plugin_x' is not installed"}
    assert ["n32-constant-plugin_x", "cases", "in baseline", "not run here", "",
            "not gated: method 'plugin_x' is not installed"] in res["rows"]


def test_default_tolerance_for_unknown_methods_and_plain_rules(monkeypatch):
    assert gate._iteration_tolerance("n32-constant-nope", 10) == 2
    assert gate._iteration_tolerance("n32-constant-nope", 101) == 3
    import npo.methods as m

    plain = {"cg": get_method("cg")}
    monkeypatch.setattr(m, "methods", lambda: plain)
    r = gate.compare(_base(), _now("y"))
    assert gate.rules_text(r, _now("y"))[0] == (
        "- iterations: different platform from the baseline: +max(2, 2%) iterations; lost "
        "convergence always fails")


def test_case_order_is_numeric_in_n_and_progress_names_each_case(tmp_path, capsys,
                                                                  fake_measure, monkeypatch):
    ids = ["n16-constant-cg", "n8-constant-cg", "n128-constant-cg"]
    base = {"platform": {}, "cases": {c: {"iterations": 1, "converged": True} for c in ids}}
    assert [row[0] for row in gate.compare(base, base)["rows"]] == [
        "n8-constant-cg", "n16-constant-cg", "n128-constant-cg"]
    monkeypatch.setattr(env, "is_dirty", lambda: False)
    b = tmp_path / "b.json"
    gate.run_gate(_args("--update-baseline", "--baseline", str(b), "--no-time"))
    capsys.readouterr()
    gate.run_gate(_args("--baseline", str(b), "--no-time", "--case", "n32-constant-cg",
                        "n32-constant-amg_sa"))
    assert sorted(capsys.readouterr().err.splitlines()) == ["  gate: n32-constant-amg_sa",
                                                            "  gate: n32-constant-cg"]
    b2, n2 = _base(), _now()
    r = gate.compare(b2, n2, not_gated={"n32-constant-amg_rs": "b", "n32-constant-x": "a"})
    assert "- not gated here (2 cases): a; b" in gate.summary_markdown(r, b2, n2)


def test_load_baseline_os_error_message(tmp_path, monkeypatch):
    p = tmp_path / "b.json"
    p.write_text("{}")

    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gate.Path, "read_text", refuse)
    with pytest.raises(ValueError) as e:
        gate.load_baseline(p)
    assert str(e.value) == f"baseline {str(p)!r} cannot be read: Permission denied"


def test_run_gate_outputs_passes_options_and_times(tmp_path, capsys, fake_measure, monkeypatch):
    monkeypatch.setattr(env, "is_dirty", lambda: False)
    clock = iter([100.0, 103.0, 200.0, 207.0, 300.0, 301.0])

    class FakeTime:
        @staticmethod
        def perf_counter():
            return next(clock)

    monkeypatch.setattr(gate, "time", FakeTime)
    b = tmp_path / "b.json"
    gate.run_gate(_args("--update-baseline", "--baseline", str(b), "--no-time"))
    out = capsys.readouterr().out
    assert out.endswith(", 3 s)\n")
    data = json.loads(b.read_text())
    assert b.read_text() == json.dumps(data, indent=1, sort_keys=True) + "\n"
    seen = {}
    real = gate.compare

    def spy(base, now, **kw):
        seen.update(kw)
        return real(base, now, **kw)

    monkeypatch.setattr(gate, "compare", spy)
    gate.run_gate(_args("--baseline", str(b), "--no-time", "--case", "n32-constant-cg",
                        "--threshold", "1.7", "--alpha", "0.05"))
    out = capsys.readouterr().out
    assert seen["threshold"] == 1.7 and seen["alpha"] == 0.05
    assert "\n_gate wall-clock: 7 s_\n" in out
    gate.run_gate(_args("--baseline", str(b), "--no-time", "--case", "n32-constant-cg", "--json"))
    out = capsys.readouterr().out
    assert out.startswith('{\n "') and json.loads(out)["passed"] is True


def test_run_gate_reports_a_removed_case_as_missing_not_uninstalled(tmp_path, capsys,
                                                                    fake_measure, monkeypatch):
    monkeypatch.setattr(env, "is_dirty", lambda: False)
    b = tmp_path / "b.json"
    gate.run_gate(_args("--update-baseline", "--baseline", str(b), "--no-time"))
    capsys.readouterr()
    data = json.loads(b.read_text())
    data["cases"]["n8-constant-cg"] = {"iterations": 20, "converged": True}  # not in the suite
    b.write_text(json.dumps(data))
    code = gate.run_gate(_args("--baseline", str(b), "--no-time", "--json"))
    res = json.loads(capsys.readouterr().out)
    assert code == 1 and "n8-constant-cg" not in res["not_gated"]


def test_check_args_asks_for_room_for_the_baseline_and_the_summary(tmp_path, monkeypatch):
    p = _write(tmp_path, _valid())
    asked = []
    from npo import fileio

    monkeypatch.setattr(fileio, "check_output_dir", lambda d, need=0: asked.append((Path(d), need)))
    gate.check_args(_args("--baseline", str(p), "--summary", str(tmp_path / "s" / "sum.md")))
    assert (tmp_path / "s", 64 * 1024) in asked
    monkeypatch.setattr(env, "is_dirty", lambda: False)
    gate.check_args(_args("--baseline", str(p), "--update-baseline"))
    assert asked[-1] == (tmp_path, 64 * 1024)


def test_select_lists_only_cases_that_miss_an_install(monkeypatch):
    from dataclasses import replace

    spec = get_method("nystrom")
    fake = replace(spec, skip=lambda case: "too big here")  # a skip that no install cures
    real = cases.cases
    monkeypatch.setattr(gate.cases, "cases", lambda suite, **kw: [
        c if c.method.label != "nystrom" else replace(c, method=fake) for c in real(suite, **kw)])
    run, skipped = gate._select(SimpleNamespace(method=None, case=None))
    assert "nystrom" not in {c.method.label for c in run}
    assert not any(cid.endswith("-nystrom") for cid in skipped)
