"""Mutation-testing tests for npo.schema: the record schema, metric table and case ids, exactly."""

import pytest

from npo import schema
from npo.schema import (
    DTYPES,
    METRICS,
    RECORD_COLUMNS,
    REQUIRED_COLUMNS,
    CaseKey,
    Metric,
    case_id,
    check_label,
    direction,
    parse_case_id,
)


def test_protocol_and_default_problem():
    assert schema.PROTOCOL_VERSION == 3 and schema.DEFAULT_PROBLEM == "diffusion_2d"


def test_record_columns_in_order():
    assert RECORD_COLUMNS == [
        "protocol_version", "commit", "commit_date", "machine", "cpu", "cores", "blas", "device",
        "source", "suite", "filter", "timestamp", "threads", "ranks", "versions",
        "case", "problem", "field", "contrast", "n", "N", "nnz", "method", "precond", "krylov",
        "rtol", "maxiter", "rhs",
        "lambda_min", "lambda_max", "cond_est",
        "iterations", "converged", "reason", "relres", "true_relres", "relerr",
        "setup_s", "apply_s", "solve_s", "total_s", "spmv_s", "apply_per_spmv", "setup_per_spmv",
        "iter_s", "iter_per_spmv", "elapsed_s",
        "setup_samples", "solve_samples", "apply_samples",
        "setup_s_lo", "setup_s_hi", "apply_s_lo", "apply_s_hi", "solve_s_lo", "solve_s_hi",
        "train_s", "nbytes", "setup_peak_bytes", "info", "paired",
    ]  # fmt: skip
    assert REQUIRED_COLUMNS == [
        "protocol_version", "commit", "machine", "device", "timestamp", "case", "problem",
        "field", "n", "method", "krylov", "iterations", "converged", "reason",
    ]  # fmt: skip


def test_declared_dtypes():
    by_type = {}
    for col, t in DTYPES.items():
        by_type.setdefault(t, set()).add(col)
    assert by_type == {
        "string": {"commit", "commit_date", "machine", "cpu", "blas", "device", "source", "suite",
                   "filter", "versions", "case", "problem", "field", "method", "precond",
                   "krylov", "rhs", "reason", "setup_samples", "solve_samples", "apply_samples",
                   "info", "paired"},
        "Int64": {"protocol_version", "cores", "threads", "ranks", "n", "N", "nnz", "maxiter",
                  "iterations", "nbytes", "setup_peak_bytes"},
        "boolean": {"converged"},
        "datetime64[ns, UTC]": {"timestamp"},
        "float64": {"contrast", "rtol", "relres", "true_relres", "relerr", "setup_s", "apply_s",
                    "solve_s", "total_s", "spmv_s", "apply_per_spmv", "setup_per_spmv", "iter_s",
                    "iter_per_spmv", "elapsed_s", "setup_s_lo", "setup_s_hi", "apply_s_lo",
                    "apply_s_hi", "solve_s_lo", "solve_s_hi", "train_s", "lambda_min",
                    "lambda_max", "cond_est"},
    }


METRIC_TABLE = {
    "iterations": ("iterations", "lower", False),
    "converged": ("bool", "higher", False),
    "failures": ("count", "lower", False),
    "relres": ("1", "lower", False),
    "true_relres": ("1", "lower", False),
    "relerr": ("1", "lower", False),
    "setup_s": ("s", "lower", True),
    "apply_s": ("s", "lower", True),
    "solve_s": ("s", "lower", True),
    "total_s": ("s", "lower", True),
    "spmv_s": ("s", "lower", True),
    "iter_s": ("s", "lower", True),
    "apply_per_spmv": ("SpMV", "lower", True),
    "setup_per_spmv": ("SpMV", "lower", True),
    "iter_per_spmv": ("SpMV", "lower", True),
    "train_s": ("s", "lower", True),
    "nbytes": ("bytes", "lower", False),
    "setup_peak_bytes": ("bytes", "lower", False),
    "mm_fraction": ("fraction of GEMM rate", "higher", False),
    "time_over_gemm_ideal": ("ratio", "lower", False),
    "flops": ("FLOP", "lower", False),
    "speedup_wall_x": ("x", "higher", True),
    "speedup_iters_x": ("x", "higher", False),
}


def test_metric_table():
    assert list(METRICS) == list(METRIC_TABLE)
    for name, m in METRICS.items():
        assert (m.name, m.unit, m.better, m.timed) == (name, *METRIC_TABLE[name]), name
        assert direction(name) == m.better


def test_metric_defaults_and_validation():
    m = Metric("x", "s", "lower")
    assert m.timed is False
    assert Metric("x", "s", "higher", timed=True).timed is True
    with pytest.raises(ValueError, match=r"^metric bad: better must be 'lower' or 'higher'$"):
        Metric("bad", "s", "Lower")
    with pytest.raises(KeyError):
        direction("nope")
    with pytest.raises(AttributeError):
        m.better = "higher"


@pytest.mark.parametrize("better, old, new, worse", [
    ("lower", 1.0, 2.0, True), ("lower", 2.0, 1.0, False), ("lower", 1.0, 1.0, False),
    ("higher", 1.0, 2.0, False), ("higher", 2.0, 1.0, True), ("higher", 1.0, 1.0, False),
])
def test_worse(better, old, new, worse):
    assert Metric("m", "1", better).worse(old, new) is worse


@pytest.mark.parametrize("label", ["a", "A9_.+", "n32", "x.y", "..."])
def test_valid_labels(label):
    assert check_label("field", label) == label


@pytest.mark.parametrize("label", ["", "-", "a-b", "a b", "a/b", ".", "..", "é", 3, None])
def test_invalid_labels(label):
    with pytest.raises(ValueError) as e:
        check_label("method", label)
    assert str(e.value) == (f"invalid method label {label!r}: use letters, digits, '_', '.' "
                            "or '+' only")


def test_case_id_forms():
    assert case_id("diffusion_2d", 32, "constant", "cg") == "n32-constant-cg"
    assert case_id("poisson_3d", 16, "constant", "amg_sa") == "poisson_3d-n16-constant-amg_sa"
    assert case_id("diffusion_2d", 64, "jump1e2", "cg", ranks=1) == "n64-jump1e2-cg"
    assert case_id("diffusion_2d", 64, "jump1e2", "cg", ranks=2) == "n64p2-jump1e2-cg"
    assert case_id("aniso_2d", "8", "f", "m", "3") == "aniso_2d-n8p3-f-m"
    with pytest.raises(ValueError, match=r"^ranks must be >= 1, got 0$"):
        case_id("diffusion_2d", 8, "f", "m", ranks=0)
    for kind, args in (("problem", ("a-b", 8, "f", "m")), ("field", ("p", 8, "f-x", "m")),
                       ("method", ("p", 8, "f", "m/x"))):
        with pytest.raises(ValueError, match=f"^invalid {kind} label"):
            case_id(*args)


def test_parse_case_id_round_trip():
    assert parse_case_id("n32-constant-cg") == CaseKey("diffusion_2d", 32, "constant", "cg", 1)
    assert parse_case_id("n1024p2-c-petsc_hypre") == CaseKey("diffusion_2d", 1024, "c",
                                                             "petsc_hypre", 2)
    k = parse_case_id("pyamg-n260-airfoil-amg_sa")
    assert k == ("pyamg", 260, "airfoil", "amg_sa", 1)
    assert (k.problem, k.n, k.field, k.method, k.ranks) == ("pyamg", 260, "airfoil", "amg_sa", 1)
    assert CaseKey("p", 1, "f", "m").ranks == 1
    for cid in ("n8-a-b", "q-n8p3-a-b", "n8p1-a-b"):
        key = parse_case_id(cid)
        assert parse_case_id(case_id(*key)) == key


@pytest.mark.parametrize("cid", ["n32-cg", "a-b-c-d-e", "", 32, None, "x"])
def test_parse_case_id_malformed(cid):
    with pytest.raises(ValueError) as e:
        parse_case_id(cid)
    assert str(e.value) == (f"malformed case id {cid!r}; expected n<size>-<field>-<method> or "
                            "<problem>-n<size>-<field>-<method>")


@pytest.mark.parametrize("cid, size", [("32-constant-cg", "32"), ("m32-constant-cg", "m32"),
                                       ("n32p-constant-cg", "n32p"), ("p-n-c-m", "n"),
                                       ("N32-c-m", "N32"), ("n32x-c-m", "n32x"),
                                       ("xn32-c-m", "xn32"), ("n32p2x-c-m", "n32p2x")])
def test_parse_case_id_bad_size(cid, size):
    with pytest.raises(ValueError) as e:
        parse_case_id(cid)
    assert str(e.value) == (f"malformed case id {cid!r}: size part {size!r} is not "
                            "n<integer>[p<ranks>]")


def test_parse_case_id_checks_labels():
    with pytest.raises(ValueError, match=r"^invalid problem label '\.\.'"):
        parse_case_id("..-n8-c-m")
    with pytest.raises(ValueError, match=r"^invalid field label ''"):
        parse_case_id("n8--m")
    with pytest.raises(ValueError, match=r"^invalid method label ''"):
        parse_case_id("n8-c-")


def test_trailing_newline_is_refused_everywhere(monkeypatch):
    # found by mutation testing ('$' also matches before a final newline); fixed with fullmatch
    for label in ("cg\n", "a\n"):
        with pytest.raises(ValueError, match="^invalid method label"):
            check_label("method", label)
    with pytest.raises(ValueError) as e:
        parse_case_id("n32\n-c-m")
    assert str(e.value) == ("malformed case id 'n32\\n-c-m': size part 'n32\\n' is not "
                            "n<integer>[p<ranks>]")
    from npo import devices, env

    with pytest.raises(ValueError) as e:
        devices.check_device("cpu\n")
    assert str(e.value) == "unknown device 'cpu\\n'; expected cpu, torch:cpu or cuda[:k]"
    monkeypatch.setenv("NPO_MACHINE", "box\n")
    with pytest.raises(ValueError, match="not a safe machine label"):
        env.machine_name()
