"""Mutation-testing tests for the catalogue: npo.methods, npo.cases and npo.problemkinds."""

import math
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from npo import cases, methods, problemkinds, problems
from npo.cases import Case, Group, SuiteError, parse_suite
from npo.methods import MethodSpec, check_options, get_method, select_methods
from npo.problemkinds import Field, ProblemKind, get_kind


class Fac:
    linear = symmetric = True
    name = "fac"

    def __init__(self, a=1, b=2):
        self.a, self.b = a, b


def plain_factory(x=1):
    return Fac()


# --- methods ------------------------------------------------------------------------


def test_constants():
    assert methods.ENTRY_POINT_GROUP == "npo_bench.methods"
    assert methods.DEFAULT_MAXITER == 20_000 and methods.DEFAULT_ITERATION_TOLERANCE == (2, 0.02)
    assert problemkinds.ENTRY_POINT_GROUP == "npo_bench.problems"
    assert (cases.RTOL, cases.RHS_SEED) == (1e-10, 42)


def test_check_options():
    check_options(Fac, {"a": 1, "b": 2}, "x")
    with pytest.raises(ValueError) as e:
        check_options(Fac, {"c": 1, "a": 1, "z": 0}, "thing")
    assert str(e.value) == "unknown option(s) ['c', 'z'] for thing; valid: ['a', 'b']"
    check_options(plain_factory, {"x": 2}, "f")
    with pytest.raises(ValueError, match=r"^unknown option\(s\) \['self'\] for f; valid: \['x'\]"):
        check_options(plain_factory, {"self": 2}, "f")

    def kw(a, *args, **kwargs):
        pass

    check_options(kw, {"anything": 1}, "k")  # **kwargs without a list: anything goes
    kw.accepted_options = lambda opts: {"q"} if opts.get("a") else {"r"}
    check_options(kw, {"a": 1, "q": 2}, "k")
    with pytest.raises(ValueError) as e:
        check_options(kw, {"q": 2}, "k")
    assert str(e.value) == "unknown option(s) ['q'] for k; valid: ['a', 'r']"
    with pytest.raises(ValueError, match=r"\['args'\]"):
        check_options(kw, {"args": 1}, "k")


def test_method_spec_validation_and_defaults():
    s = MethodSpec("m1", Fac)
    assert (s.krylov, s.solver, s.maxiter, s.description, s.max_n, s.max_N, s.limit_reason,
            s.problems, s.requires, s.install_hint, s.devices, s.mpi, s.default,
            s.iteration_tolerance, s.options_for, s.skip, s.runner, s.source,
            s.torch_adapter) == ("pcg", None, 20000, "", None, None, "", None, (), "", ("cpu",),
                                 False, True, (2, 0.02), None, None, None, "", None)
    assert isinstance(s.options, types.MappingProxyType) and dict(s.options) == {}
    opts = {"a": 5}
    s2 = MethodSpec("m2", Fac, opts)
    opts["a"] = 6
    assert s2.options["a"] == 5
    with pytest.raises(TypeError):
        s2.options["a"] = 1
    for kw, msg in (({"adapter": 3}, "method 'x': adapter must be callable"),
                    ({"krylov": "gmres"}, "method 'x': krylov 'gmres' needs a solver"),
                    ({"maxiter": 0}, "method 'x': maxiter must be >= 1"),
                    ({"options": {"zz": 1}}, "unknown option(s) ['zz'] for method 'x'; valid: "
                                             "['a', 'b']")):
        with pytest.raises(ValueError) as e:
            MethodSpec("x", **{"adapter": Fac, **kw})
        assert str(e.value) == msg
    MethodSpec("x", Fac, krylov="gmres", solver=lambda *a, **k: None)
    MethodSpec("x", Fac, maxiter=1)
    for k in ("pcg", "fcg", "auto"):
        MethodSpec("x", Fac, krylov=k)
    assert MethodSpec("x", Fac) == MethodSpec("x", Fac, {"a": 2})  # options are not compared


def test_precond_name():
    assert MethodSpec("x", Fac).precond == "fac"
    assert MethodSpec("x", plain_factory).precond == "plain_factory"

    class Unnamed:
        name = None

        def __call__(self):
            return None

    assert MethodSpec("x", Unnamed()).precond == "?"


def _case(spec, n=32, problem="diffusion_2d", field="constant", device="cpu", ranks=1):
    kind = get_kind(problem)
    return Case(n, kind.field(field), spec, problem, ranks=ranks, device=device)


def test_skip_reasons_in_order():
    s = MethodSpec("m", Fac, requires=("no_such_mod_xyz",), install_hint="pip install it")
    assert s.missing_requirement() == "pip install it"
    assert s.skip_reason(_case(s)) == "pip install it"
    s = MethodSpec("m", Fac, requires=("json", "no_such_mod_xyz"))
    assert s.missing_requirement() == "no_such_mod_xyz is not installed"
    assert MethodSpec("m", Fac, requires=("json",)).missing_requirement() is None
    s = MethodSpec("m", Fac, problems=("poisson_3d", "aniso_2d"))
    assert s.skip_reason(_case(s)) == "m runs on poisson_3d, aniso_2d only, not diffusion_2d"
    assert s.skip_reason(_case(s, 8, "poisson_3d")) is None
    s = MethodSpec("m", Fac)
    assert s.skip_reason(_case(s, device="torch:cpu")) == (
        "m has no torch:cpu implementation (runs on cpu)")
    s = MethodSpec("m", Fac, devices=("cpu", "torch"))
    assert s.skip_reason(_case(s, device="torch:cpu")) == (
        "m has no torch:cpu implementation (runs on cpu)")
    s = MethodSpec("m", Fac, devices=("cpu", "torch"), torch_adapter=Fac)
    assert s.skip_reason(_case(s, device="torch:cpu")) is None
    assert s.skip_reason(_case(s, device="cuda:0")) == (
        "m has no cuda:0 implementation (runs on cpu, torch)")
    s = MethodSpec("m", Fac, devices=("torch",), torch_adapter=Fac)
    assert s.skip_reason(_case(s)) == "m has no cpu implementation (runs on torch)"
    s = MethodSpec("m", Fac)
    assert s.skip_reason(_case(s, ranks=2)) == "m runs in one process (no MPI)"
    assert MethodSpec("m", Fac, mpi=True).skip_reason(_case(s, ranks=2)) is None
    s = MethodSpec("m", Fac, max_n=64)
    assert s.skip_reason(_case(s, 64)) is None
    assert s.skip_reason(_case(s, 65)) == "m runs at n <= 64"
    s = MethodSpec("m", Fac, max_n=64, limit_reason="too slow")
    assert s.skip_reason(_case(s, 65)) == "m runs at n <= 64: too slow"
    s = MethodSpec("m", Fac, max_N=4096, limit_reason="mem")
    assert s.skip_reason(_case(s, 64)) is None
    assert s.skip_reason(_case(s, 65)) == "m runs at N <= 4,096: mem"
    s = MethodSpec("m", Fac, skip=lambda c: f"custom {c.n}")
    assert s.skip_reason(_case(s, 40)) == "custom 40"


def test_case_options_make_and_variant():
    s = MethodSpec("m", Fac, {"a": 7}, options_for=lambda c, p: {"a": 1, "b": (c.n, p)})
    c = _case(s)
    assert s.case_options(c) == {"a": 7, "b": (32, None)}
    assert s.case_options(c, "P") == {"a": 7, "b": (32, "P")}
    assert MethodSpec("m", Fac, {"a": 3}).case_options(c) == {"a": 3}
    M = s.make(c, "P", b=9)
    assert isinstance(M, Fac) and (M.a, M.b) == (7, 9)
    with pytest.raises(ValueError) as e:
        s.make(c, zz=1)
    assert str(e.value) == "unknown option(s) ['zz'] for method 'm'; valid: ['a', 'b']"
    with pytest.raises(ValueError) as e:
        MethodSpec("m", Fac).make(_case(s, device="torch:cpu"))
    assert str(e.value) == "m has no torch:cpu implementation"

    class TFac(Fac):
        def __init__(self, a=1, b=2, device="cpu"):
            super().__init__(a, b)
            self.device = device

    t = MethodSpec("m", Fac, {"a": 4}, torch_adapter=TFac).make(_case(s, device="torch:cpu"))
    assert isinstance(t, TFac) and (t.a, t.device) == (4, "torch:cpu")
    v = s.variant("m2", {"b": 3}, description="d", maxiter=5)
    assert (v.label, dict(v.options), v.description, v.maxiter) == ("m2", {"a": 7, "b": 3}, "d", 5)
    assert dict(s.variant("m3").options) == {"a": 7} and s.label == "m"


def test_load_object_messages():
    lo = methods._load_object
    assert lo("npo.precond.nystrom:Nystrom", "w").__name__ == "Nystrom"
    assert lo("npo.precond:nystrom.Nystrom.setup", "w").__name__ == "setup"
    for ref, msg in (("npo.precond", "w 'npo.precond': expected package.module:attr"),
                     (":x", "w ':x': expected package.module:attr"),
                     ("m:", "w 'm:': expected package.module:attr"),
                     ("no_such_pkg_xyz:a", "w 'no_such_pkg_xyz:a': cannot import "
                                           "'no_such_pkg_xyz' (No module named 'no_such_pkg_xyz')"),
                     ("npo.precond:nope.x", "w 'npo.precond:nope.x': 'npo.precond' has no "
                                            "attribute 'nope.x'")):
        with pytest.raises(ValueError) as e:
            lo(ref, "w")
        assert str(e.value) == msg


def test_as_specs():
    s = MethodSpec("m", Fac)
    assert methods._as_specs(s, "src") == [replace(s, source="src")]
    assert methods._as_specs(s, "src")[0].source == "src"
    assert [x.label for x in methods._as_specs([s, replace(s, label="m2")], "q")] == ["m", "m2"]
    assert methods._as_specs(lambda: s, "f")[0].source == "f"
    assert methods._as_specs(lambda: (s,), "f")[0].label == "m"
    assert methods._as_specs(lambda x=1: [s], "f")[0].label == "m"
    for obj in (Fac, lambda x: s, 3, [], [s, 3], lambda: 5):
        with pytest.raises(ValueError) as e:
            methods._as_specs(obj, "src")
        assert str(e.value).startswith("src: expected a MethodSpec, a list of them, or a "
                                       "callable returning one, got ")
    with pytest.raises(ValueError, match="got int$"):
        methods._as_specs(3, "src")
    assert not methods._is_spec_list([]) and methods._is_spec_list((s,))
    assert not methods._is_spec_list("ab")


def test_entry_point_refs_always_include_the_builtins():
    refs = methods._entry_point_refs()
    values = [v for _, v in refs]
    for ref in methods._BUILTIN_PROVIDERS:
        assert ref in values
    names = dict((v, k) for k, v in refs)
    assert names["npo.precond.basic:METHODS"] == "basic"


def test_registry_order_and_errors(monkeypatch):
    ms = methods.methods()
    labels = list(ms)
    assert labels[:9] == ["cg", "jacobi", "ilu", "ilu_sym", "ilu0", "amg_sa", "amg_rs",
                          "amg_sa_rbm", "nystrom"]
    assert ms["cg"].source.startswith("entry point 'basic' (npo.precond.basic:METHODS)")
    fake = types.ModuleType("npo_mut_fake_plugin")
    fake.DUP = [MethodSpec("cg", Fac)]
    fake.BAD = 3

    def boom():
        raise RuntimeError("kaput")

    fake.BOOM = boom
    monkeypatch.setitem(sys.modules, "npo_mut_fake_plugin", fake)
    for attr, msg in (("DUP", "method 'cg' is registered twice: by entry point 'basic' "
                              "(npo.precond.basic:METHODS) and by entry point 'zz' "
                              "(npo_mut_fake_plugin:DUP)"),
                      ("BAD", "entry point 'zz' (npo_mut_fake_plugin:BAD): expected a "
                              "MethodSpec, a list of them, or a callable returning one, got int"),
                      ("BOOM", "method plugin 'zz' (npo_mut_fake_plugin:BOOM) failed to load: "
                               "RuntimeError: kaput")):
        monkeypatch.setattr(methods, "_entry_point_refs",
                            lambda a=attr: [*((r.split(":")[0].rsplit(".", 1)[-1], r)
                                              for r in methods._BUILTIN_PROVIDERS),
                                            ("zz", f"npo_mut_fake_plugin:{a}")])
        methods.methods.cache_clear()
        try:
            with pytest.raises(ValueError) as e:
                methods.methods()
            assert str(e.value) == msg
        finally:
            methods.methods.cache_clear()
    # plugins come after the built-ins whatever the entry points' order
    fake.OK = [MethodSpec("zzz_plugin", Fac)]
    monkeypatch.setattr(methods, "_entry_point_refs", lambda: [
        ("zz", "npo_mut_fake_plugin:OK"),
        *((r.split(":")[0].rsplit(".", 1)[-1], r) for r in reversed(methods._BUILTIN_PROVIDERS))])
    methods.methods.cache_clear()
    try:
        got = list(methods.methods())
        assert got[:2] == ["cg", "jacobi"] and got[-1] == "zzz_plugin"
    finally:
        methods.methods.cache_clear()


def test_get_method_and_ad_hoc():
    assert get_method("amg_rs").options["solver"] == "rs"
    with pytest.raises(ValueError) as e:
        get_method("nope")
    assert str(e.value) == (f"unknown method 'nope'; expected one of {list(methods.methods())} "
                            "or package.module:attr")
    with pytest.raises(ValueError, match="unknown method 3"):
        get_method(3)
    s = get_method("npo.precond.nystrom:Nystrom")
    assert (s.label, s.adapter.__name__, s.krylov, s.description, s.source) == (
        "Nystrom", "Nystrom", "auto", "ad hoc npo.precond.nystrom:Nystrom",
        "--method npo.precond.nystrom:Nystrom")
    s = get_method("npo.precond:nystrom.Nystrom")
    assert s.label == "Nystrom"
    one = get_method("npo.precond.basic:METHODS") if False else None
    assert one is None
    with pytest.raises(ValueError) as e:
        get_method("npo.precond.basic:METHODS")
    assert str(e.value) == "--method npo.precond.basic:METHODS: names 2 methods; name one"
    with pytest.raises(ValueError) as e:
        get_method("npo.cases:RTOL")
    assert str(e.value) == "--method npo.cases:RTOL: float is neither a MethodSpec nor callable"
    spec = get_method("npo.precond.nystrom:METHODS")
    assert spec.label == "nystrom" and spec.source == "--method npo.precond.nystrom:METHODS"


def test_select_methods():
    ms = methods.methods()
    assert [m.label for m in select_methods(["all"])] == [k for k, v in ms.items() if v.default]
    assert "amg_sa_rbm" not in [m.label for m in select_methods(["all"])]
    assert [m.label for m in select_methods(["ilu*"])] == ["ilu", "ilu_sym", "ilu0"]
    assert [m.label for m in select_methods(["ilu?"])] == ["ilu0"]
    assert [m.label for m in select_methods(["amg_[rs]*"])] == ["amg_sa", "amg_rs",
                                                                "amg_sa_rbm"]
    assert [m.label for m in select_methods(["jacobi", "cg", "jacobi"])] == ["jacobi", "cg"]
    assert [m.label for m in select_methods(["npo.precond.nystrom:Nystrom"])] == ["Nystrom"]
    with pytest.raises(ValueError) as e:
        select_methods(["zz*"])
    assert str(e.value) == f"method pattern 'zz*' matches no method; registered: {list(ms)}"
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        select_methods(["nope"])


# --- problem kinds ------------------------------------------------------------------


def test_field_and_problem():
    f = Field("f1", "jump", 10.0, 3, (("a", 1), ("b", 2)))
    assert f.name == "jump" and f.param("a") == 1 and f.param("c") is None
    assert f.param("c", 5) == 5
    assert Field("x", "constant") == Field("x", "constant", 1.0, 0, ())
    with pytest.raises(ValueError, match="invalid field label"):
        Field("a-b", "constant")
    p = problemkinds.Problem("n", problems.poisson_2d(3), np.ones(9))
    assert p.N == 9 and p.meta == {} and p.near_nullspace is None
    p2 = problemkinds.Problem("n", problems.poisson_2d(3), np.ones(9), {"near_nullspace": 7})
    assert p2.near_nullspace == 7


def test_kinds_registry():
    ks = problemkinds.kinds()
    assert list(ks)[:6] == ["diffusion_2d", "poisson_3d", "aniso_2d", "elasticity_2d", "pyamg",
                            "mtx"]
    with pytest.raises(ValueError) as e:
        get_kind("mars")
    assert str(e.value) == f"unknown problem 'mars'; expected one of {sorted(ks)}"
    k = get_kind("diffusion_2d")
    assert list(k.fields) == ["constant", "jump1e2", "lognormal1e2", "lognormal1e4",
                              "binary1e4", "checkerboard1e4"]
    assert [(f.family, f.contrast) for f in k.fields.values()] == [
        ("constant", 1.0), ("jump", 1e2), ("lognormal", 1e2), ("lognormal", 1e4),
        ("binary", 1e4), ("checkerboard", 1e4)]
    with pytest.raises(ValueError) as e:
        k.field("wavy")
    assert str(e.value) == ("unknown field 'wavy' for problem 'diffusion_2d'; expected one of "
                            f"{list(k.fields)}")
    # fixed matrices are sized by N; only our generators are trusted to be SPD
    assert [(kk.name, kk.sized, kk.check_spd) for kk in problemkinds.BUILTIN_KINDS] == [
        ("diffusion_2d", True, False), ("poisson_3d", True, False), ("aniso_2d", True, False),
        ("elasticity_2d", True, False), ("pyamg", False, True), ("mtx", False, True)]
    assert all(kk.description for kk in problemkinds.BUILTIN_KINDS)
    aniso = get_kind("aniso_2d").fields["eps0.001_pi6"]
    assert (aniso.family, aniso.contrast, aniso.params) == ("aniso", 1e3, (
        ("epsilon", 1e-3), ("theta", math.pi / 6)))
    el = get_kind("elasticity_2d").fields["default"]
    assert el.params == (("E", 1e5), ("nu", 0.3)) and el.family == "elasticity"
    assert list(get_kind("pyamg").fields) == list(problems.PYAMG_EXAMPLES)
    assert get_kind("poisson_3d").fields["constant"] == Field("constant", "constant")
    assert get_kind("mtx").fields == {}


def test_kind_plugins(monkeypatch):
    extra = ProblemKind("extra_kind", lambda *a: None, lambda n, f: {"N": n, "dim": 1})

    class EP:
        def __init__(self, name, value, obj):
            self.name, self.value, self._obj = name, value, obj

        def load(self):
            if isinstance(self._obj, Exception):
                raise self._obj
            return self._obj

    def use(*eps):
        monkeypatch.setattr(problemkinds.metadata, "entry_points", lambda group: list(eps))
        problemkinds.kinds.cache_clear()

    try:
        for obj in (extra, [extra], lambda: extra, lambda: [extra]):
            use(EP("x", "m:X", obj))
            assert list(problemkinds.kinds())[-1] == "extra_kind"
        use(EP("x", "m:X", ImportError("gone")))
        with pytest.raises(ValueError) as e:
            problemkinds.kinds()
        assert str(e.value) == "problem plugin 'x' (m:X) failed to load: ImportError: gone"
        use(EP("x", "m:X", [3]))
        with pytest.raises(ValueError) as e:
            problemkinds.kinds()
        assert str(e.value) == "problem plugin 'x' gave int, not a ProblemKind"
        use(EP("x", "m:X", replace(extra, name="poisson_3d")))
        with pytest.raises(ValueError) as e:
            problemkinds.kinds()
        assert str(e.value) == "problem kind 'poisson_3d' is registered twice"
        use(EP("x", "m:X", replace(extra, name="bad-name")))
        with pytest.raises(ValueError, match="invalid problem label 'bad-name'"):
            problemkinds.kinds()
    finally:
        monkeypatch.undo()
        problemkinds.kinds.cache_clear()


def test_builds_and_descriptions():
    k = get_kind("diffusion_2d")
    f = k.fields["jump1e2"]
    p = k.build(6, f, 5)
    a = problems.coefficient("jump", 6, 100.0, 0)
    assert p.name == "diffusion_2d" and (p.A != problems.diffusion_2d(6, a)).nnz == 0
    np.testing.assert_array_equal(p.b, problems.grf_rhs(6, seed=5))
    assert list(p.meta) == ["dim", "grid", "stencil", "rhs", "coefficient"]
    assert (p.meta["dim"], p.meta["grid"], p.meta["stencil"], p.meta["rhs"]) == (
        2, (6, 6), "5pt", "grf(seed=5)")
    np.testing.assert_array_equal(p.meta["coefficient"], a)
    assert k.describe(6, f) == {"N": 36, "dim": 2, "grid": (6, 6), "stencil": "5pt",
                                "near_nullspace": False}
    k3 = get_kind("poisson_3d")
    p = k3.build(3, k3.fields["constant"], 7)
    assert p.name == "poisson_3d" and p.A.shape == (27, 27)
    np.testing.assert_array_equal(p.b, problems.normal_rhs(27, 7))
    assert p.meta == {"dim": 3, "grid": (3, 3, 3), "stencil": "7pt", "rhs": "normal(seed=7)"}
    assert k3.describe(3, None) == {"N": 27, "dim": 3, "grid": (3, 3, 3), "stencil": "7pt",
                                    "near_nullspace": False}
    ka = get_kind("aniso_2d")
    fa = ka.fields["eps0.001_pi6"]
    p = ka.build(5, fa, 1)
    assert p.name == "aniso_2d" and (p.A != problems.anisotropic_2d(5, 1e-3, math.pi / 6)).nnz == 0
    np.testing.assert_array_equal(p.b, problems.grf_rhs(5, seed=1))
    assert p.meta == {"dim": 2, "grid": (5, 5), "stencil": "9pt", "rhs": "grf(seed=1)",
                      "epsilon": 1e-3, "theta": math.pi / 6}
    assert ka.describe(5, fa) == {"N": 25, "dim": 2, "grid": (5, 5), "stencil": "9pt",
                                  "near_nullspace": False}
    ke = get_kind("elasticity_2d")
    p = ke.build(3, ke.fields["default"], 2)
    A, B = problems.elasticity_2d(3, 1e5, 0.3)
    assert p.name == "elasticity_2d" and (p.A != A).nnz == 0
    np.testing.assert_array_equal(p.meta["near_nullspace"], B)
    np.testing.assert_array_equal(p.b, problems.normal_rhs(A.shape[0], 2))
    assert {k_: v for k_, v in p.meta.items() if k_ != "near_nullspace"} == {
        "dim": 2, "grid": None, "stencil": "Q1 elasticity, 2 dof/node", "rhs": "normal(seed=2)"}
    assert ke.describe(3, None) == {"N": 18, "dim": 2, "grid": None, "stencil": "elasticity",
                                    "near_nullspace": True}
    kp = get_kind("pyamg")
    p = kp.build(0, kp.fields["bar"], 3)
    assert p.name == "pyamg" and p.A.shape == (600, 600) and p.meta["near_nullspace"].shape == (
        600, 6)
    assert {k_: v for k_, v in p.meta.items() if k_ != "near_nullspace"} == {
        "dim": None, "grid": None, "stencil": "unstructured", "rhs": "normal(seed=3)"}
    assert kp.build(0, kp.fields["airfoil"], 3).meta["near_nullspace"] is None  # one mode
    assert not kp.build(0, kp.fields["airfoil"], 3).A.data.flags.writeable
    for name, N in problemkinds._EXAMPLE_N.items():
        assert kp.describe(0, kp.fields[name]) == {
            "N": N, "dim": None, "grid": None, "stencil": "unstructured",
            "near_nullspace": name == "bar"}
        assert problems.pyamg_example(name)[0].shape == (N, N)


def test_user_fields():
    k = get_kind("diffusion_2d")
    f = k.make_field("mine", {"family": "lognormal", "contrast": 50, "seed": 3})
    assert f == Field("mine", "lognormal", 50.0, 3) and isinstance(f.contrast, float)
    assert k.make_field("c", {"family": "constant"}) == Field("c", "constant", 1.0, 0)
    for spec, msg in (({"family": "wavy"}, "field 'x': family must be one of ['binary', "
                                           "'checkerboard', 'constant', 'jump', 'lognormal'], "
                                           "got 'wavy'"),
                      ({}, "field 'x': family must be one of ['binary', 'checkerboard', "
                           "'constant', 'jump', 'lognormal'], got None"),
                      ({"family": "jump", "colour": 1}, "field 'x': unknown key(s) ['colour']"),
                      ({"family": "jump", "contrast": 0.5},
                       "contrast must be a finite number >= 1, got 0.5")):
        with pytest.raises(ValueError) as e:
            k.make_field("x", spec)
        assert str(e.value) == msg
    a = get_kind("aniso_2d").make_field("a1", {"family": "ignored", "epsilon": 0.25})
    assert a == Field("a1", "aniso", 4.0, 0, (("epsilon", 0.25), ("theta", 0.0)))
    a = get_kind("aniso_2d").make_field("a2", {"epsilon": "0.5", "theta": 1})
    assert a.params == (("epsilon", 0.5), ("theta", 1.0))
    with pytest.raises(KeyError):
        get_kind("aniso_2d").make_field("a3", {})
    with pytest.raises(ValueError, match="anisotropy epsilon"):
        get_kind("aniso_2d").make_field("a3", {"epsilon": 2})
    with pytest.raises(ValueError, match=r"^field 'a4': unknown key\(s\) \['q'\]$"):
        get_kind("aniso_2d").make_field("a4", {"epsilon": 0.5, "q": 1})
    e = get_kind("elasticity_2d").make_field("e1", {"family": "x", "E": 10, "nu": 0})
    assert e == Field("e1", "elasticity", 1.0, 0, (("E", 10.0), ("nu", 0.0)))
    assert get_kind("elasticity_2d").make_field("e2", {}).params == (("E", 1e5), ("nu", 0.3))
    for spec in ({"E": 0}, {"nu": 0.5}, {"nu": -0.1}, {"E": -1.0}):
        with pytest.raises(ValueError) as err:
            get_kind("elasticity_2d").make_field("e3", spec)
        assert str(err.value) == "field 'e3': need E > 0 and 0 <= nu < 0.5"
    get_kind("elasticity_2d").make_field("e4", {"nu": 0.4999})
    for kind in ("poisson_3d", "pyamg"):
        with pytest.raises(ValueError) as err:
            get_kind(kind).make_field("z", {})
        assert str(err.value) == "field 'z': this problem kind takes no user-defined fields"


def test_matrix_market_fields_and_builds(tmp_path):
    A = problems.poisson_2d(3)
    scipy.io.mmwrite(tmp_path / "my matrix!.mtx", A)
    scipy.io.mmwrite(tmp_path / "b.mtx", np.arange(1.0, 10.0).reshape(-1, 1))
    scipy.io.mmwrite(tmp_path / "short.mtx", np.ones((4, 1)))
    f = problemkinds.mtx_field(tmp_path / "my matrix!.mtx")
    assert f.label == "my_matrix_" and f.family == "file" and f.contrast == 1.0
    assert f.params == (("path", str((tmp_path / "my matrix!.mtx").resolve())),)
    f2 = problemkinds.mtx_field(str(tmp_path / "my matrix!.mtx"), tmp_path / "b.mtx", "lbl")
    assert f2.label == "lbl" and f2.param("rhs") == str((tmp_path / "b.mtx").resolve())
    k = get_kind("mtx")
    assert k.describe(0, f) == {"N": 9, "dim": None, "grid": None, "stencil": "file",
                                "near_nullspace": False}
    p = k.build(0, f, 4)
    assert p.name == "mtx" and (p.A != A).nnz == 0
    np.testing.assert_array_equal(p.b, problems.normal_rhs(9, 4))
    assert p.meta == {"dim": None, "grid": None, "stencil": "file", "rhs": "normal(seed=4)",
                      "path": f.param("path")}
    assert not p.A.data.flags.writeable and not p.b.flags.writeable
    p2 = k.build(0, f2, 4)
    assert p2.meta["rhs"] == "file:b.mtx" and p2.b.tolist() == list(np.arange(1.0, 10.0))
    f3 = problemkinds.mtx_field(tmp_path / "my matrix!.mtx", tmp_path / "short.mtx")
    with pytest.raises(ValueError) as e:
        k.build(0, f3, 4)
    assert str(e.value) == (f"right-hand side {f3.param('rhs')!r} has 4 entries; the matrix has "
                            "9 rows")
    g = k.make_field("g", {"family": "x", "path": str(tmp_path / "my matrix!.mtx")})
    assert g.label == "g" and g.param("rhs") is None
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['q'\]"):
        k.make_field("g", {"path": str(tmp_path / "my matrix!.mtx"), "q": 1})
    assert problemkinds._safe_label("!!!") == "___" and problemkinds._safe_label("") == "matrix"
    scipy.io.mmwrite(tmp_path / "rect.mtx", np.ones((2, 3)))
    with pytest.raises(ValueError) as e:
        problemkinds._mtx_header(str(tmp_path / "rect.mtx"))
    assert str(e.value) == f"MatrixMarket file {str(tmp_path / 'rect.mtx')!r}: not square (2 x 3)"
    (tmp_path / "bad.mtx").write_text("nonsense\n")
    with pytest.raises(ValueError, match=r"^MatrixMarket file '.*bad.mtx': unreadable header \("):
        problemkinds._mtx_header(str(tmp_path / "bad.mtx"))
    assert problemkinds._mtx_header(str(tmp_path / "my matrix!.mtx")) == 9


# --- cases and suites ----------------------------------------------------------------


def test_case_properties():
    c = cases.get_case("n32p2-jump1e2-amg_sa", device="torch:cpu")
    assert (c.n, c.problem, c.rtol, c.rhs_seed, c.ranks, c.device) == (
        32, "diffusion_2d", 1e-10, 42, 2, "torch:cpu")
    assert c.id == "n32p2-jump1e2-amg_sa" and c.maxiter == 20000 and c.N == 1024
    assert c.kind is get_kind("diffusion_2d") and c.info["stencil"] == "5pt"
    assert c.precond_options == {"solver": "sa", "seed": 0}
    assert c.skip_reason == "amg_sa runs in one process (no MPI)"
    d = c.on("cpu")
    assert d.device == "cpu" and d.n == 32 and c.device == "torch:cpu"
    assert isinstance(cases.get_case("n8-constant-npo").maxiter, int)
    with pytest.raises(ValueError) as e:
        cases.get_case("n1-constant-cg")
    assert str(e.value) == "case 'n1-constant-cg': size must be >= 2"
    assert cases.get_case("pyamg-n0-airfoil-cg").n == 0  # fixed matrices: no size check
    with pytest.raises(ValueError, match="unknown field 'wavy'"):
        cases.get_case("n8-wavy-cg")
    with pytest.raises(ValueError, match="unknown method 'zz'"):
        cases.get_case("n8-constant-zz")


def _suite(text, base_dir=None):
    return parse_suite(text, "s1", "'f.toml'", base_dir)


G = '[[group]]\nsizes = [8, 16]\nfields = ["constant", "jump1e2"]\nmethods = ["cg", "jacobi"]\n'


def test_suite_axes_and_all():
    s = _suite('name = "nm"\ndescription = "d"\nrtol = 1e-6\nrhs_seed = 3\n' + G
               + '[[group]]\nproblem = "pyamg"\nfields = ["airfoil"]\nmethods = ["cg"]\n'
               + '[[group]]\nsizes = [8, 32]\nfields = ["jump1e2"]\nmethods = ["amg_sa"]\n'
                 'ranks = [1, 2]\n')
    assert (s.name, s.description, s.rtol, s.rhs_seed, s.path) == ("nm", "d", 1e-6, 3, "'f.toml'")
    assert s.sizes == (8, 16, 0, 32) and s.fields == ("constant", "jump1e2", "airfoil")
    assert s.methods == ("cg", "jacobi", "amg_sa") and s.problems == ("diffusion_2d", "pyamg")
    every = s.all("torch:cpu")
    assert [c.id for c in every[:4]] == ["n8-constant-cg", "n8-constant-jacobi",
                                         "n8-jump1e2-cg", "n8-jump1e2-jacobi"]
    assert every[8].id == "pyamg-n260-airfoil-cg"
    assert [c.id for c in every[9:]] == ["n8-jump1e2-amg_sa", "n8p2-jump1e2-amg_sa",
                                         "n32-jump1e2-amg_sa", "n32p2-jump1e2-amg_sa"]
    assert {c.device for c in every} == {"torch:cpu"} and {c.rtol for c in every} == {1e-6}
    assert {c.rhs_seed for c in every} == {3}
    assert s.all()[0].device == "cpu"
    assert s.groups[0] == Group("diffusion_2d", (8, 16), (get_kind("diffusion_2d").fields[
        "constant"], get_kind("diffusion_2d").fields["jump1e2"]),
        (get_method("cg"), get_method("jacobi")), (1,))
    d = _suite(G)
    assert (d.name, d.description, d.rtol, d.rhs_seed) == ("s1", "", 1e-10, 42)
    assert isinstance(d.rtol, float)
    assert _suite('rtol = 0.5\n' + G).rtol == 0.5
    assert _suite('rhs_seed = 0\n' + G).rhs_seed == 0


def test_suite_all_fields_and_own_fields_and_methods(tmp_path):
    scipy.io.mmwrite(tmp_path / "m.mtx", problems.poisson_2d(3))
    scipy.io.mmwrite(tmp_path / "r.mtx", np.ones((9, 1)))
    s = _suite('[fields.j5]\nfamily = "jump"\ncontrast = 5\n'
               '[fields.file1]\nproblem = "mtx"\npath = "m.mtx"\nrhs = "r.mtx"\n'
               '[methods.amg_w]\nbase = "amg_sa"\noptions = { cycle = "W" }\n'
               'description = "W"\nmaxiter = 50\nkrylov = "fcg"\n'
               '[[group]]\nsizes = [8]\nfields = ["all", "j5", "constant"]\n'
               'methods = ["amg_w", "ilu*"]\n'
               '[[group]]\nproblem = "mtx"\nfields = ["file1"]\nmethods = ["cg"]\n', tmp_path)
    g = s.groups[0]
    assert [f.label for f in g.fields] == list(get_kind("diffusion_2d").fields) + ["j5"]
    assert [m.label for m in g.methods] == ["amg_w", "ilu", "ilu_sym", "ilu0"]
    w = g.methods[0]
    assert (dict(w.options), w.description, w.maxiter, w.krylov) == (
        {"solver": "sa", "seed": 0, "cycle": "W"}, "W", 50, "fcg")
    f1 = s.groups[1].fields[0]
    assert f1.param("path") == str((tmp_path / "m.mtx").resolve())
    assert f1.param("rhs") == str((tmp_path / "r.mtx").resolve())
    assert s.groups[1].sizes == (0,) and s.all()[-1].id == "mtx-n9-file1-cg"


ERRORS = [
    ("colour = 1\n" + G, "suite file 'f.toml', line 1: colour: unknown key (valid: "
                         "['description', 'fields', 'group', 'methods', 'name', 'rhs_seed', "
                         "'rtol'])"),
    ('name = 3\n' + G, "suite file 'f.toml', line 1: name: must be a string"),
    ('name = "a-b"\n' + G, "suite file 'f.toml', line 1: name: invalid suite label 'a-b': use "
                           "letters, digits, '_', '.' or '+' only"),
    ('description = 1\n' + G, "suite file 'f.toml', line 1: description: must be a string"),
    ('rtol = 0\n' + G, "suite file 'f.toml', line 1: rtol: must be a number in (0, 1), got 0"),
    ('rtol = 1\n' + G, "suite file 'f.toml', line 1: rtol: must be a number in (0, 1), got 1"),
    ('rtol = true\n' + G, "suite file 'f.toml', line 1: rtol: must be a number in (0, 1), got "
                          "True"),
    ('rhs_seed = -1\n' + G, "suite file 'f.toml', line 1: rhs_seed: must be an integer >= 0, "
                            "got -1"),
    ('rhs_seed = 1.5\n' + G, "suite file 'f.toml', line 1: rhs_seed: must be an integer >= 0, "
                             "got 1.5"),
    ('rhs_seed = false\n' + G, "suite file 'f.toml', line 1: rhs_seed: must be an integer >= 0, "
                               "got False"),
    ('[fields]\nx = 3\n' + G, "suite file 'f.toml': fields.x: must be a table"),
    ('[fields.x]\nfamily = "jump"\ncontrast = 0.1\n' + G,
     "suite file 'f.toml', line 1: fields.x: contrast must be a finite number >= 1, got 0.1"),
    ('[fields."a-b"]\nfamily = "jump"\n' + G,
     "suite file 'f.toml', line 1: fields.a-b: invalid field label 'a-b': use letters, digits, "
     "'_', '.' or '+' only"),
    ('[fields.x]\nproblem = "aniso_2d"\n' + G,
     "suite file 'f.toml', line 1: fields.x: missing key 'epsilon'"),
    ('[fields.x]\nproblem = "mars"\n' + G, "suite file 'f.toml', line 1: fields.x: unknown "
                                           "problem 'mars'; expected one of "),
    ('[methods]\nx = 1\n' + G, "suite file 'f.toml': methods.x: must be a table"),
    ('[methods.x]\nbase = "cg"\nhue = 1\n' + G,
     "suite file 'f.toml', line 3: methods.x.hue: unknown key (valid: ['base', 'description', "
     "'krylov', 'maxiter', 'options'])"),
    ('[methods.x]\nbase = 1\n' + G,
     "suite file 'f.toml', line 2: methods.x.base: required: the label of a registered method"),
    ('[methods.x]\noptions = {}\n' + G,
     "suite file 'f.toml', line 1: methods.x.base: required: the label of a registered method"),
    ('[methods.x]\nbase = "cg"\noptions = 3\n' + G,
     "suite file 'f.toml', line 3: methods.x.options: must be a table"),
    ('[methods.cg]\nbase = "jacobi"\n' + G,
     "suite file 'f.toml', line 1: methods.cg: 'cg' is already a registered method; pick another "
     "label"),
    ('[methods.x]\nbase = "nope"\n' + G, "suite file 'f.toml', line 1: methods.x: unknown "
                                         "method 'nope'"),
    ('[methods.x]\nbase = "cg"\nmaxiter = 0\n' + G,
     "suite file 'f.toml', line 1: methods.x: method 'x': maxiter must be >= 1"),
    ('description = "x"\n', "suite file 'f.toml': group: a suite needs at least one [[group]]"),
    ('group = []\n', "suite file 'f.toml', line 1: group: a suite needs at least one [[group]]"),
    ('[[group]]\nsizes = [8]\nfields = ["constant"]\nmethods = ["cg"]\nhue = 1\nzz = 2\n',
     "suite file 'f.toml', line 5: group.[1].hue: unknown key (valid: ['fields', 'methods', "
     "'problem', 'ranks', 'sizes'])"),
    ('[[group]]\nsizes = [8]\nfields = ["constant"]\nmethods = ["cg"]\n'
     '[[group]]\nsizes = [2, 1]\nfields = ["constant"]\nmethods = ["cg"]\n',
     "suite file 'f.toml', line 6: group.[2].sizes: required for diffusion_2d: a non-empty list "
     "of integers >= 2, got [2, 1]"),
    ('[[group]]\nsizes = []\nfields = ["constant"]\nmethods = ["cg"]\n',
     "suite file 'f.toml', line 2: group.[1].sizes: required for diffusion_2d: a non-empty list "
     "of integers >= 2, got []"),
    ('[[group]]\nsizes = [true]\nfields = ["constant"]\nmethods = ["cg"]\n',
     "suite file 'f.toml', line 2: group.[1].sizes: required for diffusion_2d: a non-empty list "
     "of integers >= 2, got [True]"),
    ('[[group]]\nfields = ["constant"]\nmethods = ["cg"]\n',
     "suite file 'f.toml', line 1: group.[1].sizes: required for diffusion_2d: a non-empty list "
     "of integers >= 2, got None"),
    ('[[group]]\nproblem = "pyamg"\nsizes = [8]\nfields = ["airfoil"]\nmethods = ["cg"]\n',
     "suite file 'f.toml', line 3: group.[1].sizes: pyamg has fixed matrices; its size is N, "
     "not a parameter"),
    ('[[group]]\nsizes = [8]\nfields = []\nmethods = ["cg"]\n',
     "suite file 'f.toml', line 3: group.[1].fields: required: a non-empty list of field labels"),
    ('[[group]]\nsizes = [8]\nfields = [1]\nmethods = ["cg"]\n',
     "suite file 'f.toml', line 3: group.[1].fields: required: a non-empty list of field labels"),
    ('[fields.mine]\nfamily = "jump"\n[[group]]\nsizes = [8]\nfields = ["wavy"]\n'
     'methods = ["cg"]\n',
     "suite file 'f.toml', line 5: group.[1].fields: unknown field 'wavy' for problem "
     "'diffusion_2d'; expected one of ['constant', 'jump1e2', 'lognormal1e2', 'lognormal1e4', "
     "'binary1e4', 'checkerboard1e4', 'mine'] or \"all\""),
    ('[[group]]\nsizes = [8]\nfields = ["constant"]\nmethods = "cg"\n',
     "suite file 'f.toml', line 4: group.[1].methods: required: a non-empty list of method "
     "labels, \"all\" or patterns"),
    ('[[group]]\nsizes = [8]\nfields = ["constant"]\nmethods = ["cg"]\nranks = [0]\n',
     "suite file 'f.toml', line 5: group.[1].ranks: must be a non-empty list of integers >= 1, "
     "got [0]"),
    ('[[group]]\nsizes = [8]\nfields = ["constant"]\nmethods = ["cg"]\nranks = []\n',
     "suite file 'f.toml', line 5: group.[1].ranks: must be a non-empty list of integers >= 1, "
     "got []"),
    ('[[group]]\nsizes = [8]\nfields = ["constant"]\nmethods = ["q*"]\n',
     "suite file 'f.toml', line 4: group.[1].methods: method pattern 'q*' matches no method"),
    ('[[group]]\nproblem = 5\n', None),
]


@pytest.mark.parametrize("text, msg", ERRORS)
def test_suite_errors_exactly(text, msg):
    with pytest.raises(SuiteError) as e:
        _suite(text)
    if msg is not None:
        assert str(e.value).startswith(msg), str(e.value)
    assert isinstance(e.value, ValueError)


def test_suite_toml_error():
    with pytest.raises(SuiteError) as e:
        _suite("[[group]\n")
    assert str(e.value).startswith("suite file 'f.toml': not valid TOML: ")


def test_line_of():
    text = ('description = "x"\nrtol = 0.5\n\n[fields.a]\nfamily = "jump"\n\n[methods."b"]\n'
            'base = "cg"\n[[group]]\nsizes = [8]\n[[ group ]]\nfields = ["c"]\n')
    lo = cases._line_of
    assert lo(text, ()) is None
    assert lo(text, ("rtol",)) == 2 and lo(text, ("description",)) == 1
    assert lo(text, ("nothere",)) is None
    assert lo(text, ("fields", "a")) == 4 and lo(text, ("fields", "a", "family")) == 5
    assert lo(text, ("fields", "a", "zz")) == 4
    assert lo(text, ("fields", "q")) is None
    assert lo(text, ("methods", "b", "base")) == 8
    assert lo(text, ("group", 0)) == 9 and lo(text, ("group", 0, "sizes")) == 10
    assert lo(text, ("group", 1, "fields")) == 12 and lo(text, ("group", 1, "sizes")) == 11
    assert lo(text, ("group", 2)) is None
    assert lo(text, ("group", 0, "fields")) == 9  # its own header, not group 2's line 12
    late = "[[group]]\nsizes = [8]\n"
    assert lo(late, ("sizes",)) is None  # top-level keys stop at the first table
    assert lo("a = 1\n", ("b",)) is None
    e = cases._err("'w'", text, ("group", 1, "fields"), "bad")
    assert isinstance(e, SuiteError) and str(e) == "suite file 'w', line 12: group.[2].fields: bad"
    assert str(cases._err("'w'", text, ("zz",), "m")) == "suite file 'w': zz: m"


def test_int_and_str_lists():
    assert cases._int_list([2, 3], 2) and not cases._int_list([1], 2)
    assert not cases._int_list([], 1) and not cases._int_list([True], 1)
    assert not cases._int_list("ab", 1) and not cases._int_list([2.0], 1)
    assert cases._str_list(["a"]) and not cases._str_list([]) and not cases._str_list([1])
    assert not cases._str_list("a")


def test_load_suite_and_filters(tmp_path):
    for name in cases.BUILTIN_SUITES:
        assert cases.load_suite(name).name == name
    assert cases.get_suite("quick") is cases.get_suite("quick")
    with pytest.raises(ValueError) as e:
        cases.load_suite("nope")
    assert str(e.value) == (f"unknown suite 'nope'; expected one of {list(cases.BUILTIN_SUITES)} "
                            "or a path to a .toml suite file")
    with pytest.raises(ValueError) as e:
        cases.load_suite(tmp_path / "none.toml")
    assert str(e.value) == f"suite file {str(tmp_path / 'none.toml')!r} does not exist"
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match=r"cannot be read: "):
        cases.load_suite(bad)
    f = tmp_path / "my suite-1.toml"
    f.write_text(G)
    s = cases.load_suite(f)
    assert s.name == "my_suite_1" and s.path == repr(str(f))
    assert cases._stem_label(tmp_path / "---.toml") == "___"
    assert cases._stem_label(tmp_path / ".toml") == ".toml"
    assert cases._stem_label(Path("")) == "suite" and cases._stem_label(Path("My-S.toml")) == "My_S"
    assert cases.load_suite("quick").path == "npo/suites/quick.toml"
    got = cases.cases(s, sizes=[16], fields=["jump1e2"], methods=["jacobi"])
    assert [c.id for c in got] == ["n16-jump1e2-jacobi"]
    assert [c.id for c in cases.cases(s, sizes=["8"])][:1] == ["n8-constant-cg"]
    for kw, msg in (({"sizes": [9]}, "grid size 9 is not in suite 'my_suite_1' (sizes [8, 16])"),
                    ({"fields": ["wavy"]}, "unknown field 'wavy'; expected one of ['constant', "
                                           "'jump1e2']"),
                    ({"methods": ["ilu"]}, "unknown method 'ilu'; expected one of ['cg', "
                                           "'jacobi']")):
        with pytest.raises(ValueError) as e:
            cases.cases(s, **kw)
        assert str(e.value) == msg
    assert len(cases.cases(s)) == 8 and cases.skipped(s) == []
    tor = cases.cases(s, device="torch:cpu")
    assert len(tor) == 8 and {c.device for c in tor} == {"torch:cpu"}
    sk = cases.skipped(s, device="cuda:3", methods=["cg"], sizes=[8], fields=["constant"])
    assert [(c.id, why) for c, why in sk] == []
    n = _suite('[[group]]\nproblem = "poisson_3d"\nsizes = [4]\nfields = ["constant"]\n'
               'methods = ["ilu0", "cg"]\n')
    assert [c.id for c in cases.cases(n)] == ["poisson_3d-n4-constant-cg"]
    assert [(c.id, why) for c, why in cases.skipped(n)] == [
        ("poisson_3d-n4-constant-ilu0", "ilu0 is the D-ILU form for 5-point stencils on an n x n "
                                        "grid; poisson_3d is not one")]
    assert [c.id for c in cases.cases(n, include_skipped=True)] == [
        "poisson_3d-n4-constant-ilu0", "poisson_3d-n4-constant-cg"]


@pytest.mark.parametrize("text, msg", [
    ("fields = 3\n" + G, "suite file 'f.toml', line 1: fields: must be a table of "
                          "[fields.<label>] tables"),
    ("methods = 3\n" + G, "suite file 'f.toml', line 1: methods: must be a table of "
                           "[methods.<label>] tables"),
    ("group = [1]\n", "suite file 'f.toml', line 1: group: must be an array of [[group]] "
                      "tables"),
])
def test_non_table_sections_are_suite_errors(text, msg):
    # found by mutation testing: these raised a bare AttributeError/TypeError
    with pytest.raises(SuiteError) as e:
        _suite(text)
    assert str(e.value) == msg


def test_load_object_splits_at_the_first_colon():
    with pytest.raises(ValueError) as e:
        methods._load_object("npo:precond:x", "w")
    assert str(e.value) == "w 'npo:precond:x': 'npo' has no attribute 'precond:x'"


def test_plain_labels_with_x_are_not_patterns():
    with pytest.raises(ValueError) as e:
        select_methods(["NoSuchX"])
    assert str(e.value).startswith("unknown method 'NoSuchX'; expected one of ")


def test_entry_point_refs_without_installed_metadata(monkeypatch):
    monkeypatch.setattr(methods.metadata, "entry_points", lambda group: [])
    refs = methods._entry_point_refs()
    assert refs == [(r.split(":")[0].rsplit(".", 1)[-1], r) for r in methods._BUILTIN_PROVIDERS]
    assert [name for name, _ in refs][:5] == ["basic", "ilu", "amg", "nystrom", "neural"]

    class EP:
        name, value = "mine", "pkg.mod:SPECS"

    monkeypatch.setattr(methods.metadata, "entry_points",
                        lambda group: [EP()] if group == "npo_bench.methods" else [])
    refs = methods._entry_point_refs()
    assert refs[0] == ("mine", "pkg.mod:SPECS") and len(refs) == 1 + len(
        methods._BUILTIN_PROVIDERS)
    monkeypatch.undo()
    refs = methods._entry_point_refs()
    assert len({v for _, v in refs}) == len(refs)  # each provider once


def test_elasticity_builds_use_the_fields_parameters():
    k = get_kind("elasticity_2d")
    mine = k.make_field("soft", {"E": 10.0, "nu": 0.1})
    p = k.build(3, mine, 1)
    A, B = problems.elasticity_2d(3, 10.0, 0.1)
    assert (p.A != A).nnz == 0
    bare = k.build(3, Field("bare", "elasticity"), 1)  # no params: the defaults 1e5, 0.3
    assert (bare.A != problems.elasticity_2d(3)[0]).nnz == 0
    assert (bare.A != A).nnz > 0


def test_mtx_field_seed_and_labels(tmp_path):
    scipy.io.mmwrite(tmp_path / "MyMatrix.mtx", problems.poisson_2d(2))
    f = problemkinds.mtx_field(tmp_path / "MyMatrix.mtx")
    assert f == Field("MyMatrix", "file", 1.0, 0, (("path", str(tmp_path / "MyMatrix.mtx")),))
    assert f.seed == 0 and problemkinds._safe_label("AbC-9.x+y") == "AbC_9.x+y"


def test_problem_plugins_are_read_from_their_group(monkeypatch):
    extra = ProblemKind("grouped_kind", lambda *a: None, lambda n, f: {"N": n, "dim": 1})

    class EP:
        name, value = "x", "m:X"

        def load(self):
            return extra

    seen = []

    def entry_points(group=None):
        seen.append(group)
        return [EP()] if group == "npo_bench.problems" else []

    monkeypatch.setattr(problemkinds.metadata, "entry_points", entry_points)
    problemkinds.kinds.cache_clear()
    try:
        assert "grouped_kind" in problemkinds.kinds() and seen == ["npo_bench.problems"]
    finally:
        monkeypatch.undo()
        problemkinds.kinds.cache_clear()


def test_as_specs_never_calls_a_class_or_a_signatureless_callable_wrongly():
    class Boom:
        def __init__(self):
            raise RuntimeError("instantiated")

    with pytest.raises(ValueError, match="got type$"):
        methods._as_specs(Boom, "src")
    spec = MethodSpec("sig_less", Fac)

    class NoSignature:
        @property
        def __signature__(self):
            raise ValueError("no signature")

        def __call__(self):
            return spec

    got = methods._as_specs(NoSignature(), "src")
    assert [s.label for s in got] == ["sig_less"] and got[0].source == "src"


def test_missing_key_of_an_empty_group_names_its_own_line():
    text = '[[group]]\n[[group]]\nsizes = [8]\nfields = ["constant"]\nmethods = ["cg"]\n'
    with pytest.raises(SuiteError) as e:
        _suite(text)
    assert str(e.value).startswith("suite file 'f.toml', line 1: group.[1].sizes: ")


def test_all_fields_after_others_and_small_sizes(tmp_path, monkeypatch):
    s = _suite('[[group]]\nsizes = [2]\nfields = ["jump1e2", "all"]\nmethods = ["cg"]\n')
    assert s.sizes == (2,)
    assert [f.label for f in s.groups[0].fields] == ["jump1e2", "constant", "lognormal1e2",
                                                     "lognormal1e4", "binary1e4",
                                                     "checkerboard1e4"]
    d = tmp_path / "suites"
    d.mkdir()
    scipy.io.mmwrite(d / "m.mtx", problems.poisson_2d(3))
    (d / "rel.toml").write_text('[fields.f]\nproblem = "mtx"\npath = "m.mtx"\n'
                                '[[group]]\nproblem = "mtx"\nfields = ["f"]\nmethods = ["cg"]\n')
    monkeypatch.chdir(tmp_path)
    s = cases.load_suite(d / "rel.toml")
    assert s.groups[0].fields[0].param("path") == str((d / "m.mtx").resolve())


def test_field_checks_and_pyamg_builds(monkeypatch):
    k = get_kind("diffusion_2d")
    with pytest.raises(ValueError) as e:
        k.make_field("x", {"family": "lognormal", "seed": -1})
    assert str(e.value) == "field 'x': seed must be a non-negative integer, got -1"
    ke = get_kind("elasticity_2d")
    assert ke.make_field("soft", {"E": 0.5}).params == (("E", 0.5), ("nu", 0.3))
    for kind, spec in (("elasticity_2d", {"zz": 1}), ("mtx", {"path": "x.mtx", "zz": 1})):
        with pytest.raises(ValueError) as e:
            get_kind(kind).make_field("f", dict(spec))
        assert str(e.value) == "field 'f': unknown key(s) ['zz']"
    kp = get_kind("pyamg")
    p = kp.build(0, kp.fields["bar"], 3)
    np.testing.assert_array_equal(p.b, problems.normal_rhs(600, 3))
    A = problems.poisson_2d(3)
    B2 = np.ones((9, 2))
    monkeypatch.setattr(problemkinds, "_example", lambda name: (A, B2))
    assert kp.build(0, kp.fields["bar"], 3).meta["near_nullspace"] is B2


def test_cases_default_to_the_quick_suite():
    assert [c.id for c in cases.cases()] == [c.id for c in cases.cases("quick")]
