"""Does measuring a case in a child process change what is measured?

For every case of a suite (default ``quick``), measure it in this process and in a forked child
(:func:`npo.measure.measure_case`, isolated or not), alternating which goes first, ``--rounds``
times, in one run. Prints, per method: whether the iteration counts are identical, and the
median (min-max) over cases and rounds of child / in-process for the per-apply time and the
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
        for c in selected:
            order = (True, False) if (r + selected.index(c)) % 2 == 0 else (False, True)
            recs = {iso: measure.measure_case(c, repeats=args.repeats, isolated=iso,
                                              memory=2**33, timeout=1800) for iso in order}
            child, here = recs[True], recs[False]
            m = c.method.label
            same[m] &= child["iterations"] == here["iterations"]
            for k in ("apply_s", "solve_s"):
                if here[k] == here[k] and child[k] == child[k] and here[k] > 0:
                    ratios[m][k].append(child[k] / here[k])
    print(f"suite {args.suite}: {len(selected)} cases x {args.rounds} rounds, "
          f"{args.repeats} samples per stage\n")
    print(f"{'method':14s} {'iterations':12s} {'apply child/here':28s} {'solve child/here':28s}")
    for m in same:
        cells = []
        for k in ("apply_s", "solve_s"):
            xs = ratios[m][k]
            cells.append(f"{statistics.median(xs):.3f} ({min(xs):.2f}-{max(xs):.2f}, n={len(xs)})"
                         if xs else "-")
        print(f"{m:14s} {'identical' if same[m] else 'DIFFER':12s} {cells[0]:28s} {cells[1]:28s}")


if __name__ == "__main__":
    main()
