"""The run journal: every measured case is on disk before the next one starts.

``npo-bench run`` writes ``<out>/journal/<run>.jsonl`` while it measures: a
header line (what the run is: suite, filter, protocol, commit, machine,
device, threads, repeats and its case ids), then one line per measured case
(its record), each flushed and fsynced as soon as the case ends. When the
report set is committed the journal is removed. A journal that is still
there belongs to a run that was killed, interrupted or ran out of disk, and
``npo-bench run --resume [RUN]`` measures only the cases it lacks.

A partial last line (a kill in the middle of a write) is dropped when the
journal is read and cut off before anything is appended. Journals are JSON
lines (``NaN`` allowed); nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from npo.fileio import _fsync_dir

__all__ = ["JOURNAL_DIR", "Journal", "JournalError", "find", "new_run_id"]

JOURNAL_DIR = "journal"
FORMAT = "npo-bench/journal-1"


class JournalError(ValueError):
    """A journal that is missing, unreadable or does not match the run asked for."""


def new_run_id() -> str:
    """``<UTC time>_<pid>-<random>``: unique per process, sortable by start time."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}_{os.getpid()}-{secrets.token_hex(3)}"


def _default(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    return str(o)


def _line(obj) -> bytes:
    return (json.dumps(obj, default=_default, separators=(",", ":")) + "\n").encode()


class Journal:
    """One run's journal: ``header``, the ``records`` measured so far, and ``append``."""

    def __init__(self, path: Path, header: dict, records: list[dict], good_bytes: int):
        self.path = Path(path)
        self.header = header
        self.records = records
        self._good = good_bytes
        self._f = None

    @property
    def run_id(self) -> str:
        return str(self.header["run"])

    @classmethod
    def create(cls, root, header: dict) -> Journal:
        """A new journal under ``root/journal/`` (created exclusively, header fsynced)."""
        d = Path(root) / JOURNAL_DIR
        d.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, **header}
        path = d / f"{header['run']}.jsonl"
        data = _line(header)
        with open(path, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(d)
        return cls(path, header, [], len(data))

    @classmethod
    def read(cls, path) -> Journal:
        """The journal at ``path``; a partial last line is dropped (:class:`JournalError` if
        there is no readable header)."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise JournalError(f"journal {str(path)!r}: cannot be read "
                               f"({exc.strerror or exc})") from None
        lines, good, pos = [], 0, 0
        for chunk in raw.splitlines(keepends=True):
            pos += len(chunk)
            if not chunk.endswith(b"\n"):
                break  # cut off by a kill: dropped
            try:
                lines.append(json.loads(chunk))
            except (json.JSONDecodeError, UnicodeDecodeError):
                if pos == len(raw):
                    break  # a torn last line
                raise JournalError(f"journal {str(path)!r}: line {len(lines) + 1} is not "
                                   "JSON; it was not written by npo-bench") from None
            good = pos
        if not lines or not isinstance(lines[0], dict) or lines[0].get("format") != FORMAT:
            raise JournalError(f"journal {str(path)!r}: no npo-bench journal header")
        return cls(path, lines[0], lines[1:], good)

    def append(self, record: dict) -> None:
        """Add one case's record: written, flushed and fsynced before this returns."""
        self.extend([record])

    def extend(self, records: list[dict]) -> None:
        """Add the records of one section in one write, flushed and fsynced."""
        if self._f is None:
            self._f = open(self.path, "r+b")  # noqa: SIM115 - kept open for the run
            self._f.truncate(self._good)  # a torn last line goes before anything is added
            self._f.seek(self._good)
        data = b"".join(_line(r) for r in records)
        self._f.write(data)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._good += len(data)
        self.records.extend(records)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def remove(self) -> None:
        """The report set is committed: the journal has nothing left to keep."""
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        _fsync_dir(self.path.parent)
        try:
            self.path.parent.rmdir()  # only when no other run's journal is there
        except OSError:
            pass

    def mismatch(self, expected: dict) -> str | None:
        """What differs between this journal's run and ``expected`` (header keys), or None."""
        for key, want in expected.items():
            have = self.header.get(key)
            if have != want:
                if key == "cases":
                    extra = sorted(set(want) - set(have or ()))[:3]
                    gone = sorted(set(have or ()) - set(want))[:3]
                    return (f"its cases differ (this command adds {extra or 'none'}, "
                            f"lacks {gone or 'none'})")
                return f"its {key} is {have!r}, this command's is {want!r}"
        return None


def find(root, run: str | None = None) -> Path:
    """The journal of ``run`` (a run id or a path), or the newest one under ``root/journal/``."""
    d = Path(root) / JOURNAL_DIR
    if run:
        p = Path(run)
        for cand in (p, d / run, d / f"{run}.jsonl"):
            if cand.is_file():
                return cand
        raise JournalError(f"no unfinished run {run!r} under {str(d)!r}")
    found = sorted(d.glob("*.jsonl")) if d.is_dir() else []
    if not found:
        raise JournalError(f"no unfinished run to resume under {str(d)!r}")
    return found[-1]  # run ids sort by start time
