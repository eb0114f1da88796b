"""Does measuring a case in a worker process change what is measured?

For every section of a suite (default ``quick``), measure its cases as a run does (each in a
worker process, in interleaved rounds: :func:`npo.measure.measure_section`) and each case in
this process, alone (:func:`npo.measure.measure`), alternating which goes first, ``--rounds``
times, in one run. Prints, per method: whether the iteration counts are identical, and the
median (min-max) over cases and rounds of worker / in-process for the per-apply time and the
solve time; a ratio inside the gate's noise band means the isolation costs nothing measurable.

    python tools/isolation-overhead.py [--suite quick] [--rounds 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from npo import cases, measure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    suite = cases.get_suite(args.suite)
    selected = [c for c in cases.cases(suite) if c.ranks == 1]
    same = defaultdict(lambda: True)
    ratios = defaultdict(lambda: {"apply_s": [], "solve_s": []})
    for r in range(args.rounds):
        for k, group in enumerate(measure.sections(selected)):
            def workers(group=group):
                return measure.measure_section(group, memory=2**33, repeats=args.repeats)

            def here(group=group):
                return [measure.measure(c, repeats=args.repeats) for c in group]

            first, second = (workers, here) if (r + k) % 2 == 0 else (here, workers)
            a, b = first(), second()
            child, alone = (a, b) if first is workers else (b, a)
            for w, h in zip(child, alone, strict=True):
                m = w["method"]
                same[m] &= w["iterations"] == h["iterations"]
                for key in ("apply_s", "solve_s"):
                    if h[key] == h[key] and w[key] == w[key] and h[key] > 0:
                        ratios[m][key].append(w[key] / h[key])
    print(f"suite {args.suite}: {len(selected)} cases x {args.rounds} rounds, "
          f"{args.repeats} samples per stage\n")
    print(f"{'method':14s} {'iterations':12s} {'apply worker/here':28s} "
          f"{'solve worker/here':28s}")
    for m in same:
        cells = []
        for k in ("apply_s", "solve_s"):
            xs = ratios[m][k]
            cells.append(f"{statistics.median(xs):.3f} ({min(xs):.2f}-{max(xs):.2f}, n={len(xs)})"
                         if xs else "-")
        print(f"{m:14s} {'identical' if same[m] else 'DIFFER':12s} {cells[0]:28s} {cells[1]:28s}")


if __name__ == "__main__":
    main()
