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
there is none. A :class:`Worker` is the same child kept alive for several
calls on one object that lives in it (the interleaved rounds of a section,
:func:`npo.measure.measure_section`). Without ``fork`` (not Linux) the work runs in this process,
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

__all__ = ["Ended", "Worker", "available", "call", "gib"]

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
    from npo.env import proc_bytes

    return proc_bytes("VmSize") or 0


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


def _start_child(memory: int | None, parent: int) -> None:
    os.setpgid(0, 0)
    _die_with_parent(parent)
    if memory is not None:
        import resource

        cap = _vm_size() + int(memory)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _outcome(fn) -> tuple:
    try:
        return ("ok", fn())
    except MemoryError as exc:
        return ("oom", str(exc))
    except BaseException as exc:  # noqa: BLE001 - every failure is the case's outcome
        msg = f"{type(exc).__name__}: {exc}"
        return ("oom", msg) if isinstance(exc, RuntimeError) and _TORCH_OOM.search(msg) else (
            "error", msg)


def _send(conn, out) -> None:
    try:
        conn.send(out)
    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable value
        conn.send(("error", f"the result could not be sent back ({type(exc).__name__}: {exc})"))


def _child(fn, conn, memory: int | None, parent: int) -> None:
    _start_child(memory, parent)
    _send(conn, _outcome(fn))
    conn.close()
    os._exit(0)  # no atexit handlers, no second flush of the parent's stdio buffers


def _serve(make, conn, memory: int | None, parent: int) -> None:
    """A worker's loop: build the object, then answer ``(method name, args)`` until None."""
    _start_child(memory, parent)
    out = _outcome(make)
    obj = out[1] if out[0] == "ok" else None
    _send(conn, ("ok", None) if obj is not None else out)
    while obj is not None:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        _send(conn, _outcome(lambda msg=msg: getattr(obj, msg[0])(*msg[1])))
    conn.close()
    os._exit(0)


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


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):  # the child must not inherit unflushed output
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _ended(kind, payload, proc, needs, memory) -> Ended | None:
    """The :class:`Ended` for a reply that is not a value (None for a value)."""
    if kind == "ok":
        return None
    if kind == "oom":
        return Ended(_oom_reason(payload, needs, memory))
    if kind == "error":
        return Ended(f"error: {payload}")
    proc.join(timeout=5)
    code = proc.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        why = (" (the kernel's OOM killer, or a kill from outside"
               + (f"; memory limit {gib(memory)}" if memory is not None else "") + ")"
               if -code == signal.SIGKILL else "")
        return Ended(f"killed by {name}{why}")
    return Ended(f"error: the case's process exited with code {code} and no result")


class Worker:
    """``make()`` run in a forked child that stays: ``call(name, *args)`` runs
    ``obj.name(*args)`` there, under the same budgets as :func:`call` (``timeout`` per call).

    Once a call ends badly (:class:`Ended`) the worker is gone and every later call returns
    the same :class:`Ended`. Only for :func:`available` platforms.
    """

    def __init__(self, make, *, memory: int | None = None, timeout: float | None = None,
                 needs: int | None = None):
        self.memory, self.timeout, self.needs = memory, timeout, needs
        self.ended: Ended | None = None
        ctx = multiprocessing.get_context("fork")
        self._conn, child_end = ctx.Pipe(duplex=True)
        _flush_std()
        # daemonic: an interrupted harness never waits at exit for a worker that waits for it
        self._proc = ctx.Process(target=_serve, args=(make, child_end, memory, os.getpid()),
                                 daemon=True)
        self._proc.start()
        child_end.close()
        try:
            self._reply()
        except BaseException:  # Ctrl-C while the worker starts: it goes with us
            _kill(self._proc)
            raise

    def _reply(self):
        wait = (None if self.timeout is None or not math.isfinite(self.timeout)
                else max(float(self.timeout), 0.0))
        if not self._conn.poll(wait):
            _kill(self._proc)
            self._conn.close()
            self.ended = Ended(f"timed out after {wait:.0f} s")
            return self.ended
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            kind, payload = None, None
        ended = _ended(kind, payload, self._proc, self.needs, self.memory)
        if ended is not None:
            self.close()
            self.ended = ended
            return ended
        return payload

    def call(self, name: str, *args):
        """``obj.name(*args)`` in the child, or the :class:`Ended` that stopped the worker."""
        if self.ended is not None:
            return self.ended
        try:
            self._conn.send((name, args))
        except (BrokenPipeError, OSError):
            self.close()
            self.ended = Ended("error: the case's process is gone")
            return self.ended
        return self._reply()

    def close(self) -> None:
        """Stop the child (politely, then by force)."""
        if self._conn.closed:
            return
        if self._proc.is_alive():
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(timeout=2)
        if self._proc.is_alive():
            _kill(self._proc)
        self._conn.close()


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
    _flush_std()
    proc = ctx.Process(target=_child, args=(fn, send, memory, os.getpid()), daemon=True)
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
        ended = _ended(kind, payload, proc, needs, memory)
        return payload if ended is None else ended
    finally:
        if proc.is_alive():
            _kill(proc)
        recv.close()
