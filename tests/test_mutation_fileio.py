"""Mutation-testing tests for npo.fileio: atomic files, report sets, journal recovery, in process."""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from npo import fileio
from npo.fileio import (
    JOURNAL_NAME,
    LOCK_NAME,
    ReportSet,
    atomic_path,
    check_output_dir,
    is_temp,
    locked,
    recover,
    write_csv,
    write_text,
)


def test_constants():
    assert (fileio.TEMP_MARK, LOCK_NAME, JOURNAL_NAME, fileio.FAULT_ENV) == (
        ".npo-tmp-", ".npo-bench.lock", ".npo-bench.journal", "NPO_BENCH_FAULT")


@pytest.mark.parametrize("name, temp", [(".a.md.npo-tmp-12-ab.md", True), ("a.md", False),
                                        ("a.npo-tmp-1-x", False), (".a.md", False),
                                        ("x/.b.npo-tmp-3-ff.csv", True)])
def test_is_temp(name, temp):
    assert is_temp(name) is temp


def test_temp_name_and_pid(tmp_path):
    t = fileio._temp_name(tmp_path / "dir" / "a.csv")
    assert t.parent == tmp_path / "dir"
    head, tail = t.name.split(".npo-tmp-")
    assert head == ".a.csv"
    pid, rest = tail.split("-", 1)
    assert pid == str(os.getpid()) and len(rest) == len("0123abcd.csv") and rest.endswith(".csv")
    assert fileio._temp_name(tmp_path / "a.csv", ".png").name.endswith(".png")
    assert fileio._pid_of(t) == os.getpid()
    assert fileio._pid_of(tmp_path / "plain.csv") is None
    assert fileio._pid_of(tmp_path / ".a.npo-tmp-xyz-1.csv") is None
    assert is_temp(t)


@pytest.fixture()
def sigint_raises():
    """SIGINT raises KeyboardInterrupt, also where pytest was started with it ignored (a shell's
    background job inherits SIG_IGN)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_fault_points(monkeypatch, sigint_raises):
    monkeypatch.delenv(fileio.FAULT_ENV, raising=False)
    fileio._fault("staged")  # unset: nothing
    monkeypatch.setenv(fileio.FAULT_ENV, "journal:ENOSPC")
    fileio._fault("staged")  # another point: nothing
    with pytest.raises(OSError) as e:
        fileio._fault("journal")
    assert e.value.errno == errno.ENOSPC
    assert e.value.strerror == "No space left on device (injected at journal)"
    monkeypatch.setenv(fileio.FAULT_ENV, "write:INT")
    with pytest.raises(KeyboardInterrupt):
        fileio._fault("write")
    monkeypatch.setenv(fileio.FAULT_ENV, "write:")
    with pytest.raises(KeyboardInterrupt):  # no signal name: SIGINT
        fileio._fault("write")
    monkeypatch.setenv(fileio.FAULT_ENV, "write")
    with pytest.raises(KeyboardInterrupt):
        fileio._fault("write")


def test_atomic_path_success_permissions_and_failures(tmp_path):
    target = tmp_path / "deep" / "er" / "f.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and is_temp(tmp) and tmp.suffix == ".txt"
        tmp.write_text("new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(OSError) as e:
        with atomic_path(target):
            pass
    assert str(e.value).startswith("nothing was written to ") and target.read_text() == "new"
    with pytest.raises(ZeroDivisionError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise ZeroDivisionError
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]
    with atomic_path(tmp_path / "g.dat", suffix=".png") as tmp:
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"x")
    assert (tmp_path / "g.dat").read_bytes() == b"x"


def test_write_text_and_csv(tmp_path):
    p = write_text(str(tmp_path / "a" / "b.md"), "hello")
    assert p == tmp_path / "a" / "b.md" and p.read_text() == "hello"
    q = write_csv(tmp_path / "c.csv", pd.DataFrame({"x": [1, 2]}))
    assert q == tmp_path / "c.csv" and q.read_text() == "x\n1\n2\n"


def test_locked_creates_the_lock(tmp_path):
    d = tmp_path / "new" / "dir"
    with locked(d):
        assert (d / LOCK_NAME).is_file()
    with locked(d, shared=True):
        with locked(d, shared=True):  # shared locks coexist
            pass
    # an exclusive lock held here blocks another process's non-blocking attempt
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "try:\n fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
            "except BlockingIOError: print('held')\n")
    with locked(d):
        out = subprocess.run([sys.executable, "-c", code, str(d / LOCK_NAME)],
                             capture_output=True, text=True, check=True).stdout
    assert out == "held\n"
    with locked(d, shared=True):
        out = subprocess.run([sys.executable, "-c", code, str(d / LOCK_NAME)],
                             capture_output=True, text=True, check=True).stdout
    assert out == "held\n"
    out = subprocess.run([sys.executable, "-c", code, str(d / LOCK_NAME)],
                         capture_output=True, text=True, check=True).stdout
    assert out == "free\n"


def test_signals_held_defers_then_raises():
    def interrupt(signum, frame):  # what the CLI installs for SIGTERM
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        done = []
        with pytest.raises(KeyboardInterrupt):
            with fileio._signals_held():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("after the signal")
        assert done == ["after the signal"]
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
        with fileio._signals_held():
            pass  # no signal: no exception
    finally:
        signal.signal(signal.SIGTERM, old)


def test_signals_held_leaves_an_ignored_sigint_ignored():
    # under nohup or in a shell's background job SIGINT is ignored from the start: a SIGINT
    # during a commit must not raise afterwards, and the disposition stays SIG_IGN
    code = ("import os, signal\n"
            "from npo import fileio\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "with fileio._signals_held():\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
            "print('still running')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "still running\n"


def test_signals_held_in_a_thread_masks():
    seen = {}

    def work():
        with fileio._signals_held():
            seen["mask"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        seen["after"] = signal.pthread_sigmask(signal.SIG_BLOCK, [])

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert {signal.SIGINT, signal.SIGTERM} <= set(seen["mask"])
    assert signal.SIGINT not in seen["after"] and signal.SIGTERM not in seen["after"]


def test_report_set_commit(tmp_path):
    rs = ReportSet(tmp_path / "out")
    assert rs.state == "open" and rs.committed == [] and rs.root == tmp_path / "out"
    with rs:
        assert rs.text("a.md", "A") == tmp_path / "out" / "a.md"
        assert rs.csv("t/b.csv", pd.DataFrame({"k": [1]})) == tmp_path / "out" / "t" / "b.csv"
        assert not (tmp_path / "out" / "a.md").exists()  # staged, not visible
    assert rs.state == "committed"
    assert rs.committed == [tmp_path / "out" / "a.md", tmp_path / "out" / "t" / "b.csv"]
    assert (tmp_path / "out" / "a.md").read_text() == "A"
    assert (tmp_path / "out" / "t" / "b.csv").read_text() == "k\n1\n"
    assert not (tmp_path / "out" / JOURNAL_NAME).exists()
    assert rs.describe() == (f"the new report set (2 files) was committed in full under "
                             f"{tmp_path / 'out'}")
    for call in (lambda: rs.text("c.md", "C"), rs.commit):
        with pytest.raises(RuntimeError, match=r"^report set is committed$"):
            call()
    rs.abort()  # after the commit point: nothing to undo
    assert rs.state == "committed" and (tmp_path / "out" / "a.md").exists()
    assert not [p for p in (tmp_path / "out").rglob("*") if is_temp(p)]


def test_report_set_abort_on_error(tmp_path):
    (tmp_path / "a.md").write_text("old")
    rs = ReportSet(tmp_path)
    with pytest.raises(ZeroDivisionError):
        with rs:
            rs.text("a.md", "new")
            raise ZeroDivisionError
    assert rs.state == "aborted" and (tmp_path / "a.md").read_text() == "old"
    assert rs.describe() == (f"no file under {tmp_path} was replaced; the previous report set "
                             "is unchanged")
    assert not [p for p in tmp_path.rglob("*") if is_temp(p)]
    with pytest.raises(RuntimeError, match="^report set is aborted$"):
        rs.text("b.md", "B")


def test_report_set_stage_needs_content(tmp_path):
    rs = ReportSet(tmp_path)
    with pytest.raises(OSError) as e:
        with rs.stage("x.png", suffix=".png") as tmp:
            assert tmp.suffix == ".png"
    assert str(e.value) == f"nothing was written for {tmp_path / 'x.png'}"


def test_exclusive_files_are_never_overwritten(tmp_path):
    (tmp_path / "run.csv").write_text("first")
    with pytest.raises(OSError) as e:
        with ReportSet(tmp_path) as rs:
            rs.text("run.csv", "second", exclusive=True)
            rs.text("other.md", "x")
    assert str(e.value) == f"{tmp_path / 'run.csv'} already exists; not overwritten"
    assert (tmp_path / "run.csv").read_text() == "first" and not (tmp_path / "other.md").exists()
    with ReportSet(tmp_path) as rs:
        rs.text("new.csv", "n", exclusive=True)
    assert (tmp_path / "new.csv").read_text() == "n"


def test_fault_after_the_journal_is_completed_by_recover(tmp_path, monkeypatch):
    rs = ReportSet(tmp_path)
    rs.text("a.md", "A")
    rs.text("b.md", "B", exclusive=True)
    monkeypatch.setenv(fileio.FAULT_ENV, "journal:ENOSPC")
    with pytest.raises(OSError):
        rs.commit()
    assert rs.state == "committed"  # the commit point had passed
    entries = json.loads((tmp_path / JOURNAL_NAME).read_text())
    assert entries["pid"] == os.getpid() and [e[1:] for e in entries["entries"]] == [
        ["a.md", False], ["b.md", True]]
    monkeypatch.delenv(fileio.FAULT_ENV)
    assert recover(tmp_path) == {"rolled_forward": 2, "removed_temps": 0}
    assert (tmp_path / "a.md").read_text() == "A" and (tmp_path / "b.md").read_text() == "B"
    assert not (tmp_path / JOURNAL_NAME).exists()
    assert recover(tmp_path) == {"rolled_forward": 0, "removed_temps": 0}


def test_next_commit_rolls_a_left_journal_forward(tmp_path, monkeypatch):
    rs = ReportSet(tmp_path)
    rs.text("a.md", "A")
    monkeypatch.setenv(fileio.FAULT_ENV, "renamed1:ENOSPC")
    with pytest.raises(OSError):
        rs.commit()
    monkeypatch.delenv(fileio.FAULT_ENV)
    assert (tmp_path / JOURNAL_NAME).exists()
    with ReportSet(tmp_path) as rs2:
        rs2.text("c.md", "C")
    assert not (tmp_path / JOURNAL_NAME).exists() and (tmp_path / "c.md").read_text() == "C"


def test_roll_forward_exclusive_conflict(tmp_path):
    (tmp_path / "tmp1").write_text("x")
    (tmp_path / "final").write_text("keep")
    with pytest.raises(OSError) as e:
        fileio._roll_forward(tmp_path, [("tmp1", "final", True)])
    assert str(e.value) == f"{tmp_path / 'final'} already exists; not overwritten"
    assert (tmp_path / "final").read_text() == "keep"
    done = fileio._roll_forward(tmp_path, [("tmp1", "sub/f2", True), ("gone", "f3", False)])
    assert done == [tmp_path / "sub" / "f2", tmp_path / "f3"]
    assert (tmp_path / "sub" / "f2").read_text() == "x" and not (tmp_path / "tmp1").exists()


def test_recover_removes_dead_temps_and_bad_journals(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    d3 = tmp_path / "a" / "b" / "c"
    d3.mkdir(parents=True)
    d4 = d3 / "d"
    d4.mkdir()
    mine = tmp_path / f".x.md.npo-tmp-{os.getpid()}-aa.md"
    theirs = tmp_path / f".y.md.npo-tmp-{dead.pid}-bb.md"
    deep = d3 / f".z.md.npo-tmp-{dead.pid}-cc.md"
    deeper = d4 / f".w.md.npo-tmp-{dead.pid}-dd.md"
    odd = tmp_path / ".v.md.npo-tmp-nopid.md"
    for p in (mine, theirs, deep, deeper, odd):
        p.write_text("t")
    (tmp_path / JOURNAL_NAME).write_text("{not json")
    out = recover(tmp_path)
    assert out == {"rolled_forward": 0, "removed_temps": 3}
    assert mine.exists() and deeper.exists()  # alive; below the walk's depth
    assert not theirs.exists() and not deep.exists() and not odd.exists()
    assert not (tmp_path / JOURNAL_NAME).exists()
    assert recover(tmp_path / "missing") == {"rolled_forward": 0, "removed_temps": 0}


def test_journal_entries():
    import pathlib
    import tempfile

    d = pathlib.Path(tempfile.mkdtemp())
    j = d / "j"
    j.write_text(json.dumps({"entries": [["a", "b", False]]}))
    assert fileio._journal_entries(j) == [["a", "b", False]]
    for text, want in (("[]", None), ("{}", None), ("nope", None), ('{"entries": 1}', 1)):
        j.write_text(text)
        assert fileio._journal_entries(j) == want
    assert fileio._journal_entries(d / "missing") is None


def test_alive():
    assert fileio._alive(os.getpid()) is True
    assert fileio._alive(1) is True  # init: exists (permission or not)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert fileio._alive(p.pid) is False


def test_check_output_dir(tmp_path, monkeypatch):
    d = tmp_path / "new" / "out"
    assert check_output_dir(d) == d and d.is_dir()
    assert check_output_dir(str(d), 1) == d
    assert not list(d.iterdir())  # the probe is removed
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError) as e:
        check_output_dir(f)
    assert str(e.value) == f"--out {str(f)!r} exists and is not a directory"
    with pytest.raises(ValueError) as e:
        check_output_dir(f / "sub")
    assert str(e.value).startswith(f"--out {str(f / 'sub')!r} cannot be created: ")

    class Usage:
        free = 3 * 1024

    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: Usage)
    check_output_dir(d, 1536)  # exactly twice the need: enough
    with pytest.raises(ValueError) as e:
        check_output_dir(d, 1537)
    assert str(e.value) == (f"--out {str(d)!r} has 3 KiB free; the report set needs about 2 KiB "
                            "(twice that is required, for the temporary copies)")
    check_output_dir(d, 0)


def test_check_output_dir_not_writable(tmp_path, monkeypatch):
    import pathlib

    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pathlib.Path, "write_text", refuse)
    with pytest.raises(ValueError) as e:
        check_output_dir(tmp_path)
    assert str(e.value) == f"--out {str(tmp_path)!r} is not writable: Permission denied"
    assert list(tmp_path.iterdir()) == []


def test_report_set_abort_tolerates_a_staged_file_already_gone(tmp_path):
    rs = ReportSet(tmp_path)
    rs.text("a.txt", "x")
    for tmp, _, _ in rs._staged:
        tmp.unlink()
    rs.abort()
    assert rs.state == "aborted" and not (tmp_path / "a.txt").exists()


def test_alive_only_probes_and_trusts_a_process_it_may_not_signal(monkeypatch):
    # SIGHUP's default action in the child, whatever it inherited (nohup ignores it)
    p = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                          "signal.signal(signal.SIGHUP, signal.SIG_DFL); print('ready', "
                          "flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "ready\n"
    try:
        assert fileio._alive(p.pid) is True
        with pytest.raises(subprocess.TimeoutExpired):  # signal 0 probes: the process lives on
            p.wait(timeout=1.0)
    finally:
        p.kill()
        p.wait()

    def refuse(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(fileio.os, "kill", refuse)
    assert fileio._alive(4242) is True


def test_pid_of_names_with_dashes_or_the_mark_in_the_target(tmp_path):
    for target in ("a.b-c", "r.npo-tmp-5.csv", "x-y-z.csv"):
        t = fileio._temp_name(tmp_path / target)
        assert fileio.is_temp(t) and fileio._pid_of(t) == os.getpid(), target


def test_check_output_dir_default_needs_nothing_and_names_the_os_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError) as e:
        check_output_dir(tmp_path / "file" / "sub")
    assert str(e.value) == (f"--out {str(tmp_path / 'file' / 'sub')!r} cannot be created: "
                            "Not a directory")
    usage = fileio.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage._replace(free=1))
    assert check_output_dir(tmp_path / "d") == tmp_path / "d"
    with pytest.raises(ValueError, match="has 0 KiB free"):
        check_output_dir(tmp_path / "d", 1)


def test_check_output_dir_space_message(tmp_path, monkeypatch):
    usage = fileio.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage._replace(free=10 * 2**20))
    with pytest.raises(ValueError) as e:
        check_output_dir(tmp_path, 6 * 2**20)
    assert str(e.value) == (f"--out {str(tmp_path)!r} has 10240 KiB free; the report set needs "
                            "about 6144 KiB (twice that is required, for the temporary copies)")


def test_commit_fault_point_staged_leaves_nothing_visible(tmp_path, monkeypatch):
    monkeypatch.setenv(fileio.FAULT_ENV, "staged:ENOSPC")
    rs = ReportSet(tmp_path)
    rs.text("a.txt", "x")
    with pytest.raises(OSError, match=r"injected at staged"):
        rs.commit()
    assert not (tmp_path / "a.txt").exists() and rs.state == "open"
    monkeypatch.setenv(fileio.FAULT_ENV, "elsewhere:ENOSPC")
    assert rs.commit() == [tmp_path / "a.txt"]


def test_commit_first_rolls_a_killed_writers_journal_forward(tmp_path, monkeypatch):
    left = fileio._temp_name(tmp_path / "sub" / "old.txt")
    left.parent.mkdir()
    left.write_text("from the killed writer")
    (tmp_path / fileio.JOURNAL_NAME).write_text(json.dumps(
        {"pid": 999999, "entries": [[left.relative_to(tmp_path).as_posix(), "sub/old.txt",
                                     False]]}))
    synced = []
    real = fileio._fsync_dir
    monkeypatch.setattr(fileio, "_fsync_dir", lambda d: (synced.append(Path(d)), real(d))[1])
    with ReportSet(tmp_path) as rs:
        rs.text("sub/new.txt", "mine")
    assert (tmp_path / "sub" / "old.txt").read_text() == "from the killed writer"
    assert (tmp_path / "sub" / "new.txt").read_text() == "mine"
    assert not (tmp_path / fileio.JOURNAL_NAME).exists()
    assert tmp_path / "sub" in synced and synced.count(tmp_path) >= 2


def _stale_temp(d):
    d.mkdir(parents=True, exist_ok=True)
    t = d / f".r.csv{fileio.TEMP_MARK}{2**22 + 4321}-ab.csv"  # a pid above pid_max: dead
    t.write_text("stale")
    return t


def test_recover_skips_read_only_roots_unreadable_dirs_and_symlinks(tmp_path, monkeypatch):
    outside = _stale_temp(tmp_path / "outside")
    root = tmp_path / "root"
    a, b = _stale_temp(root / "a"), _stale_temp(root / "b")
    (root / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    monkeypatch.setattr(fileio.os, "access", lambda p, mode: False)
    assert recover(root) == {"rolled_forward": 0, "removed_temps": 0} and a.exists()
    monkeypatch.undo()
    calls = []
    real = os.scandir

    def scandir(d):
        calls.append(d)
        if len(calls) == 2:  # the first subdirectory popped cannot be read
            raise PermissionError(13, "Permission denied")
        return real(d)

    monkeypatch.setattr(fileio.os, "scandir", scandir)
    assert recover(root)["removed_temps"] == 1 and a.exists() != b.exists()
    assert outside.exists()  # a symlinked directory is not followed out of the root
