"""The case catalogue: the one list of what npo-bench measures.

A case is (grid size n, coefficient field, method). The axes are below;
suites are named sub-products of them; combinations that cannot be run are
skipped *here*, with the reason, and nowhere else. The asv classes, the
pytest-benchmark tests, the CLI and the gate all read this module.

>>> [c.id for c in cases("quick")][:3]
['n32-constant-cg', 'n32-constant-jacobi', 'n32-constant-ilu']
>>> get_case("n32-constant-amg_sa").method.options
{'solver': 'sa', 'seed': 0}
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from npo.precond.ilu import ILU_SYMMETRIC

__all__ = [
    "FIELDS",
    "METHODS",
    "SIZES",
    "SUITES",
    "Case",
    "Field",
    "Method",
    "Suite",
    "cases",
    "get_case",
    "get_suite",
    "skipped",
]

RTOL = 1e-10
RHS_SEED = 42
#: Iteration cap of every solve. It bounds the cost of a method that does not
#: converge. Plain CG hits it on the hardest large cases (binary 1e4 needs
#: ~50k iterations at n = 256); the tables then show it as not converged and
#: give speed-ups against it as lower bounds.
MAXITER = 20_000
#: Cap for NPO solves: one apply is a transformer forward pass (1.6 ms at
#: n = 32, 20 ms at 128, 93 ms at 256), so 20,000 iterations would cost
#: minutes to hours. 2000 is also the report's cap for the plain-PCG negative
#: control, which stalls by design.
NPO_MAXITER = 2000
#: Largest grid an NPO runs on: the shipped models are trained at n <= 128,
#: and an apply at n = 512 costs ~0.4 s, so a 2000-iteration cap is ~15 min.
NPO_MAX_N = 256


@dataclass(frozen=True)
class Field:
    """A coefficient field: family ``name`` at ``contrast``, drawn with ``seed``."""

    label: str
    name: str
    contrast: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Method:
    """A solver: preconditioner ``precond`` (registry name, options) inside ``krylov``."""

    label: str
    precond: str
    krylov: str
    options: dict = field(default_factory=dict, hash=False, compare=False)
    description: str = ""


@dataclass(frozen=True)
class Case:
    n: int
    field: Field
    method: Method
    rtol: float = RTOL
    maxiter: int = MAXITER
    rhs_seed: int = RHS_SEED

    @property
    def id(self) -> str:
        return f"n{self.n}-{self.field.label}-{self.method.label}"

    @property
    def N(self) -> int:
        return self.n * self.n

    @property
    def skip_reason(self) -> str | None:
        return _skip_reason(self.n, self.field, self.method)

    @property
    def precond_options(self) -> dict:
        """Options for ``npo.precond.get``, including the per-field NPO checkpoint."""
        opts = dict(self.method.options)
        if self.method.precond == "npo":
            opts["checkpoint"] = npo_checkpoint(self.field)
        return opts


SIZES = (32, 64, 128, 256, 512, 1024)

FIELDS = {
    f.label: f
    for f in (
        Field("constant", "constant", 1.0),
        Field("jump1e2", "jump", 1e2),
        Field("lognormal1e2", "lognormal", 1e2),
        Field("lognormal1e4", "lognormal", 1e4),
        Field("binary1e4", "binary", 1e4),
        Field("checkerboard1e4", "checkerboard", 1e4),
    )
}

METHODS = {
    m.label: m
    for m in (
        Method("cg", "none", "pcg", {}, "plain CG"),
        Method("jacobi", "jacobi", "pcg", {}, "diagonal scaling"),
        Method("ilu", "ilu", "pcg", {}, "SuperLU spilu, default options (nonsymmetric)"),
        Method("ilu_sym", "ilu", "pcg", dict(ILU_SYMMETRIC), "spilu, symmetric setting"),
        Method("ilu0", "ilu0", "pcg", {}, "zero-fill ILU = IC(0)"),
        Method("amg_sa", "amg", "pcg", {"solver": "sa", "seed": 0}, "PyAMG smoothed aggregation V"),
        Method("amg_rs", "amg", "pcg", {"solver": "rs"}, "PyAMG Ruge-Stueben V"),
        Method("nystrom", "nystrom", "pcg", {"rank": 64, "seed": 0}, "randomized Nystrom, rank 64"),
        Method("npo", "npo", "fcg", {}, "Neural Preconditioning Operator in flexible CG"),
        Method("npo_pcg", "npo", "pcg", {}, "NPO in plain PCG: negative control"),
    )
}

#: Which shipped NPO model serves which field family.
NPO_MODELS = {"constant": "poisson", "jump": "varcoef", "lognormal": "varcoef"}

#: Memory budget for dense per-method storage (Nystrom's N x rank basis).
DENSE_BUDGET_BYTES = 64 * 2**20


def npo_checkpoint(fld: Field) -> str | None:
    return NPO_MODELS.get(fld.name)


def _skip_reason(n: int, fld: Field, method: Method) -> str | None:
    N = n * n
    if method.precond == "nystrom":
        rank = method.options.get("rank", 64)
        need = 8 * N * rank
        if need > DENSE_BUDGET_BYTES:
            return (
                f"Nystrom rank {rank} basis needs {need / 2**20:.0f} MiB at N = {N}, "
                f"over the {DENSE_BUDGET_BYTES / 2**20:.0f} MiB dense budget"
            )
    if method.label == "npo_pcg" and n > 64:
        return "negative control (NPO in plain PCG) runs at small n only"
    if method.precond == "npo" and n > NPO_MAX_N:
        return (
            f"NPO above n = {NPO_MAX_N}: models are trained at n <= 128 and one apply costs "
            "~0.4 s at n = 512, so a capped FCG solve would take ~15 min"
        )
    if method.precond == "npo":
        name = npo_checkpoint(fld)
        if name is None:
            return f"no NPO model is trained for the {fld.name} family"
        from npo.neural import shipped_models  # torch-free

        if name not in shipped_models():
            return f"NPO model {name!r} is not shipped in npo/neural/weights"
    if method.label == "ilu" and n > 128:
        return "spilu defaults are nonsymmetric and stall in PCG from n = 64; not repeated above 128"
    return None


def _case(n: int, fld: Field, method: Method) -> Case:
    maxiter = NPO_MAXITER if method.precond == "npo" else MAXITER
    return Case(n, fld, method, maxiter=maxiter)


@dataclass(frozen=True)
class Suite:
    """A named product of sizes x fields x methods."""

    name: str
    sizes: tuple[int, ...]
    fields: tuple[str, ...]
    methods: tuple[str, ...]
    description: str = ""

    def all(self) -> list[Case]:
        """Every combination, runnable or not, in itertools.product order."""
        return [
            _case(n, FIELDS[f], METHODS[m])
            for n, f, m in itertools.product(self.sizes, self.fields, self.methods)
        ]


ALL_METHODS = tuple(METHODS)

SUITES = {
    s.name: s
    for s in (
        Suite(
            "quick",
            (32, 64),
            ("constant", "jump1e2"),
            ALL_METHODS,
            "CI and the default run: small grids, every method, two fields",
        ),
        Suite(
            "standard",
            (32, 128, 512),
            ("constant", "jump1e2", "lognormal1e2", "binary1e4"),
            ALL_METHODS,
            "the honesty-table suite",
        ),
        Suite("full", SIZES, tuple(FIELDS), ALL_METHODS, "everything"),
    )
}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; expected one of {sorted(SUITES)}")
    return SUITES[name]


def _check_filter(kind: str, values, valid) -> None:
    bad = [v for v in values or () if v not in valid]
    if bad:
        raise ValueError(f"unknown {kind} {bad[0]!r}; expected one of {list(valid)}")


def cases(suite: str = "quick", *, sizes=None, fields=None, methods=None) -> list[Case]:
    """Runnable cases of ``suite``, optionally filtered, in product order."""
    s = get_suite(suite)
    _check_filter("field", fields, FIELDS)
    _check_filter("method", methods, METHODS)
    if sizes:
        for n in sizes:
            if int(n) not in s.sizes:
                raise ValueError(f"grid size {n} is not in suite {suite!r} (sizes {list(s.sizes)})")
    out = []
    for c in s.all():
        if sizes and c.n not in {int(n) for n in sizes}:
            continue
        if fields and c.field.label not in fields:
            continue
        if methods and c.method.label not in methods:
            continue
        if c.skip_reason is None:
            out.append(c)
    return out


def skipped(suite: str = "quick") -> list[tuple[Case, str]]:
    """The combinations of ``suite`` that are not run, with the reason."""
    return [(c, c.skip_reason) for c in get_suite(suite).all() if c.skip_reason is not None]


def get_case(case_id: str) -> Case:
    """Parse a case id ``n<size>-<field>-<method>`` (any size in SIZES)."""
    try:
        size, fld, meth = case_id.split("-", 2)
        n = int(size.removeprefix("n"))
    except ValueError:
        raise ValueError(f"malformed case id {case_id!r}; expected n<size>-<field>-<method>") from None
    _check_filter("field", [fld], FIELDS)
    _check_filter("method", [meth], METHODS)
    if n not in SIZES:
        raise ValueError(f"grid size {n} is not in the catalogue (sizes {list(SIZES)})")
    return _case(n, FIELDS[fld], METHODS[meth])
