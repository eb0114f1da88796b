"""Worker of the PETSc methods on P MPI ranks: the measurement protocol under ``mpiexec``.

Started by :func:`npo.precond.petsc.mpi_run` as::

    mpiexec -n P python -m npo.precond.petsc_worker CASE.json RECORD.json

``CASE.json`` describes the case (problem, size, field, method options,
tolerances, and the run's suite/source/threads/repeats/filter). Every rank
builds the whole problem from that definition with :func:`npo.measure.problem`
(deterministic: the same A and b on every rank), keeps its contiguous block
of rows (PETSc's default split) and creates an MPIAIJ Mat on ``COMM_WORLD``
from those rows; nothing is scattered from rank 0. Then, like
:func:`npo.measure.measure`:

1. SpMV samples: batches of ``MatMult`` lasting >= 20 ms;
2. set-up samples on fresh KSP/PC objects (after one warm-up), and the memory
   peak of one more set-up (the sum over ranks of each rank's peak);
3. ``PCApply`` samples on the fixed unit vector (:func:`npo.timing.unit_vector`,
   each rank its rows);
4. solve samples (an unconverged solve is not repeated; the iteration count
   must not change between repeats);
5. the true residual and the error against the direct solve (N <=
   :data:`npo.measure.DIRECT_MAX_N`), on rank 0 from the gathered solution.

Every timed region has a barrier before and after it and takes the maximum of
the ranks' times (the slowest rank counts); the decisions of the timing loops
(batch sizes, when the time budget is spent) use those maxima, so every rank
takes the same ones. Rank 0 writes the record as JSON (to a temporary name,
then renamed). A failure on any rank writes ``RECORD.json.error.<rank>``
(``{"type", "message"}``) and aborts the MPI job, which the parent reports
as one line.
"""

from __future__ import annotations

import gc
import json
import math
import os
import socket
import sys
import time


def _timed(comm, fn):
    """(max over ranks of fn's seconds, fn's result), with barriers around."""
    comm.Barrier()
    t0 = time.perf_counter()
    result = fn()
    t = time.perf_counter() - t0
    comm.Barrier()
    return comm.allreduce(t, op=_max()), result


def _max():
    from mpi4py import MPI

    return MPI.MAX


def per_call_samples(comm, fn, repeats: int, min_time: float) -> list[float]:
    """:func:`npo.timing.per_call_samples` across ranks: batches of >= ``min_time``."""

    def batch(number):
        t, _ = _timed(comm, lambda: [fn() for _ in range(number)])
        return t

    number = 1
    while True:
        t = batch(number)
        if t >= min_time or number >= 1_000_000:
            break
        number *= 2 if t > min_time / 10 else 10
    return [t / number] + [batch(number) / number for _ in range(repeats - 1)]


def stage_samples(comm, fn, repeats: int, *, budget: float, min_repeats: int, stop=None,
                  discard=None):
    """:func:`npo.timing.stage_samples` across ranks; ``discard(old)`` frees a result
    that is replaced (collectively, outside the timed region)."""
    samples, result = [], None
    for i in range(repeats):
        t, new = _timed(comm, fn)
        if result is not None and discard is not None:
            discard(result)
        result = new
        samples.append(t)
        if stop is not None and stop(result):
            break
        if i + 1 >= min_repeats and sum(samples) > budget:
            break
    return samples, result


def _case(spec):
    from npo.cases import Case
    from npo.methods import MethodSpec
    from npo.precond.petsc import INSTALL_HINT, PetscPC, ksp_solve
    from npo.problemkinds import Field

    f = spec["field"]
    fld = Field(f["label"], f["family"], float(f["contrast"]), int(f["seed"]),
                tuple(tuple(p) for p in f["params"]))
    m = spec["method"]
    method = MethodSpec(m["label"], PetscPC, m["options"], krylov="ksp_cg", solver=ksp_solve,
                        maxiter=int(m["maxiter"]), requires=("petsc4py", "mpi4py"),
                        install_hint=INSTALL_HINT, mpi=True, default=False,
                        description=m.get("description", ""))
    return Case(int(spec["n"]), fld, method, spec["problem"], float(spec["rtol"]),
                int(spec["rhs_seed"]), int(spec["ranks"]), spec.get("device", "cpu"))


def measure_mpi(spec: dict, comm) -> dict | None:
    """The protocol on this rank; rank 0 returns the record, the others None."""
    import numpy as np

    from npo import env, measure, timing
    from npo.precond import petsc as pp

    PETSc = pp.petsc()
    rank, size = comm.rank, comm.size
    case = _case(spec)
    if case.id != spec["id"]:
        raise RuntimeError(f"rebuilt case {case.id!r} is not {spec['id']!r}")
    if size != case.ranks:
        raise RuntimeError(f"{case.id} asks for {case.ranks} ranks, the job has {size}")
    repeats = int(spec.get("repeats", measure.STAGE_REPEATS))
    threads = int(spec.get("threads", env.DEFAULT_THREADS))
    budget, min_rep = measure.STAGE_BUDGET_S, min(repeats, measure.MIN_STAGE_SAMPLES)
    opts = case.method.case_options(case)
    pc_type, options = opts["pc_type"], opts.get("options") or {}

    with env.pinned_threads(threads):
        p = measure.problem(case)  # the whole problem, on every rank
        A, b = p.A.tocsr(), np.asarray(p.b, dtype=float)
        N = A.shape[0]
        nloc = N // size + (1 if rank < N % size else 0)
        lo = comm.exscan(nloc) or 0
        hi = lo + nloc
        it = PETSc.IntType
        rows = A[lo:hi]
        mat = PETSc.Mat().createAIJ(
            size=((nloc, N), (nloc, N)),
            csr=(rows.indptr.astype(it), rows.indices.astype(it), np.array(rows.data)),
            comm=PETSc.COMM_WORLD)
        mat.assemble()
        if mat.getOwnershipRange() != (lo, hi):
            raise RuntimeError(f"rank {rank}: PETSc owns rows {mat.getOwnershipRange()}, "
                               f"expected {(lo, hi)}")

        v, y = mat.createVecs()
        v.getArray()[:] = timing.unit_vector(N)[lo:hi]
        bvec, xvec = mat.createVecs()
        bvec.getArray()[:] = b[lo:hi]

        # 1. SpMV (MatMult), the unit of cost
        mat.mult(v, y)
        spmv = per_call_samples(comm, lambda: mat.mult(v, y), repeats, 0.02)

        # 2. set-up on fresh KSP/PC objects, after one warm-up
        def build():
            return pp.build_ksp(mat, pc_type, options)

        warm, used = build()
        warm.destroy()
        setup, (ksp, _) = stage_samples(comm, build, repeats, budget=budget,
                                        min_repeats=min_rep, discard=lambda r: r[0].destroy())
        comm.Barrier()
        (extra, _), peak = timing.peak_bytes(build)
        extra.destroy()
        peak_total = comm.allreduce(int(peak))
        pc = ksp.getPC()

        # 3. PCApply on the fixed unit vector, after two warm-ups
        pc.apply(v, y)
        pc.apply(v, y)
        apply = per_call_samples(comm, lambda: pc.apply(v, y), repeats, 0.02)

        # 4. solves
        results = []

        def once():
            its, code, hist = pp.run_ksp(ksp, bvec, xvec, rtol=case.rtol, maxiter=case.maxiter)
            if results and its != results[0][0]:
                raise RuntimeError(f"{case.id}: iteration count changed between repeats "
                                   f"({results[0][0]} vs {its}); the solve is not "
                                   "deterministic")
            results.append((its, code, hist))
            return its, code, hist

        solves, (its, code, hist) = stage_samples(
            comm, once, repeats, budget=budget, min_repeats=min_rep,
            stop=lambda r: pp.map_reason(r[1])[0] != "converged")
        reason, reason_name = pp.map_reason(code)

        # 5. the solution on rank 0: true residual, error against the direct solve
        parts = comm.gather(np.array(xvec.getArray()), root=0)

        # method facts (collective), then provenance
        facts, nb, is_global = pp.pc_facts(ksp, mat, pc_type, options)
        nbytes = nb if is_global else comm.allreduce(int(nb))
        mpi_version = _mpi_version()
        placement = comm.gather((socket.gethostname(), sorted(_affinity())), root=0)
        for obj in (pc, ksp, v, y, bvec, xvec, mat):
            obj.destroy()
        if rank != 0:
            return None
        x = np.concatenate(parts)
        if not np.all(np.isfinite(x)):
            x = np.zeros(N)
        bnorm = float(np.linalg.norm(b))
        true_relres = float(np.linalg.norm(b - A @ x)) / bnorm if bnorm else 0.0
        x_star = measure.direct_solution(case)
        relerr = (math.nan if x_star is None
                  else float(np.linalg.norm(x - x_star) / np.linalg.norm(x_star)))
        environment = env.environment(case.device)

    relres = float(hist[-1] / hist[0]) if hist.size and hist[0] > 0 else math.nan
    versions = dict(environment["versions"])
    versions["petsc"] = pp.petsc_version()
    versions["mpi"] = mpi_version
    info = {
        "pc_type": pc_type,
        "petsc": pp.petsc_version(),
        "ranks": size,
        "options": used,
        "blas": pp.petsc_blas(),
        **facts,
        "nbytes_basis": pp.NBYTES_BASIS[pc_type] + (
            "" if is_global else "; summed over ranks"),
        "spmv": "PETSc MatMult (MPIAIJ)",
        "ksp_reason": reason_name,
        "rows_per_rank": [N // size + (1 if r < N % size else 0) for r in range(size)],
        "hosts": sorted({host for host, _ in placement}),
    }
    return measure.build_record(
        case, p, environment, spmv=spmv, setup=setup, apply=apply, solves=solves,
        iterations=its, converged=reason == "converged", reason=reason, relres=relres,
        true_relres=true_relres, relerr=relerr, krylov="ksp_cg", train_s=math.nan,
        nbytes=nbytes, peak=peak_total, info=info, suite=spec.get("suite", ""),
        source=spec.get("source", "cli"), filter=spec.get("filter", ""), ranks=size,
        cores=_job_cores(placement), versions=versions)


def _affinity() -> set:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _job_cores(placement) -> int:
    """Cores the job's ranks may run on: per host, the union of the ranks' CPU sets
    (each rank alone is bound to one core by default, which is not the machine)."""
    per_host: dict[str, set] = {}
    for host, cpus in placement:
        per_host.setdefault(host, set()).update(cpus)
    return sum(len(c) for c in per_host.values())


def _mpi_version() -> str:
    from mpi4py import MPI

    lines = MPI.Get_library_version().replace("\x00", "").strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


#: PETSc objects kept alive until exit (see main)
_ANCHORS: list = []


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m npo.precond.petsc_worker CASE.json RECORD.json", file=sys.stderr)
        return 2
    spec_path, out_path = argv
    from mpi4py import MPI  # before PETSc: MPI is initialised (and finalised) by mpi4py

    comm = MPI.COMM_WORLD
    # PETSc objects on several ranks must die in step: petsc4py 3.18 defers the
    # destruction of parallel objects to a collective clean-up, and a rank
    # whose objects are all gone duplicates the communicator there (collective)
    # while another rank, whose Python cycle collector has not run yet, does
    # not -- a hang at exit. So: no automatic cycle collection, explicit
    # destruction, one collection and clean-up at the same point on every rank,
    # and anchors that keep PETSc's inner communicators alive until exit.
    gc.disable()
    try:
        from npo.precond.petsc import petsc

        PETSc = petsc()
        _ANCHORS.extend([PETSc.Vec().createMPI(1, comm=PETSc.COMM_WORLD),
                         PETSc.Vec().createSeq(1, comm=PETSc.COMM_SELF)])
        with open(spec_path) as f:
            spec = json.load(f)
        rec = measure_mpi(spec, comm)
        if comm.rank == 0:
            _write(out_path, json.dumps(rec))
        comm.Barrier()
        gc.collect()
        comm.Barrier()
        PETSc.garbage_cleanup(PETSc.COMM_WORLD)
        PETSc.garbage_cleanup(PETSc.COMM_SELF)
        comm.Barrier()
        # finalise PETSc here, in step, not in the interpreter's exit handlers
        PETSc._finalize()
        comm.Barrier()
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the parent's one line
        kind = "ValueError" if isinstance(exc, ValueError) else "RuntimeError"
        msg = f"rank {comm.rank}: {type(exc).__name__}: {exc}"
        try:
            _write(f"{out_path}.error.{comm.rank}", json.dumps({"type": kind, "message": msg}))
        finally:
            print(msg, file=sys.stderr, flush=True)
            if comm.size > 1:
                comm.Abort(1)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
