"""Can a passing load flip a verdict? The interference test of the honesty table.

Runs ``npo-bench run --suite quick`` once on a quiet machine, then ``--runs`` times with a
CPU-bound load of ``--seconds`` seconds started when the run's journal holds ``--at`` cases
(a deterministic point; the load is one busy process per core, so that the benchmark has to
share its core). Prints every verdict that differs from the quiet run and counts the
wins <-> LOSES flips. ``--checkout`` runs another checkout of npo-bench (the code before a
change) with the same harness.

    python tools/interference.py [--checkout .] [--runs 5] [--at 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _burn(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def _journal_count(out: Path) -> int:
    files = list((out / "journal").glob("*.jsonl")) if (out / "journal").is_dir() else []
    return max((len(f.read_text().splitlines()) - 1 for f in files), default=0)


def run_once(checkout: Path, out: Path, at: int | None, seconds: float) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    p = subprocess.Popen([sys.executable, "-m", "npo.cli", "run", "--suite", "quick", "--out",
                          str(out), "--no-progress", "--json"], cwd=checkout, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    burners = []
    if at is not None:
        while p.poll() is None and _journal_count(out) < at:
            time.sleep(0.02)
        ctx = multiprocessing.get_context("fork")
        burners = [ctx.Process(target=_burn, args=(seconds,)) for _ in range(os.cpu_count())]
        for b in burners:
            b.start()
    stdout = p.communicate()[0]
    for b in burners:
        b.join()
    return {v["case"]: v["verdict"] for v in json.loads(stdout)["verdicts"]}


def _kind(verdict: str) -> str:
    for k in ("wins", "LOSES", "tie", "unstable", "baseline", "FAILS", "too few"):
        if verdict.startswith(k):
            return k
    return verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkout", default=".", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--at", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    checkout = args.checkout.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        quiet = run_once(checkout, Path(tmp) / "quiet", None, 0)
        changed = flips = 0
        for i in range(args.runs):
            loaded = run_once(checkout, Path(tmp) / f"load{i}", args.at, args.seconds)
            for case, v in loaded.items():
                q = quiet.get(case, "")
                if _kind(v) != _kind(q):
                    changed += 1
                    flip = {_kind(v), _kind(q)} == {"wins", "LOSES"}
                    flips += flip
                    print(f"run {i}: {case}: {q!r} -> {v!r}" + ("   <-- FLIP" if flip else ""))
    print(f"\n{args.runs} loaded runs of {len(quiet)} cases ({checkout}): {changed} verdicts "
          f"changed from the quiet run, {flips} wins<->LOSES flips")


if __name__ == "__main__":
    main()
