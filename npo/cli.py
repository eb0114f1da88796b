"""``npo-bench``: run suites, print honesty tables, build reports, gate, train.

Exit codes: 0 success, 1 performance regression (gate), 2 bad input or error.
Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main"]

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _honesty_stem(suite: str) -> str:
    # reports/honesty.md is the standard suite's table (committed); other
    # suites write honesty-<suite>.md beside it and never replace it.
    return "honesty" if suite == "standard" else f"honesty-{suite}"


def _check_device(device: str) -> None:
    if device == "cuda":
        from npo.env import torch_device

        try:
            torch_device(device)
        except ValueError as e:
            raise CLIError(f"--device: {e}") from None


def cmd_run(args) -> int:
    import pandas as pd
    from tqdm import tqdm

    from npo import cases, measure
    from npo.report import honesty, plots, store
    from npo.report.io import write_csv, write_text

    _check_device(args.device)
    selected = cases.cases(args.suite, sizes=args.n, fields=args.field, methods=args.method)
    if not selected:
        raise CLIError(f"no runnable cases in suite {args.suite!r} with these filters")
    skipped = cases.skipped(args.suite)
    print(
        f"npo-bench run: suite {args.suite!r}, {len(selected)} cases "
        f"({len(skipped)} combinations skipped, see `npo-bench cases --suite {args.suite}`), "
        f"threads={args.threads}, device={args.device}",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    bar = tqdm(selected, unit="case", file=sys.stderr, disable=args.no_progress)
    records = []
    for c in bar:
        bar.set_postfix_str(c.id)
        records.append(
            measure.measure(
                c, suite=args.suite, device=args.device, threads=args.threads, repeats=args.repeats
            )
        )
    bar.close()
    wall = time.perf_counter() - t0
    df = pd.DataFrame(records, columns=measure.RECORD_COLUMNS)
    table = honesty.honesty_frame(df)
    print(honesty.honesty_text(table))
    print(f"measured {len(records)} cases in {wall:.1f} s", file=sys.stderr)
    if args.no_write:
        return EXIT_OK
    out = Path(args.out)
    stem = _honesty_stem(args.suite)
    not_run = [(c.n, c.field.label, c.method.label, why) for c, why in skipped]
    title = f"Wall-clock honesty table: suite {args.suite}"
    written = [
        write_text(out / f"{stem}.md", honesty.honesty_markdown(table, title, not_run)),
        write_csv(out / f"{stem}.csv", table),
        plots.plot_iterations(table, out / "plots" / f"{args.suite}-iterations.png"),
        plots.plot_time_to_solution(table, out / "plots" / f"{args.suite}-time-to-solution.png"),
        store.append_run(records, out / "runs", args.suite),
    ]
    for p in written:
        print(f"wrote {p}", file=sys.stderr)
    return EXIT_OK


def cmd_cases(args) -> int:
    from npo import cases

    for c in cases.cases(args.suite):
        print(f"{c.id:32s} {c.method.krylov:4s} {c.method.description}")
    for c, why in cases.skipped(args.suite):
        print(f"{c.id:32s} SKIP {why}")
    return EXIT_OK


def cmd_report(args) -> int:
    from npo.report import build

    paths = build.build_reports(
        asv_dir=args.asv, benchmarks_dir=args.benchmarks, runs_dir=args.runs, out=args.out
    )
    for p in paths:
        print(f"wrote {p}", file=sys.stderr)
    return EXIT_OK


def cmd_gate(args) -> int:
    from npo import gate

    return gate.run_gate(args)


def build_parser() -> argparse.ArgumentParser:
    from npo import cases

    p = argparse.ArgumentParser(prog="npo-bench", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a suite and print/write the honesty table")
    r.add_argument("--suite", default="quick", help=f"one of {sorted(cases.SUITES)} (default quick)")
    r.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="NPO device")
    r.add_argument("--out", default="reports", help="report directory (default reports/)")
    r.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads (default 1)")
    r.add_argument("--repeats", type=int, default=3, help="timing repeats per stage (default 3)")
    r.add_argument("--n", type=int, nargs="+", help="only these grid sizes")
    r.add_argument("--field", nargs="+", help=f"only these fields: {list(cases.FIELDS)}")
    r.add_argument("--method", nargs="+", help=f"only these methods: {list(cases.METHODS)}")
    r.add_argument("--no-write", action="store_true", help="print only, write nothing")
    r.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("cases", help="list a suite's cases and the skipped combinations")
    c.add_argument("--suite", default="quick")
    c.set_defaults(func=cmd_cases)

    rep = sub.add_parser("report", help="history and tables from asv, pytest-benchmark and runs")
    rep.add_argument("--asv", default=None, help="asv results directory (e.g. .asv/results)")
    rep.add_argument("--benchmarks", default=None, help="pytest-benchmark storage (.benchmarks)")
    rep.add_argument("--runs", default=None, help="run store (reports/runs)")
    rep.add_argument("--out", default="reports", help="output directory (default reports/)")
    rep.set_defaults(func=cmd_report)

    g = sub.add_parser("gate", help="CI performance gate on the quick suite")
    from npo.gate import add_arguments

    add_arguments(g)
    g.set_defaults(func=cmd_gate)

    from npo.neural.train import add_train_parser

    add_train_parser(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "repeats", 1) < 1 or getattr(args, "threads", 1) < 1:
            raise CLIError("--repeats and --threads must be >= 1")
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("npo-bench: interrupted; no report was written", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
        if args.debug:
            raise
        print(f"npo-bench: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a raw traceback
        if args.debug:
            raise
        print(f"npo-bench: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
