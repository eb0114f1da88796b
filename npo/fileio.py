"""Safe output: atomic files, report sets committed as one, locks and recovery.

Ground floor: imports nothing from ``npo``.

**One file** (:func:`atomic_path`, :func:`write_text`, :func:`write_csv`) is
written to a temporary name beside its target and renamed over it, so a
reader sees the old file or the new one, never a partial one.

**A report set** (:class:`ReportSet`: a honesty table's ``.md`` and ``.csv``,
its plots and the run-store file) is committed as a whole:

1. every file is *staged* under a temporary name and flushed to disk;
2. under an exclusive lock on the output directory (``fcntl.flock`` on
   ``.npo-bench.lock``), a *journal* listing the renames is written
   atomically: this is the commit point;
3. with SIGINT/SIGTERM held back, the renames are carried out (run-store
   files are created exclusively, never renamed over an existing file), then
   the journal is removed.

A failure or signal before the commit point removes the staged files and
leaves the old set untouched; after it, the new set is completed. After a
``kill -9`` the next writer or reader of the directory calls :func:`recover`,
which rolls a committed journal forward and deletes the temporary files of
dead processes. Loaders skip temporary files by name (:func:`is_temp`).

**Faults** can be injected at fixed points for tests, through the environment
variable ``NPO_BENCH_FAULT=<point>:<what>`` (points ``staged``, ``journal``,
``renamed1``, ...; ``what`` is a signal name such as ``INT`` or ``KILL``, or
``ENOSPC``). It is read at those points only and does nothing when unset.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "JOURNAL_NAME",
    "LOCK_NAME",
    "ReportSet",
    "atomic_path",
    "check_output_dir",
    "is_temp",
    "locked",
    "recover",
    "write_csv",
    "write_text",
]

TEMP_MARK = ".npo-tmp-"
LOCK_NAME = ".npo-bench.lock"
JOURNAL_NAME = ".npo-bench.journal"
FAULT_ENV = "NPO_BENCH_FAULT"


def is_temp(path) -> bool:
    """True for the temporary names this module writes (never data)."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK in name


def _temp_name(target: Path, suffix: str | None = None) -> Path:
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    return target.parent / f".{target.name}{TEMP_MARK}{tag}{suffix or target.suffix}"


def _pid_of(path: Path) -> int | None:
    try:
        return int(path.name.rsplit(TEMP_MARK, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def _fault(point: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    where, _, what = spec.partition(":")
    if where != point:
        return
    if what == "ENOSPC":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {point})")
    os.kill(os.getpid(), getattr(signal, f"SIG{what or 'INT'}"))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _ordinary_permissions(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, suffix)
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"nothing was written to {tmp}")
        _ordinary_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_csv(path, df) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


@contextmanager
def locked(directory, *, shared: bool = False):
    """Hold an ``flock`` on ``directory/.npo-bench.lock`` (exclusive by default)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def _signals_held():
    """Defer SIGINT/SIGTERM until the block is done (a commit must complete).

    In the main thread the Python handlers are swapped for ones that only
    remember the signal; afterwards the previous dispositions are restored
    exactly and the held signals are raised again, so they reach exactly what
    was there before (the CLI's KeyboardInterrupt, or the default action). A
    signal that was ignored (nohup, a background job) is left ignored. A
    thread mask alone would not do, since the kernel may deliver a
    process-directed signal to any of the BLAS or torch threads.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        sigs = {signal.SIGINT, signal.SIGTERM}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return
    caught = []
    # a signal the process ignores (nohup, a shell's background job) stays ignored: it is
    # neither caught here nor raised afterwards
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    held = [s for s, h in previous.items() if h is not signal.SIG_IGN and h is not None]
    for s in held:
        signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for s in held:
            signal.signal(s, previous[s])
    # deliver what was held to exactly the disposition that was there before
    for s in dict.fromkeys(caught):
        signal.raise_signal(s)


def _roll_forward(root: Path, entries: list) -> list[Path]:
    done = []
    for k, (tmp_rel, final_rel, exclusive) in enumerate(entries, start=1):
        tmp, final = root / tmp_rel, root / final_rel
        if tmp.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                try:
                    os.link(tmp, final)  # fails if final exists: never overwrite a run file
                except FileExistsError:
                    raise OSError(f"{final} already exists; not overwritten") from None
                tmp.unlink()
            else:
                os.replace(tmp, final)
        done.append(final)
        _fault(f"renamed{k}")
    return done


def _commit_journal(root: Path, entries: list) -> list[Path]:
    """Carry out a committed journal's renames, then remove it (signals held by caller)."""
    done = _roll_forward(root, entries)
    for d in {p.parent for p in done} | {root}:
        _fsync_dir(d)
    (root / JOURNAL_NAME).unlink(missing_ok=True)
    return done


def _journal_entries(journal: Path):
    try:
        return json.loads(journal.read_text())["entries"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a journal is written atomically: unreadable means not ours


def recover(root) -> dict:
    """Finish or undo what an interrupted writer left in ``root``.

    Rolls a committed journal forward, then deletes temporary files whose
    writing process no longer runs. Returns counts of what it did. A
    directory that does not exist or is read-only is left as it is.
    """
    root = Path(root)
    out = {"rolled_forward": 0, "removed_temps": 0}
    if not root.is_dir() or not os.access(root, os.W_OK):
        return out
    with locked(root):
        journal = root / JOURNAL_NAME
        if journal.exists():
            entries = _journal_entries(journal)
            if entries is not None:
                with _signals_held():
                    out["rolled_forward"] = len(_commit_journal(root, entries))
            else:
                journal.unlink(missing_ok=True)
        for p in _walk_temps(root):
            pid = _pid_of(p)
            if pid is None or not _alive(pid):
                p.unlink(missing_ok=True)
                out["removed_temps"] += 1
    return out


def _walk_temps(root: Path, depth: int = 3):
    stack = [(root, 0)]
    while stack:
        d, k = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False) and k < depth:
                stack.append((Path(e.path), k + 1))
            elif is_temp(e.name):
                yield Path(e.path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ReportSet:
    """Files staged under temporary names and committed together (module docstring).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with ReportSet(d) as rs:
    ...     _ = rs.text("a.md", "A")
    ...     _ = rs.text("sub/b.md", "B")
    >>> sorted(p.relative_to(d).as_posix() for p in rs.committed)
    ['a.md', 'sub/b.md']
    """

    def __init__(self, root):
        self.root = Path(root)
        self._staged: list[tuple[Path, Path, bool]] = []
        self.committed: list[Path] = []
        self.state = "open"  # open -> committed | aborted

    # -- staging ---------------------------------------------------------------------
    @contextmanager
    def stage(self, rel, *, exclusive: bool = False, suffix: str | None = None):
        """Yield a temporary path to write ``rel``'s content to."""
        if self.state != "open":
            raise RuntimeError(f"report set is {self.state}")
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_name(final, suffix)
        self._staged.append((tmp, final, exclusive))
        yield tmp
        _fault("write")
        if not tmp.exists():
            raise OSError(f"nothing was written for {final}")
        _ordinary_permissions(tmp)
        _fsync_file(tmp)

    def text(self, rel, text: str, **kw) -> Path:
        with self.stage(rel, **kw) as tmp:
            tmp.write_text(text)
        return self.root / rel

    def csv(self, rel, df, *, float_format: str | None = None, **kw) -> Path:
        with self.stage(rel, **kw) as tmp:
            df.to_csv(tmp, index=False, float_format=float_format)
        return self.root / rel

    # -- commit / abort ----------------------------------------------------------------
    def commit(self) -> list[Path]:
        """Make every staged file visible under its final name (module docstring)."""
        if self.state != "open":
            raise RuntimeError(f"report set is {self.state}")
        _fault("staged")
        rel = [(t.relative_to(self.root).as_posix(), f.relative_to(self.root).as_posix(), x)
               for t, f, x in self._staged]
        journal = self.root / JOURNAL_NAME
        with locked(self.root), _signals_held():
            if journal.exists():  # a writer was killed after its commit point
                entries = _journal_entries(journal)
                if entries is not None:
                    _commit_journal(self.root, entries)
            for _, final, exclusive in self._staged:
                if exclusive and final.exists():
                    raise OSError(f"{final} already exists; not overwritten")
            tmpj = _temp_name(journal, ".json")
            tmpj.write_text(json.dumps({"pid": os.getpid(), "entries": rel}))
            _fsync_file(tmpj)
            os.replace(tmpj, journal)  # the commit point
            _fsync_dir(self.root)
            self.state = "committed"
            _fault("journal")
            self.committed = _commit_journal(self.root, rel)
        return self.committed

    def abort(self) -> None:
        """Remove every staged file; the files under the final names are untouched."""
        if self.state == "committed":
            return
        for tmp, _, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self.state = "aborted"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()  # does nothing once the commit point has passed
                raise
        else:
            self.abort()
        return False

    def describe(self) -> str:
        """What this set did to the directory, in one sentence (for error messages)."""
        if self.state == "committed":
            return (f"the new report set ({len(self._staged)} files) was committed in full "
                    f"under {self.root}")
        return f"no file under {self.root} was replaced; the previous report set is unchanged"


def check_output_dir(path, need_bytes: int = 0) -> Path:
    """Create ``path`` if needed and check that it can take ``need_bytes`` more.

    Raises ValueError (before any costly work) when ``path`` is a file, cannot
    be created, is not writable, or its file system has less than twice
    ``need_bytes`` free.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"--out {str(p)!r} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {str(p)!r} cannot be created: {exc.strerror or exc}") from None
    probe = _temp_name(p / "probe")
    try:
        probe.write_text("x")
    except OSError as exc:
        raise ValueError(f"--out {str(p)!r} is not writable: {exc.strerror or exc}") from None
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(p).free
    if need_bytes and free < 2 * need_bytes:
        raise ValueError(
            f"--out {str(p)!r} has {free / 1024:.0f} KiB free; the report set needs about "
            f"{need_bytes / 1024:.0f} KiB (twice that is required, for the temporary copies)"
        )
    return p
