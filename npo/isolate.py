"""Run one piece of work in a child process with a memory and a time budget.

The harness measures every case this way (:func:`npo.measure.measure_case`),
so that a case that needs more memory than the machine has, hangs, crashes
or raises ends *that case*, not the run:

* the child is **forked** from the harness, so it starts with the parent's
  imports and its cached problems (copy-on-write) and nothing is pickled on
  the way in; only the result travels back, through a pipe;
* its **address space** is limited with ``RLIMIT_AS`` to what it already
  maps plus ``memory`` bytes: an allocation past the budget raises
  ``MemoryError`` in the child (numpy, scipy) or torch's "can't allocate
  memory", never the kernel's OOM killer on the harness;
* it gets ``timeout`` seconds of wall-clock time; then its whole process
  group (MPI launchers and ranks included) is killed;
* it runs in a process group of its own (a Ctrl-C in the terminal reaches
  the harness, which kills the child) and dies with the harness
  (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the harness leaves no orphan.

What comes back is the function's value, or an :class:`Ended` that says why
there is none. Without ``fork`` (not Linux) the work runs in this process,
without budgets: :func:`available` says which.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import signal
import sys
from dataclasses import dataclass

__all__ = ["Ended", "available", "call", "gib"]

GIB = 2**30


@dataclass(frozen=True)
class Ended:
    """The child returned nothing: ``reason`` says why (out of memory, timed out, ...)."""

    reason: str


def gib(nbytes: float) -> str:
    """``2.0 GiB`` (one decimal; at least 0.1)."""
    return f"{max(nbytes / GIB, 0.1):.1f} GiB"


def available() -> bool:
    """True where a case can run in a forked child with budgets (Linux)."""
    return "fork" in multiprocessing.get_all_start_methods() and sys.platform.startswith("linux")


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


_TORCH_OOM = re.compile(r"can't allocate memory|out of memory", re.IGNORECASE)
_NUMPY_OOM = re.compile(r"Unable to allocate ([\d.]+) (KiB|MiB|GiB|TiB)")
_TORCH_BYTES = re.compile(r"allocate (\d+) bytes")
_UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def _child(fn, conn, memory: int | None, parent: int) -> None:
    os.setpgid(0, 0)
    _die_with_parent(parent)
    if memory is not None:
        import resource

        cap = _vm_size() + int(memory)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        out = ("ok", fn())
    except MemoryError as exc:
        out = ("oom", str(exc))
    except BaseException as exc:  # noqa: BLE001 - every failure is the case's outcome
        msg = f"{type(exc).__name__}: {exc}"
        out = ("oom", msg) if isinstance(exc, RuntimeError) and _TORCH_OOM.search(msg) else (
            "error", msg)
    try:
        conn.send(out)
    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable value
        conn.send(("error", f"the result could not be sent back ({type(exc).__name__}: {exc})"))
    conn.close()
    os._exit(0)  # no atexit handlers, no second flush of the parent's stdio buffers


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except (ProcessLookupError, ValueError):
        pass
    proc.join()


def _oom_reason(message: str, needs: int | None, memory: int | None) -> str:
    m, t = _NUMPY_OOM.search(message), _TORCH_BYTES.search(message)
    failed = float(m.group(1)) * _UNITS[m.group(2)] if m else float(t.group(1)) if t else 0.0
    need = max(failed, float(needs or 0))
    what = f"needs ≈{gib(need)}, " if need > 0 else ""
    limit = f"limit {gib(memory)}" if memory is not None else "no limit set"
    return f"out of memory ({what}{limit})"


def call(fn, *, memory: int | None = None, timeout: float | None = None,
         needs: int | None = None):
    """``fn()`` in a forked child with ``memory`` bytes and ``timeout`` seconds.

    Returns ``fn()``'s value, or an :class:`Ended` whose reason starts with
    ``out of memory``, ``timed out``, ``killed`` or ``error``. ``needs`` (the
    caller's estimate, bytes) is quoted in an out-of-memory reason. Where
    :func:`available` is False, ``fn()`` runs here and only its exceptions
    become an :class:`Ended`.
    """
    if not available():
        try:
            return fn()
        except MemoryError as exc:
            return Ended(_oom_reason(str(exc), needs, memory))
        except Exception as exc:  # noqa: BLE001
            return Ended(f"error: {type(exc).__name__}: {exc}")
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    for stream in (sys.stdout, sys.stderr):  # the child must not inherit unflushed output
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    proc = ctx.Process(target=_child, args=(fn, send, memory, os.getpid()))
    proc.start()
    send.close()
    try:
        wait = None if timeout is None or not math.isfinite(timeout) else max(float(timeout), 0.0)
        if not recv.poll(wait):
            _kill(proc)
            return Ended(f"timed out after {wait:.0f} s")
        try:
            kind, payload = recv.recv()
        except (EOFError, OSError):
            kind, payload = None, None
        proc.join()
        if kind == "ok":
            return payload
        if kind == "oom":
            return Ended(_oom_reason(payload, needs, memory))
        if kind == "error":
            return Ended(f"error: {payload}")
        code = proc.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            why = (" (the kernel's OOM killer, or a kill from outside"
                   + (f"; memory limit {gib(memory)}" if memory is not None else "") + ")"
                   if -code == signal.SIGKILL else "")
            return Ended(f"killed by {name}{why}")
        return Ended(f"error: the case's process exited with code {code} and no result")
    finally:
        if proc.is_alive():
            _kill(proc)
        recv.close()
