"""npo.isolate: work in a child process with a memory and a time budget."""

import os
import subprocess
import time

import numpy as np
import pytest

from npo import isolate

pytestmark = pytest.mark.skipif(not isolate.available(), reason="needs fork (Linux)")


def test_the_value_comes_back_and_the_parent_state_is_seen():
    big = np.arange(10.0)  # built here, read in the child without pickling it
    assert isolate.call(lambda: float(big.sum())) == 45.0


def test_an_allocation_over_the_budget_is_out_of_memory_not_a_dead_harness():
    out = isolate.call(lambda: np.ones(2**30 // 8 * 2), memory=256 * 2**20, needs=2**20)
    assert isinstance(out, isolate.Ended)
    assert out.reason == "out of memory (needs ≈2.0 GiB, limit 0.2 GiB)"
    assert isolate.call(lambda: 1, memory=256 * 2**20) == 1  # and the parent goes on


def test_a_hung_child_and_its_children_are_killed_at_the_timeout(tmp_path):
    pidfile = tmp_path / "pid"

    def hang():
        p = subprocess.Popen(["sleep", "300"])
        pidfile.write_text(str(p.pid))
        p.wait()

    t0 = time.perf_counter()
    out = isolate.call(hang, timeout=2)
    assert out == isolate.Ended("timed out after 2 s")
    assert time.perf_counter() - t0 < 30
    grandchild = int(pidfile.read_text())
    time.sleep(0.2)
    assert not _running(grandchild)  # the process group went with it


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie is dead
    except FileNotFoundError:
        return False


def test_an_exception_and_a_kill_are_outcomes():
    assert isolate.call(lambda: 1 / 0).reason == "error: ZeroDivisionError: division by zero"
    out = isolate.call(lambda: os.kill(os.getpid(), 9), memory=2**30)
    assert out.reason.startswith("killed by SIGKILL (the kernel's OOM killer")
    assert "memory limit 1.0 GiB" in out.reason
