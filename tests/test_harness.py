"""The open harness: problems, suite files, plugins, the import graph, robust inputs."""

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from npo import cases, env, measure
from npo.cli import main
from npo.krylov import fcg, pcg
from npo.methods import MethodSpec, get_method, select_methods
from npo.precond import get
from npo.problemkinds import get_kind
from npo.problems import (
    anisotropic_2d,
    elasticity_2d,
    grf_rhs,
    poisson_2d,
    poisson_3d,
    read_matrix_market,
)

ROOT = Path(__file__).resolve().parents[1]
NPO = ROOT / "npo"


# --- problems beyond the 2-D grid ---------------------------------------------------------


def test_gallery_problems_are_spd_and_sized():
    A3 = poisson_3d(6)
    assert A3.shape == (216, 216) and A3.nnz == 216 * 7 - 6 * 36
    A = anisotropic_2d(16, 1e-3, math.pi / 6)
    assert A.shape == (256, 256) and abs(A - A.T).max() == 0
    E, B = elasticity_2d(8)
    assert E.shape == (128, 128) and B.shape == (128, 3)
    # the rigid body modes are (near) null vectors of the unconstrained operator's interior
    for M in (A3, A):
        assert np.linalg.eigvalsh(M.toarray()).min() > 0
    assert np.linalg.eigvalsh(E.toarray()).min() > 0


def test_rigid_body_modes_help_sa_on_elasticity():
    c_plain = cases.Case(32, get_kind("elasticity_2d").field("default"), get_method("amg_sa"),
                         "elasticity_2d")
    c_rbm = cases.Case(32, c_plain.field, get_method("amg_sa_rbm"), "elasticity_2d")
    p = measure.problem(c_plain)
    its = {}
    for c in (c_plain, c_rbm):
        M = measure.make_preconditioner(c, p).setup(p.A)
        its[c.method.label] = measure.solve(c, p.A, p.b, M).iterations
    assert its["amg_sa_rbm"] < its["amg_sa"]
    assert measure.make_preconditioner(c_rbm, p).setup(p.A).info["near_nullspace_modes"] == 3


def test_skips_on_other_problems_state_their_reason():
    s = cases.load_suite(ROOT / "npo" / "suites" / "problems.toml")
    reasons = {c.id: why for c, why in cases.skipped(s)}
    assert "runs on diffusion_2d only" in reasons["poisson_3d-n32-constant-npo"]
    assert "5-point" in reasons["aniso_2d-n128-eps0.001_pi6-ilu0"]
    run = {c.id for c in cases.cases(s)}
    assert "elasticity_2d-n64-default-amg_sa_rbm" in run
    assert "pyamg-n260-airfoil-amg_sa" in run


# --- MatrixMarket -------------------------------------------------------------------------


def test_matrix_market_round_trip_gives_the_same_iterations(tmp_path, capsys):
    from npo.problems import coefficient, diffusion_2d

    A = diffusion_2d(32, coefficient("jump", 32, 100.0))
    b = grf_rhs(32)
    scipy.io.mmwrite(tmp_path / "jump32.mtx", A)
    scipy.io.mmwrite(tmp_path / "b.mtx", b.reshape(-1, 1))
    code = main(["run", "--matrix", str(tmp_path / "jump32.mtx"), "--rhs", str(tmp_path / "b.mtx"),
                 "--method", "cg", "jacobi", "amg_rs", "--repeats", "1", "--json", "--no-write"])
    assert code == 0
    import json

    recs = {r["method"]: r for r in json.loads(capsys.readouterr().out)["records"]}
    for method in ("cg", "jacobi", "amg_rs"):
        built = measure.measure(cases.get_case(f"n32-jump1e2-{method}"), repeats=1)
        assert recs[method]["iterations"] == built["iterations"], method
    assert recs["cg"]["problem"] == "mtx" and recs["cg"]["rhs"] == "file:b.mtx"


def _write(path, M):
    scipy.io.mmwrite(path, M)
    return path


@pytest.mark.parametrize("kind, match", [
    ("nonsquare", "not square"),
    ("complex", "complex"),
    ("nonsymmetric", "not symmetric"),
    ("nan", "NaN or Inf"),
    ("zerodiag", "diagonal entry 2 is 0.0"),
    ("garbage", "not a readable MatrixMarket file"),
])
def test_bad_matrix_market_files_are_clear_errors(tmp_path, kind, match, capsys, monkeypatch):
    A = poisson_2d(4).tolil()
    f = tmp_path / f"{kind}.mtx"
    if kind == "nonsquare":
        _write(f, sp.random(4, 5, density=0.5, format="coo", random_state=0))
    elif kind == "complex":
        _write(f, (A + 1j * sp.identity(16)).tocoo())
    elif kind == "nonsymmetric":
        A[0, 1] += 1.0
        _write(f, A.tocoo())
    elif kind == "nan":
        f.write_text("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 nan\n2 2 1.0\n")
    elif kind == "zerodiag":
        A[2, 2] = 0.0
        _write(f, A.tocsr())
    else:
        f.write_text("this is not a matrix\n")
    with pytest.raises(ValueError, match=match):
        read_matrix_market(f)
    from npo import measure

    def refuse(*a, **k):
        raise AssertionError("a case was measured before the matrix was validated")
    monkeypatch.setattr(measure, "run_cases", refuse)
    assert main(["run", "--matrix", str(f), "--no-write"]) == 2
    assert match.split()[0] in capsys.readouterr().err


# --- suite files --------------------------------------------------------------------------


def test_user_suite_with_own_fields_and_methods(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('''description = "mine"
[fields.aniso45]
problem = "aniso_2d"
epsilon = 0.01
theta = 0.785398

[methods.amg_sa_evo]
base = "amg_sa"
options = { strength = "evolution" }

[[group]]
problem = "aniso_2d"
sizes = [16]
fields = ["aniso45"]
methods = ["cg", "amg_sa", "amg_sa_evo"]
''')
    s = cases.load_suite(f)
    ids = [c.id for c in cases.cases(s)]
    assert ids == ["aniso_2d-n16-aniso45-cg", "aniso_2d-n16-aniso45-amg_sa",
                   "aniso_2d-n16-aniso45-amg_sa_evo"]
    evo = cases.cases(s)[2]
    assert evo.method.options["strength"] == "evolution"
    M = measure.make_preconditioner(evo)
    assert M.solver_options["strength"] == "evolution"


@pytest.mark.parametrize("text, match", [
    ('[[group]]\nsizes = [32]\nfields = ["constant"]\nmethods = ["cg"]\ncolour = "red"\n',
     "line 5: group.[1].colour: unknown key"),
    ('[[group]]\nsizes = [1]\nfields = ["constant"]\nmethods = ["cg"]\n',
     "line 2: group.[1].sizes: required for diffusion_2d: a non-empty list of integers >= 2"),
    ('[[group]]\nsizes = [32]\nfields = ["wavy"]\nmethods = ["cg"]\n',
     "line 3: group.[1].fields: unknown field 'wavy'"),
    ('[[group]]\nsizes = [32]\nfields = ["constant"]\nmethods = ["sor"]\n',
     "line 4: group.[1].methods: unknown method 'sor'"),
    ('[[group]]\nproblem = "mars"\nsizes = [32]\nfields = ["constant"]\nmethods = ["cg"]\n',
     "line 2: group.[1].problem: unknown problem 'mars'"),
    ('rtol = 5\n[[group]]\nsizes = [32]\nfields = ["c"]\nmethods = ["cg"]\n',
     "line 1: rtol: must be a number in (0, 1)"),
    ('[methods.x]\nbase = "amg_sa"\noptions = { bogus = 1 }\n[[group]]\nsizes = [32]\n'
     'fields = ["constant"]\nmethods = ["x"]\n', "line 1: methods.x: "),
    ('[[group]]\nsizes = [32\n', "not valid TOML"),
    ('description = "no groups"\n', "at least one [[group]]"),
])
def test_suite_schema_errors_name_file_line_and_key(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=None) as exc:
        cases.load_suite(f)
    assert match in str(exc.value) and "bad.toml" in str(exc.value), str(exc.value)


def test_cases_lists_a_suite_file(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text('[[group]]\nproblem = "poisson_3d"\nsizes = [8]\nfields = ["constant"]\n'
                 'methods = ["cg", "ilu0", "npo"]\n')
    assert main(["cases", "--suite", str(f)]) == 0
    out = capsys.readouterr().out
    assert "poisson_3d-n8-constant-cg" in out and "SKIP" in out and "5-point" in out


# --- plugins -------------------------------------------------------------------------------


class Scaled:
    """A plugin-like factory returning a (linear, symmetric) scaled identity."""

    linear = symmetric = True
    device = "cpu"

    def __init__(self, alpha: float = 2.0):
        self.alpha = alpha

    def setup(self, A):
        self.N = A.shape[0]
        return self

    def apply(self, r):
        return self.alpha * r

    nbytes = 0
    info = {}
    train_s = math.nan


def test_ad_hoc_method_from_module_attr(capsys):
    code = main(["run", "--n", "32", "--field", "constant", "--method",
                 "tests.test_harness:Scaled", "--repeats", "1", "--json", "--no-write"])
    import json

    rec = json.loads(capsys.readouterr().out)["records"][0]
    assert code == 0 and rec["method"] == "Scaled" and rec["iterations"] == 116
    assert rec["krylov"] == "pcg"  # auto: a linear, symmetric M runs in pcg


def test_plugin_descriptor_validation():
    with pytest.raises(ValueError, match="invalid method label"):
        MethodSpec("bad-label", Scaled)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['beta'\]"):
        MethodSpec("x", Scaled, {"beta": 1})
    with pytest.raises(ValueError, match="needs a solver"):
        MethodSpec("x", Scaled, krylov="gmres")
    assert [m.label for m in select_methods(["amg_*"])] == ["amg_sa", "amg_rs", "amg_sa_rbm"]


def test_example_plugin_is_registered_through_its_entry_point():
    pytest.importorskip("npo_bench_ssor")
    m = get_method("ssor")
    assert "entry point" in m.source and m.krylov == "pcg"
    c = cases.get_case("n32-jump1e2-ssor")
    rec = measure.measure(c, repeats=1)
    assert rec["converged"] and rec["iterations"] < 100


# --- the ground floor: no cycle, nothing imports upward, no method names in callers -------

#: layers, lowest first; a module may import only from its own layer or below
LAYERS = [
    {"npo.schema", "npo.devices", "npo.timing", "npo.stats", "npo.fileio", "npo.env",
     "npo.isolate", "npo.journal"},
    {"npo.problems", "npo.krylov", "npo.methods", "npo.gridmg"},
    {"npo.problemkinds", "npo.precond.base", "npo.neural.model", "npo.neural.data",
     "npo.neural.config", "npo.neural.flops", "npo.neural", "npo.neural.mg"},
    {"npo.neural.checkpoint", "npo.neural.train", "npo.neural.mg_train", "npo.precond.basic",
     "npo.precond.ilu",
     "npo.precond.amg", "npo.precond.nystrom", "npo.precond.neural", "npo.precond.petsc",
     "npo.precond.multigrid", "npo.precond"},
    {"npo.cases"},
    {"npo.measure", "npo.reference"},
    {"npo.gate", "npo.report.store", "npo.report.load", "npo.report.history",
     "npo.report.honesty", "npo.report.plots", "npo.report.asv_offline", "npo.report"},
    {"npo.report.build", "npo.diagnose"},
    {"npo.cli", "npo.precond.petsc_worker"},  # entry points (the MPI worker runs the protocol)
]
#: the registry's own cycle: the adapter registry imports the adapters that register
ALLOWED = {("npo.precond.base", "npo.precond.basic"), ("npo.precond.base", "npo.precond.ilu"),
           ("npo.precond.base", "npo.precond.amg"), ("npo.precond.base", "npo.precond.nystrom"),
           ("npo.precond.base", "npo.precond.neural"), ("npo.precond.base", "npo.precond.petsc"),
           ("npo.precond.base", "npo.precond.multigrid"),
           ("npo.precond.base", "npo.precond")}


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for f in NPO.rglob("*.py"):
        mod = _module(f)
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps |= {n for n in names if n.startswith("npo") and (NPO.parent / (
                n.replace(".", "/") + ".py")).exists() or (NPO.parent / n.replace(".", "/")
                                                          / "__init__.py").exists()}
        graph[mod] = deps - {mod}
    return graph


def test_import_graph_has_no_cycle_and_nothing_imports_upward():
    graph = import_graph()
    level = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    missing = sorted(m for m in graph if m not in level and m != "npo" and m != "npo.suites")
    assert not missing, f"place these modules in LAYERS: {missing}"
    upward = sorted((m, d) for m, ds in graph.items() for d in ds
                    if d in level and m in level and level[d] > level[m] and (m, d) not in ALLOWED)
    assert not upward, upward
    # no cycle apart from the registry's own
    edges = {m: {d for d in ds if (m, d) not in ALLOWED} for m, ds in graph.items()}
    seen, stack = {}, []

    def visit(m):
        seen[m] = "active"
        stack.append(m)
        for d in edges.get(m, ()):
            if seen.get(d) == "active":
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(d):] + [d])}")
            if d not in seen:
                visit(d)
        seen[m] = "done"
        stack.pop()

    for m in sorted(edges):
        if m not in seen:
            visit(m)


def test_no_method_name_outside_its_own_module():
    labels = ["cg", "jacobi", "ilu", "ilu_sym", "ilu0", "amg_sa", "amg_rs", "amg_sa_rbm",
              "nystrom", "npo", "npo_pcg", "petsc_hypre", "petsc_gamg", "petsc_icc",
              "petsc_jacobi", "petsc_none", "gmg", "npo_mg", "npo_mg_fcg"]
    hits = []
    for f in NPO.rglob("*.py"):
        if f.parent.name == "precond" or f.name == "plots.py":  # adapters + the style map
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Compare):
                for part in [node.left, *node.comparators]:
                    if isinstance(part, ast.Constant) and part.value in labels:
                        hits.append(f"{f.relative_to(ROOT)}:{node.lineno} == {part.value!r}")
    assert not hits, hits


def test_importing_npo_does_not_import_torch_or_petsc():
    code = ("import sys, npo, npo.cases, npo.measure, npo.report.build, npo.cli, npo.gate;"
            "from npo.methods import methods; methods();"
            "bad = [m for m in ('torch', 'petsc4py', 'mpi4py') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- solver inputs and adapters -------------------------------------------------------------


def test_complex_input_is_refused():
    A = poisson_2d(8)
    with pytest.raises(ValueError, match="A is complex"):
        pcg(A + 1000j * sp.identity(64), grf_rhs(8))
    with pytest.raises(ValueError, match="b is complex"):
        pcg(A, grf_rhs(8) + 0j)


@pytest.mark.parametrize("scale", [1e160, 1e-160, 3.7e-300, 1e300])
def test_scale_invariance(scale):
    A, b = poisson_2d(32), grf_rhs(32)
    for solver in (pcg, fcg):
        ref = solver(A, b)
        res = solver(A, b * scale)
        assert res.converged and res.iterations == ref.iterations == 116
        assert res.true_relres == pytest.approx(ref.true_relres, rel=1e-6)
        np.testing.assert_allclose(res.x / scale, ref.x, rtol=1e-12)


def test_nonsymmetric_matrix_is_refused_unless_asked():
    A = poisson_2d(8).tolil()
    A[0, 1] *= 1.5
    with pytest.raises(ValueError, match="not symmetric"):
        pcg(A.tocsr(), grf_rhs(8))
    pcg(A.tocsr(), grf_rhs(8), check_symmetric=False)  # the caller's choice


@pytest.mark.parametrize("bad, match", [
    (lambda r: r[:-1], "returned ndarray of shape"),
    (lambda r: None, "returned None"),
    (lambda r: r * np.inf, "non-finite"),
    (lambda r: r * np.nan, "non-finite"),
])
def test_bad_preconditioner_output_is_a_named_breakdown(bad, match):
    def precond(r):
        return bad(r)

    for solver in (pcg, fcg):
        res = solver(poisson_2d(8), grf_rhs(8), precond)
        assert res.reason == "breakdown" and match in res.detail and "'precond'" in res.detail
        assert np.all(np.isfinite(res.x))


@pytest.mark.parametrize("name", ["none", "jacobi", "ilu", "ilu0", "amg", "nystrom"])
def test_every_adapter_checks_the_input_length(name):
    A = poisson_2d(8)
    M = get(name, **({"rank": 8} if name == "nystrom" else {})).setup(A)
    with pytest.raises(ValueError, match=f"{name}: residual has shape"):
        M.apply(np.ones(63))


def test_adapter_options_are_checked_against_pyamg():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\] .*valid: .*'strength'"):
        get("amg", bogus=1)
    get("amg", solver="sa", strength="evolution", max_coarse=20)  # real PyAMG options pass


# --- provenance -------------------------------------------------------------------------


def test_provenance_commit_is_unknown_outside_the_own_repository(tmp_path):
    import shutil

    copy = tmp_path / "elsewhere" / "npo"
    shutil.copytree(NPO, copy, ignore=shutil.ignore_patterns("weights", "__pycache__"))
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # some other repository
    out = subprocess.run([sys.executable, "-c", "import npo.env as e; print(e.git_commit())"],
                         cwd=tmp_path / "elsewhere", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unknown"
    assert env.git_commit() != "unknown"  # this checkout is the project's own


def test_machine_name_honours_and_validates_npo_machine(monkeypatch):
    monkeypatch.setenv("NPO_MACHINE", "lab-box_1")
    assert env.machine_name() == "lab-box_1"
    monkeypatch.setenv("NPO_MACHINE", "../etc")
    with pytest.raises(ValueError, match="not a safe machine label"):
        env.machine_name()


def test_environment_records_cpu_cores_and_blas():
    e = env.environment()
    assert e["cpu"] and e["cores"] >= 1 and "threads=" in e["blas"]
    fp = env.platform_fingerprint()
    assert set(fp) >= {"machine", "cpu", "cpu_flags", "blas", "numpy", "scipy", "pyamg"}
