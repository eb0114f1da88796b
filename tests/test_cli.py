import subprocess
import sys

import pandas as pd
import pytest

from npo import measure
from npo.cli import main


def test_run_writes_table_plots_and_store(tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["run", "--suite", "quick", "--n", "32", "--field", "constant", "jump1e2",
                 "--method", "cg", "jacobi", "amg_sa", "--repeats", "1", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "n = 32, field constant" in printed and "speed-up wall" in printed
    md = (out / "honesty-quick.md").read_text()
    assert "## n = 32 (N = 1,024), field jump1e2" in md and "threads" in md
    assert "Not run here" not in md  # quick at n = 32 skips nothing
    csv = pd.read_csv(out / "honesty-quick.csv")
    assert len(csv) == 6 and set(csv["method"]) == {"cg", "jacobi", "amg_sa"}
    assert int(csv[(csv.method == "cg") & (csv.field == "constant")]["iterations"].iloc[0]) == 116
    assert (out / "plots" / "quick-iterations.png").stat().st_size > 0
    runs = list((out / "runs").rglob("*.csv"))
    assert len(runs) == 1 and len(pd.read_csv(runs[0])) == 6
    assert not (out / "honesty.md").exists()  # honesty.md belongs to the standard suite


@pytest.mark.parametrize(
    "argv, match",
    [
        (["run", "--suite", "huge"], "unknown suite 'huge'"),
        (["run", "--method", "sor"], "unknown method 'sor'"),
        (["run", "--field", "wavy"], "unknown field 'wavy'"),
        (["run", "--n", "48"], "grid size 48 is not in suite"),
        (["run", "--threads", "0"], ">= 1"),
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


def test_failed_run_keeps_the_good_report(tmp_path, capsys, monkeypatch):
    out = tmp_path / "rep"
    (out / "runs").mkdir(parents=True)
    (out / "honesty-quick.md").write_text("GOOD")
    real = measure.measure
    calls = []

    def flaky(case, **kw):
        calls.append(case.id)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(case, **kw)

    monkeypatch.setattr(measure, "measure", flaky)
    code = main(["run", "--n", "32", "--field", "constant", "--method", "cg", "jacobi",
                 "--repeats", "1", "--out", str(out), "--no-progress"])
    assert code == 2 and "disk on fire" in capsys.readouterr().err
    assert (out / "honesty-quick.md").read_text() == "GOOD"
    assert not list((out / "runs").rglob("*.csv"))
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temp files left


def test_console_script_help():
    res = subprocess.run([sys.executable, "-m", "npo.cli", "--help"], capture_output=True,
                         text=True, check=True)
    for cmd in ("run", "report", "gate", "train", "cases"):
        assert cmd in res.stdout


def test_cases_lists_skips(capsys):
    assert main(["cases", "--suite", "standard"]) == 0
    out = capsys.readouterr().out
    assert "n512-constant-nystrom" in out and "SKIP" in out
