"""Method descriptors and their registry: how each method is benchmarked.

A *method* is an adapter (a preconditioner, :mod:`npo.precond.base`) plus a
:class:`MethodSpec` that says how it is benchmarked: which Krylov method runs
it (``pcg``, ``fcg``, ``auto`` from the adapter's flags, or an engine of its
own such as PETSc's KSP), the iteration cap, size limits, per-case options
(which checkpoint for which field), skip rules with their reasons, the
devices it supports, what it needs installed, and how exactly its iteration
count reproduces on another platform. Callers read the descriptor; none of
them branches on a method's name.

Descriptors are registered through the entry-point group
``npo_bench.methods``; the built-in ones too (see ``pyproject.toml``). An
entry point names a :class:`MethodSpec`, a list of them, or a callable
returning either. ``--method package.module:attr`` loads one ad hoc: ``attr``
may also be a preconditioner class or factory, which is then run with
``krylov="auto"``.

>>> spec = get_method("amg_sa")
>>> spec.krylov, spec.options["solver"]
('pcg', 'sa')
>>> get_method("nope")
Traceback (most recent call last):
...
ValueError: unknown method 'nope'; expected one of [...] or package.module:attr
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import metadata
from types import MappingProxyType

from npo.schema import check_label

__all__ = [
    "DEFAULT_MAXITER",
    "ENTRY_POINT_GROUP",
    "MethodSpec",
    "check_options",
    "get_method",
    "methods",
    "select_methods",
]

ENTRY_POINT_GROUP = "npo_bench.methods"
#: Iteration cap of every solve unless a descriptor says otherwise. It bounds
#: the cost of a method that does not converge. Plain CG hits it on the
#: hardest large cases (binary 1e4 needs ~50k iterations at n = 256); the
#: tables then show it as not converged and give speed-ups against it as
#: lower bounds.
DEFAULT_MAXITER = 20_000
#: Cross-platform iteration tolerance (absolute, relative) for the gate.
DEFAULT_ITERATION_TOLERANCE = (2, 0.02)


def check_options(factory: Callable, options: Mapping, what: str) -> None:
    """ValueError naming the valid options when ``options`` does not fit ``factory``.

    A factory that takes ``**kwargs`` may list what it accepts in an
    attribute ``accepted_options`` (a callable of the options, returning the
    valid names), as the PyAMG adapter does.
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = inspect.signature(target).parameters
    named = {k for k, p in params.items()
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and k != "self"}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        extra = getattr(factory, "accepted_options", None)
        if extra is None:
            return
        named |= set(extra(options))
    bad = sorted(set(options) - named)
    if bad:
        raise ValueError(f"unknown option(s) {bad} for {what}; valid: {sorted(named)}")


@dataclass(frozen=True)
class MethodSpec:
    """How one method is benchmarked (see the module docstring).

    Parameters
    ----------
    label : str
        Name in suites, case ids and tables.
    adapter : callable
        Preconditioner class or factory, called with the options (device ``cpu``).
    torch_adapter : callable, optional
        The same method on torch tensors, called with the options and
        ``device`` (``torch:cpu``, ``cuda[:k]``); without one the method is
        skipped on those devices, with the reason.
    options : mapping
        Fixed options for ``adapter``.
    krylov : str
        ``"pcg"``, ``"fcg"``, ``"auto"`` (pcg when the built preconditioner
        is linear and symmetric, else fcg), or the label of ``solver``.
    solver : callable, optional
        ``solver(A, b, M, rtol=, maxiter=)`` -> SolveResult, for methods with a
        Krylov engine of their own (PETSc KSP); None uses :mod:`npo.krylov`.
    maxiter : int
        Iteration cap.
    max_n, max_N : int, optional
        Size limits (grid side, unknowns); larger cases are skipped, with
        ``limit_reason`` appended to the reason.
    problems : tuple of str, optional
        Problem kinds the method can run on (None: any).
    requires : tuple of str
        Importable modules the method needs; missing ones skip its cases
        with ``install_hint`` as the reason.
    devices : tuple of str
        Device families the method supports: ``"cpu"`` (numpy), ``"torch"``
        (torch tensors on the CPU) and ``"cuda"``; the torch ones need
        ``torch_adapter``.
    mpi : bool
        Runs on several MPI ranks (cases with ``ranks > 1``).
    default : bool
        Part of ``"all"`` in suites.
    iteration_tolerance : (int, float)
        Extra iterations the gate allows against another platform's baseline:
        ``max(abs, rel * baseline)``.
    options_for : callable, optional
        ``options_for(case, problem)`` -> extra options per case (a
        checkpoint per field, the near-null-space of a problem). ``problem``
        is None when only the case is known.
    skip : callable, optional
        ``skip(case)`` -> reason or None: rules beyond the limits above.
    runner : callable, optional
        ``runner(case, **measure_kwargs)`` -> record, for cases the protocol
        cannot measure in this process (``ranks > 1``: under ``mpiexec``).
        It must follow the protocol of :func:`npo.measure.measure` and return
        a record with every column of :data:`npo.schema.RECORD_COLUMNS`.
    control : str
        Non-empty for a negative control: a method that is known not to be
        safe in its Krylov method (a nonsymmetric or nonlinear preconditioner
        in PCG), run to show what goes wrong; the text says why, and the
        honesty table marks the row.
    memory : float
        Working set of setup and apply in bytes per byte of the matrix, an
        upper estimate: with the matrix and the vectors it is the case's
        memory estimate (:func:`npo.measure.estimate_bytes`), checked
        against the memory budget before the case starts.
    release : callable, optional
        ``release()``, called after each case the protocol measured in this
        process, outside every timing, once the case's objects are dropped:
        frees what the method's library defers (PETSc's garbage of destroyed
        objects).
    """

    label: str
    adapter: Callable
    options: Mapping = field(default_factory=dict, hash=False, compare=False)
    torch_adapter: Callable | None = field(default=None, hash=False, compare=False)
    krylov: str = "pcg"
    solver: Callable | None = field(default=None, hash=False, compare=False)
    maxiter: int = DEFAULT_MAXITER
    description: str = ""
    max_n: int | None = None
    max_N: int | None = None
    limit_reason: str = ""
    problems: tuple | None = None
    requires: tuple = ()
    install_hint: str = ""
    devices: tuple = ("cpu",)
    mpi: bool = False
    default: bool = True
    iteration_tolerance: tuple = DEFAULT_ITERATION_TOLERANCE
    options_for: Callable | None = field(default=None, hash=False, compare=False)
    skip: Callable | None = field(default=None, hash=False, compare=False)
    runner: Callable | None = field(default=None, hash=False, compare=False)
    release: Callable | None = field(default=None, hash=False, compare=False)
    memory: float = 8.0
    control: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self):
        check_label("method", self.label)
        if not callable(self.adapter):
            raise ValueError(f"method {self.label!r}: adapter must be callable")
        if self.krylov not in ("pcg", "fcg", "auto") and self.solver is None:
            raise ValueError(f"method {self.label!r}: krylov {self.krylov!r} needs a solver")
        if int(self.maxiter) < 1:
            raise ValueError(f"method {self.label!r}: maxiter must be >= 1")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        check_options(self.adapter, self.options, f"method {self.label!r}")

    # -- what the catalogue asks -------------------------------------------------------
    @property
    def precond(self) -> str:
        """The adapter's registry name (or its class/function name)."""
        return getattr(self.adapter, "name", None) or getattr(self.adapter, "__name__", "?")

    def missing_requirement(self) -> str | None:
        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                return self.install_hint or f"{mod} is not installed"
        return None

    def skip_reason(self, case) -> str | None:
        """Why ``case`` cannot run with this method, or None. ``case.info`` describes it."""
        why = self.missing_requirement()
        if why:
            return why
        info = case.info
        if self.problems is not None and case.problem not in self.problems:
            return f"{self.label} runs on {', '.join(self.problems)} only, not {case.problem}"
        family = case.device.split(":")[0]
        if family not in self.devices or (family != "cpu" and self.torch_adapter is None):
            return (f"{self.label} has no {case.device} implementation (runs on "
                    f"{', '.join(d for d in self.devices if d == 'cpu' or self.torch_adapter)})")
        if case.ranks > 1 and not self.mpi:
            return f"{self.label} runs in one process (no MPI)"
        why = f": {self.limit_reason}" if self.limit_reason else ""
        if self.max_n is not None and case.n > self.max_n:
            return f"{self.label} runs at n <= {self.max_n}{why}"
        if self.max_N is not None and info["N"] > self.max_N:
            return f"{self.label} runs at N <= {self.max_N:,}{why}"
        return self.skip(case) if self.skip is not None else None

    def case_options(self, case, problem=None) -> dict:
        """Per-case defaults from ``options_for``, overridden by the fixed ``options``."""
        opts = dict(self.options_for(case, problem)) if self.options_for is not None else {}
        opts.update(self.options)
        return opts

    def make(self, case, problem=None, **extra):
        """A fresh, not yet set up preconditioner for ``case`` on ``case.device``."""
        opts = {**self.case_options(case, problem), **extra}
        factory = self.adapter
        if case.device != "cpu":
            if self.torch_adapter is None:
                raise ValueError(f"{self.label} has no {case.device} implementation")
            factory = self.torch_adapter
            opts["device"] = case.device
        check_options(factory, opts, f"method {self.label!r}")
        return factory(**opts)

    def variant(self, label: str, options: Mapping | None = None, **changes) -> MethodSpec:
        """A copy under a new label with more options (suite files' ``[methods.X] base = ...``)."""
        merged = {**self.options, **(options or {})}
        return replace(self, label=label, options=merged, **changes)


# --- the registry ------------------------------------------------------------------------------

_BUILTIN_PROVIDERS = (
    "npo.precond.basic:METHODS",
    "npo.precond.ilu:METHODS",
    "npo.precond.amg:METHODS",
    "npo.precond.nystrom:METHODS",
    "npo.precond.neural:METHODS",
    "npo.precond.multigrid:METHODS",
    "npo.precond.petsc:METHODS",
)


def _load_object(ref: str, what: str):
    mod, sep, attr = ref.partition(":")
    if not sep or not mod or not attr:
        raise ValueError(f"{what} {ref!r}: expected package.module:attr")
    try:
        obj = importlib.import_module(mod)
    except ImportError as exc:
        raise ValueError(f"{what} {ref!r}: cannot import {mod!r} ({exc})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what} {ref!r}: {mod!r} has no attribute {attr!r}") from None
    return obj


def _as_specs(obj, source: str) -> list[MethodSpec]:
    if callable(obj) and not isinstance(obj, MethodSpec) and not inspect.isclass(obj):
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            params = {}
        if not any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                   for p in params.values()):
            produced = obj()
            if isinstance(produced, MethodSpec) or _is_spec_list(produced):
                obj = produced
    if isinstance(obj, MethodSpec):
        return [replace(obj, source=source)]
    if _is_spec_list(obj):
        return [replace(s, source=source) for s in obj]
    raise ValueError(f"{source}: expected a MethodSpec, a list of them, or a callable returning "
                     f"one, got {type(obj).__name__}")


def _is_spec_list(obj) -> bool:
    return isinstance(obj, list | tuple) and all(isinstance(s, MethodSpec) for s in obj) and obj


def _entry_point_refs() -> list[tuple[str, str]]:
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    refs = [(ep.name, ep.value) for ep in eps]
    values = {v for _, v in refs}
    # running from a source tree without installed metadata: the built-ins still register
    for ref in _BUILTIN_PROVIDERS:
        if ref not in values:
            refs.append((ref.split(":")[0].rsplit(".", 1)[-1], ref))
    return refs


@cache
def methods() -> dict[str, MethodSpec]:
    """Every registered method by label, built-in ones first (in their declared order)."""
    out: dict[str, MethodSpec] = {}
    refs = _entry_point_refs()
    refs.sort(key=lambda r: (r[1] not in _BUILTIN_PROVIDERS,
                             _BUILTIN_PROVIDERS.index(r[1]) if r[1] in _BUILTIN_PROVIDERS else 0))
    for name, ref in refs:
        try:
            obj = _load_object(ref, f"method plugin {name!r}")
            specs = _as_specs(obj, f"entry point {name!r} ({ref})")
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken plugin is named, not a traceback
            raise ValueError(f"method plugin {name!r} ({ref}) failed to load: "
                             f"{type(exc).__name__}: {exc}") from None
        for s in specs:
            if s.label in out:
                raise ValueError(f"method {s.label!r} is registered twice: by "
                                 f"{out[s.label].source} and by {s.source}")
            out[s.label] = s
    return out


def get_method(label: str) -> MethodSpec:
    """The method ``label`` (registered) or ``package.module:attr`` (ad hoc)."""
    if isinstance(label, str) and ":" in label:
        return _ad_hoc(label)
    ms = methods()
    if label not in ms:
        raise ValueError(f"unknown method {label!r}; expected one of {list(ms)} "
                         "or package.module:attr")
    return ms[label]


@cache
def _ad_hoc(ref: str) -> MethodSpec:
    obj = _load_object(ref, "--method")
    if isinstance(obj, MethodSpec) or _is_spec_list(obj):
        specs = _as_specs(obj, f"--method {ref}")
        if len(specs) != 1:
            raise ValueError(f"--method {ref}: names {len(specs)} methods; name one")
        return specs[0]
    if callable(obj):
        label = ref.rsplit(":", 1)[1].rsplit(".", 1)[-1]
        return MethodSpec(label, obj, krylov="auto", description=f"ad hoc {ref}",
                          source=f"--method {ref}")
    raise ValueError(f"--method {ref}: {type(obj).__name__} is neither a MethodSpec nor callable")


def select_methods(patterns) -> list[MethodSpec]:
    """Methods matching ``patterns``: labels, ``"all"`` (every default method),
    glob patterns (``"petsc_*"``) or ``package.module:attr``; in registry order."""
    from fnmatch import fnmatchcase

    ms = methods()
    out: dict[str, MethodSpec] = {}
    for pat in patterns:
        if pat == "all":
            out.update({k: v for k, v in ms.items() if v.default})
        elif ":" in pat:
            s = get_method(pat)
            out[s.label] = s
        elif any(ch in pat for ch in "*?["):
            hit = {k: v for k, v in ms.items() if fnmatchcase(k, pat)}
            if not hit:
                raise ValueError(f"method pattern {pat!r} matches no method; registered: {list(ms)}")
            out.update(hit)
        else:
            s = get_method(pat)
            out[s.label] = s
    return list(out.values())
