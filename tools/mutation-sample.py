"""A sampled mutation run over all of npo/: a fixed-seed random sample of mutants per module.

    .venv/bin/python tools/mutation-sample.py                 # 40 mutants per module
    .venv/bin/python tools/mutation-sample.py --per-module 10 --modules npo.stats npo.gate

mutmut checks every mutant of a module against the tests that reach it; over all of npo/
(about 14,400 mutants) that takes several hours on two cores. A uniform random sample of each
module estimates the module's score within a stated interval at a fraction of the cost (mutant
sampling, Acree 1980; Wong & Mathur 1995). The steps:

1. generate the mutants (mutmut's own generator, ``[tool.mutmut]`` in ``pyproject.toml``);
2. draw ``--per-module`` mutants of each module, uniformly, with ``--seed``;
3. ``mutmut run`` exactly those (each against the tests that reach its function);
4. print, per module, killed / checked, the mutants judged equivalent (listed with their
   reasons in ``reports/mutation-equivalents.tsv``, with those only a GPU or another test runner
   could tell apart: they are left out of the score), and the score with its 95% Wilson
   interval.

Results stay in ``mutants/`` (``mutmut results``, ``mutmut show NAME``), so a later run with
another seed adds to them. Not part of CI (see reports/mutation.md).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "reports" / "mutation-equivalents.tsv"
#: mutmut's statuses a mutant counts as killed by (failed tests, a timeout, a crash)
KILLED = {"killed", "timeout", "segfault"}


def generate() -> None:
    """Write mutants/ (mutmut's generation step alone, no tests run)."""
    code = (
        "import os, mutmut.__main__ as m\n"
        "m.set_mutant_under_test('mutant_generation')\n"
        "os.makedirs('mutants', exist_ok=True)\n"
        "m.copy_src_dir(); m.copy_also_copy_files(); m.setup_source_paths()\n"
        "m.store_lines_covered_by_tests(); m.create_mutants(os.cpu_count() or 2)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)  # mutmut lists every file it copies


def results() -> dict[str, dict[str, int | None]]:
    """``{module: {mutant: exit code or None}}`` from mutants/**/*.meta."""
    out: dict[str, dict] = collections.defaultdict(dict)
    for meta in sorted((ROOT / "mutants" / "npo").rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text()).get("exit_code_by_key", {}).items():
            out[name.split(".x", 1)[0]][name] = code
    return out


def equivalents() -> dict[str, str]:
    if not EQUIVALENTS.is_file():
        return {}
    rows = (line.split("\t") for line in EQUIVALENTS.read_text().splitlines()
            if line.strip() and not line.startswith("#"))
    return {r[0]: r[-1] for r in rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-module", type=int, default=40, help="mutants drawn per module")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modules", nargs="*", help="module prefixes (default: every module)")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--no-run", action="store_true", help="only summarise what mutants/ holds")
    args = ap.parse_args(argv)
    if args.per_module < 1:
        ap.error("--per-module must be >= 1")
    t0 = time.perf_counter()
    if not args.no_run:
        generate()
    by_module = results()
    if not by_module:
        ap.error("no mutants under mutants/npo (run without --no-run first)")
    modules = [m for m in sorted(by_module)
               if not args.modules or any(m.startswith(p) for p in args.modules)]
    if not modules:
        ap.error(f"no module matches {args.modules}")
    # one generator per module: a module's sample does not depend on which others are chosen
    sample = {m: sorted(random.Random(f"{args.seed}:{m}").sample(
        sorted(by_module[m]), min(args.per_module, len(by_module[m])))) for m in modules}
    if not args.no_run:
        names = [n for m in modules for n in sample[m]]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
        subprocess.run([mutmut, "run", "--max-children", str(args.max_children), *names],
                       cwd=ROOT, env=env, check=False)
        by_module = results()
    eq = equivalents()
    print("| module | mutants | sampled | killed | survived | no test | equivalent | "
          "score [95% CI] |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    from mutmut.__main__ import status_by_exit_code
    from scipy.stats import binomtest

    for m in modules:
        status = [(n, status_by_exit_code[by_module[m].get(n)]) for n in sample[m]]
        k = sum(st in KILLED for _, st in status)
        s = sum(st == "survived" and n not in eq for n, st in status)
        e = sum(st == "survived" and n in eq for n, st in status)
        nt = sum(st == "no tests" for _, st in status)
        score = "-"
        if k + s + nt:
            ci = binomtest(k, k + s + nt).proportion_ci(confidence_level=0.95, method="wilson")
            score = f"{k / (k + s + nt):.0%} [{ci.low:.0%}, {ci.high:.0%}]"
        print(f"| {m} | {len(by_module[m])} | {len(status)} | {k} | {s} | {nt} | {e} | {score} |")
    print(f"\n{time.perf_counter() - t0:.0f} s; seed {args.seed}; survivors: mutmut results; "
          "a diff: mutmut show NAME", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
