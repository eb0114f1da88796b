"""The tidy record schema, metric directions, case ids and the protocol version.

This module is on the ground floor: it imports nothing from ``npo``. Every
source (CLI runs, asv, pytest-benchmark) becomes rows with
:data:`RECORD_COLUMNS`; every report and the gate read only these names.

**Protocol version.** :data:`PROTOCOL_VERSION` names the measurement
protocol (how a case is built, what is timed and how). Every record carries
it and every asv benchmark uses it as its ``version``; a change of protocol
is a discontinuity in history, never a regression.

**Directions.** Every metric says whether lower or higher is better
(:data:`METRICS`); history, gate and plots read the direction from here.

**Case ids.** One pair, :func:`case_id` / :func:`parse_case_id`:
``n32-constant-cg`` for the default problem (2-D diffusion), and
``<problem>-n<size>-<variant>-<method>`` for every other one; a case run on
P > 1 MPI ranks has ``p<P>`` after the size (``n1024p2-constant-petsc_hypre``).
Labels use ``[A-Za-z0-9_.+]`` only, so ``-`` separates the parts
unambiguously.

>>> case_id("diffusion_2d", 32, "constant", "cg")
'n32-constant-cg'
>>> parse_case_id("poisson_3d-n16-constant-amg_sa")
CaseKey(problem='poisson_3d', n=16, field='constant', method='amg_sa', ranks=1)
>>> case_id("diffusion_2d", 1024, "constant", "petsc_hypre", ranks=2)
'n1024p2-constant-petsc_hypre'
>>> direction("iterations"), direction("mm_fraction")
('lower', 'higher')
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "DEFAULT_PROBLEM",
    "DTYPES",
    "METRICS",
    "PROTOCOL_VERSION",
    "RECORD_COLUMNS",
    "REQUIRED_COLUMNS",
    "SAMPLE_COLUMNS",
    "CaseKey",
    "Metric",
    "case_id",
    "check_label",
    "decode_samples",
    "direction",
    "encode_samples",
    "harness_outcome",
    "parse_case_id",
]

#: Version of the measurement protocol (npo.measure). Version 1 was the
#: protocol before records carried a version; 2 adds repeated samples of every
#: timed stage (verdict confidence intervals), setup in SpMV units and the
#: setup memory peak; 3 takes the samples of a section's methods (CG included)
#: in interleaved rounds, sample k of every method in round k, and each solve
#: sample with the preconditioner set up in the same round.
PROTOCOL_VERSION = 3

DEFAULT_PROBLEM = "diffusion_2d"

#: The tidy record schema, in column order (see DESIGN.md and the README).
RECORD_COLUMNS = [
    # provenance
    "protocol_version", "commit", "commit_date", "machine", "cpu", "cores", "blas", "device",
    "source", "suite", "filter", "timestamp", "threads", "ranks", "versions",
    # the case
    "case", "problem", "field", "contrast", "n", "N", "nnz", "method", "precond", "krylov",
    "rtol", "maxiter", "rhs",
    # the matrix's spectrum, estimated where the problem kind does not guarantee SPD (NaN else)
    "lambda_min", "lambda_max", "cond_est",
    # the outcome
    "iterations", "converged", "reason", "relres", "true_relres", "relerr",
    # cost (medians of repeats) and its spread
    "setup_s", "apply_s", "solve_s", "total_s", "spmv_s", "apply_per_spmv", "setup_per_spmv",
    "iter_s", "iter_per_spmv", "elapsed_s",
    "setup_samples", "solve_samples", "apply_samples",
    "setup_s_lo", "setup_s_hi", "apply_s_lo", "apply_s_hi", "solve_s_lo", "solve_s_hi",
    # the method
    "train_s", "nbytes", "setup_peak_bytes", "info",
    # the section run whose rounds this record's samples belong to ("" when measured alone):
    # records with the same value took sample k in the same round k
    "paired",
]  # fmt: skip

#: The raw timing samples of a record (JSON lists in text files; :func:`decode_samples`).
SAMPLE_COLUMNS = ["setup_samples", "solve_samples", "apply_samples"]

#: Columns a stored run must have for a row to mean anything.
REQUIRED_COLUMNS = [
    "protocol_version", "commit", "machine", "device", "timestamp", "case", "problem", "field",
    "n", "method", "krylov", "iterations", "converged", "reason",
]  # fmt: skip

#: Declared dtypes: what a loader gives back whatever the file format.
DTYPES: dict[str, str] = {
    **{c: "string" for c in (
        "commit", "commit_date", "machine", "cpu", "blas", "device", "source", "suite",
        "filter", "versions", "case", "problem", "field", "method", "precond", "krylov",
        "rhs", "reason", "setup_samples", "solve_samples", "apply_samples", "info", "paired")},
    **{c: "Int64" for c in (
        "protocol_version", "cores", "threads", "ranks", "n", "N", "nnz", "maxiter",
        "iterations", "nbytes", "setup_peak_bytes")},
    "converged": "boolean",
    "timestamp": "datetime64[ns, UTC]",
    **{c: "float64" for c in (
        "contrast", "rtol", "relres", "true_relres", "relerr", "setup_s", "apply_s", "solve_s",
        "total_s", "spmv_s", "apply_per_spmv", "setup_per_spmv", "iter_s", "iter_per_spmv",
        "elapsed_s", "setup_s_lo", "setup_s_hi", "apply_s_lo", "apply_s_hi", "solve_s_lo",
        "solve_s_hi", "train_s", "lambda_min", "lambda_max", "cond_est")},
}  # fmt: skip

assert set(DTYPES) == set(RECORD_COLUMNS), sorted(set(DTYPES) ^ set(RECORD_COLUMNS))


@dataclass(frozen=True)
class Metric:
    """A measured quantity: its unit and which way is better."""

    name: str
    unit: str
    better: str  # "lower" or "higher"
    timed: bool = False  # a wall-clock quantity: noisy, needs significance

    def __post_init__(self):
        if self.better not in ("lower", "higher"):
            raise ValueError(f"metric {self.name}: better must be 'lower' or 'higher'")

    def worse(self, old: float, new: float) -> bool:
        """True when ``new`` is worse than ``old`` in this metric's direction."""
        return new > old if self.better == "lower" else new < old


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("iterations", "iterations", "lower"),
        Metric("converged", "bool", "higher"),
        Metric("failures", "count", "lower"),
        Metric("relres", "1", "lower"),
        Metric("true_relres", "1", "lower"),
        Metric("relerr", "1", "lower"),
        Metric("setup_s", "s", "lower", timed=True),
        Metric("apply_s", "s", "lower", timed=True),
        Metric("solve_s", "s", "lower", timed=True),
        Metric("total_s", "s", "lower", timed=True),
        Metric("spmv_s", "s", "lower", timed=True),
        Metric("iter_s", "s", "lower", timed=True),
        Metric("apply_per_spmv", "SpMV", "lower", timed=True),
        Metric("setup_per_spmv", "SpMV", "lower", timed=True),
        Metric("iter_per_spmv", "SpMV", "lower", timed=True),
        Metric("train_s", "s", "lower", timed=True),
        Metric("nbytes", "bytes", "lower"),
        Metric("setup_peak_bytes", "bytes", "lower"),
        Metric("mm_fraction", "fraction of GEMM rate", "higher"),
        Metric("time_over_gemm_ideal", "ratio", "lower"),
        Metric("flops", "FLOP", "lower"),
        Metric("speedup_wall_x", "x", "higher", timed=True),
        Metric("speedup_iters_x", "x", "higher"),
    )
}


def direction(metric: str) -> str:
    """``"lower"`` or ``"higher"``: which way ``metric`` is better (KeyError if unknown)."""
    return METRICS[metric].better


def encode_samples(xs) -> str:
    """Samples in seconds as the JSON text a record stores (6 significant digits)."""
    return json.dumps([float(f"{float(x):.6g}") for x in xs])


def decode_samples(v) -> list[float]:
    """A record's samples column as floats: [] when empty, missing or unreadable."""
    if v is None or type(v).__name__ == "NAType" or (isinstance(v, float) and math.isnan(v)):
        return []
    if isinstance(v, list | tuple):
        return [float(x) for x in v]
    try:
        return [float(x) for x in json.loads(str(v))]
    except (TypeError, ValueError):
        return []


#: What the harness records as a case's reason when it measured nothing: the case ran out of
#: its memory budget, out of its time budget, or raised. Such a row has no timings.
HARNESS_OUTCOMES = ("out of memory", "timed out", "error", "killed")


def harness_outcome(reason) -> bool:
    """True when ``reason`` says the harness, not the solver, ended the case."""
    return isinstance(reason, str) and reason.startswith(HARNESS_OUTCOMES)


_LABEL = re.compile(r"^[A-Za-z0-9_.+]+$")


def check_label(kind: str, label) -> str:
    """Return ``label`` if it is a valid problem/field/method label, else ValueError.

    Labels become parts of case ids and file names: letters, digits, ``_``,
    ``.`` and ``+`` only (no ``-``, no path separators).
    """
    if not isinstance(label, str) or not _LABEL.fullmatch(label) or label in (".", ".."):
        raise ValueError(
            f"invalid {kind} label {label!r}: use letters, digits, '_', '.' or '+' only"
        )
    return label


class CaseKey(NamedTuple):
    problem: str
    n: int
    field: str
    method: str
    ranks: int = 1


_SIZE = re.compile(r"^n(\d+)(?:p(\d+))?$")


def case_id(problem: str, n: int, field: str, method: str, ranks: int = 1) -> str:
    """The one string form of a case; see the module docstring."""
    for kind, v in (("problem", problem), ("field", field), ("method", method)):
        check_label(kind, v)
    n, ranks = int(n), int(ranks)
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    size = f"n{n}" if ranks == 1 else f"n{n}p{ranks}"
    core = f"{size}-{field}-{method}"
    return core if problem == DEFAULT_PROBLEM else f"{problem}-{core}"


def parse_case_id(cid: str) -> CaseKey:
    """Inverse of :func:`case_id`; ValueError names the expected forms."""
    parts = cid.split("-") if isinstance(cid, str) else []
    if len(parts) == 3:
        problem, (size, field, method) = DEFAULT_PROBLEM, parts
    elif len(parts) == 4:
        problem, size, field, method = parts
    else:
        raise ValueError(
            f"malformed case id {cid!r}; expected n<size>-<field>-<method> or "
            "<problem>-n<size>-<field>-<method>"
        )
    m = _SIZE.fullmatch(size)
    if not m:
        raise ValueError(f"malformed case id {cid!r}: size part {size!r} is not "
                         "n<integer>[p<ranks>]")
    for kind, v in (("problem", problem), ("field", field), ("method", method)):
        check_label(kind, v)
    return CaseKey(problem, int(m.group(1)), field, method, int(m.group(2) or 1))
