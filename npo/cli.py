"""``npo-bench``: run suites, print honesty tables, build reports, gate, train.

Exit codes: 0 success, 1 performance regression (gate), 2 bad input or error,
130 interrupted. Errors are one line on stderr (``--debug`` shows the
traceback). Every option, path and file is checked before the first case is
measured or the first epoch trained.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["main"]

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class Interrupted(Exception):
    """SIGINT/SIGTERM, with the truth about what was written."""


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("npo-bench")
    except metadata.PackageNotFoundError:
        from npo import __version__

        return __version__


def _progress(args):
    """tqdm's ``disable``: None (a bar on a terminal only), or forced by the flags."""
    return {None: None, True: False, False: True}[args.progress]


def _mem_available() -> int | None:
    from npo.env import proc_bytes

    return proc_bytes("MemAvailable", "/proc/meminfo")


#: The default memory budget of a case: this share of the memory available when the run starts
#: (the harness, its cached problems and the OS keep the rest).
MEMORY_SHARE = 0.8
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _size(text: str) -> int:
    """``8G``, ``512M``, ``1.5G`` or bytes -> bytes (argparse type)."""
    t = str(text).strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _SIZE_UNITS and t[-1:] else ""
    try:
        value = float(t[: len(t) - len(unit)]) * _SIZE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size (e.g. 8G, 512M, or bytes)") from None
    if not (value >= 2**20 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: a memory budget must be at least 1M")
    return int(value)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r}: a time budget must be > 0 seconds")
    return value


def _select(args):
    """The cases of a run (validated, nothing built) and the filter text."""
    from npo import cases, methods
    from npo.cases import Group
    from npo.problemkinds import mtx_field

    if args.matrix:
        from npo.problemkinds import get_kind

        fld = mtx_field(args.matrix, args.rhs)
        why = get_kind("mtx").spd_reason(0, fld)
        if why:
            raise CLIError(f"MatrixMarket file {args.matrix}: {why}; no method was run")
        ms = methods.select_methods(args.method or ["all"])
        suite = cases.Suite(fld.label, (Group("mtx", (0,), (fld,), tuple(ms)),),
                            f"MatrixMarket file {args.matrix}")
        filt = []
    else:
        if args.rhs:
            raise CLIError("--rhs goes with --matrix")
        suite = cases.get_suite(args.suite)
        if any(":" in m for m in args.method or ()):
            # an ad hoc method: run the named methods on the suite's problems
            chosen = tuple(methods.get_method(m) for m in args.method)
            suite = cases.Suite(suite.name, tuple(
                Group(g.problem, g.sizes, g.fields, chosen, g.ranks) for g in suite.groups),
                suite.description, suite.rtol, suite.rhs_seed, suite.path)
        filt = [(f"--{k}", v) for k, v in (("n", args.n), ("field", args.field),
                                          ("method", args.method)) if v]
    if args.ranks:
        suite = cases.Suite(suite.name, tuple(
            Group(g.problem, g.sizes, g.fields, g.methods, tuple(args.ranks))
            for g in suite.groups), suite.description, suite.rtol, suite.rhs_seed, suite.path)
        filt.append(("--ranks", args.ranks))
    adhoc = args.matrix or any(":" in m for m in args.method or ())
    kw = dict(sizes=args.n, fields=args.field, methods=None if adhoc else args.method,
              device=args.device)
    selected = cases.cases(suite, **kw)
    skipped = cases.skipped(suite, **kw)
    filter_text = " ".join(f"{k} {' '.join(map(str, v))}" for k, v in filt)
    return suite, selected, skipped, filter_text


def _kill_hook():
    """Test hook: ``NPO_BENCH_KILL_AFTER=k`` SIGKILLs this process right after the k-th case of
    this process is in the journal (a deterministic stand-in for ``kill -9``)."""
    import os

    k = os.environ.get("NPO_BENCH_KILL_AFTER")
    if not k:
        return lambda: None
    left = [int(k)]

    def hook():
        left[0] -= 1
        if left[0] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _resume_command(args, run_id: str) -> str:
    import shlex

    argv, skip = [], False
    for a in args.argv:  # the command as given, without a --resume of its own
        if skip:
            skip = False
            if not a.startswith("-"):
                continue
        if a == "--resume":
            skip = True
            continue
        if a.startswith("--resume="):
            continue
        argv.append(a)
    return "npo-bench " + shlex.join(argv + ["--resume", run_id])


def _open_journal(args, out: Path, header: dict):
    """The run's journal: a new one, or with --resume the unfinished one that matches."""
    from npo import journal

    if args.resume is None:
        return journal.Journal.create(out, header)
    try:
        j = journal.Journal.read(journal.find(out, args.resume or None))
    except journal.JournalError as exc:
        raise CLIError(str(exc)) from None
    expected = {k: v for k, v in header.items() if k not in ("run", "started", "argv")}
    why = j.mismatch(expected)
    if why:
        raise CLIError(f"cannot resume run {j.run_id}: {why}")
    return j


def cmd_run(args) -> int:
    import pandas as pd
    from tqdm import tqdm

    from npo import env, isolate, journal, measure
    from npo.fileio import ReportSet, check_output_dir
    from npo.report import build, honesty
    from npo.report.store import find_run_file
    from npo.schema import PROTOCOL_VERSION

    # --- everything is checked before the first case is measured ------------------------
    args.threads = env.clamp_threads(args.threads)
    if args.device != "cpu":
        from npo.devices import torch_device

        try:
            torch_device(args.device)
        except (ImportError, ValueError) as e:
            raise CLIError(f"--device: {e}") from None
    if args.resume is not None and args.no_write:
        raise CLIError("--resume continues a run's journal under --out; not with --no-write")
    suite, selected, skipped, filter_text = _select(args)
    if not selected:
        raise CLIError(f"no runnable cases in suite {suite.name!r} with these filters"
                       + (f" ({len(skipped)} skipped; see `npo-bench cases`)" if skipped else ""))
    out = Path(args.out)
    if not args.no_write:
        check_output_dir(out, build.estimate_run_bytes(len(selected)))
    memory = args.max_memory
    if memory is None:
        avail = _mem_available()
        memory = int(MEMORY_SHARE * avail) if avail is not None else None
    isolated = args.isolation == "process"
    if isolated and not isolate.available():
        warnings.warn("this platform has no fork(): cases run in this process, without "
                      "memory and time budgets", RuntimeWarning, stacklevel=1)
    header = {
        "run": journal.new_run_id(), "started": datetime.now(UTC).isoformat(),
        "argv": list(args.argv),
        "suite": suite.name, "filter": filter_text, "protocol_version": PROTOCOL_VERSION,
        "commit": env.git_commit(), "machine": env.machine_name(), "device": args.device,
        "threads": args.threads, "repeats": args.repeats, "cases": [c.id for c in selected]}
    jr = None if args.no_write else _open_journal(args, out, header)
    done = {r["case"]: r for r in jr.records} if jr is not None else {}
    # a section is measured whole (its methods share rounds): one with a case missing from the
    # journal is measured again, all of it
    todo = [c for group in measure.sections(selected) if any(c.id not in done for c in group)
            for c in group]
    again = sum(c.id in done for c in todo)
    print(f"npo-bench run: suite {suite.name!r}{' (filtered: ' + filter_text + ')' if filter_text else ''}, "
          f"{len(selected)} cases ({len(skipped)} combinations skipped), threads={args.threads}, "
          f"device={args.device}" + (f"; resuming run {jr.run_id}: {len(done)} measured, "
                                     f"{len(todo) - again} to go"
                                     + (f" ({again} again: their section was cut)" if again
                                        else "") if args.resume is not None else ""),
          file=sys.stderr)

    # --- measure: every case is in the journal before the next one starts ------------------
    t0 = time.perf_counter()
    bar = tqdm(total=len(selected), initial=len(selected) - len(todo), unit="case",
               file=sys.stderr, disable=_progress(args))
    hook = _kill_hook()

    def keep(recs):
        if jr is not None:
            jr.extend(recs)
            for _ in recs:
                hook()
        bar.update(len(recs))

    try:
        fresh = measure.run_cases(
            todo, memory=memory, case_timeout=args.case_timeout, isolated=isolated,
            suite=suite.name, threads=args.threads, repeats=args.repeats, filter=filter_text,
            progress=lambda c: bar.set_postfix_str(c.id), on_records=keep)
    except KeyboardInterrupt:
        if jr is None:
            raise Interrupted("no report was written; nothing was replaced") from None
        jr.close()
        raise Interrupted(f"{len(jr.records)} of {len(selected)} cases are kept in "
                          f"{jr.path}; nothing else was written. Resume with: "
                          f"{_resume_command(args, jr.run_id)}") from None
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    by_id = {**done, **{r["case"]: r for r in fresh}}
    records = [by_id[c.id] for c in selected]
    table = honesty.honesty_frame(pd.DataFrame(records))
    not_run = [(c.problem, c.n, c.field.label, c.method.label, why) for c, why in skipped]
    if args.json:
        print(json.dumps(_run_json(suite.name, filter_text, records, table, not_run), indent=1,
                         default=_json_default))
    else:
        print(honesty.honesty_text(table, not_run))
    print(f"measured {len(fresh)} cases in {wall:.1f} s"
          + (f" ({len(done)} more from the journal)" if done else ""), file=sys.stderr)
    if args.no_write:
        return EXIT_OK

    # --- write the report set as one commit ----------------------------------------------------
    earlier = find_run_file(out / "runs", jr.run_id)
    if earlier is not None:  # killed after the commit, before the journal was removed
        jr.remove()
        print(f"this run's report set was already written ({earlier}); its journal is removed",
              file=sys.stderr)
        return EXIT_OK
    rs = ReportSet(out)
    try:
        build.write_run_reports(records, out, suite=suite.name, filter_text=filter_text,
                                skipped=not_run, rs=rs, token=jr.run_id)
    except KeyboardInterrupt:
        jr.close()
        raise Interrupted(rs.describe() + f"; every case is kept in {jr.path}: "
                          f"{_resume_command(args, jr.run_id)} writes the reports") from None
    except OSError as exc:
        jr.close()
        raise CLIError(f"writing the report set failed ({exc.strerror or exc}); "
                       f"{rs.describe()}; every case is kept in {jr.path}") from None
    jr.remove()
    for p in rs.committed:
        print(f"wrote {p}", file=sys.stderr)
    return EXIT_OK


def _json_default(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    return str(o)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        v = v.item()
        return None if isinstance(v, float) and not math.isfinite(v) else v
    if v is None or (not isinstance(v, str | bool | int | float)):
        return None if v is None or str(v) in ("<NA>", "NaT", "nan") else str(v)
    return v


def _run_json(suite, filter_text, records, table, not_run) -> dict:
    verdicts = [
        {"case": r["case"], "method": r["method"], "verdict": r["verdict"],
         "speedup_wall": _clean(r["speedup_wall_x"]), "speedup_wall_ci": [
             _clean(r["wall_ci_lo"]), _clean(r["wall_ci_hi"])],
         "speedup_iters": _clean(r["speedup_iters_x"]), "break_even": r["break_even"] or None}
        for _, r in table.iterrows()
    ]
    return {
        "suite": suite,
        "filter": filter_text,
        "records": [{k: _clean(v) for k, v in rec.items()} for rec in records],
        "skipped": [{"problem": p, "n": n, "field": f, "method": m, "reason": why}
                    for p, n, f, m, why in not_run],
        "verdicts": verdicts,
    }


def cmd_cases(args) -> int:
    from npo import cases

    suite = cases.get_suite(args.suite)
    run = cases.cases(suite, device=args.device)
    skipped = cases.skipped(suite, device=args.device)
    if args.json:
        print(json.dumps({
            "suite": suite.name, "description": suite.description,
            "cases": [{"case": c.id, "problem": c.problem, "n": c.n, "N": c.N,
                       "field": c.field.label, "method": c.method.label,
                       "krylov": c.method.krylov, "maxiter": c.maxiter, "ranks": c.ranks}
                      for c in run],
            "skipped": [{"case": c.id, "reason": why} for c, why in skipped]}, indent=1))
        return EXIT_OK
    print(f"suite {suite.name}: {suite.description} ({len(run)} cases, {len(skipped)} skipped)")
    for c in run:
        print(f"{c.id:40s} {c.method.krylov:6s} {c.method.description}")
    for c, why in skipped:
        print(f"{c.id:40s} SKIP   {why}")
    return EXIT_OK


def cmd_report(args) -> int:
    from npo.fileio import check_output_dir
    from npo.report import build

    check_output_dir(args.out, 4 * 2**20)
    if args.parquet:
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise CLIError("--parquet needs pyarrow: pip install pyarrow")
    notes: list[str] = []
    paths = build.build_reports(asv_dir=args.asv, benchmarks_dir=args.benchmarks,
                                runs_dir=args.runs, out=args.out, skip_bad=args.skip_bad,
                                notes=notes, parquet=args.parquet)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    for p in paths:
        print(f"wrote {p}", file=sys.stderr)
    return EXIT_OK


def cmd_gate(args) -> int:
    from npo import gate

    return gate.run_gate(args)


#: options of ``train`` that only one architecture takes
_NAMG_ONLY = ("num_rhs", "rhs_seed", "record_iters", "epochs", "warmup", "num_coarse", "heads",
              "ffn_mult", "coef_channel", "precision", "init")
_MG_ONLY = ("steps", "num_vectors")


def cmd_train(args) -> int:
    from dataclasses import fields

    from npo.fileio import check_output_dir

    given = {k: v for k, v in vars(args).items() if v is not None}
    wrong = _MG_ONLY if args.arch == "namg" else _NAMG_ONLY
    bad = [k for k in wrong if k in given]
    if bad:
        other = "mg" if args.arch == "namg" else "namg"
        raise CLIError(f"--{bad[0].replace('_', '-')} applies to --arch {other} only")
    if args.arch == "mg":
        try:
            from npo.neural.mg_train import MGTrainConfig
        except ImportError:
            raise CLIError("torch is not installed: install npo-bench[neural]") from None
        config_cls = MGTrainConfig
    else:
        from npo.neural.config import TrainConfig

        config_cls = TrainConfig
    names = {f.name for f in fields(config_cls)}
    cfg = config_cls(**{k: v for k, v in given.items() if k in names})
    if not str(cfg.out).endswith(".pt"):
        raise CLIError(f"--out must name a .pt file, got {cfg.out!r}")
    check_output_dir(Path(cfg.out).resolve().parent, 2 * 2**20)
    if cfg.device != "cpu":
        from npo.devices import torch_device

        torch_device(cfg.device)
    if args.arch == "mg":
        from npo.neural.mg_train import train_mg

        cfg.validate()
        _, m = train_mg(cfg)
        print(f"wrote {cfg.out} ({m['params']} params, n={m['n']}, fields={m['fields']}): "
              f"train_s={m['train_s']:.1f}, final loss {m['final_loss']['total']:.4f}")
        return EXIT_OK
    from npo.neural.train import estimate_bytes, train

    need, avail = estimate_bytes(cfg), _mem_available()
    if avail is not None and need > avail:
        raise CLIError(f"this training run needs about {need / 2**30:.1f} GiB; "
                       f"{avail / 2**30:.1f} GiB is available")
    res = train(cfg)
    m = res.metadata
    print(f"wrote {res.path} ({m['params']} params, n={m['n']}, fields={m['fields']}): "
          f"train_s={m['train_s']:.1f}, final loss {m['final_loss']['total']:.4f}")
    return EXIT_OK


def cmd_diagnose(args) -> int:
    from dataclasses import replace

    from npo import diagnose
    from npo.cases import get_case
    from npo.methods import get_method
    from npo.schema import case_id

    if args.maxiter is not None and args.maxiter < 1:
        raise CLIError("--maxiter must be >= 1")
    cases = []
    for label in args.methods:
        if ":" in label:
            raise CLIError(f"diagnose takes registered method labels, not {label!r}")
        spec = get_method(label)
        if args.maxiter is not None:  # a capped diagnostic run may exceed the size limits
            spec = spec.variant(label, max_n=None, max_N=None, maxiter=args.maxiter)
        for n in args.n:
            for fld in args.field:
                case = replace(get_case(case_id(args.problem, n, fld, "cg")), method=spec)
                why = case.skip_reason
                if why:
                    raise CLIError(f"{case.id}: {why}")
                cases.append(case)
    if not args.no_write:
        from npo.fileio import check_output_dir

        check_output_dir(Path(args.out), 2**20)
    diags = []
    for case in cases:
        diags.append(diagnose.diagnose(case))
        print(f"{case.id}: {diags[-1].iterations} iterations, kappa(MA) ~ {diags[-1].kappa:.3g}",
              file=sys.stderr)
    if args.json:
        print(json.dumps([{**d.row(), "modes": d.modes} for d in diags], indent=1))
    else:
        print(diagnose.table(diags))
    if not args.no_write:
        for path in diagnose.write_report(diags, args.out, args.stem):
            print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


def cmd_publish(args) -> int:
    from npo.report import asv_offline

    return asv_offline.publish(args.html)


def _debug_parent() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand without --debug leaves the top level's value alone
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
    return common


def _subparser(sub, name: str, **kwargs):
    """A subcommand that, like the top level, takes --debug (before or after its name)."""
    return sub.add_parser(name, parents=[_debug_parent()], **kwargs)


def _add_progress(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_const", const=True, default=None,
                   help="always draw the progress bar")
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                   help="never draw it (default: only on a terminal)")


def _add_train_parser(sub) -> None:
    from npo.problems import FIELDS

    p = _subparser(
        sub, "train", help="train an NPO model (the seed's network or the multilevel NPO)",
        description="Train the Neural Preconditioning Operator and write a checkpoint with a "
                    "JSON sidecar: --arch namg (default) is the seed's network (report 06, "
                    "section 4), --arch mg the multilevel NPO (npo_mg). Needs "
                    "npo-bench[neural] (torch). Defaults are given as namg / mg.")
    p.add_argument("--arch", choices=("namg", "mg"), default="namg",
                   help="namg: the seed's attention network (npo); mg: the multilevel NPO")
    p.add_argument("--n", type=int, nargs="+",
                   help="grid size(s); several train on several resolutions (32 / 32 64)")
    p.add_argument("--field", dest="fields", nargs="+",
                   help=f"coefficient field famil(ies), from {sorted(FIELDS)} (constant / "
                        "constant jump lognormal binary)")
    p.add_argument("--contrast", type=float, nargs=2, metavar=("LO", "HI"),
                   help="log-uniform contrast range of non-constant fields (1 1 / 1 10000)")
    p.add_argument("--num-coef", type=int,
                   help="random coefficient matrices per non-constant field and grid size (1 / 16)")
    p.add_argument("--coef-seed", type=int,
                   help="first coefficient-field seed (1000; benchmarks use 0)")
    p.add_argument("--num-rhs", type=int, nargs="+",
                   help="namg: GRF right-hand sides per matrix, one value or one per --n (40)")
    p.add_argument("--rhs-seed", type=int, help="namg: first GRF seed (100)")
    p.add_argument("--record-iters", type=int, nargs="+",
                   help="namg: plain-CG iterations whose residuals become samples "
                        "(1 2 4 8 16 32 64)")
    p.add_argument("--epochs", type=int, help="namg: epochs (400)")
    p.add_argument("--steps", type=int, help="mg: optimiser steps (1500)")
    p.add_argument("--num-vectors", type=int,
                   help="mg: fresh and persistent error samples per matrix and step (12)")
    p.add_argument("--batch-size", type=int, help="samples (32) / matrices (4) per step")
    p.add_argument("--lr", type=float, help="peak learning rate (0.002 / 0.003)")
    p.add_argument("--lr-min", type=float, help="final learning rate (5e-05 / 0.0001)")
    p.add_argument("--warmup", type=int, help="namg: warm-up epochs (2.5%% of --epochs)")
    p.add_argument("--seed", type=int, help="torch/numpy seed (0)")
    p.add_argument("--width", type=int, help="channels (32) / hidden width of the MLPs (16)")
    p.add_argument("--num-coarse", type=int, help="namg: learned coarse queries (64)")
    p.add_argument("--heads", type=int, help="namg: attention heads (4)")
    p.add_argument("--ffn-mult", type=int, help="namg: FFN hidden width / width (4)")
    p.add_argument("--coef-channel", action=argparse.BooleanOptionalAction,
                   help="namg: log-coefficient input channel (on iff a non-constant field)")
    p.add_argument("--threads", type=int, help="torch/BLAS threads (1 / 2)")
    p.add_argument("--device", help="cpu or cuda[:k] (cpu)")
    p.add_argument("--precision",
                   help="namg: fp32, or bf16 (autocast GEMMs/convolutions while training) (fp32)")
    p.add_argument("--init",
                   help="namg: start from this checkpoint's weights (shipped name or .pt path)")
    p.add_argument("--out", required=True,
                   help="checkpoint path (.pt); a .json sidecar is written next to it")
    _add_progress(p)
    p.set_defaults(func=cmd_train)


def _add_diagnose_parser(sub) -> None:
    d = _subparser(
        sub, "diagnose", help="spectrum diagnostics of preconditioners on a case",
        description="Extreme Ritz values and kappa(MA) from the Lanczos coefficients of the "
                    "method's own Krylov run, the per-mode gain on sine modes, and how "
                    "nonlinear and how unsymmetric the preconditioner is. Writes "
                    "<out>/<stem>.md and a plot of the gains.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("methods", nargs="+", metavar="METHOD", help="method labels")
    d.add_argument("--n", type=int, nargs="+", default=[128], help="grid sizes")
    d.add_argument("--field", nargs="+", default=["constant"], help="fields")
    d.add_argument("--problem", default="diffusion_2d", help="problem kind")
    d.add_argument("--maxiter", type=int, default=None,
                   help="cap the diagnostic run's iterations (then the method's size limits do "
                        "not apply; the Ritz values describe the partial run)")
    d.add_argument("--out", default="reports", help="output directory")
    d.add_argument("--stem", default="diagnostics", help="file name stem of the report")
    d.add_argument("--no-write", action="store_true", help="print only, write nothing")
    d.add_argument("--json", action="store_true", help="print the rows as JSON")
    d.set_defaults(func=cmd_diagnose)


def build_parser() -> argparse.ArgumentParser:
    from npo import cases

    p = argparse.ArgumentParser(
        prog="npo-bench", description=__doc__.splitlines()[0] + " Honest benchmarks of "
        "preconditioned Krylov solvers on sparse SPD systems.")
    p.add_argument("--version", action="version", version=f"npo-bench {_version()}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    suites = ", ".join(cases.BUILTIN_SUITES)

    r = _subparser(
        sub, "run", help="run a suite and print/write its honesty table",
        description="Measure every case of a suite with the protocol (setup, apply, solve, "
                    "iterations, residuals), print the wall-clock honesty table, and commit the "
                    "report set (table .md/.csv, plots, run-store file) under --out as one "
                    "whole. Filtered runs write under a name that says so.")
    r.add_argument("--suite", default="quick",
                   help=f"built-in suite ({suites}) or a .toml suite file (default quick)")
    r.add_argument("--matrix", help="benchmark this MatrixMarket file instead of a suite")
    r.add_argument("--rhs", help="with --matrix: right-hand side (MatrixMarket, one column)")
    r.add_argument("--device", default="cpu",
                   help="cpu (numpy, default), torch:cpu (the GPU code path on the CPU) or "
                        "cuda[:k]; methods without that device are skipped, with the reason")
    r.add_argument("--out", default=".npo-bench",
                   help="report directory (default .npo-bench/, git-ignored; the committed set "
                        "is written with --out reports)")
    r.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP/torch threads, 1 to the core count (default 1)")
    r.add_argument("--repeats", type=int, default=5,
                   help="samples per timed stage (default 5; verdicts need 3)")
    r.add_argument("--n", type=int, nargs="+", help="only these sizes")
    r.add_argument("--field", nargs="+", help="only these fields")
    r.add_argument("--method", nargs="+",
                   help="only these methods (labels), or package.module:attr to run your own")
    r.add_argument("--ranks", type=int, nargs="+", help="MPI ranks (methods with MPI support)")
    r.add_argument("--no-write", action="store_true", help="print only, write nothing")
    r.add_argument("--json", action="store_true",
                   help="print records, skips and verdicts as JSON instead of the table")
    r.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN",
                   help="continue an interrupted run from its journal under --out (the newest, "
                        "or RUN): only the missing cases are measured; suite, filter, protocol, "
                        "commit and machine must match")
    r.add_argument("--max-memory", type=_size, default=None, metavar="SIZE",
                   help="memory budget of each case, e.g. 8G (default: 80%% of the memory "
                        "available when the run starts); a case over it is recorded as out of "
                        "memory and the run goes on")
    r.add_argument("--case-timeout", type=_seconds, default=None, metavar="S",
                   help="time budget of each case in seconds (default: 600 s + 1 ms per "
                        "unknown); a case over it is recorded as timed out")
    r.add_argument("--isolation", choices=("process", "none"), default="process",
                   help="process: each case in a worker process under its budgets, a section's "
                        "cases in interleaved rounds (default); none: in this process, one case "
                        "after another (no budgets; an exception is still the case's outcome)")
    _add_progress(r)
    r.set_defaults(func=cmd_run)

    c = _subparser(
        sub, "cases", help="list what a suite expands to, with the skipped combinations",
        description="Expand a suite (built-in or .toml file) into its cases, with each skipped "
                    "combination's reason; nothing is measured.")
    c.add_argument("--suite", default="quick",
                   help=f"built-in suite ({suites}) or a .toml suite file (default quick)")
    c.add_argument("--device", default="cpu", help="cpu, torch:cpu or cuda[:k] (default cpu)")
    c.add_argument("--json", action="store_true", help="print as JSON")
    c.set_defaults(func=cmd_cases)

    rep = _subparser(
        sub, "report", help="history, tables and plots from asv, pytest-benchmark and runs",
        description="Load asv results, pytest-benchmark JSON and the run store into one tidy "
                    "frame and commit measurements.csv, history.md/.csv (time changes flagged "
                    "only when significant), latest-honesty.md and plots as one set. With no "
                    "source given, the default places that exist are used; an empty one is "
                    "skipped with a note.")
    rep.add_argument("--asv", default=None, help="asv results directory (e.g. .asv/results)")
    rep.add_argument("--benchmarks", default=None,
                     help="pytest-benchmark JSON file or storage directory (.benchmarks)")
    rep.add_argument("--runs", default=None,
                     help="run store (default: reports/runs and .npo-bench/runs)")
    rep.add_argument("--out", default=".npo-bench",
                     help="output directory (default .npo-bench/, git-ignored; the committed set "
                          "is written with --out reports)")
    rep.add_argument("--skip-bad", action="store_true",
                     help="skip run files that fail validation (with a warning) instead of failing")
    rep.add_argument("--parquet", action="store_true",
                     help="also write measurements.parquet (needs pyarrow)")
    rep.set_defaults(func=cmd_report)

    g = _subparser(
        sub, "gate", help="CI performance gate on the quick suite",
        description="Compare iterations, accuracy, memory and cost in SpMV units (apply, "
                    "iteration, setup) with the committed baseline; exit 1 on a regression. "
                    "The rules and tolerances are printed with the result.")
    from npo.gate import add_arguments

    add_arguments(g)
    g.set_defaults(func=cmd_gate)

    _add_train_parser(sub)
    _add_diagnose_parser(sub)

    pub = _subparser(
        sub, "publish", help="asv publish, with its HTML made to work offline",
        description="Run `asv publish` and rewrite the HTML to load jQuery, flot and bootstrap "
                    "from vendored copies instead of CDNs, so it renders with no network.")
    pub.add_argument("--html", default=".asv/html", help="asv's html_dir (default .asv/html)")
    pub.set_defaults(func=cmd_publish)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # one line, like the errors: no source line of the library that warned
    print(f"npo-bench: warning: {message}", file=sys.stderr)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    old = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        if getattr(args, "repeats", 1) < 1:
            raise CLIError("--repeats must be >= 1")
        if args.command in ("run", "gate", "train"):
            from npo import env

            env.machine_name()  # it names run-store folders and every record: check it first
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return code
    except Interrupted as exc:
        print(f"npo-bench: interrupted; {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("npo-bench: interrupted; no report was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`npo-bench cases | head`): end quietly, as `git log | head` does
        _silence_stdout()
        return EXIT_OK
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
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
