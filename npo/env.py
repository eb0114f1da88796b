"""Thread pinning, provenance and the platform fingerprint.

Ground floor: imports nothing from ``npo``.

Iteration counts of long, ill-conditioned solves depend on the last bits of
the dot products, and OpenBLAS splits a large dot product differently with 1
or 2 threads (measured: 7595 vs 7572 CG iterations on lognormal 1e4 at
n = 128). Every measurement therefore runs with pinned BLAS/OpenMP/torch
thread counts (1 by default) and records the count actually in force.

Provenance of a record: the project's own commit (``unknown`` when the code
does not run from its own repository, e.g. an installed wheel inside some
other checkout), the machine name (``$NPO_MACHINE`` or the host name, one
rule everywhere), the CPU model, core count, BLAS library and kernel
(threadpoolctl) and library versions.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import sys
import warnings
from contextlib import contextmanager
from functools import cache
from importlib import metadata
from pathlib import Path

__all__ = [
    "DEFAULT_THREADS",
    "blas_info",
    "clamp_threads",
    "cpu_model",
    "environment",
    "git_commit",
    "machine_name",
    "pin_process",
    "pinned_threads",
    "platform_fingerprint",
    "threads",
    "torch_available",
]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_current = {"threads": None}

DEFAULT_THREADS = 1
PACKAGE_DIR = Path(__file__).resolve().parent


def proc_bytes(key: str, path: str = "/proc/self/status") -> int | None:
    """A ``<key>: <n> kB`` line of a Linux /proc file in bytes (None when absent)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def threads() -> int | None:
    """The thread count pinned by :func:`pinned_threads`, or None outside it."""
    return _current["threads"]


def cores() -> int:
    """CPUs this process may run on (affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def clamp_threads(k) -> int:
    """``k`` as a thread count: ValueError below 1; above the core count, a warning
    and the core count (which is what gets recorded)."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"threads must be an integer, got {k!r}")
    if k < 1:
        raise ValueError(f"threads must be >= 1, got {k}")
    c = cores()
    if k > c:
        warnings.warn(f"{k} threads requested on a machine with {c} cores; using {c}",
                      RuntimeWarning, stacklevel=2)
        return c
    return k


def _set_torch_threads(k: int) -> int | None:
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is None:
        return None
    old = torch.get_num_threads()
    torch.set_num_threads(k)
    return old


def apply_torch_threads() -> None:
    """Called by torch users right after importing torch, inside a pinned region."""
    if _current["threads"] is not None:
        _set_torch_threads(_current["threads"])


@cache
def torch_available() -> bool:
    """Whether torch can be imported (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


_process_limiter = []


def pin_process(k: int = DEFAULT_THREADS) -> int:
    """Pin BLAS/OpenMP and torch to ``k`` threads for the rest of the process.

    For worker processes that cannot wrap their work in :func:`pinned_threads`
    (asv benchmark processes, a pytest session).
    """
    from threadpoolctl import threadpool_limits

    k = clamp_threads(int(k))
    for v in _THREAD_VARS:
        os.environ[v] = str(k)
    _process_limiter.append(threadpool_limits(limits=k))
    _current["threads"] = k
    _set_torch_threads(k)
    return k


@contextmanager
def pinned_threads(k: int = DEFAULT_THREADS):
    """Pin BLAS/OpenMP (via threadpoolctl) and torch to ``k`` threads."""
    from threadpoolctl import threadpool_limits

    k = clamp_threads(int(k))
    prev = _current["threads"]
    old_env = {v: os.environ.get(v) for v in _THREAD_VARS}
    for v in _THREAD_VARS:  # for subprocesses
        os.environ[v] = str(k)
    _current["threads"] = k
    old_torch = _set_torch_threads(k)
    try:
        with threadpool_limits(limits=k):
            yield k
    finally:
        _current["threads"] = prev
        for v, val in old_env.items():
            if val is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = val
        if old_torch is not None:
            _set_torch_threads(old_torch)


# --- provenance ------------------------------------------------------------------------


def _git(args, cwd) -> str:
    out = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                         timeout=10, check=True)
    return out.stdout.strip()


@cache
def project_root() -> Path | None:
    """The repository this package runs from, or None (installed elsewhere).

    The top level of the enclosing git repository must be the directory that
    holds this package and its ``pyproject.toml``: an installed copy inside
    some other checkout (asv's environments live inside ours) is not it.
    """
    root = PACKAGE_DIR.parent
    try:
        top = Path(_git(["rev-parse", "--show-toplevel"], root)).resolve()
    except (OSError, subprocess.SubprocessError):
        return None
    if top != root or not (root / "pyproject.toml").is_file():
        return None
    return root


@cache
def git_commit() -> str:
    """Commit of the project's own checkout (``+dirty`` if modified), or 'unknown'."""
    root = project_root()
    if root is None:
        return "unknown"
    try:
        commit = _git(["rev-parse", "HEAD"], root)
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], root)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def is_dirty() -> bool:
    return git_commit().endswith("+dirty")


@cache
def commit_date(commit: str) -> str:
    root = project_root()
    if commit == "unknown" or root is None:
        return ""
    try:
        return _git(["show", "-s", "--format=%cI", commit.removesuffix("+dirty")], root)
    except (OSError, subprocess.SubprocessError):
        return ""


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


def machine_name() -> str:
    """Machine label: ``$NPO_MACHINE`` if set, else the host name.

    It names directories of the run store, so it must be a safe file-name
    component (letters, digits, ``_ . + -``, at most 64 characters).
    """
    name = os.environ.get("NPO_MACHINE") or socket.gethostname() or "unknown"
    if not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        src = "NPO_MACHINE" if os.environ.get("NPO_MACHINE") else "the host name"
        raise ValueError(f"{src} {name!r} is not a safe machine label: use letters, digits, "
                         "'_', '.', '+' or '-' (at most 64)")
    return name


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def _cpu_flags() -> tuple[str, ...]:
    # the vector extensions that decide which BLAS/torch kernels run
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile",
              "amx_bf16", "neon", "asimd", "sve")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return tuple(w for w in wanted if w in have)
    except OSError:
        pass
    return ()


def blas_info() -> list[str]:
    """``"<library> <version> <kernel> threads=<k>"`` for every BLAS numpy/scipy load."""
    import numpy  # noqa: F401  (load the BLAS libraries the fingerprint must see)
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info

    return sorted(
        f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
        f"threads={i.get('num_threads')}"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    )


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """Versions of Python and the numerical stack, read without importing anything."""
    out = {"python": platform.python_version()}
    for dist in ("numpy", "scipy", "pyamg", "pandas", "torch", "petsc4py", "mpi4py"):
        v = _dist_version(dist)
        if v is not None:
            out[dist] = v
    return out


def platform_fingerprint() -> dict:
    """What decides the last bits of the arithmetic, whatever ran or was imported.

    CPU architecture, model and vector extensions, Python and library
    versions from the installed distributions, and the BLAS kernels numpy and
    scipy load (imported here explicitly, so the fingerprint does not depend
    on which cases ran). Thread counts are excluded: the gate pins them.
    """
    blas = [b.rsplit(" threads=", 1)[0] for b in blas_info()]
    return {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_flags": list(_cpu_flags()),
        "blas": blas,
        **{k: v for k, v in versions().items() if k != "pandas"},
    }


def environment(device: str = "cpu") -> dict:
    """What a record needs to be comparable: machine, CPU, threads, device, versions, commit."""
    commit = git_commit()
    return {
        "machine": machine_name(),
        "cpu": cpu_model(),
        "cores": cores(),
        "blas": "; ".join(blas_info()),
        "threads": threads() if threads() is not None else 0,
        "device": device,
        "commit": commit,
        "commit_date": commit_date(commit),
        "versions": versions(),
    }
