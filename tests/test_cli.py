import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from npo import measure
from npo.cli import main
from npo.fileio import JOURNAL_NAME, is_temp, recover

ROOT = Path(__file__).resolve().parents[1]
Q = ["--n", "32", "--field", "constant", "--method", "cg"]


def _default_sigint():
    # a shell's background job inherits SIGINT ignored (SIG_IGN); Python then never raises
    # KeyboardInterrupt, and the interrupt tests would test the shell, not npo-bench
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*argv, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "npo.cli", *argv], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT,
                          preexec_fn=_default_sigint)


def test_run_writes_filtered_table_plots_and_store(tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["run", "--suite", "quick", "--n", "32", "--field", "constant", "jump1e2",
                 "--method", "cg", "jacobi", "amg_sa", "--repeats", "3", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "n = 32 (N = 1,024), field constant" in printed and "speed-up wall" in printed
    md = next(out.glob("honesty-quick-filtered-*.md")).read_text()
    assert "## n = 32 (N = 1,024), field jump1e2" in md and "threads" in md
    assert "Filtered run (`--n 32 --field constant jump1e2 --method cg jacobi amg_sa`)" in md
    assert not (out / "honesty-quick.md").exists()  # a filtered run never takes the canonical name
    csv = pd.read_csv(next(out.glob("honesty-quick-filtered-*.csv")))
    assert len(csv) == 6 and set(csv["method"]) == {"cg", "jacobi", "amg_sa"}
    assert int(csv[(csv.method == "cg") & (csv.field == "constant")]["iterations"].iloc[0]) == 116
    assert next((out / "plots").glob("quick-filtered-*-iterations.png")).stat().st_size > 0
    runs = list((out / "runs").rglob("*.csv"))
    assert len(runs) == 1 and len(pd.read_csv(runs[0])) == 6 and "_filtered-" in runs[0].name
    assert set(pd.read_csv(runs[0])["filter"]) == {"--n 32 --field constant jump1e2 "
                                                    "--method cg jacobi amg_sa"}
    assert not [p for p in out.rglob("*") if is_temp(p)]


def test_run_json_is_parseable(tmp_path):
    res = _cli("run", *Q, "--repeats", "3", "--json", "--no-write")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["records"][0]["case"] == "n32-constant-cg"
    assert data["records"][0]["iterations"] == 116 and data["verdicts"][0]["verdict"] == "baseline"
    assert data["filter"] == "--n 32 --field constant --method cg"
    assert "\r" not in res.stderr  # no progress frames when stderr is not a terminal


@pytest.mark.parametrize(
    "argv, match",
    [
        (["run", "--suite", "huge"], "unknown suite 'huge'"),
        (["run", "--method", "sor"], "unknown method 'sor'"),
        (["run", "--field", "wavy"], "unknown field 'wavy'"),
        (["run", "--n", "48"], "grid size 48 is not in suite"),
        (["run", "--threads", "0"], ">= 1"),
        (["run", "--repeats", "0"], ">= 1"),
        (["run", "--rhs", "b.mtx"], "--rhs goes with --matrix"),
        (["run", "--matrix", "/nonexistent.mtx"], "no such file"),
        (["run", "--method", "nosuchpkg.mod:factory"], "cannot import"),
        (["report", "--runs", "/nonexistent/runs"], "does not exist"),
        (["cases", "--suite", "nope"], "unknown suite"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, match, capsys, tmp_path):
    code = main(argv + (["--out", str(tmp_path)] if argv[0] == "run" else []))
    err = capsys.readouterr().err
    assert code == 2
    assert match in err and "Traceback" not in err
    assert err.strip().count("\n") == 0 or err.startswith("npo-bench run:")


@pytest.mark.parametrize("kind", ["file", "readonly_parent"])
def test_bad_out_fails_fast_before_any_case(tmp_path, capsys, kind):
    if kind == "file":
        out = tmp_path / "exists.txt"
        out.write_text("x")
        match = "is not a directory"
    else:
        blocker = tmp_path / "blocker"
        blocker.write_text("x")
        out = blocker / "sub"
        match = "cannot be created"
    t0 = time.perf_counter()
    code = main(["run", "--suite", "standard", "--out", str(out)])
    dt = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and match in err and dt < 2.0, (err, dt)


def test_free_space_is_checked_before_work(tmp_path, capsys, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=12 * 1024))
    code = main(["run", *Q, "--out", str(tmp_path / "o")])
    assert code == 2 and "12 KiB free" in capsys.readouterr().err


def test_threads_above_core_count_warn_and_record_the_real_count(tmp_path):
    res = _cli("run", *Q, "--repeats", "3", "--threads", "100000", "--json", "--no-write")
    assert res.returncode == 0, res.stderr
    assert "100000 threads requested" in res.stderr
    rec = json.loads(res.stdout)["records"][0]
    assert 1 <= rec["threads"] == rec["cores"] <= os.cpu_count()


def test_a_failing_case_is_a_row_and_the_good_report_stays(tmp_path, capsys, monkeypatch):
    out = tmp_path / "rep"
    (out / "runs").mkdir(parents=True)
    (out / "honesty-quick.md").write_text("GOOD")
    real = measure.make_preconditioner

    def flaky(case, p=None):
        if case.method.label == "jacobi":
            raise RuntimeError("disk on fire")
        return real(case, p)

    monkeypatch.setattr(measure, "make_preconditioner", flaky)  # the workers fork with it
    code = main(["run", "--n", "32", "--field", "constant", "--method", "cg", "jacobi",
                 "--repeats", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    assert (out / "honesty-quick.md").read_text() == "GOOD"  # a filtered run has its own name
    rows = pd.read_csv(next((out / "runs").rglob("*.csv"))).set_index("method")
    assert rows.loc["cg", "iterations"] == 116
    assert rows.loc["jacobi", "reason"] == ("error: RuntimeError: disk on fire "
                                            "(case n32-constant-jacobi, method jacobi)")
    assert not [p for p in out.rglob("*") if is_temp(p)]


# --- concurrency and faults ------------------------------------------------------------


def _set_files(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.parent.name != "journal"}


def test_four_concurrent_runs_keep_every_run_file(tmp_path):
    out = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-m", "npo.cli", "run", *Q, "--repeats", "1",
                               "--out", str(out), "--no-progress"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errs
    runs = list((out / "runs").rglob("*.csv"))
    assert len(runs) == 4 and len({r.name for r in runs}) == 4
    for r in runs:
        assert len(pd.read_csv(r)) == 1
    # the (filtered) table set is complete and parseable: one writer's whole set
    md = list(out.glob("honesty-quick-filtered-*.md"))
    csv = list(out.glob("honesty-quick-filtered-*.csv"))
    assert len(md) == 1 and len(csv) == 1
    assert "n = 32" in md[0].read_text() and len(pd.read_csv(csv[0])) == 1
    assert not [p for p in out.rglob("*") if is_temp(p)] and not (out / JOURNAL_NAME).exists()


@pytest.mark.parametrize("point, sig", [
    ("staged", "KILL"), ("staged", "INT"), ("journal", "KILL"), ("journal", "INT"),
    ("renamed2", "KILL"), ("renamed2", "TERM"), ("write", "ENOSPC"),
])
def test_signal_or_full_disk_during_write_leaves_old_or_new_set(tmp_path, point, sig):
    out = tmp_path / "rep"
    first = _cli("run", *Q, "--repeats", "1", "--out", str(out))
    assert first.returncode == 0, first.stderr
    old = _set_files(out)
    res = _cli("run", *Q, "--repeats", "1", "--out", str(out),
               env={"NPO_BENCH_FAULT": f"{point}:{sig}"})
    committed = point != "staged" and sig != "ENOSPC"
    if sig == "KILL":
        assert res.returncode == -signal.SIGKILL
        recover(out)  # what the next writer or reader does first
    elif sig == "ENOSPC":
        assert res.returncode == 2 and "No space left" in res.stderr
        assert "no file under" in res.stderr and "unchanged" in res.stderr
    else:
        assert res.returncode == 130
        msg = "committed in full" if committed else "the previous report set is unchanged"
        assert msg in res.stderr, res.stderr
    new = _set_files(out)
    tables = [k for k in new if k.startswith("honesty-")]  # they hold the run's times
    assert set(new) - {k for k in new if k.startswith("runs/")} == \
        set(old) - {k for k in old if k.startswith("runs/")}  # no file of the set is missing
    if committed:  # the new set, whole: both tables changed, one more run file
        assert len(tables) == 2 and all(new[k] != old[k] for k in tables), tables
        assert len([k for k in new if k.startswith("runs/")]) == 2
    else:  # the old set, untouched
        assert new == old
    assert not [p for p in out.rglob("*") if is_temp(p)] and not (out / JOURNAL_NAME).exists()
    # the measured case is still in the run's journal: --resume writes the set, or sees that
    # it was written, without measuring again
    assert len(list((out / "journal").glob("*.jsonl"))) == 1
    again = _cli("run", *Q, "--repeats", "1", "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    assert "measured 0 cases" in again.stderr
    assert ("already written" in again.stderr) == committed
    assert not (out / "journal").exists()
    assert len([k for k in _set_files(out) if k.startswith("runs/")]) == 2


# --- what users of a CLI tool expect ------------------------------------------------------


def test_version_and_every_help():
    res = _cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("npo-bench ")
    top = _cli("--help").stdout
    for cmd in ("run", "cases", "report", "gate", "train", "publish"):
        assert cmd in top
        h = _cli(cmd, "--help")
        assert h.returncode == 0 and len(h.stdout.split("\n\n")[1]) > 40, cmd  # a description


def test_cases_lists_skips_and_json(capsys):
    assert main(["cases", "--suite", "standard"]) == 0
    out = capsys.readouterr().out
    assert "n512-constant-nystrom" in out and "SKIP" in out
    assert main(["cases", "--suite", "quick", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # the example plugin and PETSc's methods, where installed, add their own cases
    builtin = [c for c in data["cases"] if c["method"] != "ssor" and "petsc" not in c["method"]]
    assert len(builtin) == 48 and data["cases"][0]["case"] == "n32-constant-cg"


def test_unsafe_machine_name_is_refused_before_any_work(monkeypatch, capsys):
    from npo import measure

    def refuse(*a, **k):
        raise AssertionError("a case was measured before NPO_MACHINE was checked")
    monkeypatch.setattr(measure, "run_cases", refuse)
    monkeypatch.setenv("NPO_MACHINE", "../evil")
    for argv in (["run", "--n", "32", "--method", "cg", "--no-write"],
                 ["gate", "--case", "n32-constant-cg"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err == ("npo-bench: error: NPO_MACHINE '../evil' is not a safe machine label: use "
                       "letters, digits, '_', '.', '+' or '-' (at most 64)\n"), err


def test_too_many_threads_is_a_one_line_warning_and_the_real_count(monkeypatch, capsys):
    from npo import env, measure

    seen = {}

    def fake_run(selected, *, threads, **k):
        seen["threads"] = threads
        raise KeyboardInterrupt
    monkeypatch.setattr(measure, "run_cases", fake_run)
    many = env.cores() + 7
    assert main(["run", "--n", "32", "--method", "cg", "--field", "constant", "--no-write",
                 "--threads", str(many)]) == 130
    err = capsys.readouterr().err
    assert seen["threads"] == env.cores()
    assert (f"npo-bench: warning: {many} threads requested on a machine with {env.cores()} "
            f"cores; using {env.cores()}\n") in err
    assert "clamp_threads" not in err  # no source line


# --- long runs: journal and --resume, budgets, errors as outcomes, SPD checks ---------------

TESTS = Path(__file__).resolve().parent
RESUME = ["run", "--n", "32", "64", "--field", "constant", "--method", "cg", "amg_sa",
          "nystrom", "--repeats", "3", "--no-progress"]


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_csv(next(out.glob("honesty-*.csv"))).sort_values("case").reset_index(drop=True)


def test_a_killed_run_resumes_to_the_table_of_an_uninterrupted_one(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _cli(*RESUME, "--out", str(whole)).returncode == 0
    killed = _cli(*RESUME, "--out", str(cut), env={"NPO_BENCH_KILL_AFTER": "3"})
    assert killed.returncode == -9  # SIGKILL right after the third case was journaled
    assert not list(cut.glob("honesty-*"))  # nothing but the journal was written
    kept = [line for line in next((cut / "journal").glob("*.jsonl")).read_text().splitlines()]
    assert len(kept) == 1 + 3
    res = _cli(*RESUME, "--out", str(cut), "--resume")
    assert res.returncode == 0, res.stderr
    assert "3 measured, 3 to go" in res.stderr
    assert "measured 3 cases" in res.stderr and "(3 more from the journal)" in res.stderr
    a, b = _rows(whole), _rows(cut)
    assert a["case"].tolist() == b["case"].tolist() and len(a) == 6
    assert a["iterations"].tolist() == b["iterations"].tolist()
    # verdicts are wall-clock, so two runs' can differ by noise; the resumed table is exactly
    # what an uninterrupted run computes from the same records
    from npo.report.honesty import honesty_frame
    from npo.report.store import load_runs

    again_table = honesty_frame(load_runs(cut / "runs")).sort_values("case")
    assert again_table["verdict"].tolist() == b["verdict"].tolist()
    store = pd.read_csv(next((cut / "runs").rglob("*.csv")))
    assert store["case"].is_unique and len(store) == 6  # no case measured twice
    assert not (cut / "journal").exists()  # the report set is committed: the journal is gone
    again = _cli(*RESUME, "--out", str(cut), "--resume")
    assert again.returncode == 2 and "no unfinished run to resume" in again.stderr


def test_a_section_cut_in_the_journal_is_measured_again_whole(tmp_path):
    out = tmp_path / "o"
    assert _cli(*RESUME, "--out", str(out), env={"NPO_BENCH_KILL_AFTER": "3"}).returncode == -9
    j = next((out / "journal").glob("*.jsonl"))
    lines = j.read_text().splitlines(keepends=True)
    j.write_text("".join(lines[:3]))  # header + 2 of the section's 3 cases
    res = _cli(*RESUME, "--out", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    assert "2 measured, 4 to go (2 again: their section was cut)" in res.stderr
    rows = _rows(out)
    assert len(rows) == 6 and rows["case"].is_unique
    # the re-measured section shares one set of rounds
    n32 = pd.read_csv(next((out / "runs").rglob("*.csv")))
    assert n32[n32["n"] == 32]["paired"].nunique() == 1


def test_resume_refuses_a_different_run(tmp_path):
    out = tmp_path / "o"
    assert _cli(*RESUME, "--out", str(out), env={"NPO_BENCH_KILL_AFTER": "1"}).returncode == -9
    res = _cli("run", "--n", "32", "--field", "constant", "--method", "cg", "--out", str(out),
               "--resume")
    assert res.returncode == 2
    assert "cannot resume run" in res.stderr and "its filter is" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = _cli(*RESUME, "--no-write", "--resume")
    assert res.returncode == 2 and "not with --no-write" in res.stderr


def test_sigint_keeps_the_measured_cases_and_prints_the_resume_command(tmp_path):
    out = tmp_path / "o"
    p = subprocess.Popen([sys.executable, "-m", "npo.cli", *RESUME, "--out", str(out)],
                         cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    journal_dir = out / "journal"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until one case is on disk
        files = list(journal_dir.glob("*.jsonl")) if journal_dir.exists() else []
        if files and len(files[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130
    assert "cases are kept in" in err and "Resume with: npo-bench run" in err
    assert "--resume 20" in err  # the run id


def test_budgets_end_the_case_not_the_run(tmp_path):
    out = tmp_path / "o"
    res = _cli("run", "--n", "32", "--field", "constant", "--method", "cg",
               "budget_methods:HOG", "budget_methods:SLEEPER", "jacobi", "--max-memory", "512M",
               "--case-timeout", "5", "--repeats", "3", "--out", str(out), "--no-progress",
               env={"PYTHONPATH": str(TESTS)})
    assert res.returncode == 0, res.stderr
    rows = _rows(out).set_index("method")
    assert rows.loc["hog", "verdict"] == "out of memory (needs ≈2.0 GiB, limit 0.5 GiB)"
    assert rows.loc["sleeper", "verdict"] == "timed out after 5 s"
    assert rows.loc["jacobi", "iterations"] == 116 and rows.loc["cg", "verdict"] == "baseline"
    assert "out of memory (needs ≈2.0 GiB" in res.stdout and "timed out after 5 s" in res.stdout


def test_an_exception_is_that_cases_outcome(tmp_path):
    out = tmp_path / "o"
    res = _cli("run", "--n", "32", "64", "--field", "constant", "--method", "cg",
               "budget_methods:RAISER", "--repeats", "3", "--out", str(out), "--no-progress",
               env={"PYTHONPATH": str(TESTS)})
    assert res.returncode == 0, res.stderr
    rows = _rows(out).set_index("case")
    assert rows.loc["n32-constant-raiser", "iterations"] == 116
    assert rows.loc["n64-constant-raiser", "verdict"] == (
        "error: ValueError: this setup refuses large matrices (case n64-constant-raiser, "
        "method raiser)")
    assert rows.loc["n64-constant-cg", "iterations"] == 227


def test_a_memory_budget_below_the_estimate_is_not_started(tmp_path):
    res = _cli("run", "--n", "32", "--field", "constant", "--method", "cg", "--max-memory",
               "1M", "--no-write", "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)["records"][0]
    assert rec["reason"].startswith("out of memory (needs ≈0.") and rec["reason"].endswith(
        "limit 0.1 GiB): not started")


@pytest.mark.parametrize("argv, match", [
    (["run", "--max-memory", "lots"], "is not a size"),
    (["run", "--max-memory", "10K"], "at least 1M"),
    (["run", "--case-timeout", "0"], "must be > 0"),
    (["run", "--case-timeout", "inf"], "must be > 0"),
])
def test_budget_options_are_checked(argv, match):
    res = _cli(*argv)
    assert res.returncode == 2 and match in res.stderr


def test_an_indefinite_matrix_market_file_is_refused_before_any_method(tmp_path):
    import scipy.io
    import scipy.sparse as sp

    from npo.problems import poisson_2d

    A = poisson_2d(12).tocsr()
    D = sp.diags(A.diagonal())
    scipy.io.mmwrite(tmp_path / "indef.mtx", (D + 1.5 * (A - D)).tocoo(), symmetry="symmetric")
    res = _cli("run", "--matrix", str(tmp_path / "indef.mtx"), "--no-write")
    assert res.returncode == 2
    assert "not positive definite (lambda_min ~ " in res.stderr and "no method was run" in res.stderr


def test_the_problems_suite_skips_the_singular_pyamg_example(tmp_path):
    res = _cli("cases", "--suite", "problems", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    skipped = {s["case"]: s["reason"] for s in data["skipped"]}
    square = {c: why for c, why in skipped.items() if "unit_square" in c}
    assert square and all(why.startswith("not positive definite (lambda_min ~ ")
                          for why in square.values())
    assert not [c for c in data["cases"] if "unit_square" in c["case"]]
    assert [c for c in data["cases"] if "airfoil" in c["case"]]  # the SPD examples run


def test_the_readme_suite_example_runs_to_a_row_per_case(tmp_path):
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```toml\n")[1:]]
    suites = [b for b in blocks if "[[group]]" in b]
    assert suites, "the README shows a suite"
    for k, block in enumerate(suites):
        path = tmp_path / f"readme{k}.toml"
        path.write_text(block)
        listed = _cli("cases", "--suite", str(path), "--json")
        assert listed.returncode == 0, listed.stderr
        # the smallest size with every method the example defines (petsc_* where installed)
        n = min(int(c["case"].split("-")[1][1:]) for c in json.loads(listed.stdout)["cases"])
        res = _cli("run", "--suite", str(path), "--n", str(n), "--repeats", "3", "--no-write",
                   "--json")
        assert res.returncode == 0, res.stderr
        recs = json.loads(res.stdout)["records"]
        expected = [c["case"] for c in json.loads(listed.stdout)["cases"]
                    if f"-n{n}-" in c["case"]]
        assert [r["case"] for r in recs] == expected
        assert all(r["converged"] for r in recs), [(r["case"], r["reason"]) for r in recs]


# --- small things a user notices ------------------------------------------------------------


def test_a_closed_pipe_ends_quietly_with_exit_0():
    for argv in (["cases", "--suite", "standard", "--json"], ["cases", "--suite", "standard"]):
        p = subprocess.Popen([sys.executable, "-m", "npo.cli", *argv], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.readline()
        p.stdout.close()  # what `| head -1` does
        err = p.stderr.read().decode()
        p.wait(timeout=120)
        assert p.returncode == 0 and err == "", (argv, p.returncode, err)


def test_debug_is_accepted_before_or_after_the_subcommand():
    for argv in (["--debug", "cases", "--suite", "nope"], ["cases", "--suite", "nope", "--debug"]):
        res = _cli(*argv)
        assert res.returncode != 0 and "Traceback" in res.stderr, argv
    quiet = _cli("cases", "--suite", "nope")
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr


def test_help_shows_every_default():
    import argparse

    from npo.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("run", "cases", "report"):
        for a in sub.choices[name]._actions:
            trivial = a.default in (None, False, argparse.SUPPRESS) or isinstance(
                a, argparse._HelpAction)
            if not trivial:
                assert "default" in (a.help or ""), (name, a.dest, a.help)
    train = _cli("train", "--help").stdout
    assert "Defaults are given as namg / mg" in train and "(400)" in train  # epochs
