"""The case catalogue: suites of problems x sizes x fields x methods, read from TOML.

A case is (problem kind, size, field, method[, MPI ranks]). Suites are TOML
files: the built-in ``quick`` (CI and the default run), ``standard`` (the
honesty table), ``full`` and ``history`` (asv over commits) ship in
``npo/suites/``; ``npo-bench run --suite path/to/file.toml`` takes a user's.
Combinations that cannot run are skipped with the reason their method's
descriptor gives (:meth:`npo.methods.MethodSpec.skip_reason`), here and
nowhere else. The asv classes, the pytest-benchmark tests, the CLI and the
gate all read this module.

A suite file::

    description = "what it is for"
    rtol = 1e-10                  # optional (default 1e-10)
    rhs_seed = 42                 # optional (default 42)

    [[group]]                     # one product; a suite has one or more
    problem = "diffusion_2d"      # optional (default); see npo.problemkinds
    sizes = [32, 64]              # grid side n (omit for fixed matrices)
    fields = ["constant", "jump1e2"]
    methods = ["all"]             # labels, "all", globs ("petsc_*"), pkg.mod:attr
    ranks = [1]                   # optional: MPI ranks (methods with mpi=true)

    [fields.aniso30]              # a field of your own
    problem = "aniso_2d"
    epsilon = 0.001
    theta = 0.5236

    [methods.amg_sa_strong]       # a method variant of your own
    base = "amg_sa"
    options = { strength = "evolution" }

Every key is checked; an error names the file, the line and the key.

>>> [c.id for c in cases("quick")][:3]
['n32-constant-cg', 'n32-constant-jacobi', 'n32-constant-ilu']
>>> dict(get_case("n32-constant-amg_sa").method.options)
{'solver': 'sa', 'seed': 0}
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from pathlib import Path

from npo.methods import MethodSpec, get_method, methods, select_methods
from npo.problemkinds import Field, get_kind
from npo.schema import DEFAULT_PROBLEM, case_id, check_label, parse_case_id

__all__ = [
    "BUILTIN_SUITES",
    "RHS_SEED",
    "RTOL",
    "Case",
    "Group",
    "Suite",
    "cases",
    "get_case",
    "get_suite",
    "load_suite",
    "skipped",
]

RTOL = 1e-10
RHS_SEED = 42
BUILTIN_SUITES = ("quick", "standard", "full", "history", "npo", "problems", "gpu", "petsc")


@dataclass(frozen=True)
class Case:
    """One measurement: ``method`` on ``problem`` at size ``n`` with ``field``."""

    n: int
    field: Field
    method: MethodSpec
    problem: str = DEFAULT_PROBLEM
    rtol: float = RTOL
    rhs_seed: int = RHS_SEED
    ranks: int = 1
    device: str = "cpu"

    @property
    def id(self) -> str:
        return case_id(self.problem, self.n, self.field.label, self.method.label, self.ranks)

    @property
    def maxiter(self) -> int:
        return int(self.method.maxiter)

    @property
    def kind(self):
        return get_kind(self.problem)

    @cached_property
    def info(self) -> dict:
        """What the problem is (N, dimension, grid, stencil), without building it."""
        return self.kind.describe(self.n, self.field)

    @property
    def N(self) -> int:
        return int(self.info["N"])

    @property
    def skip_reason(self) -> str | None:
        """Why this case is not run: the matrix is not SPD (the same reason for every method),
        or the method's descriptor says so; None when it runs."""
        return self.kind.spd_reason(self.n, self.field) or self.method.skip_reason(self)

    @property
    def precond_options(self) -> dict:
        """Options the method's adapter gets for this case (without the built problem)."""
        return self.method.case_options(self)

    def on(self, device: str) -> Case:
        """The same case on another device."""
        from dataclasses import replace

        return replace(self, device=device)


@dataclass(frozen=True)
class Group:
    """One product of a suite: sizes x fields x methods (x ranks) of one problem kind."""

    problem: str
    sizes: tuple[int, ...]
    fields: tuple[Field, ...]
    methods: tuple[MethodSpec, ...]
    ranks: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class Suite:
    """A named list of groups (from a TOML file)."""

    name: str
    groups: tuple[Group, ...]
    description: str = ""
    rtol: float = RTOL
    rhs_seed: int = RHS_SEED
    path: str = field(default="", compare=False)

    def all(self, device: str = "cpu") -> list[Case]:
        """Every combination, runnable or not, group by group in product order."""
        out = []
        for g in self.groups:
            kind = get_kind(g.problem)
            for n, f, r, m in itertools.product(g.sizes, g.fields, g.ranks, g.methods):
                if not kind.sized:  # a fixed matrix: its size parameter is N
                    n = int(kind.describe(0, f)["N"])
                out.append(Case(n, f, m, g.problem, self.rtol, self.rhs_seed, r, device))
        return out

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(n for g in self.groups for n in g.sizes))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.label for g in self.groups for f in g.fields))

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.label for g in self.groups for m in g.methods))

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.problem for g in self.groups))


# --- suite files --------------------------------------------------------------------------


class SuiteError(ValueError):
    """A suite file that does not follow the schema (names file, line and key)."""


_TOP_KEYS = {"name", "description", "rtol", "rhs_seed", "group", "fields", "methods"}
_GROUP_KEYS = {"problem", "sizes", "fields", "methods", "ranks"}
_METHOD_KEYS = {"base", "options", "description", "maxiter", "krylov"}


def _line_of(text: str, path: tuple) -> int | None:
    """Best-effort line number of ``path`` (("group", 1, "sizes"), ("fields", "x", "k"), ...)."""
    lines = text.splitlines()
    start, stop = 0, len(lines)
    head = re.compile(r"^\s*\[")
    if not path:
        return None
    if path[0] == "group" and len(path) >= 2:
        hits = [i for i, ln in enumerate(lines) if re.match(r"^\s*\[\[\s*group\s*\]\]", ln)]
        if path[1] >= len(hits):
            return None
        start = hits[path[1]]
        key = path[2] if len(path) > 2 else None
    elif path[0] in ("fields", "methods") and len(path) >= 2:
        pat = re.compile(rf"^\s*\[\s*{path[0]}\.\"?{re.escape(str(path[1]))}\"?\s*\]")
        hits = [i for i, ln in enumerate(lines) if pat.match(ln)]
        if not hits:
            return None
        start = hits[0]
        key = path[2] if len(path) > 2 else None
    else:
        key = path[0]
        stop = next((i for i, ln in enumerate(lines) if head.match(ln)), len(lines))
        start = -1
    if key is None:
        return start + 1
    for i in range(start + 1, stop):
        if head.match(lines[i]):
            break
        if re.match(rf"^\s*\"?{re.escape(str(key))}\"?\s*=", lines[i]):
            return i + 1
    return start + 1 if start >= 0 else None


def _err(where: str, text: str, path: tuple, msg: str) -> SuiteError:
    line = _line_of(text, path)
    key = ".".join(str(p) if not isinstance(p, int) else f"[{p + 1}]" for p in path)
    loc = f", line {line}" if line else ""
    return SuiteError(f"suite file {where}{loc}: {key}: {msg}")


def _expect(cond, where, text, path, msg):
    if not cond:
        raise _err(where, text, path, msg)


def _int_list(v, lo: int) -> bool:
    return isinstance(v, list) and v and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= lo for x in v)


def _str_list(v) -> bool:
    return isinstance(v, list) and v and all(isinstance(x, str) for x in v)


def parse_suite(text: str, name: str, where: str, base_dir: Path | None = None) -> Suite:
    """A :class:`Suite` from TOML ``text``; :class:`SuiteError` on any schema violation."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"suite file {where}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - _TOP_KEYS)
    _expect(not unknown, where, text, (unknown[0],) if unknown else (),
            f"unknown key (valid: {sorted(_TOP_KEYS)})")
    name = data.get("name", name)
    _expect(isinstance(name, str), where, text, ("name",), "must be a string")
    try:
        check_label("suite", name)
    except ValueError as exc:
        raise _err(where, text, ("name",), str(exc)) from None
    desc = data.get("description", "")
    _expect(isinstance(desc, str), where, text, ("description",), "must be a string")
    rtol = data.get("rtol", RTOL)
    _expect(isinstance(rtol, float | int) and not isinstance(rtol, bool) and 0 < rtol < 1,
            where, text, ("rtol",), f"must be a number in (0, 1), got {rtol!r}")
    rhs_seed = data.get("rhs_seed", RHS_SEED)
    _expect(isinstance(rhs_seed, int) and not isinstance(rhs_seed, bool) and rhs_seed >= 0,
            where, text, ("rhs_seed",), f"must be an integer >= 0, got {rhs_seed!r}")

    for key in ("fields", "methods"):
        _expect(isinstance(data.get(key, {}), dict), where, text, (key,),
                f"must be a table of [{key}.<label>] tables")
    # user fields: [fields.<label>] problem = ..., kind-specific keys
    user_fields: dict[tuple[str, str], Field] = {}
    for label, spec in (data.get("fields") or {}).items():
        path = ("fields", label)
        _expect(isinstance(spec, dict), where, text, path, "must be a table")
        try:
            check_label("field", label)
            kind = get_kind(spec.get("problem", DEFAULT_PROBLEM))
            spec = {k: v for k, v in spec.items() if k != "problem"}
            if "path" in spec and base_dir is not None:
                spec["path"] = str((base_dir / spec["path"]).resolve())
            if spec.get("rhs") and base_dir is not None:
                spec["rhs"] = str((base_dir / spec["rhs"]).resolve())
            user_fields[(kind.name, label)] = kind.make_field(label, spec)
        except KeyError as exc:
            raise _err(where, text, path, f"missing key {exc.args[0]!r}") from None
        except (ValueError, TypeError) as exc:
            raise _err(where, text, path, str(exc)) from None

    # user methods: [methods.<label>] base = ..., options = {...}
    user_methods: dict[str, MethodSpec] = {}
    for label, spec in (data.get("methods") or {}).items():
        path = ("methods", label)
        _expect(isinstance(spec, dict), where, text, path, "must be a table")
        bad = sorted(set(spec) - _METHOD_KEYS)
        _expect(not bad, where, text, (*path, bad[0]) if bad else path,
                f"unknown key (valid: {sorted(_METHOD_KEYS)})")
        _expect(isinstance(spec.get("base"), str), where, text, (*path, "base"),
                "required: the label of a registered method")
        opts = spec.get("options", {})
        _expect(isinstance(opts, dict), where, text, (*path, "options"), "must be a table")
        changes = {k: spec[k] for k in ("description", "maxiter", "krylov") if k in spec}
        try:
            if label in methods():
                raise ValueError(f"{label!r} is already a registered method; pick another label")
            user_methods[label] = get_method(spec["base"]).variant(label, opts, **changes)
        except (ValueError, TypeError) as exc:
            raise _err(where, text, path, str(exc)) from None

    groups_raw = data.get("group")
    _expect(isinstance(groups_raw, list) and groups_raw, where, text, ("group",),
            "a suite needs at least one [[group]]")
    _expect(all(isinstance(g, dict) for g in groups_raw), where, text, ("group",),
            "must be an array of [[group]] tables")
    groups = []
    for i, g in enumerate(groups_raw):
        bad = sorted(set(g) - _GROUP_KEYS)
        _expect(not bad, where, text, ("group", i, bad[0]) if bad else ("group", i),
                f"unknown key (valid: {sorted(_GROUP_KEYS)})")
        try:
            kind = get_kind(g.get("problem", DEFAULT_PROBLEM))
        except ValueError as exc:
            raise _err(where, text, ("group", i, "problem"), str(exc)) from None
        if kind.sized:
            _expect(_int_list(g.get("sizes"), 2), where, text, ("group", i, "sizes"),
                    f"required for {kind.name}: a non-empty list of integers >= 2, "
                    f"got {g.get('sizes')!r}")
            sizes = tuple(g["sizes"])
        else:
            _expect("sizes" not in g, where, text, ("group", i, "sizes"),
                    f"{kind.name} has fixed matrices; its size is N, not a parameter")
            sizes = (0,)
        _expect(_str_list(g.get("fields")), where, text, ("group", i, "fields"),
                "required: a non-empty list of field labels")
        flds = []
        for label in g["fields"]:
            if label == "all":
                flds += list(kind.fields.values())
            elif (kind.name, label) in user_fields:
                flds.append(user_fields[(kind.name, label)])
            elif label in kind.fields:
                flds.append(kind.fields[label])
            else:
                own = [lb for (k, lb) in user_fields if k == kind.name]
                raise _err(where, text, ("group", i, "fields"),
                           f"unknown field {label!r} for problem {kind.name!r}; expected one of "
                           f"{list(kind.fields) + own} or \"all\"")
        _expect(_str_list(g.get("methods")), where, text, ("group", i, "methods"),
                "required: a non-empty list of method labels, \"all\" or patterns")
        ms: dict[str, MethodSpec] = {}
        for pat in g["methods"]:
            if pat in user_methods:
                ms[pat] = user_methods[pat]
                continue
            try:
                ms.update({m.label: m for m in select_methods([pat])})
            except ValueError as exc:
                raise _err(where, text, ("group", i, "methods"), str(exc)) from None
        ranks = g.get("ranks", [1])
        _expect(_int_list(ranks, 1), where, text, ("group", i, "ranks"),
                f"must be a non-empty list of integers >= 1, got {ranks!r}")
        groups.append(Group(kind.name, sizes, tuple(dict.fromkeys(flds)), tuple(ms.values()),
                            tuple(ranks)))
    return Suite(name, tuple(groups), desc, float(rtol), int(rhs_seed), where)


def load_suite(name_or_path) -> Suite:
    """A built-in suite by name, or a suite file by path (``.toml``)."""
    s = str(name_or_path)
    if s in BUILTIN_SUITES:
        text = resources.files("npo.suites").joinpath(f"{s}.toml").read_text()
        return parse_suite(text, s, f"npo/suites/{s}.toml")
    p = Path(s)
    if p.suffix != ".toml":
        raise ValueError(f"unknown suite {s!r}; expected one of {list(BUILTIN_SUITES)} "
                         "or a path to a .toml suite file")
    if not p.is_file():
        raise ValueError(f"suite file {s!r} does not exist")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"suite file {s!r} cannot be read: {exc}") from None
    return parse_suite(text, _stem_label(p), repr(s), p.parent.resolve())


def _stem_label(p: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.+]", "_", p.stem) or "suite"


@cache
def get_suite(name) -> Suite:
    """:func:`load_suite`, cached per process."""
    return load_suite(name)


def _check_filter(kind: str, values, valid) -> None:
    bad = [v for v in values or () if v not in valid]
    if bad:
        raise ValueError(f"unknown {kind} {bad[0]!r}; expected one of {list(valid)}")


def cases(suite="quick", *, sizes=None, fields=None, methods=None, device: str = "cpu",
          include_skipped: bool = False) -> list[Case]:
    """Runnable cases of ``suite`` (a name, a path or a :class:`Suite`), optionally filtered."""
    s = suite if isinstance(suite, Suite) else get_suite(suite)
    _check_filter("field", fields, s.fields)
    _check_filter("method", methods, s.methods)
    if sizes:
        for n in sizes:
            if int(n) not in s.sizes:
                raise ValueError(f"grid size {n} is not in suite {s.name!r} (sizes {list(s.sizes)})")
    keep_n = {int(n) for n in sizes} if sizes else None
    out = []
    for c in s.all(device):
        if keep_n is not None and c.n not in keep_n:
            continue
        if fields and c.field.label not in fields:
            continue
        if methods and c.method.label not in methods:
            continue
        if include_skipped or c.skip_reason is None:
            out.append(c)
    return out


def skipped(suite="quick", *, device: str = "cpu", sizes=None, fields=None,
            methods=None) -> list[tuple[Case, str]]:
    """The combinations of ``suite`` (after the filters) that are not run, with the reason."""
    return [(c, c.skip_reason) for c in cases(suite, sizes=sizes, fields=fields, methods=methods,
                                               device=device, include_skipped=True)
            if c.skip_reason is not None]


def get_case(cid: str, *, device: str = "cpu") -> Case:
    """The case of an id (built-in fields and registered methods, any size)."""
    key = parse_case_id(cid)
    kind = get_kind(key.problem)
    fld = kind.field(key.field)
    method = get_method(key.method)
    if kind.sized and key.n < 2:
        raise ValueError(f"case {cid!r}: size must be >= 2")
    return Case(key.n, fld, method, key.problem, RTOL, RHS_SEED, key.ranks, device)
