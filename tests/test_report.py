import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from npo.cli import main
from npo.report import history as hist
from npo.report.honesty import honesty_frame, honesty_markdown, honesty_text
from npo.report.load import COLUMNS, load_all, load_asv, load_pytest_benchmark

DATA = Path(__file__).parent / "data"
ASV = DATA / "asv_results"
PYB = DATA / "pytest_benchmark"


def test_asv_loader_values_nan_null_and_order():
    df = load_asv(ASV)
    assert list(df.columns)[: len(COLUMNS)] == COLUMNS
    assert set(df["source"]) == {"asv"} and set(df["machine"]) == {"ci-box"}
    # the non-case benchmark (KrylovOverhead) is not a case row
    assert set(df["case"]) == {"n32-constant-cg", "n32-constant-amg_sa", "n32-constant-npo"}
    a = df[df["commit"].str.startswith("aaaa")].set_index("method")
    b = df[df["commit"].str.startswith("bbbb")].set_index("method")
    # null (failed) entries are dropped: npo has no row at the older commit
    assert set(a.index) == {"cg", "amg_sa"}
    assert a.loc["amg_sa", "iterations"] == 9 and b.loc["amg_sa", "iterations"] == 10
    assert a.loc["cg", "solve_s"] == 0.001 and b.loc["cg", "solve_s"] == 0.002
    # NaN (skipped) time is dropped but the tracked iterations of the same case stay
    assert b.loc["npo", "iterations"] == 31 and math.isnan(b.loc["npo", "solve_s"])
    assert bool(b.loc["npo", "converged"]) is True
    assert b.loc["cg", "total_s"] == pytest.approx(0.002 + 0) or math.isnan(b.loc["cg", "total_s"])
    assert (df["N"] == 1024).all() and (b["krylov"] == ["pcg", "pcg", "fcg"]).all()


def test_asv_params_paired_in_product_order(tmp_path):
    root = tmp_path / "res"
    shutil.copytree(ASV, root)
    f = root / "ci-box" / "bbbb2222-virtualenv-py3.11.json"
    data = json.loads(f.read_text())
    p = [["32", "64"], ["'constant'"], ["'cg'", "'npo'"]]
    data["results"] = {"bench_solvers.Convergence.track_iterations": [[1, 2, 3, 4], p, "v"]}
    f.write_text(json.dumps(data))
    (root / "ci-box" / "aaaa1111-virtualenv-py3.11.json").unlink()
    (root / "benchmarks.json").unlink()  # falls back to (n, field, method)
    df = load_asv(root).set_index("case")["iterations"].to_dict()
    assert df == {"n32-constant-cg": 1, "n32-constant-npo": 2, "n64-constant-cg": 3,
                  "n64-constant-npo": 4}


def test_pytest_benchmark_loader():
    df = load_pytest_benchmark(PYB)
    assert len(df) == 1
    r = df.iloc[0]
    assert r["source"] == "pytest-benchmark" and r["machine"] == "laptop"
    assert r["case"] == "n32-jump1e2-jacobi" and r["iterations"] == 137 and r["converged"]
    assert r["solve_s"] == 0.002 and r["apply_s"] == 5e-07 and r["apply_per_spmv"] == 0.1
    assert r["commit"].startswith("cccc")


def test_one_frame_schema_and_history_order():
    df = load_all(asv_dir=ASV, benchmarks_dir=PYB)
    assert list(df.columns) == COLUMNS
    assert set(df["source"]) == {"asv", "pytest-benchmark"}
    h = hist.history(df)
    # one series per (machine, source, case); commits in commit-date order
    amg = h[h["case"] == "n32-constant-amg_sa"]
    assert list(amg["commit_short"]) == ["aaaa1111", "bbbb2222"]
    assert list(amg["iterations_changed"]) == [False, True]
    cg = h[h["case"] == "n32-constant-cg"]
    assert list(cg["iterations_changed"]) == [False, False]
    assert list(cg["time_flag"]) == [False, True] and cg["time_ratio"].iloc[1] == pytest.approx(2)
    # the solve benchmark's code changed between the commits: a discontinuity
    assert list(cg["discontinuity"]) == [False, True]
    npo = h[h["case"] == "n32-constant-npo"]
    assert len(npo) == 1 and not npo["discontinuity"].iloc[0]
    # machines never mix: the laptop's series stands alone
    assert set(h[h["machine"] == "laptop"]["case"]) == {"n32-jump1e2-jacobi"}
    md = hist.history_markdown(h)
    assert "asv on ci-box" in md and "pytest-benchmark on laptop" in md and "**Δits**" in md


def _records(**over):
    base = dict(n=128, N=128 * 128, field="constant", krylov="pcg", converged=True, setup_s=0.0,
                apply_s=1e-5, apply_per_spmv=0.1, nbytes=0, train_s=math.nan, elapsed_s=0.1,
                machine="m", device="cpu", threads=1, commit="c", commit_date="", timestamp="",
                versions="{}", rtol=1e-10)
    rows = [
        dict(base, method="cg", iterations=400, solve_s=0.10, total_s=0.10, true_relres=3e-9),
        dict(base, method="amg_sa", iterations=10, setup_s=0.02, solve_s=0.03, total_s=0.05),
        dict(base, method="npo", krylov="fcg", iterations=40, solve_s=0.50, total_s=0.51,
             train_s=200.0),
        dict(base, method="ilu", iterations=20000, converged=False, solve_s=math.nan,
             total_s=math.nan),
    ]
    for r in rows:
        r.update(over.get(r["method"], {}))
    return pd.DataFrame(rows)


def test_honesty_saving_iterations_but_losing_wall_clock_reads_as_losing():
    t = honesty_frame(_records()).set_index("method")
    assert t.loc["amg_sa", "verdict"] == "wins"
    assert t.loc["amg_sa", "speedup_iters_x"] == pytest.approx(40)
    assert t.loc["amg_sa", "speedup_wall_x"] == pytest.approx(2)
    npo = t.loc["npo"]
    assert npo["speedup_iters_x"] == pytest.approx(10) and npo["speedup_wall_x"] < 1
    assert npo["verdict"].startswith("LOSES despite 10.0x fewer iterations")
    assert npo["break_even"] == "never"
    assert t.loc["ilu", "verdict"] == "FAILS: not converged" and np.isnan(t.loc["ilu", "speedup_wall_x"])
    assert t.loc["cg", "verdict"] == "baseline"


def test_honesty_break_even_and_lower_bounds():
    t = honesty_frame(_records(npo={"solve_s": 0.02, "total_s": 0.06})).set_index("method")
    # train 200 s / (0.10 - 0.06) s saved per solve = 5000 solves
    assert t.loc["npo", "break_even"] == "5,000" and t.loc["npo", "verdict"] == "wins"
    t2 = honesty_frame(_records(cg={"converged": False, "total_s": math.nan, "solve_s": math.nan,
                                   "elapsed_s": 2.0})).set_index("method")
    assert t2.loc["amg_sa", "speedup_wall"].startswith(">=")
    assert t2.loc["cg", "verdict"] == "baseline (not converged)"


def test_honesty_renderings():
    t = honesty_frame(_records())
    md = honesty_markdown(t, "T")
    assert "## n = 128 (N = 16,384), field constant" in md and "LOSES despite" in md
    assert "| 3.0e-09 " in md  # the true residual is shown beside convergence
    assert "machine: m" in md and "threads" in md
    md2 = honesty_markdown(t, "T", skipped=[(128, "constant", "nystrom", "over budget"),
                                           (64, "constant", "npo", "elsewhere")])
    assert "Not run here (the catalogue's reasons): `nystrom`: over budget." in md2
    assert "elsewhere" not in md2
    txt = honesty_text(t)
    assert "speed-up wall" in txt and "break-even" in txt


def test_report_cli_writes_history(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", "--asv", str(ASV), "--benchmarks", str(PYB), "--out", str(out)]) == 0
    for name in ("history.md", "history.csv", "measurements.csv", "latest-honesty.md",
                 "plots/history-iterations.png"):
        assert (out / name).stat().st_size > 0, name
    assert list(pd.read_csv(out / "measurements.csv").columns) == COLUMNS


@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt", "notasv"])
def test_report_bad_input_one_line_error_and_no_overwrite(tmp_path, capsys, kind):
    out = tmp_path / "out"
    out.mkdir()
    (out / "history.md").write_text("GOOD")
    bad = tmp_path / "bad"
    if kind != "missing":
        (bad / "box").mkdir(parents=True)
        content = {"empty": "", "corrupt": '{"commit_hash": "x", "results": {', "notasv": "[1, 2]"}
        (bad / "box" / "abc-env.json").write_text(content[kind])
    code = main(["report", "--asv", str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("npo-bench: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert (out / "history.md").read_text() == "GOOD"
