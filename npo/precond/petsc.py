"""PETSc KSP as ordinary methods: CG with hypre BoomerAMG, GAMG, ICC(0), Jacobi or no PC.

Five methods (``petsc_hypre``, ``petsc_gamg``, ``petsc_icc``, ``petsc_jacobi``,
``petsc_none``) run PETSc's own conjugate gradients (KSPCG) with one of
PETSc's preconditioners, through the same protocol as every other method
(:func:`npo.measure.measure`), and on several MPI ranks (``ranks`` in a suite)
under ``mpiexec``. They need petsc4py and mpi4py (``bash .ci/petsc-setup``);
where those are missing their cases are skipped with the reason
``petsc4py not installed; see README``. Importing this module imports neither:
PETSc is loaded inside ``setup`` and the solver.

**One rank, in process.** :class:`PetscPC` (registered as ``petsc``) takes a
``pc_type`` and a dict of PETSc options. ``setup(A)`` copies the scipy CSR
matrix into a sequential AIJ Mat (once per read-only matrix: the protocol's
cached problems; the copy is A, not part of the preconditioner, and is not
repeated in timed setups -- as on P ranks, where the Mat is built before any
timing), creates a KSP of type CG with the unpreconditioned norm, configures
the PC, and runs ``KSPSetUp`` and ``KSPSetUpOnBlocks`` and the set-up of every
multigrid level smoother, so that *all* PC set-up work -- including GAMG's
coarse-grid LU, which PETSc otherwise does lazily at the first apply --
happens, and is timed, in ``setup``. ``apply`` is one ``PCApply`` on
preallocated Vecs that are pointed at the numpy arrays (``VecPlaceArray``,
no copies). The solver engine :func:`ksp_solve` runs ``KSPSolve`` on the set-up
KSP (PETSc skips ``PCSetUp`` because the operator is unchanged) with x0 = 0,
``rtol``, atol = 0, divergence tolerance 1e300 (none) and ``max_it = maxiter``:
PETSc's stopping test is then ours, ``||r_k|| <= rtol ||b||`` on the
recurrence residual. PETSc's ``KSPConvergedReason`` maps to ``converged``
(any positive reason), ``maxiter`` (``DIVERGED_MAX_IT``) or ``breakdown``
(every other negative reason: indefinite PC or matrix, NaN, PC set-up
failure); ``detail`` holds PETSc's name for it. The true residual is computed
in numpy at the end.

**Options.** Every PC keeps PETSc's defaults (PETSc 3.18: BoomerAMG V(1,1)
with Falgout coarsening, classical interpolation, strong threshold 0.25 and
hybrid symmetric Gauss-Seidel; GAMG smoothed aggregation with
Chebyshev/Jacobi smoothing and an LU coarse solve; ICC(0) with natural
ordering; point Jacobi). The options a KSP is built with -- ours (``ksp_type
cg``, ``ksp_norm_type unpreconditioned``, ``pc_type``, ``pc_hypre_type
boomeramg``, the block-Jacobi settings on P ranks) plus the method's -- are
set under a private prefix, recorded in ``info["options"]``, and removed from
PETSc's options database after set-up. An option PETSc never read (a typo, an
option of another PC) is a ValueError naming it.

**P ranks, out of process** (``case.ranks > 1``). The descriptor's runner
(:func:`mpi_run`) starts ``mpiexec -n P python -m npo.precond.petsc_worker``
(``$NPO_MPIEXEC`` replaces ``mpiexec``, e.g. ``srun`` or ``mpiexec --hostfile
hosts``, and ``$NPO_MPI_TMPDIR`` names a shared directory for the case and
record files when the ranks run on other nodes; see ``docs/cluster.md``).
Honestly stated, the matrix is *not* assembled in parallel from local
stencils: every rank builds the whole
problem of the case from its definition (the same deterministic
:func:`npo.measure.problem` as the one-rank path, so the same A and b on every
rank) and keeps its contiguous block of rows (PETSc's default split) for an
MPIAIJ Mat on ``COMM_WORLD``; nothing is scattered from rank 0. Building is
never timed, so this costs memory (the whole matrix on each rank) and start-up
time, not measured cost. The worker runs the protocol of
:func:`npo.measure.measure` with PETSc objects: SpMV (``MatMult``) samples,
set-up on fresh KSP/PC objects, ``PCApply`` on the fixed unit vector
(:func:`npo.timing.unit_vector`), solve samples; every timed region has a
barrier before and after it and counts the slowest rank (the maximum over
ranks). The true residual, and the error against the direct solve for
N <= :data:`npo.measure.DIRECT_MAX_N`, are computed on rank 0 from the
gathered solution. Rank 0 writes the record (every column of
:data:`npo.schema.RECORD_COLUMNS`, ``ranks`` = P, the PETSc and MPI library
versions added to ``versions``) as JSON; :func:`mpi_run` reads it back. Note
that the unit of cost differs: ``spmv_s`` is PETSc's ``MatMult`` on P ranks
and the protocol's scipy SpMV on one rank. ``petsc_icc`` is ICC(0) on one
rank and, as PETSc does for a parallel matrix, block Jacobi with ICC(0) on
each rank's diagonal block on P ranks; BoomerAMG and GAMG coarsen and smooth
differently on P ranks (hybrid Gauss-Seidel is Jacobi across rank
boundaries), so their iteration counts change with P. A failure in the worker
(on any rank) becomes one ValueError/RuntimeError line in the parent, and the
whole job is killed after :data:`MPI_TIMEOUT_S` seconds.

**Iterations against our pcg.** ``petsc_jacobi`` reproduces
:func:`npo.krylov.pcg` with Jacobi exactly, and ``petsc_none`` does on
well-conditioned problems; on ill-conditioned ones without a preconditioner
the counts part by up to ~2 % (771 vs 780 on jump 1e2 at n = 32): the
algorithms are the same update for update, but PETSc (Debian) calls the
reference BLAS ``ddot``/``daxpy``, and numpy/scipy OpenBLAS kernels
(SIMD partial sums, FMA), and long unpreconditioned CG amplifies the last
bits. tests/test_petsc.py shows both ways: our update sequence with PETSc's
vector kernels gives PETSc's count exactly. Which BLAS PETSc runs on is a
system setting (Debian's ``libblas.so.3`` alternative), so ``info["blas"]``
records it.

**Memory** (``nbytes``): petsc4py 3.18 exposes no memory-usage query
(``PetscMemoryGetCurrentUsage`` and friends are not wrapped), and PETSc's
``MatGetInfo`` reports ``memory`` = 0 in this build; ``nbytes`` is therefore
counted from the structures: the matrices the PC holds (coarse operators and
interpolations of GAMG, the ICC factor) at 8 bytes per value plus one index
per nonzero and the row offsets, plus the per-level work vectors and GAMG's
coarse LU (estimated: a dense factor); for BoomerAMG, whose hierarchy PETSc
cannot see, from hypre's own statistics (memory complexity: the nonzeros of
every level's operator and interpolation, including hypre's copy of A,
relative to A) -- an estimate, labelled so in ``info["nbytes_basis"]``.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from npo.krylov import SolveResult
from npo.methods import MethodSpec
from npo.precond.base import Preconditioner, register

__all__ = [
    "INSTALL_HINT",
    "METHODS",
    "MPI_TIMEOUT_S",
    "PC_TYPES",
    "PetscPC",
    "build_ksp",
    "case_spec",
    "ksp_solve",
    "mpi_run",
    "petsc",
]

PC_TYPES = ("hypre", "gamg", "icc", "jacobi", "none")
INSTALL_HINT = "petsc4py not installed; see README"
#: Seconds after which an MPI run is killed (all its ranks) and reported as an error.
MPI_TIMEOUT_S = 30 * 60
#: PETSc's divergence tolerance: effectively none (our CG has no such test).
DIVTOL = 1e300

_PREFIX = itertools.count()


def petsc():
    """The ``petsc4py.PETSc`` module, initialised once (without PETSc's signal handlers).

    PETSc does not parse ``sys.argv`` (petsc4py passes no arguments); only
    ``$PETSC_OPTIONS`` is read, and our KSPs take options under private
    prefixes only.
    """
    import petsc4py

    # a no-op once PETSc is initialised (by us, by mpi4py's importer or by a user)
    petsc4py.init(["npo-bench", "-no_signal_handler"])
    from petsc4py import PETSc

    return PETSc


def petsc_version() -> str:
    return ".".join(str(v) for v in petsc().Sys.getVersion())


# --- building a KSP ------------------------------------------------------------------------


def ksp_options(pc_type: str, options=None, ranks: int = 1) -> dict:
    """Every PETSc option (no prefix, no dash) of a method's KSP, ours first."""
    if pc_type not in PC_TYPES:
        raise ValueError(f"petsc: pc_type must be one of {list(PC_TYPES)}, got {pc_type!r}")
    full = {"ksp_type": "cg", "ksp_norm_type": "unpreconditioned"}
    if pc_type == "icc" and ranks > 1:
        # ICC has no parallel implementation in PETSc: block Jacobi, ICC(0) per block
        full.update(pc_type="bjacobi", sub_ksp_type="preonly", sub_pc_type="icc")
    else:
        full["pc_type"] = pc_type
    if pc_type == "hypre":
        full["pc_hypre_type"] = "boomeramg"
    full.update(options or {})
    return full


def _check_option_dict(options) -> dict:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"petsc: options must be a dict of PETSc options, got "
                         f"{type(options).__name__}")
    out = {}
    for k, v in options.items():
        if not isinstance(k, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", k):
            raise ValueError(f"petsc: option names are PETSc's without the dash "
                             f"(e.g. 'pc_gamg_threshold'), got {k!r}")
        if not (v is None or isinstance(v, bool | int | float | str)):
            raise ValueError(f"petsc: option {k!r} must be a number, a string, a bool or "
                             f"None, got {type(v).__name__}")
        out[k] = v
    return out


def _option_value(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_LIBPETSC = []


def _libpetsc():
    """ctypes handle of the loaded libpetsc (for PetscOptionsUsed), or None."""
    if not _LIBPETSC:
        lib = None
        try:
            with open("/proc/self/maps") as f:
                paths = {ln.split()[-1] for ln in f if "libpetsc" in ln and ".so" in ln}
            for p in sorted(paths):
                try:
                    cand = ctypes.CDLL(p)
                    cand.PetscOptionsUsed  # noqa: B018 - the symbol we need
                    lib = cand
                    break
                except (OSError, AttributeError):
                    continue
        except OSError:
            lib = None
        _LIBPETSC.append(lib)
    return _LIBPETSC[0]


def _unused(names) -> list[str]:
    """Options (full names) PETSc never read; [] when that cannot be asked."""
    lib = _libpetsc()
    if lib is None:
        return []
    out = []
    for name in names:
        flag = ctypes.c_int(0)
        if lib.PetscOptionsUsed(None, name.encode(), ctypes.byref(flag)) != 0:
            return []
        if not flag.value:
            out.append(name)
    return out


def finish_setup(ksp) -> None:
    """All set-up work now: KSPSetUp, KSPSetUpOnBlocks and every multigrid level's
    smoother (GAMG's coarse LU is otherwise factored at the first PCApply)."""
    ksp.setUp()
    ksp.setUpOnBlocks()
    pc = ksp.getPC()
    if pc.getType() in ("mg", "gamg"):
        for level in range(pc.getMGLevels()):
            s = pc.getMGSmoother(level)
            s.setUp()
            s.setUpOnBlocks()


def build_ksp(mat, pc_type: str, options=None, *, extra=None):
    """A set-up KSP (CG, unpreconditioned norm) for ``mat``; returns (ksp, options used).

    ``extra`` options are set too but not recorded (statistics printing).
    """
    PETSc = petsc()
    comm = mat.getComm()
    full = ksp_options(pc_type, _check_option_dict(options), comm.getSize())
    prefix = f"npo{next(_PREFIX)}_"
    db = PETSc.Options()
    given = {**full, **(extra or {})}
    for k, v in given.items():
        db.setValue(prefix + k, _option_value(v))
    try:
        ksp = PETSc.KSP().create(comm)
        ksp.setOptionsPrefix(prefix)
        ksp.setOperators(mat)
        ksp.setInitialGuessNonzero(False)
        ksp.setFromOptions()
        finish_setup(ksp)
        unused = _unused([prefix + k for k in full])
    finally:
        for k in given:
            db.delValue(prefix + k)
    if unused:
        names = [u[len(prefix):] for u in unused]
        ksp.destroy()
        raise ValueError(f"petsc: option(s) {names} were not used by PETSc {petsc_version()} "
                         f"(pc_type {pc_type!r}); check the names (`-help` lists them)")
    return ksp, full


def _seq_mat_fresh(A):
    PETSc = petsc()
    it = PETSc.IntType
    mat = PETSc.Mat().createAIJ(size=A.shape, csr=(A.indptr.astype(it, copy=False),
                                                   A.indices.astype(it, copy=False), A.data),
                                comm=PETSc.COMM_SELF)
    mat.assemble()
    return mat


#: Sequential Mats of read-only scipy matrices (the protocol's cached problems):
#: (data, indices, indptr, Mat), keyed by their buffers; the arrays are kept alive.
_MATS: OrderedDict = OrderedDict()
_MATS_MAX = 4


def seq_mat(A):
    """A sequential AIJ copy of the CSR matrix ``A`` (reused for read-only ``A``)."""
    if A.data.flags.writeable:  # may change under us: copy every time
        return _seq_mat_fresh(A)
    key = (A.data.ctypes.data, A.indices.ctypes.data, A.indptr.ctypes.data, A.shape, A.nnz)
    hit = _MATS.get(key)
    if hit is not None:
        _MATS.move_to_end(key)
        return hit[3]
    mat = _seq_mat_fresh(A)
    _MATS[key] = (A.data, A.indices, A.indptr, mat)
    while len(_MATS) > _MATS_MAX:
        _MATS.popitem(last=False)
    return mat


# --- facts: info and memory ----------------------------------------------------------------


def petsc_blas() -> str:
    """The BLAS library PETSc runs on (the system's, not numpy's bundled one).

    PETSc's CG iteration counts depend on it (see the module docstring), so
    ``info`` records it: Debian's ``libblas.so.3`` alternative may be the
    reference BLAS or OpenBLAS.
    """
    petsc()
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if ".so" in ln}
    except OSError:
        return "unknown"
    names = ("libblas", "libopenblas", "libmkl", "libblis", "libflexiblas", "libatlas")
    hits = sorted(os.path.realpath(p) for p in paths
                  if os.path.basename(p).startswith(names) and "site-packages" not in p)
    return "; ".join(dict.fromkeys(hits)) or "unknown"


def _index_bytes() -> int:
    return int(np.dtype(petsc().IntType).itemsize)


def _mat_bytes(mat, local: bool = True) -> int:
    """Bytes of an AIJ/SBAIJ matrix: values + column indices + row offsets."""
    PETSc = petsc()
    info = mat.getInfo(PETSc.Mat.InfoType.LOCAL if local else PETSc.Mat.InfoType.GLOBAL_SUM)
    rows = mat.getLocalSize()[0] if local else mat.getSize()[0]
    ib = _index_bytes()
    return int(info["nz_used"] * (8 + ib) + (rows + 1) * ib)


#: Work vectors per multigrid level counted in GAMG's nbytes (MG's x, b, r and
#: Chebyshev's work vectors and Jacobi diagonal; an estimate).
MG_VECTORS_PER_LEVEL = 7
#: Bytes per row of every BoomerAMG level besides its matrices: row offsets of
#: A and P, the C/F marker and three work vectors (an estimate).
HYPRE_BYTES_PER_ROW = 3 * 4 + 3 * 8


def gamg_facts(ksp) -> tuple[dict, int]:
    """(info, local nbytes) of a set-up GAMG KSP (collective on its communicator)."""
    PETSc = petsc()
    pc = ksp.getPC()
    L = pc.getMGLevels()
    nnz, rows, local_bytes = [], [], 0
    for level in range(L):
        op = pc.getMGSmoother(level).getOperators()[0]
        nnz.append(op.getInfo(PETSc.Mat.InfoType.GLOBAL_SUM)["nz_used"])
        rows.append(op.getSize()[0])
        nloc = op.getLocalSize()[0]
        if level < L - 1:  # level L-1 is A itself
            local_bytes += _mat_bytes(op)
            local_bytes += MG_VECTORS_PER_LEVEL * 8 * nloc
        else:
            local_bytes += (MG_VECTORS_PER_LEVEL - 3) * 8 * nloc
        if level > 0:
            local_bytes += _mat_bytes(pc.getMGInterpolation(level))
    coarse = pc.getMGSmoother(0).getOperators()[0]
    # the coarse LU factor (petsc4py 3.18 cannot reach the sub-KSP of the coarse
    # block Jacobi): bounded by a dense factor of the rows this rank holds
    nc = coarse.getLocalSize()[0]
    local_bytes += 8 * nc * nc
    fine = pc.getMGSmoother(L - 1)
    info = {
        "levels": int(L),
        "operator_complexity": float(sum(nnz) / nnz[-1]),
        "grid_complexity": float(sum(rows) / rows[-1]),
        "coarse_rows": int(rows[0]),
        "smoother": f"{fine.getType()}/{fine.getPC().getType()}",
        "coarse_solver": pc.getMGSmoother(0).getPC().getType(),
    }
    return info, int(local_bytes)


def icc_facts(ksp, mat) -> tuple[dict, int]:
    """(info, local nbytes) of ICC(0), or of block Jacobi + ICC(0) on P ranks.

    ICC(0) has no fill: its factor holds the upper triangle (with the
    diagonal) of the matrix -- of each rank's diagonal block in parallel --
    which is counted exactly from the matrix.
    """
    PETSc = petsc()
    pc = ksp.getPC()
    ib = _index_bytes()
    if pc.getType() == "icc":
        F = pc.getFactorMatrix()
        nz = F.getInfo(PETSc.Mat.InfoType.LOCAL)["nz_used"]
        rows = F.getSize()[0]
        info = {"factor_nnz": int(nz), "blocks": 1}
    else:  # bjacobi: one block per rank, the rank's diagonal block
        rows = mat.getLocalSize()[0]
        if mat.getComm().getSize() > 1:
            diag = mat.getDiagonalBlock()
        else:
            diag = mat
        dnz = diag.getInfo(PETSc.Mat.InfoType.LOCAL)["nz_used"]
        nz = (dnz + rows) / 2
        total = mat.getComm().tompi4py().allreduce(nz) if mat.getComm().getSize() > 1 else nz
        info = {"factor_nnz": int(total), "blocks": int(mat.getComm().getSize()),
                "sub_pc": "icc"}
    return info, int(nz * (8 + ib) + (rows + 1) * ib + 8 * rows)


_HYPRE_PATTERNS = {
    "levels": (r"Num levels\s*=\s*(\d+)", int),
    "grid_complexity": (r"grid\s*=\s*([0-9.eE+-]+)", float),
    "operator_complexity": (r"operator\s*=\s*([0-9.eE+-]+)", float),
    "memory_complexity": (r"memory\s*=\s*([0-9.eE+-]+)", float),
    "coarsening": (r"Coarsening Type\s*=\s*(.+?)\s*$", str),
    "interpolation": (r"^\s*Interpolation\s*=\s*(.+?)\s*$", str),
}


def parse_hypre_statistics(text: str) -> dict:
    """The facts of BoomerAMG's set-up statistics (``print_statistics``)."""
    out = {}
    for key, (pat, typ) in _HYPRE_PATTERNS.items():
        m = re.search(pat, text, re.MULTILINE)
        if m:
            out[key] = typ(m.group(1))
    return out


def capture_stdout(fn):
    """Run ``fn()`` with file descriptor 1 redirected; returns (result, text).

    hypre prints its statistics with C stdio, which Python's sys.stdout never
    sees.
    """
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    with tempfile.TemporaryFile() as tmp:
        libc.fflush(None)
        saved = os.dup(1)
        os.dup2(tmp.fileno(), 1)
        try:
            result = fn()
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    return result, text


def hypre_facts(mat, options, nnz: int, N: int) -> tuple[dict, int]:
    """(info, global nbytes estimate) of BoomerAMG, from one more set-up that prints
    hypre's statistics (collective; the text is read on every rank, printed by rank 0)."""
    ksp, text = capture_stdout(lambda: build_ksp(
        mat, "hypre", options, extra={"pc_hypre_boomeramg_print_statistics": 1})[0])
    ksp.destroy()
    info = parse_hypre_statistics(text)
    if "memory_complexity" not in info or "grid_complexity" not in info:
        return info, 0
    nbytes = (info["memory_complexity"] * nnz * (8 + _index_bytes())
              + info["grid_complexity"] * N * HYPRE_BYTES_PER_ROW)
    return info, int(nbytes)


NBYTES_BASIS = {
    "hypre": "estimate from BoomerAMG's memory and grid complexity (hypre's statistics)",
    "gamg": "coarse operators and interpolations counted; work vectors and coarse LU estimated",
    "icc": "ICC(0) factor counted from the matrix (no fill)",
    "jacobi": "the inverse diagonal",
    "none": "nothing",
}


def pc_facts(ksp, mat, pc_type: str, options) -> tuple[dict, int, bool]:
    """(info facts, nbytes, whether nbytes is global) of a set-up KSP (collective)."""
    if pc_type == "gamg":
        info, nb = gamg_facts(ksp)
        return info, nb, False
    if pc_type == "icc":
        info, nb = icc_facts(ksp, mat)
        return info, nb, False
    if pc_type == "hypre":
        nnz = int(mat.getInfo()["nz_used"])
        info, nb = hypre_facts(mat, options, nnz, mat.getSize()[0])
        return info, nb, True
    if pc_type == "jacobi":
        return {}, 8 * mat.getLocalSize()[0], False
    return {}, 0, False


# --- the adapter ---------------------------------------------------------------------------


@register("petsc")
class PetscPC(Preconditioner):
    """A PETSc PC inside a KSPCG (see the module docstring).

    Parameters
    ----------
    pc_type : str
        ``hypre`` (BoomerAMG), ``gamg``, ``icc``, ``jacobi`` or ``none``.
    options : dict, optional
        More PETSc options, by name without dash or prefix
        (``{"pc_gamg_threshold": 0.02}``).
    """

    def __init__(self, pc_type: str = "none", options=None):
        super().__init__()
        ksp_options(pc_type)  # validates pc_type
        self.pc_type = pc_type
        self.options = _check_option_dict(options)
        self.ksp = self.mat = self.pc = None
        self._vecs = None
        self._facts = None
        self.options_used: dict = {}

    def _setup(self, A) -> None:
        self.mat = seq_mat(A)
        self.ksp, self.options_used = build_ksp(self.mat, self.pc_type, self.options)
        self.pc = self.ksp.getPC()
        x, y = self.mat.createVecs()
        b, sol = self.mat.createVecs()
        self._vecs = (x, y, b, sol)
        self._facts = None

    def _apply(self, r):
        x, y = self._vecs[0], self._vecs[1]
        z = np.empty(self.shape[0])
        x.placeArray(r)  # petsc4py copies a read-only or non-contiguous r
        y.placeArray(z)
        try:
            self.pc.apply(x, y)
        finally:
            x.resetArray()
            y.resetArray()
        return z

    def _get_facts(self):
        if self._facts is None and self.ksp is not None:
            self._facts = pc_facts(self.ksp, self.mat, self.pc_type, self.options)
        return self._facts

    @property
    def nbytes(self) -> int:
        facts = self._get_facts()
        return 0 if facts is None else int(facts[1])

    @property
    def info(self) -> dict:
        facts = self._get_facts()
        if facts is None:
            return {}
        return {
            "pc_type": self.pc_type,
            "petsc": petsc_version(),
            "ranks": 1,
            "options": dict(self.options_used),
            "blas": petsc_blas(),
            **facts[0],
            "nbytes_basis": NBYTES_BASIS[self.pc_type],
        }

    def __repr__(self) -> str:
        if not self.is_setup:
            return f"PetscPC({self.pc_type}, not set up)"
        return f"PetscPC({self.pc_type}, N={self.shape[0]})"


# --- the solver engine ---------------------------------------------------------------------


def _reason_names() -> dict[int, str]:
    R = petsc().KSP.ConvergedReason
    names: dict[int, str] = {}
    for name in sorted(vars(R)):
        if name.startswith(("CONVERGED_", "DIVERGED_")) and not name.endswith("_NORMAL"):
            names.setdefault(int(getattr(R, name)), name)
    return names


def map_reason(code: int) -> tuple[str, str]:
    """PETSc's KSPConvergedReason -> (our reason, PETSc's name)."""
    R = petsc().KSP.ConvergedReason
    name = _reason_names().get(int(code), f"KSP reason {int(code)}")
    if code > 0:
        return "converged", name
    if code == R.DIVERGED_MAX_IT:
        return "maxiter", name
    return "breakdown", name


def run_ksp(ksp, bvec, xvec, *, rtol: float, maxiter: int):
    """KSPSolve with our stopping test; returns (iterations, reason code, history)."""
    if not (np.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be a positive finite number, got {rtol!r}")
    if int(maxiter) < 1:
        raise ValueError(f"ksp_solve: maxiter must be >= 1, got {maxiter!r}")
    ksp.setTolerances(rtol=float(rtol), atol=0.0, divtol=DIVTOL, max_it=int(maxiter))
    ksp.setInitialGuessNonzero(False)
    ksp.setConvergenceHistory(length=int(maxiter) + 1, reset=True)
    ksp.solve(bvec, xvec)
    return (int(ksp.getIterationNumber()), int(ksp.getConvergedReason()),
            np.array(ksp.getConvergenceHistory(), dtype=float))


def pc_applies(iterations: int, reason: str) -> int:
    """PCApply calls KSPCG makes: one before the loop, one per unconverged iteration."""
    if iterations == 0:
        return 0 if reason == "converged" else 1
    return iterations if reason in ("converged", "breakdown") else iterations + 1


def ksp_solve(A, b, M, *, rtol: float = 1e-10, maxiter: int | None = None) -> SolveResult:
    """Solve ``A x = b`` with PETSc's KSPCG and the set-up :class:`PetscPC` ``M``.

    x0 = 0; stops when ``||r_k|| <= rtol ||b||`` on the recurrence residual
    (unpreconditioned norm, atol 0, no divergence test); the PC is not set up
    again. ``residuals`` is PETSc's residual history relative to ``||b||``.
    """
    if not isinstance(M, PetscPC) or not M.is_setup:
        raise ValueError("ksp_solve needs a set-up PETSc preconditioner "
                         f"(npo.precond.petsc.PetscPC), got {M!r}")
    if A.shape != M.shape:
        raise ValueError(f"ksp_solve: A has shape {A.shape}, the preconditioner was set up "
                         f"for {M.shape}")
    N = M.shape[0]
    maxiter = 10 * N if maxiter is None else int(maxiter)
    b = np.asarray(b, dtype=float).reshape(-1)
    if b.shape != (N,):
        raise ValueError(f"b has shape {b.shape}, expected ({N},)")
    if not np.all(np.isfinite(b)):
        raise ValueError("b contains NaN or Inf")
    bnorm = float(np.linalg.norm(b))
    if bnorm == 0.0:
        return SolveResult(np.zeros(N), 0, True, "converged", np.array([0.0]), 0, 0.0,
                           "ksp_cg", "b = 0")
    _, _, bvec, xvec = M._vecs
    bvec.getArray()[:] = b
    its, code, hist = run_ksp(M.ksp, bvec, xvec, rtol=rtol, maxiter=maxiter)
    x = xvec.getArray().copy()
    reason, name = map_reason(code)
    if reason == "breakdown" and not np.all(np.isfinite(x)):
        x = np.zeros(N)
    rel = hist / hist[0] if hist.size and hist[0] > 0 else hist / bnorm
    true_relres = float(np.linalg.norm(b - A @ x)) / bnorm
    return SolveResult(x=x, iterations=its, converged=reason == "converged", reason=reason,
                       residuals=rel, applies=pc_applies(its, reason), true_relres=true_relres,
                       method="ksp_cg", detail=name)


# --- MPI runner ----------------------------------------------------------------------------


def case_spec(case) -> dict:
    """What the worker needs to rebuild ``case`` (JSON): problem, field, method, tolerances."""
    f = case.field
    return {
        "id": case.id,
        "problem": case.problem,
        "n": int(case.n),
        "field": {"label": f.label, "family": f.family, "contrast": f.contrast,
                  "seed": f.seed, "params": [list(p) for p in f.params]},
        "method": {"label": case.method.label, "options": dict(case.method.case_options(case)),
                   "maxiter": int(case.maxiter), "description": case.method.description},
        "rtol": float(case.rtol),
        "rhs_seed": int(case.rhs_seed),
        "ranks": int(case.ranks),
        "device": case.device,
    }


def launcher(ranks: int, threads: int = 1) -> list[str]:
    """``$NPO_MPIEXEC`` (shell words) or ``mpiexec``, then ``-n P``."""
    custom = os.environ.get("NPO_MPIEXEC", "").strip()
    cmd = shlex.split(custom) if custom else ["mpiexec"]
    if not custom and threads > 1:
        cmd += ["--bind-to", "none"]  # one core per rank is the default binding
    return [*cmd, "-n", str(int(ranks))]


def _kill_group(proc) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _one_line(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def mpi_run(case, *, suite: str = "", source: str = "cli", threads: int = 1, repeats: int = 5,
            filter: str = "", timeout: float | None = None) -> dict:
    """Measure ``case`` on ``case.ranks`` MPI ranks (the runner of the petsc methods).

    Runs :mod:`npo.precond.petsc_worker` under the launcher and returns rank
    0's record. Errors are one ValueError (bad input) or RuntimeError line.
    """
    from npo.schema import RECORD_COLUMNS

    timeout = MPI_TIMEOUT_S if timeout is None else float(timeout)
    cmd0 = launcher(case.ranks, threads)
    if shutil.which(cmd0[0]) is None:
        raise RuntimeError(f"{case.id}: MPI launcher {cmd0[0]!r} not found (run "
                           "`bash .ci/petsc-setup`, or set NPO_MPIEXEC; see docs/cluster.md)")
    # the case and the record pass through files: on several nodes this
    # directory must be on a shared file system ($NPO_MPI_TMPDIR)
    shared = os.environ.get("NPO_MPI_TMPDIR") or None
    with tempfile.TemporaryDirectory(prefix="npo-petsc-", dir=shared) as tmp:
        spec_path = Path(tmp) / "case.json"
        out_path = Path(tmp) / "record.json"
        spec = {**case_spec(case), "suite": suite, "source": source, "threads": int(threads),
                "repeats": int(repeats), "filter": filter}
        spec_path.write_text(json.dumps(spec))
        cmd = [*cmd0, sys.executable, "-m", "npo.precond.petsc_worker", str(spec_path),
               str(out_path)]
        envv = dict(os.environ)
        for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            envv[v] = str(int(threads))
        root = str(Path(__file__).resolve().parents[2])
        envv["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, envv.get("PYTHONPATH", "")) if p)
        if os.geteuid() == 0:  # Open MPI refuses root without both
            envv.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
            envv.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        proc = subprocess.Popen(cmd, env=envv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise RuntimeError(f"{case.id}: the {case.ranks}-rank run did not finish in "
                               f"{timeout:g} s and was killed") from None
        except BaseException:
            _kill_group(proc)
            raise
        errors = sorted(Path(tmp).glob("record.json.error.*"),
                        key=lambda p: int(p.name.rsplit(".", 1)[1]))
        if errors:
            try:
                e = json.loads(errors[0].read_text())
            except (OSError, ValueError):
                e = {"type": "RuntimeError", "message": errors[0].read_text(errors="replace")}
            exc = ValueError if e.get("type") == "ValueError" else RuntimeError
            raise exc(_one_line(f"{case.id} on {case.ranks} ranks: {e.get('message', '')}"))
        if proc.returncode != 0 or not out_path.is_file():
            tail = [ln for ln in (err or out or "").splitlines() if ln.strip()]
            raise RuntimeError(_one_line(
                f"{case.id}: {' '.join(cmd0)} exited with code {proc.returncode}"
                + (f": {tail[-1]}" if tail else "")))
        try:
            rec = json.loads(out_path.read_text())
        except ValueError as exc:
            raise RuntimeError(f"{case.id}: the worker's record is not JSON ({exc})") from None
    if list(rec) != RECORD_COLUMNS:
        missing = sorted(set(RECORD_COLUMNS) - set(rec))
        raise RuntimeError(f"{case.id}: the worker's record does not follow the schema "
                           f"(missing {missing})")
    return rec


def _skip(case) -> str | None:
    if case.ranks <= 1:
        return None
    if os.environ.get("NPO_MPIEXEC", "").strip():
        return None
    if shutil.which("mpiexec") is None:
        return "mpiexec not found (bash .ci/petsc-setup)"
    from npo.env import cores as local_cores

    cores = local_cores()
    if case.ranks > cores:
        return (f"{case.ranks} ranks need {case.ranks} cores, this machine has {cores} "
                "(set NPO_MPIEXEC to run across nodes: docs/cluster.md)")
    return None


def release() -> None:
    """Destroy the PETSc objects Python has dropped (the methods' ``release``).

    petsc4py (3.18 on) does not destroy an object whose last Python reference goes: it
    hands it to PETSc's garbage, to be destroyed by ``garbage_cleanup``. Without this
    every setup's KSP/PC hierarchy stayed in memory (at 1024^2, ~0.3-1.5 GB a setup:
    the PETSc suite was killed out of memory at 24 GB). Only this process's objects
    (``COMM_SELF``); a no-op when petsc4py was never imported.
    """
    mod = sys.modules.get("petsc4py.PETSc")
    if mod is not None and hasattr(mod, "garbage_cleanup"):
        mod.garbage_cleanup(mod.COMM_SELF)


def _spec(label, pc_type, description, options=None) -> MethodSpec:
    return MethodSpec(
        label, PetscPC, {"pc_type": pc_type, "options": dict(options or {})},
        krylov="ksp_cg", solver=ksp_solve, requires=("petsc4py", "mpi4py"),
        install_hint=INSTALL_HINT, mpi=True, runner=mpi_run, skip=_skip, release=release,
        # opt-in (by name or "petsc_*"): "all" in the built-in suites stays as it is
        default=False, description=description)


METHODS = [
    _spec("petsc_hypre", "hypre",
          "PETSc KSPCG + hypre BoomerAMG V(1,1), PETSc's defaults (Falgout coarsening, "
          "classical interpolation, strong threshold 0.25, hybrid symmetric Gauss-Seidel)"),
    _spec("petsc_gamg", "gamg",
          "PETSc KSPCG + GAMG smoothed aggregation, PETSc's defaults (Chebyshev/Jacobi "
          "smoothing, LU on the coarsest grid)"),
    _spec("petsc_icc", "icc",
          "PETSc KSPCG + ICC(0) (natural ordering); on P ranks block Jacobi with ICC(0) on "
          "each rank's diagonal block, as PETSc does"),
    _spec("petsc_jacobi", "jacobi", "PETSc KSPCG + point Jacobi"),
    _spec("petsc_none", "none", "PETSc KSPCG without preconditioner (PCNONE)"),
]
