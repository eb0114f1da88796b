"""Mutation-testing tests for npo.cli: the documented interface (every option, default and help
text), exit codes, the JSON output, and each command's checks -- with nothing measured
(``measure.run_cases`` is replaced by a fake that returns fixed records)."""

import argparse
import json
import math
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from npo import cli, measure
from npo.cli import build_parser, main

SUITE_HELP = ("built-in suite (quick, standard, full, history, npo, problems, gpu, petsc) or a "
              ".toml suite file (default quick)")
PROGRESS = [
    (("--progress",), "progress", None, None, 0, True, None, "always draw the progress bar"),
    (("--no-progress",), "progress", None, None, 0, False, None,
     "never draw it (default: only on a terminal)"),
]
INTERFACE = {
    None: ("``npo-bench``: run suites, print honesty tables, build reports, gate, train. Honest "
           "benchmarks of preconditioned Krylov solvers on sparse SPD systems.", None, [
               (("--version",), "version", "==SUPPRESS==", None, 0, None, None,
                "show program's version number and exit"),
               (("--debug",), "debug", False, None, 0, True, None, "show tracebacks on errors")]),
    "run": ("Measure every case of a suite with the protocol (setup, apply, solve, iterations, "
            "residuals), print the wall-clock honesty table, and commit the report set (table "
            ".md/.csv, plots, run-store file) under --out as one whole. Filtered runs write under "
            "a name that says so.", "run a suite and print/write its honesty table", [
                (("--suite",), "suite", "quick", None, None, None, None, SUITE_HELP),
                (("--matrix",), "matrix", None, None, None, None, None,
                 "benchmark this MatrixMarket file instead of a suite"),
                (("--rhs",), "rhs", None, None, None, None, None,
                 "with --matrix: right-hand side (MatrixMarket, one column)"),
                (("--device",), "device", "cpu", None, None, None, None,
                 "cpu (numpy, default), torch:cpu (the GPU code path on the CPU) or cuda[:k]; "
                 "methods without that device are skipped, with the reason"),
                (("--out",), "out", ".npo-bench", None, None, None, None,
                 "report directory (default .npo-bench/, git-ignored; the committed set is "
                 "written with --out reports)"),
                (("--threads",), "threads", 1, int, None, None, None,
                 "BLAS/OpenMP/torch threads, 1 to the core count (default 1)"),
                (("--repeats",), "repeats", 5, int, None, None, None,
                 "samples per timed stage (default 5; verdicts need 3)"),
                (("--n",), "n", None, int, "+", None, None, "only these sizes"),
                (("--field",), "field", None, None, "+", None, None, "only these fields"),
                (("--method",), "method", None, None, "+", None, None,
                 "only these methods (labels), or package.module:attr to run your own"),
                (("--ranks",), "ranks", None, int, "+", None, None,
                 "MPI ranks (methods with MPI support)"),
                (("--no-write",), "no_write", False, None, 0, True, None,
                 "print only, write nothing"),
                (("--json",), "json", False, None, 0, True, None,
                 "print records, skips and verdicts as JSON instead of the table"),
                (("--resume",), "resume", None, None, "?", "", "RUN",
                 "continue an interrupted run from its journal under --out (the newest, or "
                 "RUN): only the missing cases are measured; suite, filter, protocol, commit and "
                 "machine must match"),
                (("--max-memory",), "max_memory", None, cli._size, None, None, "SIZE",
                 "memory budget of each case, e.g. 8G (default: 80%% of the memory available "
                 "when the run starts); a case over it is recorded as out of memory and the run "
                 "goes on"),
                (("--case-timeout",), "case_timeout", None, cli._seconds, None, None, "S",
                 "time budget of each case in seconds (default: 600 s + 1 ms per unknown); a "
                 "case over it is recorded as timed out"),
                (("--isolation",), "isolation", "process", None, None, None, None,
                 "process: each case in a worker process under its budgets, a section's cases "
                 "in interleaved rounds (default); none: in this process, one case after "
                 "another (no budgets; an exception is still the case's outcome)"),
                *PROGRESS]),
    "cases": ("Expand a suite (built-in or .toml file) into its cases, with each skipped "
              "combination's reason; nothing is measured.",
              "list what a suite expands to, with the skipped combinations", [
                  (("--suite",), "suite", "quick", None, None, None, None, SUITE_HELP),
                  (("--device",), "device", "cpu", None, None, None, None,
                   "cpu, torch:cpu or cuda[:k] (default cpu)"),
                  (("--json",), "json", False, None, 0, True, None, "print as JSON")]),
    "report": ("Load asv results, pytest-benchmark JSON and the run store into one tidy frame and "
               "commit measurements.csv, history.md/.csv (time changes flagged only when "
               "significant), latest-honesty.md and plots as one set. With no source given, the "
               "default places that exist are used; an empty one is skipped with a note.",
               "history, tables and plots from asv, pytest-benchmark and runs", [
                   (("--asv",), "asv", None, None, None, None, None,
                    "asv results directory (e.g. .asv/results)"),
                   (("--benchmarks",), "benchmarks", None, None, None, None, None,
                    "pytest-benchmark JSON file or storage directory (.benchmarks)"),
                   (("--runs",), "runs", None, None, None, None, None,
                    "run store (default: reports/runs and .npo-bench/runs)"),
                   (("--out",), "out", ".npo-bench", None, None, None, None,
                    "output directory (default .npo-bench/, git-ignored; the committed set is "
                    "written with --out reports)"),
                   (("--skip-bad",), "skip_bad", False, None, 0, True, None,
                    "skip run files that fail validation (with a warning) instead of failing"),
                   (("--parquet",), "parquet", False, None, 0, True, None,
                    "also write measurements.parquet (needs pyarrow)")]),
    "gate": ("Compare iterations, accuracy, memory and cost in SpMV units (apply, iteration, "
             "setup) with the committed baseline; exit 1 on a regression. The rules and "
             "tolerances are printed with the result.", "CI performance gate on the quick suite", [
                 (("--baseline",), "baseline", "benchmarks/gate_baseline.json", None, None, None,
                  None, "baseline file (benchmarks/gate_baseline.json)"),
                 (("--update-baseline",), "update_baseline", False, None, 0, True, None,
                  "measure and rewrite the baseline (refuses a dirty tree)"),
                 (("--allow-dirty",), "allow_dirty", False, None, 0, True, None,
                  "with --update-baseline: accept uncommitted changes"),
                 (("--summary",), "summary", None, None, None, None, None,
                  "also write the Markdown summary here"),
                 (("--repeats",), "repeats", 7, int, None, None, None,
                  "time samples per metric, >= 3 (7)"),
                 (("--threshold",), "threshold", 1.5, float, None, None, None,
                  "time ratio limit, > 1 (1.5)"),
                 (("--alpha",), "alpha", 0.01, float, None, None, None,
                  "significance level, in (0, 1) (0.01)"),
                 (("--no-time",), "no_time", False, None, 0, True, None,
                  "iterations, accuracy, memory only"),
                 (("--method",), "method", None, None, "+", None, None,
                  "only these methods (default: all of quick)"),
                 (("--case",), "case", None, None, "+", None, None, "only these case ids"),
                 (("--json",), "json", False, None, 0, True, None, "print the result as JSON")]),
    'train': ("Train the Neural Preconditioning Operator and write a checkpoint with a JSON sidecar: --arch namg (default) is the seed's network (report 06, section 4), --arch mg the multilevel NPO (npo_mg). Needs npo-bench[neural] (torch). Defaults are given as namg / mg.",
        "train an NPO model (the seed's network or the multilevel NPO)",
        [(('--arch',),
          'arch',
          'namg',
          None,
          None,
          None,
          None,
          "namg: the seed's attention network (npo); mg: the multilevel NPO"),
         (('--n',),
          'n',
          None,
          int,
          '+',
          None,
          None,
          'grid size(s); several train on several resolutions (32 / 32 64)'),
         (('--field',),
          'fields',
          None,
          None,
          '+',
          None,
          None,
          "coefficient field famil(ies), from ['binary', 'checkerboard', 'constant', 'jump', "
          "'lognormal'] (constant / constant jump lognormal binary)"),
         (('--contrast',),
          'contrast',
          None,
          float,
          2,
          None,
          ('LO', 'HI'),
          'log-uniform contrast range of non-constant fields (1 1 / 1 10000)'),
         (('--num-coef',),
          'num_coef',
          None,
          int,
          None,
          None,
          None,
          'random coefficient matrices per non-constant field and grid size (1 / 16)'),
         (('--coef-seed',),
          'coef_seed',
          None,
          int,
          None,
          None,
          None,
          'first coefficient-field seed (1000; benchmarks use 0)'),
         (('--num-rhs',),
          'num_rhs',
          None,
          int,
          '+',
          None,
          None,
          'namg: GRF right-hand sides per matrix, one value or one per --n (40)'),
         (('--rhs-seed',),
          'rhs_seed',
          None,
          int,
          None,
          None,
          None,
          'namg: first GRF seed (100)'),
         (('--record-iters',),
          'record_iters',
          None,
          int,
          '+',
          None,
          None,
          'namg: plain-CG iterations whose residuals become samples (1 2 4 8 16 32 64)'),
         (('--epochs',), 'epochs', None, int, None, None, None, 'namg: epochs (400)'),
         (('--steps',),
          'steps',
          None,
          int,
          None,
          None,
          None,
          'mg: optimiser steps (1500)'),
         (('--num-vectors',),
          'num_vectors',
          None,
          int,
          None,
          None,
          None,
          'mg: fresh and persistent error samples per matrix and step (12)'),
         (('--batch-size',),
          'batch_size',
          None,
          int,
          None,
          None,
          None,
          'samples (32) / matrices (4) per step'),
         (('--lr',),
          'lr',
          None,
          float,
          None,
          None,
          None,
          'peak learning rate (0.002 / 0.003)'),
         (('--lr-min',),
          'lr_min',
          None,
          float,
          None,
          None,
          None,
          'final learning rate (5e-05 / 0.0001)'),
         (('--warmup',),
          'warmup',
          None,
          int,
          None,
          None,
          None,
          'namg: warm-up epochs (2.5%% of --epochs)'),
         (('--seed',), 'seed', None, int, None, None, None, 'torch/numpy seed (0)'),
         (('--width',),
          'width',
          None,
          int,
          None,
          None,
          None,
          'channels (32) / hidden width of the MLPs (16)'),
         (('--num-coarse',),
          'num_coarse',
          None,
          int,
          None,
          None,
          None,
          'namg: learned coarse queries (64)'),
         (('--heads',),
          'heads',
          None,
          int,
          None,
          None,
          None,
          'namg: attention heads (4)'),
         (('--ffn-mult',),
          'ffn_mult',
          None,
          int,
          None,
          None,
          None,
          'namg: FFN hidden width / width (4)'),
         (('--coef-channel', '--no-coef-channel'),
          'coef_channel',
          None,
          None,
          0,
          None,
          None,
          'namg: log-coefficient input channel (on iff a non-constant field)'),
         (('--threads',),
          'threads',
          None,
          int,
          None,
          None,
          None,
          'torch/BLAS threads (1 / 2)'),
         (('--device',), 'device', None, None, None, None, None, 'cpu or cuda[:k] (cpu)'),
         (('--precision',),
          'precision',
          None,
          None,
          None,
          None,
          None,
          'namg: fp32, or bf16 (autocast GEMMs/convolutions while training) (fp32)'),
         (('--init',),
          'init',
          None,
          None,
          None,
          None,
          None,
          "namg: start from this checkpoint's weights (shipped name or .pt path)"),
         (('--out',),
          'out',
          None,
          None,
          None,
          None,
          None,
          'checkpoint path (.pt); a .json sidecar is written next to it'),
         (('--progress',), 'progress', None, None, 0, True, None, 'always draw the progress bar'),
         (('--no-progress',),
          'progress',
          None,
          None,
          0,
          False,
          None,
          'never draw it (default: only on a terminal)')]),
    'diagnose': ("Extreme Ritz values and kappa(MA) from the Lanczos coefficients of the method's own Krylov run, the per-mode gain on sine modes, and how nonlinear and how unsymmetric the preconditioner is. Writes <out>/<stem>.md and a plot of the gains.",
        'spectrum diagnostics of preconditioners on a case',
        [((), 'methods', None, None, '+', None, 'METHOD', 'method labels'),
         (('--n',), 'n', [128], int, '+', None, None, 'grid sizes'),
         (('--field',), 'field', ['constant'], None, '+', None, None, 'fields'),
         (('--problem',), 'problem', 'diffusion_2d', None, None, None, None, 'problem kind'),
         (('--maxiter',),
          'maxiter',
          None,
          int,
          None,
          None,
          None,
          "cap the diagnostic run's iterations (then the method's size limits do not apply; the "
          'Ritz values describe the partial run)'),
         (('--out',), 'out', 'reports', None, None, None, None, 'output directory'),
         (('--stem',),
          'stem',
          'diagnostics',
          None,
          None,
          None,
          None,
          'file name stem of the report'),
         (('--no-write',), 'no_write', False, None, 0, True, None, 'print only, write nothing'),
         (('--json',), 'json', False, None, 0, True, None, 'print the rows as JSON')]),
    "publish": ("Run `asv publish` and rewrite the HTML to load jQuery, flot and bootstrap from "
                "vendored copies instead of CDNs, so it renders with no network.",
                "asv publish, with its HTML made to work offline", [
                    (("--html",), "html", ".asv/html", None, None, None, None,
                     "asv's html_dir (default .asv/html)")]),
}


def _actions(parser, sub=False):
    # a subcommand's --debug (shared by every subcommand) is checked on its own below
    return [(tuple(a.option_strings), a.dest, a.default, a.type, a.nargs, a.const, a.metavar,
             a.help) for a in parser._actions
            if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
            and not (sub and a.dest == "debug")]


def test_the_documented_interface():
    p = build_parser()
    assert p.prog == "npo-bench"
    desc, _, opts = INTERFACE[None]
    assert p.description == desc and _actions(p) == opts
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    assert sub.dest == "command" and sub.required is True and sub.metavar == "COMMAND"
    assert list(sub.choices) == ["run", "cases", "report", "gate", "train", "diagnose",
                                 "publish"]
    helps = {a.dest: a.help for a in sub._choices_actions}
    funcs = {"run": cli.cmd_run, "cases": cli.cmd_cases, "report": cli.cmd_report,
             "gate": cli.cmd_gate, "train": cli.cmd_train, "diagnose": cli.cmd_diagnose,
             "publish": cli.cmd_publish}
    for name, sp in sub.choices.items():
        desc, help_, opts = INTERFACE[name]
        assert sp.prog == f"npo-bench {name}"
        assert (sp.description, helps[name]) == (desc, help_), name
        assert _actions(sp, sub=True) == opts, name
        assert sp.get_default("func") is funcs[name]
        debug = next(a for a in sp._actions if a.dest == "debug")
        assert debug.option_strings == ["--debug"] and debug.default is argparse.SUPPRESS
    train = sub.choices["train"]
    req = {a.dest: a.required for a in train._actions}
    assert req["out"] is True and not any(v for k, v in req.items() if k != "out")
    run = sub.choices["run"]
    assert not any(a.required for a in run._actions)
    group = [g for g in run._mutually_exclusive_groups]
    assert len(group) == 1 and [a.option_strings for a in group[0]._group_actions] == [
        ["--progress"], ["--no-progress"]]
    version = next(a for a in p._actions if a.dest == "version")
    assert version.version == f"npo-bench {cli._version()}"


def test_constants_and_small_helpers(monkeypatch):
    assert (cli.EXIT_OK, cli.EXIT_REGRESSION, cli.EXIT_ERROR, cli.EXIT_INTERRUPTED) == (
        0, 1, 2, 130)
    assert cli.MEMORY_SHARE == 0.8
    for progress, disable in ((None, None), (True, False), (False, True)):
        assert cli._progress(argparse.Namespace(progress=progress)) is disable
    from importlib import metadata

    assert cli._version() == metadata.version("npo-bench")

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    from npo import __version__

    assert cli._version() == __version__
    with pytest.raises(KeyboardInterrupt):
        cli._raise_interrupt(signal.SIGTERM, None)
    assert cli._main_thread() is True


def test_mem_available(monkeypatch, tmp_path):
    with open("/proc/meminfo") as f:
        line = next(ln for ln in f if ln.startswith("MemAvailable:"))
    got = cli._mem_available()
    assert got % 1024 == 0 and abs(got - int(line.split()[1]) * 1024) < 2**30
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal: 10 kB\nMemFree: 5 kB\n")
    real_open = open

    def fake_open(path, *a, **k):
        return real_open(fake if path == "/proc/meminfo" else path, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    assert cli._mem_available() is None
    fake.write_text("MemAvailable:   2048 kB\n")
    assert cli._mem_available() == 2048 * 1024

    def no_open(path, *a, **k):
        raise OSError("no proc")

    monkeypatch.setattr("builtins.open", no_open)
    assert cli._mem_available() is None


def test_size_and_seconds_parse_budgets():
    assert cli._size("8G") == 8 * 2**30 and cli._size("512M") == 512 * 2**20
    assert cli._size("1.5GiB") == int(1.5 * 2**30) and cli._size(str(2**21)) == 2**21
    for bad in ("lots", "10K", "-1G", "nanG"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli._size(bad)
    assert cli._seconds("2.5") == 2.5
    for bad in ("0", "-3", "inf", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli._seconds(bad)


def _sel(*argv):
    return cli._select(build_parser().parse_args(["run", *argv]))


def test_select_filters_and_filter_text():
    suite, selected, skipped, text = _sel("--n", "32", "--field", "jump1e2", "--method", "cg",
                                          "amg_sa")
    assert suite.name == "quick" and [c.id for c in selected] == ["n32-jump1e2-cg",
                                                                  "n32-jump1e2-amg_sa"]
    assert text == "--n 32 --field jump1e2 --method cg amg_sa" and skipped == []
    suite, selected, skipped, text = _sel("--n", "32", "--method", "cg", "--ranks", "1", "2")
    assert text == "--n 32 --method cg --ranks 1 2"
    assert [c.id for c in selected] == ["n32-constant-cg", "n32-jump1e2-cg"]
    assert [(c.id, why) for c, why in skipped] == [
        ("n32p2-constant-cg", "cg runs in one process (no MPI)"),
        ("n32p2-jump1e2-cg", "cg runs in one process (no MPI)")]
    _, sel_all, _, text = _sel()
    assert text == "" and len(sel_all) > 10
    suite, selected, _, text = _sel("--n", "32", "--field", "constant", "--method",
                                    "npo.precond.nystrom:Nystrom")
    assert [c.id for c in selected] == ["n32-constant-Nystrom"]
    assert text == "--n 32 --field constant --method npo.precond.nystrom:Nystrom"
    assert suite.name == "quick"
    assert [g.methods[0].label for g in suite.groups] == ["Nystrom"] * len(suite.groups)
    with pytest.raises(cli.CLIError, match=r"^--rhs goes with --matrix$"):
        _sel("--rhs", "b.mtx")
    _, sel_dev, skip_dev, _ = _sel("--n", "32", "--field", "constant", "--method", "ilu",
                                   "jacobi", "--device", "torch:cpu")
    assert [c.id for c in sel_dev] == ["n32-constant-jacobi"]
    assert {c.device for c in sel_dev} == {"torch:cpu"} and [c.id for c, _ in skip_dev] == [
        "n32-constant-ilu"]


def test_select_matrix(tmp_path):
    import scipy.io

    from npo.problems import poisson_2d

    scipy.io.mmwrite(tmp_path / "my-A.mtx", poisson_2d(3))
    scipy.io.mmwrite(tmp_path / "b.mtx", np.ones((9, 1)))
    suite, selected, skipped, text = _sel("--matrix", str(tmp_path / "my-A.mtx"), "--rhs",
                                          str(tmp_path / "b.mtx"), "--method", "cg", "jacobi")
    assert suite.name == "my_A" and suite.description == f"MatrixMarket file {tmp_path}/my-A.mtx"
    assert [c.id for c in selected] == ["mtx-n9-my_A-cg", "mtx-n9-my_A-jacobi"]
    assert text == "" and skipped == []
    suite, selected, skipped, text = _sel("--matrix", str(tmp_path / "my-A.mtx"), "--ranks", "2")
    assert text == "--ranks 2" and selected == []
    _, sel_all, _, _ = _sel("--matrix", str(tmp_path / "my-A.mtx"))
    assert "mtx-n9-my_A-amg_sa" in [c.id for c in sel_all]


def _fake_records(cases_, suite, filter_text=""):
    out = []
    for c in cases_:
        rec = dict.fromkeys(__import__("npo.schema", fromlist=["x"]).RECORD_COLUMNS)
        rec.update(protocol_version=2, commit="abc", commit_date="", machine="m", cpu="c",
                   cores=2, blas="b", device=c.device, source="cli", suite=suite,
                   filter=filter_text, timestamp="2024-01-01T00:00:00+00:00", threads=1,
                   ranks=1, versions="{}", case=c.id, problem=c.problem, field=c.field.label,
                   contrast=c.field.contrast, n=c.n, N=c.N, nnz=5 * c.N,
                   method=c.method.label, precond=c.method.precond, krylov="pcg", rtol=1e-10,
                   maxiter=c.maxiter, rhs="grf(seed=42)", iterations=10, converged=True,
                   reason="converged", relres=1e-11, true_relres=2e-11, relerr=math.nan,
                   setup_s=0.001, apply_s=1e-5, solve_s=0.01, total_s=0.011, spmv_s=1e-5,
                   apply_per_spmv=1.0, setup_per_spmv=100.0, iter_s=0.001, iter_per_spmv=100.0,
                   elapsed_s=0.01, setup_samples="[0.001, 0.001, 0.001]",
                   solve_samples="[0.01, 0.01, 0.01]", apply_samples="[1e-05]", setup_s_lo=0.001,
                   setup_s_hi=0.001, apply_s_lo=1e-5, apply_s_hi=1e-5, solve_s_lo=0.01,
                   solve_s_hi=0.01, train_s=math.nan, nbytes=0, setup_peak_bytes=0, info="{}")
        out.append(rec)
    return out


@pytest.fixture()
def fake_run(monkeypatch):
    seen = {}

    def run_cases(selected, *, suite, threads, repeats, filter, progress, on_records, memory,
                  case_timeout, isolated):
        seen.update(ids=[c.id for c in selected], suite=suite, threads=threads, repeats=repeats,
                    filter=filter)
        recs = _fake_records(selected, suite, filter)
        for c, r in zip(selected, recs, strict=True):
            progress(c)
            on_records([r])
        return recs

    monkeypatch.setattr(measure, "run_cases", run_cases)
    return seen


def test_run_json_no_write(capsys, fake_run, tmp_path):
    code = main(["run", "--n", "32", "--field", "constant", "--method", "cg", "jacobi",
                 "--repeats", "3", "--json", "--no-write", "--out", str(tmp_path / "never"),
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0 and not (tmp_path / "never").exists()
    assert fake_run == {"ids": ["n32-constant-cg", "n32-constant-jacobi"], "suite": "quick",
                        "threads": 1, "repeats": 3,
                        "filter": "--n 32 --field constant --method cg jacobi"}
    data = json.loads(out)
    assert out.startswith('{\n "suite": "quick",\n "filter": ') and out.endswith("\n}\n")
    assert list(data) == ["suite", "filter", "records", "skipped", "verdicts"]
    assert data["suite"] == "quick" and data["filter"] == "--n 32 --field constant --method cg jacobi"
    assert data["skipped"] == []
    assert data["records"][0]["relerr"] is None and data["records"][0]["iterations"] == 10
    assert data["verdicts"] == [
        {"case": "n32-constant-cg", "method": "cg", "verdict": "baseline", "speedup_wall": 1.0,
         "speedup_wall_ci": [1.0, 1.0], "speedup_iters": 1.0, "break_even": None},
        {"case": "n32-constant-jacobi", "method": "jacobi", "verdict": "tie",
         "speedup_wall": 1.0, "speedup_wall_ci": [1.0, 1.0], "speedup_iters": 1.0,
         "break_even": None}]
    assert err.startswith("npo-bench run: suite 'quick' (filtered: --n 32 --field constant "
                          "--method cg jacobi), 2 cases (0 combinations skipped), threads=1, "
                          "device=cpu\n")
    assert "measured 2 cases in " in err and err.rstrip().endswith(" s")


def test_run_json_lists_skips(capsys, fake_run):
    code = main(["run", "--n", "32", "--field", "constant", "--method", "cg", "ilu", "--json",
                 "--no-write", "--device", "torch:cpu"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and fake_run["ids"] == ["n32-constant-cg"]
    assert data["skipped"] == [{"problem": "diffusion_2d", "n": 32, "field": "constant",
                                "method": "ilu",
                                "reason": "ilu has no torch:cpu implementation (runs on cpu)"}]


def test_run_text_and_write(capsys, fake_run, tmp_path):
    out = tmp_path / "rep"
    code = main(["run", "--n", "32", "--field", "constant", "--method", "cg", "--out", str(out),
                 "--no-progress"])
    printed, err = capsys.readouterr()
    assert code == 0 and printed.startswith("n = 32 (N = 1,024), field constant\n")
    wrote = [ln for ln in err.splitlines() if ln.startswith("wrote ")]
    assert len(wrote) == 5 and all(Path(w[6:]).is_file() for w in wrote)  # md, csv, 2 plots, run
    assert "npo-bench run: suite 'quick' (filtered: --n 32 --field constant --method cg), 1 " \
           "cases (0 combinations skipped), threads=1, device=cpu" in err


def test_run_errors(capsys, fake_run, tmp_path, monkeypatch):
    code = main(["run", "--suite", str(_suite_file(tmp_path)), "--no-write"])
    assert code == 2
    assert capsys.readouterr().err == (
        "npo-bench: error: no runnable cases in suite 's' with these filters (1 skipped; see "
        "`npo-bench cases`)\n")
    code = main(["run", "--n", "32", "--field", "constant", "--method", "cg", "--device", "gpu"])
    assert code == 2 and capsys.readouterr().err.startswith("npo-bench: error: --device: unknown "
                                                            "device 'gpu'")
    code = main(["run", "--n", "32", "--field", "constant", "--method", "cg", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("npo-bench: error: --device: ")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(measure, "run_cases", boom)
    code = main(["run", "--n", "32", "--field", "constant", "--method", "cg", "--no-write"])
    assert code == 130 and capsys.readouterr().err.endswith(
        "npo-bench: interrupted; no report was written; nothing was replaced\n")


def _suite_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[[group]]\nproblem = "poisson_3d"\nsizes = [4]\nfields = ["constant"]\n'
                 'methods = ["ilu0"]\n')
    return f


def test_run_write_failure_and_interrupt(capsys, fake_run, tmp_path, monkeypatch):
    from npo.report import build

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build, "write_run_reports", fail)
    code = main(["run", "--n", "32", "--field", "constant", "--method", "cg", "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and (
        f"npo-bench: error: writing the report set failed (No space left on device); no file "
        f"under {tmp_path / 'o'} was replaced; the previous report set is unchanged; every case "
        f"is kept in {tmp_path / 'o' / 'journal'}") in err

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "write_run_reports", interrupt)
    code = main(["run", "--n", "32", "--field", "constant", "--method", "cg", "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 130 and (
        f"npo-bench: interrupted; no file under {tmp_path / 'o'} was replaced; the previous "
        "report set is unchanged; every case is kept in ") in err
    assert "npo-bench run --n 32 --field constant --method cg --out" in err and "--resume" in err


def test_json_helpers():
    assert cli._json_default(math.nan) is None
    assert cli._json_default(np.int64(3)) == 3 and cli._json_default(np.float64(2.5)) == 2.5
    import datetime

    assert cli._json_default(datetime.date(2024, 1, 2)) == "2024-01-02"
    assert cli._json_default(datetime.datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05"
    assert cli._json_default({1}) == "{1}"
    c = cli._clean
    assert c(math.inf) is None and c(-math.inf) is None and c(math.nan) is None
    assert c(np.float64(math.nan)) is None and c(np.float64(1.5)) == 1.5 and c(np.int64(2)) == 2
    assert c(np.bool_(True)) is True and c("s") == "s" and c(3) == 3 and c(True) is True
    assert c(np.float32("nan")) is None and c(np.float32(0.5)) == 0.5  # not a float subclass
    assert c(None) is None and c(2.5) == 2.5
    import pandas as pd

    assert c(pd.NA) is None and c(pd.NaT) is None and c([1]) == "[1]"
    assert c(pd.Timestamp("2024-01-01")) is None or isinstance(c(pd.Timestamp("2024-01-01")), str)


def test_cases_text_and_json(capsys, tmp_path):
    g = tmp_path / "d.toml"
    g.write_text('[[group]]\nsizes = [8]\nfields = ["constant"]\nmethods = ["ilu", "jacobi"]\n')
    assert main(["cases", "--suite", str(g), "--json", "--device", "torch:cpu"]) == 0
    d2 = json.loads(capsys.readouterr().out)
    assert [c["case"] for c in d2["cases"]] == ["n8-constant-jacobi"]
    assert [c["case"] for c in d2["skipped"]] == ["n8-constant-ilu"]
    f = _suite_file(tmp_path)
    f.write_text(f.read_text().replace('["ilu0"]', '["ilu0", "cg"]').replace(
        '[[group]]', 'description = "tiny"\n[[group]]'))
    assert main(["cases", "--suite", str(f)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "suite s: tiny (1 cases, 1 skipped)"
    assert out[1] == f"{'poisson_3d-n4-constant-cg':40s} {'pcg':6s} plain CG"
    assert out[2] == (f"{'poisson_3d-n4-constant-ilu0':40s} SKIP   ilu0 is the D-ILU form for "
                      "5-point stencils on an n x n grid; poisson_3d is not one")
    assert main(["cases", "--suite", str(f), "--json", "--device", "torch:cpu"]) == 0
    raw = capsys.readouterr().out
    assert raw.startswith('{\n "suite": "s",\n "description": "tiny",\n "cases": [\n  {\n')
    data = json.loads(raw)
    assert data == {"suite": "s", "description": "tiny",
                    "cases": [{"case": "poisson_3d-n4-constant-cg", "problem": "poisson_3d",
                               "n": 4, "N": 64, "field": "constant", "method": "cg",
                               "krylov": "pcg", "maxiter": 20000, "ranks": 1}],
                    "skipped": [{"case": "poisson_3d-n4-constant-ilu0",
                                 "reason": "ilu0 has no torch:cpu implementation (runs on cpu)"}]}


def test_report_command(capsys, tmp_path, monkeypatch):
    from npo.report import build

    seen = {}

    def fake_build(**kw):
        seen.update(kw)
        kw["notes"].append("a note")
        return [Path("x/one.md"), Path("x/two.csv")]

    monkeypatch.setattr(build, "build_reports", fake_build)
    code = main(["report", "--asv", "A", "--benchmarks", "B", "--runs", "R", "--out",
                 str(tmp_path / "o"), "--skip-bad"])
    assert code == 0 and capsys.readouterr().err == (
        "note: a note\nwrote x/one.md\nwrote x/two.csv\n")
    assert seen == {"asv_dir": "A", "benchmarks_dir": "B", "runs_dir": "R",
                    "out": str(tmp_path / "o"), "skip_bad": True, "notes": ["a note"],
                    "parquet": False}
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "pyarrow" else real(n, *a))
    code = main(["report", "--out", str(tmp_path / "o"), "--parquet"])
    assert code == 2 and capsys.readouterr().err == (
        "npo-bench: error: --parquet needs pyarrow: pip install pyarrow\n")


def test_train_command_checks(capsys, tmp_path, monkeypatch):
    code = main(["train", "--out", str(tmp_path / "m.pth")])
    assert code == 2 and capsys.readouterr().err == (
        f"npo-bench: error: --out must name a .pt file, got {str(tmp_path / 'm.pth')!r}\n")
    from npo.neural import train as trainmod

    monkeypatch.setattr(trainmod, "estimate_bytes", lambda cfg: cfg.n[0] * 2**30 // 8 * 3)
    monkeypatch.setattr(cli, "_mem_available", lambda: 2**30)
    code = main(["train", "--n", "8", "--out", str(tmp_path / "m.pt")])
    assert code == 2 and capsys.readouterr().err == (
        "npo-bench: error: this training run needs about 3.0 GiB; 1.0 GiB is available\n")
    monkeypatch.setattr(cli, "_mem_available", lambda: 3 * 2**30)  # exactly enough
    monkeypatch.setattr(trainmod, "train", lambda cfg: (_ for _ in ()).throw(OSError("ran")))
    assert main(["train", "--n", "8", "--out", str(tmp_path / "m.pt")]) == 2
    assert capsys.readouterr().err == "npo-bench: error: ran\n"
    ran = []
    monkeypatch.setattr(trainmod, "train", lambda cfg: ran.append(cfg) or 1 / 0)
    monkeypatch.setattr(cli, "_mem_available", lambda: 2**40)
    monkeypatch.setattr(cli, "_mem_available", lambda: 2**40)
    code = main(["train", "--n", "8", "--device", "cuda:0", "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert code == 2 and ran == [] and err == (
            "npo-bench: error: device 'cuda:0' requested but CUDA is not available to this "
            "torch\n")

    class Res:
        path = tmp_path / "m.pt"
        metadata = {"params": 123, "n": [8], "fields": ["constant"], "train_s": 1.25,
                    "final_loss": {"total": 0.5}}

    got = {}
    monkeypatch.setattr(trainmod, "train", lambda cfg: got.setdefault("cfg", cfg) and Res())
    code = main(["train", "--n", "8", "16", "--epochs", "3", "--out", str(tmp_path / "m.pt")])
    assert code == 0 and capsys.readouterr().out == (
        f"wrote {tmp_path / 'm.pt'} (123 params, n=[8], fields=['constant']): train_s=1.2, "
        "final loss 0.5000\n")
    cfg = got["cfg"]
    assert cfg.n == (8, 16) and cfg.epochs == 3 and cfg.out == str(tmp_path / "m.pt")


def test_output_space_checks(capsys, tmp_path, monkeypatch):
    import shutil

    from npo.neural import train as trainmod
    from npo.report import build

    monkeypatch.setattr(build, "build_reports", lambda **kw: [])
    monkeypatch.setattr(trainmod, "train", lambda cfg: 1 / 0)
    monkeypatch.setattr(cli, "_mem_available", lambda: None)
    Usage = type("Usage", (), {})
    for free, need_mib, argv in ((8 * 2**20, 4, ["report", "--out", str(tmp_path / "r")]),
                                 (4 * 2**20, 2, ["train", "--n", "8", "--out",
                                                 str(tmp_path / "t" / "m.pt")])):
        Usage.free = free
        monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage)
        main(argv)  # enough room: whatever happens next, it is not the space check
        assert "KiB free" not in capsys.readouterr().err
        Usage.free = free - 1
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"the report set needs about {need_mib * 1024} KiB" in err, err


def test_report_parquet_when_pyarrow_is_installed(monkeypatch, capsys, tmp_path):
    import importlib.util

    from npo.report import build

    seen = {}
    monkeypatch.setattr(build, "build_reports", lambda **kw: seen.update(kw) or [])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: object() if n == "pyarrow" else real(n, *a))
    assert main(["report", "--out", str(tmp_path), "--parquet"]) == 0
    assert seen["parquet"] is True and capsys.readouterr().err == ""


def test_publish_and_gate_dispatch(monkeypatch, capsys):
    from npo import gate
    from npo.report import asv_offline

    monkeypatch.setattr(asv_offline, "publish", lambda html: 7 if html == "H" else 0)
    assert main(["publish", "--html", "H"]) == 7
    monkeypatch.setattr(gate, "run_gate", lambda args: 1 if args.case == ["c"] else 0)
    assert main(["gate", "--case", "c"]) == 1


def test_main_exit_codes(monkeypatch, capsys):
    def raiser(exc):
        def f(args):
            raise exc
        return f

    p = build_parser()
    real_parse = argparse.ArgumentParser.parse_args

    def use(func):
        def parse(self, argv=None, namespace=None):
            ns = real_parse(self, argv, namespace)
            ns.func = func
            return ns

        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)

    for exc, code, msg in ((cli.CLIError("bad"), 2, "npo-bench: error: bad\n"),
                           (ValueError("v"), 2, "npo-bench: error: v\n"),
                           (FileNotFoundError("f"), 2, "npo-bench: error: f\n"),
                           (RuntimeError("r"), 2, "npo-bench: error: r\n"),
                           (OSError("o"), 2, "npo-bench: error: o\n"),
                           (cli.Interrupted("half"), 130, "npo-bench: interrupted; half\n"),
                           (KeyboardInterrupt(), 130,
                            "npo-bench: interrupted; no report was written\n"),
                           (ZeroDivisionError("z"), 2,
                            "npo-bench: internal error: ZeroDivisionError: z (rerun with "
                            "--debug)\n")):
        use(raiser(exc))
        assert main(["cases"]) == code
        assert capsys.readouterr().err == msg
    for exc in (ValueError("v"), ZeroDivisionError("z")):
        use(raiser(exc))
        with pytest.raises(type(exc)):
            main(["--debug", "cases"])
    use(lambda args: None)
    assert main(["cases"]) == 0
    use(lambda args: 5)
    assert main(["cases"]) == 5
    before = signal.getsignal(signal.SIGTERM)
    seen = []
    use(lambda args: seen.append(signal.getsignal(signal.SIGTERM)) or 0)
    main(["cases"])
    assert seen == [cli._raise_interrupt] and signal.getsignal(signal.SIGTERM) is before
    monkeypatch.setattr(cli, "_main_thread", lambda: False)
    seen.clear()
    main(["cases"])
    assert seen == [before]
    monkeypatch.undo()
    assert main(["run", "--repeats", "0"]) == 2
    assert capsys.readouterr().err == "npo-bench: error: --repeats must be >= 1\n"
    assert p is not None


def test_run_unfiltered_suite_with_a_skip_progress_and_timing(capsys, fake_run, tmp_path,
                                                              monkeypatch):
    f = tmp_path / "s2.toml"
    f.write_text('[[group]]\nproblem = "poisson_3d"\nsizes = [4]\nfields = ["constant"]\n'
                 'methods = ["cg", "ilu0"]\n')
    clock = iter([10.0, 12.5])

    class FakeTime:
        @staticmethod
        def perf_counter():
            return next(clock)

    monkeypatch.setattr(cli, "time", FakeTime)
    bars = []

    class Bar:  # tqdm's own bar starts a monitor thread: a forked mutation run can deadlock
        def __init__(self, **kw):
            self.kw, self.events = kw, []
            bars.append(self)

        def set_postfix_str(self, s):
            self.events.append(("postfix", s))

        def update(self, n=1):
            self.events.append(("update", n))

        def close(self):
            self.events.append(("close",))

    import tqdm

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    out = tmp_path / "rep"
    code = main(["run", "--suite", str(f), "--out", str(out), "--progress"])
    printed, err = capsys.readouterr()
    assert code == 0
    assert err.startswith("npo-bench run: suite 's2', 1 cases (1 combinations skipped), "
                          "threads=1, device=cpu\n")
    (bar,) = bars
    assert bar.kw == {"total": 1, "initial": 0, "unit": "case", "file": sys.stderr,
                      "disable": False}
    assert bar.events == [("postfix", "poisson_3d-n4-constant-cg"), ("update", 1), ("close",)]
    assert "\nmeasured 1 cases in 2.5 s\n" in err
    assert "Not run here (the catalogue's reasons): `ilu0`: " in printed
    md = (out / "honesty-s2.md").read_text()
    assert "Not run here (the catalogue's reasons): `ilu0`: " in md


def test_run_refuses_an_empty_combination(capsys, fake_run, tmp_path):
    f = tmp_path / "two.toml"
    f.write_text('[[group]]\nsizes = [8]\nfields = ["constant"]\nmethods = ["cg"]\n'
                 '[[group]]\nsizes = [16]\nfields = ["constant"]\nmethods = ["jacobi"]\n')
    code = main(["run", "--suite", str(f), "--n", "8", "--method", "jacobi", "--no-write"])
    assert code == 2 and capsys.readouterr().err == (
        "npo-bench: error: no runnable cases in suite 'two' with these filters\n")


def test_run_matrix_market_cases_are_sized_by_their_unknowns(capsys, fake_run, tmp_path):
    import scipy.io

    from npo.problems import poisson_2d

    scipy.io.mmwrite(tmp_path / "lap.mtx", poisson_2d(4))
    code = main(["run", "--matrix", str(tmp_path / "lap.mtx"), "--method", "cg", "--no-write",
                 "--no-progress"])
    capsys.readouterr()
    assert code == 0 and fake_run["ids"] == ["mtx-n16-lap-cg"]  # a fixed matrix: n is its N


@pytest.mark.parametrize("extra", [["--method", "cg", "npo.precond.basic:Jacobi"],
                                   ["--ranks", "2"]])
def test_select_keeps_the_suites_settings_when_it_rebuilds_it(tmp_path, extra):
    f = tmp_path / "own.toml"
    f.write_text('name = "own"\ndescription = "mine"\nrtol = 1e-6\nrhs_seed = 3\n[[group]]\n'
                 'sizes = [8]\nfields = ["constant"]\nmethods = ["cg"]\nranks = [1, 2]\n')
    args = build_parser().parse_args(["run", "--suite", str(f), *extra])
    suite, selected, skipped, _ = cli._select(args)
    assert (suite.name, suite.description, suite.rtol, suite.rhs_seed) == ("own", "mine", 1e-6, 3)
    assert suite.path == f"{str(f)!r}"
    assert {(c.rtol, c.rhs_seed) for c in selected + [c for c, _ in skipped]} == {(1e-6, 3)}
    if extra[0] == "--ranks":
        assert {c.ranks for c in selected + [c for c, _ in skipped]} == {2}
    else:  # an ad hoc method keeps each group's ranks
        assert {c.ranks for c in selected + [c for c, _ in skipped]} == {1, 2}
