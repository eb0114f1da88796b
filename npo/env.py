"""Thread pinning and environment capture.

Iteration counts of long, ill-conditioned solves depend on the last bits of
the dot products, and OpenBLAS splits a large dot product differently with 1
or 2 threads (measured: 7595 vs 7572 CG iterations on lognormal 1e4 at
n = 128). Every measurement therefore runs with pinned BLAS/OpenMP/torch
thread counts (1 by default) and records the count.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from contextlib import contextmanager
from functools import cache
from pathlib import Path

__all__ = ["environment", "git_commit", "pin_process", "pinned_threads", "threads"]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_current = {"threads": None}

DEFAULT_THREADS = 1


def threads() -> int | None:
    """The thread count pinned by :func:`pinned_threads`, or None outside it."""
    return _current["threads"]


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


def torch_device(device: str):
    """``torch.device(device)``; ValueError if it names CUDA and torch sees none."""
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available to this torch")
    return torch.device(device)


_process_limiter = []


def pin_process(k: int = DEFAULT_THREADS) -> int:
    """Pin BLAS/OpenMP and torch to ``k`` threads for the rest of the process.

    For worker processes that cannot wrap their work in :func:`pinned_threads`
    (asv benchmark processes, a pytest session).
    """
    from threadpoolctl import threadpool_limits

    k = int(k)
    if k < 1:
        raise ValueError(f"threads must be >= 1, got {k}")
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

    k = int(k)
    if k < 1:
        raise ValueError(f"threads must be >= 1, got {k}")
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


@cache
def git_commit(path: str | None = None) -> str:
    """Commit hash of the checkout holding the package (or ``path``), or 'unknown'."""
    where = path or str(Path(__file__).resolve().parent)
    try:
        out = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        commit = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@cache
def _commit_date(commit: str) -> str:
    if commit == "unknown":
        return ""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "show", "-s", "--format=%cI",
             commit.removesuffix("+dirty")],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_name() -> str:
    """Machine label: $NPO_MACHINE if set, else the host name."""
    return os.environ.get("NPO_MACHINE") or socket.gethostname()


def environment(device: str = "cpu") -> dict:
    """What a record needs to be comparable: machine, threads, device, versions, commit."""
    import numpy
    import pandas
    import pyamg
    import scipy

    versions = {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pyamg": pyamg.__version__,
        "pandas": pandas.__version__,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = torch.__version__
    commit = git_commit()
    return {
        "machine": machine_name(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads() if threads() is not None else 0,
        "device": device,
        "commit": commit,
        "commit_date": _commit_date(commit),
        "versions": versions,
    }
