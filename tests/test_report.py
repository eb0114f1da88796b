import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from npo.cli import main
from npo.report import history as hist
from npo.report import plots
from npo.report.build import latest_honesty
from npo.report.honesty import TIE_BAND, honesty_frame, honesty_markdown, honesty_text
from npo.report.load import COLUMNS, load_all, load_asv, load_pytest_benchmark
from npo.report.store import BadRunFile, coerce_dtypes, load_runs, read_run_file
from npo.schema import DTYPES, RECORD_COLUMNS

DATA = Path(__file__).parent / "data"
ASV = DATA / "asv_results"
PYB = DATA / "pytest_benchmark"


def test_asv_loader_values_nan_null_stats_and_protocol():
    df = load_asv(ASV)
    assert list(df.columns) == COLUMNS
    assert set(df["source"]) == {"asv"} and set(df["machine"]) == {"ci-box"}
    # the non-case benchmark (KrylovOverhead) is not a case row
    assert set(df["case"]) == {"n32-constant-cg", "n32-constant-amg_sa", "n32-constant-npo"}
    by = {c[:4]: d.set_index("method") for c, d in df.groupby("commit")}
    a, b, d, e = by["aaaa"], by["bbbb"], by["dddd"], by["eeee"]
    # null (failed) entries are dropped: npo has no row at the oldest commit
    assert set(a.index) == {"cg", "amg_sa"}
    assert a.loc["amg_sa", "iterations"] == 9 and b.loc["amg_sa", "iterations"] == 10
    assert a.loc["cg", "solve_s"] == 0.001 and b.loc["cg", "solve_s"] == 0.002
    # NaN (skipped) time is dropped but the tracked iterations of the same case stay
    assert b.loc["npo", "iterations"] == 31 and pd.isna(b.loc["npo", "solve_s"])
    assert bool(b.loc["npo", "converged"]) is True
    assert list(b["krylov"]) == ["pcg", "pcg", "fcg"] and (b["N"] == 1024).all()
    # protocol versions: legacy results count as 1, "protocol-2" benchmarks as 2
    assert set(a["protocol_version"]) == {1} and set(d["protocol_version"]) == {2}
    # asv's statistics are kept: the 99% CI and the raw samples
    assert d.loc["amg_sa", "apply_s_lo"] < d.loc["amg_sa", "apply_s"] < d.loc["amg_sa", "apply_s_hi"]
    assert len(json.loads(d.loc["amg_sa", "apply_samples"])) == 6
    # track_failures (lower is better) becomes converged
    assert bool(e.loc["cg", "converged"]) is True and e.loc["amg_sa", "nbytes"] == 400288
    # declared dtypes
    assert str(df["iterations"].dtype) == "Int64" and str(df["converged"].dtype) == "boolean"


def test_asv_params_paired_in_product_order(tmp_path):
    root = tmp_path / "res"
    shutil.copytree(ASV, root)
    for f in (root / "ci-box").glob("[de]*.json"):
        f.unlink()
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


def test_pytest_benchmark_loader_with_and_without_iterations(tmp_path):
    df = load_pytest_benchmark(PYB)
    assert len(df) == 1
    r = df.iloc[0]
    assert r["source"] == "pytest-benchmark" and r["machine"] == "laptop"
    assert r["case"] == "n32-jump1e2-jacobi" and r["iterations"] == 137 and r["converged"]
    assert r["solve_s"] == 0.002 and r["apply_s"] == 5e-07 and r["apply_per_spmv"] == 0.1
    assert r["solve_s_lo"] == 0.0019 and r["commit"].startswith("cccc")
    # a file with timings only (setup/apply benchmarks, no solve): loads, iterations empty
    data = json.loads(next(PYB.glob("*.json")).read_text())
    data["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"]["stage"] == "apply"]
    f = tmp_path / "apply-only.json"
    f.write_text(json.dumps(data))
    one = load_pytest_benchmark(f)
    assert pd.isna(one["iterations"].iloc[0]) and one["apply_s"].iloc[0] == 5e-07


def test_history_flags_only_significant_time_changes():
    df = load_all(asv_dir=ASV, benchmarks_dir=PYB)
    assert list(df.columns) == COLUMNS
    h = hist.history(df)
    cg = h[(h["case"] == "n32-constant-cg") & (h["source"] == "asv")]
    assert list(cg["commit_short"]) == ["aaaa1111", "bbbb2222", "dddd4444", "eeee5555"]
    # aaaa -> bbbb: x2 between single --quick samples: shown, marked single, never flagged
    assert cg["time_ratio"].iloc[1] == pytest.approx(2) and not cg["time_flag"].iloc[1]
    assert cg["single_sample"].iloc[1]
    # bbbb -> dddd: the protocol changed (1 -> 2): a discontinuity, not a regression
    assert list(cg["discontinuity"]) == [False, True, True, False]
    assert not cg["time_flag"].any()
    # dddd -> eeee: amg_sa's apply doubled (6 samples each side): flagged, as worse
    amg = h[(h["case"] == "n32-constant-amg_sa") & (h["source"] == "asv")].set_index("commit_short")
    assert amg.loc["eeee5555", "time_flag"] and "apply x2.00 (worse)" in amg.loc["eeee5555",
                                                                                  "time_detail"]
    assert list(amg["iterations_changed"]) == [False, True, True, False]  # 9, 10, 9, 9
    npo = h[(h["case"] == "n32-constant-npo") & (h["source"] == "asv")]
    assert not npo["time_flag"].any()  # noise between samples is not a change
    # machines and sources never mix
    assert set(h[h["machine"] == "laptop"]["case"]) == {"n32-jump1e2-jacobi"}
    md = hist.history_markdown(h)
    assert "asv on ci-box (cpu)" in md and "pytest-benchmark on laptop" in md
    assert "**Δits**" in md and "¹" in md and "**apply x2.00 (worse)" in md


def _records(**over):
    base = dict(n=128, N=128 * 128, field="constant", krylov="pcg", converged=True, setup_s=0.0,
                apply_s=1e-5, apply_per_spmv=0.1, nbytes=0, train_s=math.nan, elapsed_s=0.1,
                machine="m", device="cpu", threads=1, commit="c", commit_date="", timestamp="",
                versions="{}", rtol=1e-10, problem="diffusion_2d", ranks=1)
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


def _with_samples(df, rng, spread=0.02):
    out = df.copy()
    for col, base in (("setup_samples", "setup_s"), ("solve_samples", "solve_s")):
        out[col] = [json.dumps(list(v * (1 + spread * rng.standard_normal(5)))) if pd.notna(v)
                    else "[]" for v in out[base]]
    return out


def test_honesty_saving_iterations_but_losing_wall_clock_reads_as_losing():
    t = honesty_frame(_with_samples(_records(), np.random.default_rng(0))).set_index("method")
    assert t.loc["amg_sa", "verdict"] == "wins"
    assert t.loc["amg_sa", "speedup_iters_x"] == pytest.approx(40)
    assert t.loc["amg_sa", "speedup_wall_x"] == pytest.approx(2, rel=0.05)
    assert t.loc["amg_sa", "wall_ci_lo"] < 2 < t.loc["amg_sa", "wall_ci_hi"]
    npo = t.loc["npo"]
    assert npo["speedup_iters_x"] == pytest.approx(10) and npo["speedup_wall_x"] < 1
    assert npo["verdict"].startswith("LOSES despite 10.0x fewer iterations")
    assert npo["break_even"] == "never"
    assert t.loc["ilu", "verdict"] == "FAILS: not converged" and np.isnan(t.loc["ilu", "speedup_wall_x"])
    assert t.loc["cg", "verdict"] == "baseline"


def test_honesty_noise_band_gives_ties():
    rng = np.random.default_rng(1)
    # 0.99x and 1.05x with identical iterations: within the band, a tie however tight the CI
    for factor in (1.01, 0.95):
        recs = _records(amg_sa={"iterations": 400, "setup_s": 0.0, "solve_s": 0.10 * factor,
                                "total_s": 0.10 * factor})
        t = honesty_frame(_with_samples(recs, rng, spread=0.001)).set_index("method")
        assert t.loc["amg_sa", "verdict"] == "tie", factor
    # a wide CI straddling the band: tie even at a point estimate of 1.3x
    recs = _records(amg_sa={"setup_s": 0.0, "solve_s": 0.077, "total_s": 0.077})
    t = honesty_frame(_with_samples(recs, rng, spread=0.5)).set_index("method")
    assert t.loc["amg_sa", "wall_ci_lo"] < TIE_BAND and t.loc["amg_sa", "verdict"] == "tie"


def test_honesty_break_even_and_lower_bounds():
    rng = np.random.default_rng(2)
    t = honesty_frame(_with_samples(_records(npo={"solve_s": 0.02, "total_s": 0.06}),
                                    rng)).set_index("method")
    # train 200 s / (0.10 - 0.06) s saved per solve = 5000 solves
    assert t.loc["npo", "break_even"] == "5,000" and t.loc["npo", "verdict"] == "wins"
    t2 = honesty_frame(_records(cg={"converged": False, "total_s": math.nan, "solve_s": math.nan,
                                   "elapsed_s": 2.0})).set_index("method")
    assert t2.loc["amg_sa", "speedup_wall"].startswith(">=")
    assert t2.loc["cg", "verdict"] == "baseline (not converged)"
    assert t2.loc["amg_sa", "verdict"] == "wins (CG did not converge)"


def test_honesty_renderings():
    t = honesty_frame(_with_samples(_records(), np.random.default_rng(0)))
    md = honesty_markdown(t, "T")
    assert "## n = 128 (N = 16,384), field constant" in md and "LOSES despite" in md
    # the nonsymmetric ILU in PCG is a negative control, and the table says so
    assert "| ilu [control] " in md and "`ilu` is a nonsymmetric ILU inside PCG" in md
    # without samples there is no interval and no claim
    few = honesty_frame(_records()).set_index("method")
    assert few.loc["npo", "verdict"] == "too few samples (< 3)"
    assert "| 3.0e-09 " in md  # the true residual is shown beside convergence
    assert "machine: m" in md and "threads" in md and "tie" in md.lower()
    md2 = honesty_markdown(t, "T", skipped=[("diffusion_2d", 128, "constant", "nystrom", "budget"),
                                           ("diffusion_2d", 64, "constant", "npo", "elsewhere")])
    assert "Not run here (the catalogue's reasons): `nystrom`: budget." in md2
    assert "elsewhere" not in md2
    txt = honesty_text(t)
    assert "speed-up wall" in txt and "break-even" in txt


def test_report_cli_writes_history(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", "--asv", str(ASV), "--benchmarks", str(PYB), "--out", str(out)]) == 0
    for name in ("history.md", "history.csv", "measurements.csv", "latest-honesty.md",
                 "plots/history-iterations.png", "plots/history-solve.png"):
        assert (out / name).stat().st_size > 0, name
    from npo.schema import SAMPLE_COLUMNS

    # the raw samples stay in the sources: the committed frame keeps every other column
    assert list(pd.read_csv(out / "measurements.csv").columns) == [
        c for c in COLUMNS if c not in SAMPLE_COLUMNS]
    # the long repeated values are keyed into measurements-keys.csv and join back exactly
    from npo.report.build import read_measurements

    frame = pd.read_csv(out / "measurements.csv")
    assert frame["versions"].dropna().str.startswith("versions:").all()
    back = read_measurements(out)
    assert back["versions"].dropna().map(lambda v: isinstance(json.loads(v), dict)).all()
    assert not [p for p in out.rglob(".*") if p.name != ".npo-bench.lock"]


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


def test_report_skips_an_empty_default_source(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".benchmarks").mkdir()  # what the README's test command leaves behind
    (tmp_path / ".asv").mkdir()
    shutil.copytree(ASV, tmp_path / ".asv" / "results")
    assert main(["report", "--out", str(tmp_path / "out")]) == 0
    assert "note: pytest-benchmark: no results" in capsys.readouterr().err


# --- plots ----------------------------------------------------------------------------


def _capture_figures(monkeypatch):
    figs = []

    def keep(fig, path, rs=None):
        figs.append(fig)
        return Path(path)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def test_one_style_per_method_in_every_panel_and_one_legend(monkeypatch):
    figs = _capture_figures(monkeypatch)
    recs = _records()
    both = pd.concat([recs, recs.assign(field="jump1e2", iterations=recs["iterations"] * 2),
                      recs.assign(n=256, N=256**2, field="jump1e2")], ignore_index=True)
    # the jump panel draws methods in another order: colours must not follow the order
    both = both.iloc[::-1].reset_index(drop=True)
    table = honesty_frame(both)
    plots.plot_iterations(table, "x.png")
    plots.plot_time_to_solution(table, "y.png")
    h = hist.history(load_all(asv_dir=ASV, benchmarks_dir=PYB))
    plots.plot_history(h, "z.png", "solve_s")
    for fig in figs:
        colours = plots.method_colours(fig)
        for method, cs in colours.items():
            assert cs == {plots.style(method)["color"]}, (method, cs)
        assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)
        labels = {t.get_text() for t in fig.legends[0].get_texts()}
        assert labels == set(colours)  # every method drawn is in the one legend
    # unknown (plugin) methods get a stable style of their own
    assert plots.style("ssor") == plots.style("ssor") and plots.style("ssor") != plots.style("cg")


# --- run store --------------------------------------------------------------------------


def _store_rows(tmp_path):
    from npo import cases, measure

    rec = measure.measure(cases.get_case("n32-constant-cg"), suite="quick", repeats=1)
    path = tmp_path / "runs" / "vm" / "20260101T000000.000000Z_abc_quick_1-aa.csv"
    path.parent.mkdir(parents=True)
    pd.DataFrame([rec, rec], columns=RECORD_COLUMNS).to_csv(path, index=False)
    return path, rec


def test_store_round_trip_keeps_declared_dtypes(tmp_path):
    path, rec = _store_rows(tmp_path)
    df = load_runs(tmp_path / "runs")
    for col, dtype in DTYPES.items():
        assert str(df[col].dtype) == dtype, col
    assert df["iterations"].iloc[0] == 116 and df["threads"].iloc[0] == 1
    assert df["timestamp"].iloc[0] == pd.Timestamp(rec["timestamp"])
    typed = coerce_dtypes(pd.DataFrame([rec]))
    assert typed["converged"].iloc[0] is np.True_ or bool(typed["converged"].iloc[0])


@pytest.mark.parametrize("damage, match", [
    ("truncate", "cut off"),
    ("no_timestamp", "lacks required"),
    ("no_converged", "lacks required"),
    ("bad_timestamp", "unparseable 'timestamp'"),
    ("short_row", "fields, the header has"),
    ("empty", "empty"),
])
def test_store_rejects_broken_files_by_name_and_row(tmp_path, damage, match):
    path, _ = _store_rows(tmp_path)
    text = path.read_text()
    if damage == "truncate":
        path.write_text(text[: len(text) - 40])
    elif damage in ("no_timestamp", "no_converged"):
        col = damage.removeprefix("no_")
        pd.read_csv(path).drop(columns=[col]).to_csv(path, index=False)
    elif damage == "bad_timestamp":
        df = pd.read_csv(path)
        df.loc[1, "timestamp"] = "yesterday"
        df.to_csv(path, index=False)
    elif damage == "short_row":
        lines = text.splitlines()
        path.write_text("\n".join(lines[:2] + [",".join(lines[2].split(",")[:5])]) + "\n")
    else:
        path.write_text("")
    with pytest.raises(BadRunFile if damage != "empty" else BadRunFile, match=match):
        read_run_file(path)
    with pytest.raises(ValueError, match=str(path.name)):
        load_runs(tmp_path / "runs")
    with pytest.warns(RuntimeWarning, match="skipped"):
        assert load_runs(tmp_path / "runs", skip_bad=True).empty


def test_store_ignores_temp_files_and_latest_skips_filtered(tmp_path):
    path, rec = _store_rows(tmp_path)
    tmp = path.parent / f".{path.name}.npo-tmp-999999-abcd.csv"
    tmp.write_text("garbage")
    runs = load_runs(tmp_path / "runs")
    assert len(runs) == 2
    newer = dict(rec, timestamp="2099-01-01T00:00:00+00:00", filter="--n 32", iterations=1)
    frame = pd.concat([runs, coerce_dtypes(pd.DataFrame([newer]))[RECORD_COLUMNS]])
    frame["code_version"], frame["env"] = "", ""
    table = latest_honesty(frame)
    assert set(table["iterations"]) == {116}  # the filtered (newer) run is never "latest"


def test_timings_without_iterations_are_not_judged():
    from npo.report import build

    df = pd.DataFrame({"source": ["cli"] * 2, "filter": [None, None], "suite": ["q"] * 2, "device": ["cpu"] * 2,
                       "machine": ["m", "m"], "case": ["n32-constant-cg", "n32-constant-ilu"],
                       "commit": ["c", "c"], "converged": pd.array([pd.NA, pd.NA], dtype="boolean"),
                       "problem": ["diffusion_2d"] * 2, "n": [32, 32], "field": ["constant"] * 2,
                       "timestamp": pd.to_datetime(["2026-01-01", "2026-01-01"], utc=True),
                       "commit_date": pd.to_datetime(["2026-01-01", "2026-01-01"], utc=True)})
    assert build.latest_honesty(df) is None  # timings only: nothing to judge, no crash


# --- rows the harness ended, and rows on several ranks -------------------------------------


def _cg_and_jacobi():
    from npo import cases, measure

    return [measure.measure(cases.get_case(f"n32-constant-{m}"), suite="t", repeats=3)
            for m in ("cg", "jacobi")]


def test_a_case_the_harness_ended_reads_its_reason_and_the_rest_is_judged():
    from npo import cases, measure

    cg, jac = _cg_and_jacobi()
    oom = measure.outcome_record(cases.get_case("n32-constant-amg_sa"),
                                 "out of memory (needs ≈2.0 GiB, limit 0.5 GiB)", suite="t")
    table = honesty_frame(pd.DataFrame([cg, jac, oom])).set_index("method")
    assert table.loc["amg_sa", "verdict"] == "out of memory (needs ≈2.0 GiB, limit 0.5 GiB)"
    assert table.loc["jacobi", "verdict"] in ("tie", "wins", "LOSES")  # judged against CG
    md = honesty_markdown(table.reset_index())
    row = next(line for line in md.splitlines() if line.startswith("| amg_sa"))
    assert "| -" in row and "116" not in row  # no iterations, no times
    assert "cases the harness ended" in md
    # CG itself ended: nobody is judged against a row without measurements
    cg_oom = measure.outcome_record(cases.get_case("n32-constant-cg"), "timed out after 5 s")
    t2 = honesty_frame(pd.DataFrame([cg_oom, jac])).set_index("method")
    assert t2.loc["cg", "verdict"] == "timed out after 5 s"
    assert t2.loc["jacobi", "verdict"] == "converged (cg not run: no speed-up)"
    # and history leaves the ended row out rather than reading it as 0 iterations
    h = hist.history(coerce_dtypes(pd.DataFrame([cg, jac, oom]).assign(code_version="")))
    assert set(h["method"]) == {"cg", "jacobi"}


def test_rows_on_several_ranks_are_footnoted():
    cg, jac = _cg_and_jacobi()
    two = {**jac, "ranks": 2, "case": "n32p2-constant-jacobi"}
    md = honesty_markdown(honesty_frame(pd.DataFrame([cg, jac, two])))
    assert "jacobi (2 ranks)" in md
    assert "ran on P = 2 MPI processes; its speed-ups are against cg on 1 rank" in md
    assert "MPI processes" not in honesty_markdown(honesty_frame(pd.DataFrame([cg, jac])))


def test_the_iterations_plot_never_joins_a_converged_point_to_a_cap(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    lines = []
    real = Axes.plot

    def spy(self, *args, **kw):
        if len(args) >= 3 and args[2] == "-":
            lines.append((list(args[0]), list(args[1])))
        return real(self, *args, **kw)

    monkeypatch.setattr(Axes, "plot", spy)
    df = pd.DataFrame({"method": ["ilu"] * 3, "n": [32, 64, 128], "field": "constant",
                       "iterations": [40, 20000, 20000], "converged": [True, False, False],
                       "reason": ["converged", "maxiter", "maxiter"], "N": [1024, 4096, 16384],
                       "device": "cpu", "problem": "diffusion_2d"})
    plots.plot_iterations(df, tmp_path / "it.png")
    ((xs, ys),) = lines
    assert xs == [32, 64, 128] and ys[0] == 40 and all(math.isnan(y) for y in ys[1:])


def test_a_machine_name_on_another_platform_starts_a_new_series():
    # the committed "vm" series was measured on an Intel Xeon; a new user's AMD EPYC host that
    # happens to be called "vm" must not extend it
    rows = []
    for k, (cpu, commit, day) in enumerate([("Intel(R) Xeon(R) Processor", "a1", 1),
                                            ("Intel(R) Xeon(R) Processor", "b2", 2),
                                            ("AMD EPYC 7B13", "c3", 3)]):
        rows.append({c: None for c in COLUMNS} | {
            "source": "cli", "machine": "vm", "cpu": cpu, "cores": 2, "device": "cpu",
            "blas": "openblas 0.3.30 SkylakeX threads=1" if k < 2 else
                    "openblas 0.3.30 Zen threads=1",
            "commit": commit, "commit_date": f"2026-01-0{day}T00:00:00+00:00",
            "timestamp": f"2026-01-0{day}T00:00:00+00:00", "case": "n32-constant-cg",
            "problem": "diffusion_2d", "n": 32, "field": "constant", "method": "cg",
            "iterations": 116, "converged": True, "reason": "converged", "solve_s": 0.002,
            "setup_s": 1e-5, "apply_s": 1e-6, "code_version": ""})
    h = hist.history(coerce_dtypes(pd.DataFrame(rows)))
    series = h.groupby("machine")["commit"].apply(list).to_dict()
    assert series == {"vm": ["a1", "b2"],
                      "vm [AMD EPYC 7B13, 2 cores, openblas Zen]": ["c3"]}
    md = hist.history_markdown(h)
    assert "machine name 'vm' was used on 2 platforms" in md and "NPO_MACHINE" in md
    # a row that did not record its platform (an old file) joins the series it matches
    old = dict(rows[0], cpu=None, blas=None, cores=None, commit="z0",
               commit_date="2025-12-31T00:00:00+00:00", timestamp=None)
    h2 = hist.history(coerce_dtypes(pd.DataFrame([old] + rows[:2])))
    assert set(h2["machine"]) == {"vm"}


def test_a_default_report_writes_the_workspace_and_keeps_committed_sections(tmp_path,
                                                                           monkeypatch):
    from npo.report import build

    # a fresh clone: the committed frame has pytest-benchmark rows, .benchmarks/ is absent
    monkeypatch.chdir(tmp_path)
    path, rec = _store_rows(tmp_path / "reports")
    committed = load_all(runs_dir=tmp_path / "reports" / "runs",
                         benchmarks_dir=PYB).drop(columns=["setup_samples", "solve_samples",
                                                           "apply_samples"])
    assert (committed["source"] == "pytest-benchmark").any()
    committed.to_csv(tmp_path / "reports" / "measurements.csv", index=False)
    before = (tmp_path / "reports" / "measurements.csv").read_bytes()
    notes = []
    build.build_reports(notes=notes)
    assert (tmp_path / "reports" / "measurements.csv").read_bytes() == before  # untouched
    frame = pd.read_csv(tmp_path / ".npo-bench" / "measurements.csv")
    k = int((committed["source"] == "pytest-benchmark").sum())
    assert int((frame["source"] == "pytest-benchmark").sum()) == k
    assert any(n.startswith("pytest-benchmark: .benchmarks is absent here; the "
                            f"{k} rows of the committed") for n in notes)


def _paired_rows(cg_totals, m_totals, key="2026-12-08T00:00:00.000000+00:00"):
    rows = []
    for method, tot in (("cg", cg_totals), ("amg_sa", m_totals)):
        r = _records().iloc[0].to_dict() | {
            "method": method, "iterations": 400 if method == "cg" else 10, "paired": key,
            "setup_samples": json.dumps([0.0] * len(tot)), "solve_samples": json.dumps(tot),
            "setup_s": 0.0, "solve_s": float(np.median(tot)), "total_s": float(np.median(tot))}
        rows.append(r)
    return pd.DataFrame(rows)


def test_paired_rounds_see_through_a_load_that_hits_both():
    # a load slows rounds 2 and 3 of both by 3x: the per-round ratios stay 2, so the verdict
    # is a confident "wins"; judged unpaired, the inflated samples blur it into a tie
    cg = [0.10, 0.10, 0.30, 0.30, 0.10, 0.10]
    amg = [0.05, 0.05, 0.15, 0.15, 0.05, 0.05]
    t = honesty_frame(_paired_rows(cg, amg)).set_index("method")
    assert t.loc["amg_sa", "verdict"] == "wins"
    assert t.loc["amg_sa", "speedup_wall_x"] == pytest.approx(2.0)
    assert t.loc["amg_sa", "wall_ci_lo"] == pytest.approx(2.0)


def test_a_baseline_that_drifts_during_its_section_is_unstable_not_a_verdict():
    cg = [0.10, 0.10, 0.10, 0.20, 0.20]  # the machine got twice as slow and stayed so
    amg = [0.30, 0.30, 0.30, 0.30, 0.30]
    t = honesty_frame(_paired_rows(cg, amg)).set_index("method")
    assert t.loc["amg_sa", "verdict"] == "unstable (machine load)"
    assert t.loc["cg", "verdict"] == "baseline"
    # the same samples from different runs are not paired: the old rule applies
    other = _paired_rows(cg, amg)
    other.loc[1, "paired"] = "another run"
    assert honesty_frame(other).set_index("method").loc["amg_sa", "verdict"] != (
        "unstable (machine load)")
