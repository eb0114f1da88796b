"""The problem protocol and the kinds of problem a suite can name.

A :class:`Problem` is what a case solves: a name, the matrix A, the
right-hand side b, and metadata (dimension, grid shape, stencil, the
near-null-space for smoothed aggregation, where b came from). A
:class:`ProblemKind` builds problems from a size and a :class:`Field` (the
variant: a coefficient field, an anisotropy, an example name, a file).

Built-in kinds: ``diffusion_2d`` (the default: :func:`npo.problems.diffusion_2d`
with its coefficient fields), ``poisson_3d``, ``aniso_2d`` (rotated
anisotropic diffusion), ``elasticity_2d``, ``pyamg`` (PyAMG's shipped SPD
matrices) and ``mtx`` (MatrixMarket files). Third-party kinds register
through the entry-point group ``npo_bench.problems`` (an object, a list of
them, or a callable returning either).

:meth:`ProblemKind.describe` tells a method's skip rules what the problem is
(dimension, grid, stencil, N) *without* building it, so the catalogue never
builds a matrix to decide what to skip.

>>> k = get_kind("diffusion_2d")
>>> k.describe(32, k.fields["jump1e2"])["N"]
1024
>>> p = k.build(4, k.fields["constant"], 42)
>>> p.name, p.A.shape, p.meta["rhs"]
('diffusion_2d', (16, 16), 'grf(seed=42)')
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np

from npo import problems
from npo.schema import DEFAULT_PROBLEM, check_label

__all__ = [
    "ENTRY_POINT_GROUP",
    "Field",
    "Problem",
    "ProblemKind",
    "get_kind",
    "kinds",
]

ENTRY_POINT_GROUP = "npo_bench.problems"


@dataclass(frozen=True)
class Field:
    """A variant of a problem kind: coefficient family and contrast, or kind-specific params.

    ``params`` holds extra settings as sorted ``(key, value)`` pairs (for
    example ``epsilon`` and ``theta``, or a file ``path``), so a Field stays
    hashable.
    """

    label: str
    family: str
    contrast: float = 1.0
    seed: int = 0
    params: tuple = ()

    def __post_init__(self):
        check_label("field", self.label)

    @property
    def name(self) -> str:  # the coefficient family, under the name older code used
        return self.family

    def param(self, key, default=None):
        return dict(self.params).get(key, default)


@dataclass(frozen=True, eq=False)
class Problem:
    """A linear system and what is known about it (the problem protocol)."""

    name: str
    A: object
    b: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def N(self) -> int:
        return self.A.shape[0]

    @property
    def near_nullspace(self):
        """Near-null-space candidates (N x k) for smoothed aggregation, or None."""
        return self.meta.get("near_nullspace")


@dataclass(frozen=True)
class ProblemKind:
    """How to build and describe one kind of problem.

    ``build(n, field, rhs_seed)`` returns a :class:`Problem`;
    ``describe(n, field)`` returns at least ``N`` and ``dim`` (and ``grid``,
    ``stencil``, ``near_nullspace`` where they apply) without building.
    ``sized`` is False for fixed matrices (examples, files): their size
    parameter is N itself. ``check_spd`` is True for matrices that nothing
    guarantees to be positive definite (files, PyAMG's examples, plugins):
    their extreme eigenvalues are estimated before any method runs, and an
    indefinite or singular one is skipped for every method (:meth:`spd_reason`).
    """

    name: str
    build: Callable
    describe: Callable
    fields: dict = field(default_factory=dict, hash=False, compare=False)
    sized: bool = True
    description: str = ""
    check_spd: bool = True

    def spectrum(self, n: int, fld: Field):
        """The :class:`npo.krylov.Spectrum` estimate of the matrix, or None (our generators)."""
        return _spectrum(self, n, fld) if self.check_spd else None

    def spd_reason(self, n: int, fld: Field) -> str | None:
        """Why the matrix cannot be benchmarked (not positive definite), or None."""
        s = self.spectrum(n, fld)
        if s is None or s.positive_definite:
            return None
        return f"not positive definite ({s.describe()})"

    def field(self, label: str) -> Field:
        if label not in self.fields:
            raise ValueError(f"unknown field {label!r} for problem {self.name!r}; expected one "
                             f"of {list(self.fields)}")
        return self.fields[label]

    def make_field(self, label: str, spec: dict) -> Field:
        """A user-defined field of this kind from a suite file's table."""
        return _FIELD_MAKERS.get(self.name, _generic_field)(label, dict(spec))


@cache
def _spectrum(kind: ProblemKind, n: int, fld: Field):
    from npo.krylov import spectrum_estimate

    return spectrum_estimate(kind.build(n, fld, 0).A)


# --- diffusion_2d -------------------------------------------------------------------------

_DIFFUSION_FIELDS = {
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


def _grid_meta(n, dim, stencil, rhs_seed=None, **extra):
    meta = {"dim": dim, "grid": (n,) * dim, "stencil": stencil}
    if rhs_seed is not None:
        meta["rhs"] = f"grf(seed={rhs_seed})"
    meta.update(extra)
    return meta


def _diffusion_build(n, fld, rhs_seed):
    a = problems.coefficient(fld.family, n, fld.contrast, fld.seed)
    A = problems.diffusion_2d(n, a)
    return Problem(DEFAULT_PROBLEM, A, problems.grf_rhs(n, seed=rhs_seed),
                   _grid_meta(n, 2, "5pt", rhs_seed, coefficient=a))


def _diffusion_describe(n, fld):
    return {"N": n * n, "dim": 2, "grid": (n, n), "stencil": "5pt", "near_nullspace": False}


def _diffusion_field(label, spec):
    family = spec.pop("family", None)
    if family not in problems.FIELDS:
        raise ValueError(f"field {label!r}: family must be one of {sorted(problems.FIELDS)}, "
                         f"got {family!r}")
    contrast = float(spec.pop("contrast", 1.0))
    seed = int(spec.pop("seed", 0))
    _no_extra(label, spec)
    if seed < 0:
        raise ValueError(f"field {label!r}: seed must be a non-negative integer, got {seed}")
    problems.coefficient(family, 2, contrast, seed)  # validates contrast now
    return Field(label, family, contrast, seed)


# --- poisson_3d ---------------------------------------------------------------------------


def _poisson3d_build(n, fld, rhs_seed):
    A = problems.poisson_3d(n)
    meta = _grid_meta(n, 3, "7pt", rhs=f"normal(seed={rhs_seed})")
    return Problem("poisson_3d", A, problems.normal_rhs(A.shape[0], rhs_seed), meta)


def _poisson3d_describe(n, fld):
    return {"N": n**3, "dim": 3, "grid": (n, n, n), "stencil": "7pt", "near_nullspace": False}


# --- aniso_2d -----------------------------------------------------------------------------


def _aniso_build(n, fld, rhs_seed):
    A = problems.anisotropic_2d(n, fld.param("epsilon"), fld.param("theta"))
    return Problem("aniso_2d", A, problems.grf_rhs(n, seed=rhs_seed),
                   _grid_meta(n, 2, "9pt", rhs_seed, epsilon=fld.param("epsilon"),
                              theta=fld.param("theta")))


def _aniso_describe(n, fld):
    return {"N": n * n, "dim": 2, "grid": (n, n), "stencil": "9pt", "near_nullspace": False}


def _aniso_field(label, spec):
    spec.pop("family", None)
    eps = float(spec.pop("epsilon"))
    theta = float(spec.pop("theta", 0.0))
    _no_extra(label, spec)
    problems.anisotropic_2d(2, eps, theta)  # validates now
    return Field(label, "aniso", 1.0 / eps, 0, (("epsilon", eps), ("theta", theta)))


# --- elasticity_2d ------------------------------------------------------------------------


def _elasticity_build(n, fld, rhs_seed):
    A, B = problems.elasticity_2d(n, fld.param("E", 1e5), fld.param("nu", 0.3))
    meta = {"dim": 2, "grid": None, "stencil": "Q1 elasticity, 2 dof/node",
            "near_nullspace": B, "rhs": f"normal(seed={rhs_seed})"}
    return Problem("elasticity_2d", A, problems.normal_rhs(A.shape[0], rhs_seed), meta)


def _elasticity_describe(n, fld):
    return {"N": 2 * n * n, "dim": 2, "grid": None, "stencil": "elasticity",
            "near_nullspace": True}


def _elasticity_field(label, spec):
    spec.pop("family", None)
    E = float(spec.pop("E", 1e5))
    nu = float(spec.pop("nu", 0.3))
    _no_extra(label, spec)
    if not (E > 0 and 0 <= nu < 0.5):
        raise ValueError(f"field {label!r}: need E > 0 and 0 <= nu < 0.5")
    return Field(label, "elasticity", 1.0, 0, (("E", E), ("nu", nu)))


# --- pyamg examples -----------------------------------------------------------------------


@cache
def _example(name):
    A, B = problems.pyamg_example(name)
    A.data.setflags(write=False)
    return A, B


def _example_build(n, fld, rhs_seed):
    A, B = _example(fld.family)
    meta = {"dim": None, "grid": None, "stencil": "unstructured", "rhs": f"normal(seed={rhs_seed})",
            "near_nullspace": B if B is not None and B.shape[1] > 1 else None}
    return Problem("pyamg", A, problems.normal_rhs(A.shape[0], rhs_seed), meta)


_EXAMPLE_N = {"airfoil": 260, "bar": 600, "knot": 239, "local_disc_galerkin_diffusion": 966,
              "unit_cube": 125, "unit_square": 191}


def _example_describe(n, fld):
    B_modes = {"bar": True}
    return {"N": _EXAMPLE_N[fld.family], "dim": None, "grid": None, "stencil": "unstructured",
            "near_nullspace": B_modes.get(fld.family, False)}


# --- MatrixMarket files -------------------------------------------------------------------


@cache
def _mtx(path: str, rhs: str | None, rhs_seed: int):
    A = problems.read_matrix_market(path)
    if rhs:
        b = problems.read_matrix_market(rhs, vector=True)
        if b.shape != (A.shape[0],):
            raise ValueError(f"right-hand side {rhs!r} has {b.size} entries; the matrix has "
                             f"{A.shape[0]} rows")
        where = f"file:{Path(rhs).name}"
    else:
        b = problems.normal_rhs(A.shape[0], rhs_seed)
        where = f"normal(seed={rhs_seed})"
    for arr in (A.data, b):
        arr.setflags(write=False)
    return A, b, where


def _mtx_build(n, fld, rhs_seed):
    A, b, where = _mtx(fld.param("path"), fld.param("rhs"), rhs_seed)
    meta = {"dim": None, "grid": None, "stencil": "file", "rhs": where,
            "path": fld.param("path")}
    return Problem("mtx", A, b, meta)


def _mtx_header(path: str) -> int:
    import scipy.io

    try:
        rows, cols, *_ = scipy.io.mminfo(path)
    except Exception as exc:  # noqa: BLE001 - bad headers raise several types
        raise ValueError(f"MatrixMarket file {path!r}: unreadable header ({exc})") from None
    if rows != cols:
        raise ValueError(f"MatrixMarket file {path!r}: not square ({rows} x {cols})")
    return int(rows)


def _mtx_describe(n, fld):
    return {"N": _mtx_header(fld.param("path")), "dim": None, "grid": None, "stencil": "file",
            "near_nullspace": False}


def mtx_field(path, rhs=None, label: str | None = None) -> Field:
    """A Field for a MatrixMarket file (and an optional right-hand-side file).

    The matrix is read and validated here, before any case is measured, so a
    bad file costs nothing.
    """
    path = Path(path).resolve()
    problems.read_matrix_market(path)
    if rhs is not None:
        rhs = str(Path(rhs).resolve())
        problems.read_matrix_market(rhs, vector=True)
    label = label or _safe_label(path.stem)
    params = (("path", str(path)),) + ((("rhs", rhs),) if rhs else ())
    return Field(label, "file", 1.0, 0, params)


def _mtx_field(label, spec):
    spec.pop("family", None)
    path = spec.pop("path")
    rhs = spec.pop("rhs", None)
    _no_extra(label, spec)
    return mtx_field(path, rhs, label)


def _safe_label(stem: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.+]", "_", stem) or "matrix"


# --- helpers and the registry -----------------------------------------------------------------


def _no_extra(label, spec):
    if spec:
        raise ValueError(f"field {label!r}: unknown key(s) {sorted(spec)}")


def _generic_field(label, spec):
    raise ValueError(f"field {label!r}: this problem kind takes no user-defined fields")


_FIELD_MAKERS = {
    DEFAULT_PROBLEM: _diffusion_field,
    "aniso_2d": _aniso_field,
    "elasticity_2d": _elasticity_field,
    "mtx": _mtx_field,
}

BUILTIN_KINDS = (
    ProblemKind(DEFAULT_PROBLEM, _diffusion_build, _diffusion_describe, _DIFFUSION_FIELDS,
                check_spd=False,
                description="-div(a grad u), 5-point finite volumes, coefficient fields"),
    ProblemKind("poisson_3d", _poisson3d_build, _poisson3d_describe,
                {"constant": Field("constant", "constant")},
                check_spd=False,
                description="3-D Poisson, 7-point (pyamg.gallery.poisson)"),
    ProblemKind("aniso_2d", _aniso_build, _aniso_describe,
                {"eps0.001_pi6": Field("eps0.001_pi6", "aniso", 1e3, 0,
                                       (("epsilon", 1e-3), ("theta", math.pi / 6)))},
                check_spd=False,
                description="rotated anisotropic diffusion, FD 9-point "
                            "(pyamg diffusion_stencil_2d + stencil_grid)"),
    ProblemKind("elasticity_2d", _elasticity_build, _elasticity_describe,
                {"default": Field("default", "elasticity", 1.0, 0, (("E", 1e5), ("nu", 0.3)))},
                check_spd=False,
                description="2-D linear elasticity, Q1 (pyamg linear_elasticity), "
                            "rigid body modes as near-null-space"),
    ProblemKind("pyamg", _example_build, _example_describe,
                {name: Field(name, name) for name in problems.PYAMG_EXAMPLES}, sized=False,
                description="PyAMG's shipped matrices (pyamg.gallery.load_example); "
                            "unit_square is singular and is skipped"),
    ProblemKind("mtx", _mtx_build, _mtx_describe, {}, sized=False,
                description="a MatrixMarket file (--matrix, or a suite's [fields.*] path)"),
)


def _load_plugins() -> list[ProblemKind]:
    out = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is named, not a traceback
            raise ValueError(f"problem plugin {ep.name!r} ({ep.value}) failed to load: "
                             f"{type(exc).__name__}: {exc}") from None
        obj = obj() if callable(obj) and not isinstance(obj, ProblemKind) else obj
        items = [obj] if isinstance(obj, ProblemKind) else list(obj)
        for k in items:
            if not isinstance(k, ProblemKind):
                raise ValueError(f"problem plugin {ep.name!r} gave {type(k).__name__}, "
                                 "not a ProblemKind")
            out.append(k)
    return out


@cache
def kinds() -> dict[str, ProblemKind]:
    """Every problem kind: the built-in ones, then the plugins'."""
    out: dict[str, ProblemKind] = {}
    for k in (*BUILTIN_KINDS, *_load_plugins()):
        check_label("problem", k.name)
        if k.name in out:
            raise ValueError(f"problem kind {k.name!r} is registered twice")
        out[k.name] = k
    return out


def get_kind(name: str) -> ProblemKind:
    """The kind called ``name``; ValueError lists the valid ones."""
    ks = kinds()
    if name not in ks:
        raise ValueError(f"unknown problem {name!r}; expected one of {sorted(ks)}")
    return ks[name]
