"""Tests of the NPO: model, data, training, checkpoints and the preconditioner.

Iteration counts depend on the last bits of dot products, so every solve runs
with threads pinned to 1 (:func:`npo.env.pinned_threads`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from npo.env import pinned_threads
from npo.krylov import fcg, pcg
from npo.neural import shipped_models
from npo.neural.data import (
    MatrixSpec,
    build_grid_data,
    log_coefficient,
    record_cg_residuals,
    scaled_operator,
    stencil_fields,
)
from npo.precond import get
from npo.problems import coefficient, diffusion_2d, grf_rhs, poisson_2d

torch = pytest.importorskip("torch")

from npo.neural.checkpoint import (  # noqa: E402
    FORMAT_VERSION,
    from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from npo.neural.model import NAMG  # noqa: E402
from npo.neural.train import TrainConfig, stencil_apply, train  # noqa: E402

CANONICAL = "poisson32"  # the model the <= 32-iteration canonical check is asserted on
SHIPPED = ("poisson", "poisson32", "varcoef")


@pytest.fixture(autouse=True)
def one_thread():
    with pinned_threads(1):
        yield


# --- import hygiene -------------------------------------------------------------


def test_import_npo_does_not_import_torch():
    code = (
        "import sys, npo, npo.precond, npo.krylov, npo.problems, npo.neural\n"
        "npo.precond.available(); npo.precond.get('npo', checkpoint='poisson')\n"
        "m = npo.neural.shipped_models()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(sorted(m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "poisson" in out.stdout


def test_shipped_models_have_sidecars():
    models = shipped_models()
    assert set(SHIPPED) <= set(models)
    for name in SHIPPED:
        meta = models[name]
        assert meta["train_s"] > 0 and meta["command"].startswith("python -m npo.neural.train")
        assert meta["bytes"] < 1_000_000
        assert len(meta["history"]) == meta["train_config"]["epochs"]
    assert "jump" in models["varcoef"]["fields"] and models["varcoef"]["config"]["coef_channel"]


# --- model ------------------------------------------------------------------------


def test_default_model_size():
    net = NAMG()
    assert 45_000 < net.num_parameters() < 55_000


@pytest.mark.parametrize("n", [16, 32, 64])
def test_forward_any_resolution(n):
    net, _ = from_checkpoint("poisson")
    with torch.no_grad():
        z = net(torch.randn(3, n, n))
    assert z.shape == (3, n, n) and torch.isfinite(z).all()


def test_forward_rejects_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        NAMG()(torch.zeros(2, 8, 9))
    with pytest.raises(ValueError, match="coef"):
        NAMG(coef_channel=True)(torch.zeros(1, 8, 8))


# --- data -------------------------------------------------------------------------


def test_stencil_apply_matches_sparse_matvec():
    n = 12
    A = diffusion_2d(n, coefficient("lognormal", n, 50.0, seed=3)) / (n + 1) ** 2
    S = torch.as_tensor(stencil_fields(A))[None]
    u = np.random.default_rng(0).standard_normal(n * n)
    got = stencil_apply(S, torch.as_tensor(u).reshape(1, n, n)).numpy().ravel()
    np.testing.assert_allclose(got, A @ u, rtol=1e-12, atol=1e-12)


def test_stencil_fields_rejects_other_patterns():
    with pytest.raises(ValueError, match="5-point"):
        stencil_fields(poisson_2d(4) + sp.eye(16, k=2))


def test_log_coefficient_reads_only_A():
    np.testing.assert_allclose(log_coefficient(poisson_2d(8)), 0.0, atol=1e-12)
    n = 8
    a = coefficient("jump", n, 100.0)
    lc = log_coefficient(diffusion_2d(n, a))
    # far from the jump the mean face coefficient equals the nodal one
    assert lc[0, 3] == pytest.approx(0.0, abs=1e-12)
    assert lc[-1, 3] == pytest.approx(np.log(100.0))


def test_scaled_operator():
    n = 16
    A = poisson_2d(n)
    Ahat, w = scaled_operator(A)
    assert np.all(w == 1.0) and (Ahat - A * (n + 1) ** -2.0).count_nonzero() == 0
    B = diffusion_2d(n, coefficient("jump", n, 100.0))
    Bhat, w = scaled_operator(B)
    np.testing.assert_allclose(Bhat.diagonal(), 4.0)
    np.testing.assert_allclose((Bhat - Bhat.T).toarray(), 0.0, atol=1e-12)
    back = (sp.diags(1 / w) @ Bhat @ sp.diags(1 / w)).toarray() * (n + 1) ** 2
    np.testing.assert_allclose(back, B.toarray(), rtol=1e-12, atol=1e-9)


def test_recorded_residuals_and_targets():
    n = 8
    A = poisson_2d(n)
    b = grf_rhs(n, seed=100)
    rs = record_cg_residuals(A, b, [1, 2, 4])
    assert sorted(rs) == [1, 2, 4]
    xs = []
    pcg(A, b, rtol=1e-10, maxiter=4, callback=lambda x: xs.append(x.copy()))
    for k, r in rs.items():
        np.testing.assert_allclose(r, b - A @ xs[k - 1], atol=1e-9 * np.linalg.norm(b))
    g = build_grid_data([MatrixSpec(n)], [[100, 101]], (1, 2))
    assert len(g) == 6 and g.is_rhs.sum() == 2
    assert len(build_grid_data([MatrixSpec(32)], [[100]])) == 8  # 1 rhs + 7 residuals
    np.testing.assert_allclose(np.linalg.norm(g.inputs.reshape(6, -1), axis=1), 1.0)
    Ahat = A / (n + 1) ** 2
    for v, t in zip(g.inputs, g.targets, strict=True):
        np.testing.assert_allclose(Ahat @ t.ravel(), v.ravel(), atol=1e-10)


# --- training -----------------------------------------------------------------------


def _tiny_config(tmp_path=None, **kw):
    base = dict(n=(16,), num_rhs=(6,), record_iters=(1, 2, 4, 8), epochs=12, warmup=1,
                batch_size=14, lr=3e-3, lr_min=1e-4, width=8, num_coarse=8, heads=2,
                ffn_mult=2, progress=False)
    if tmp_path is not None:
        base["out"] = str(tmp_path / "tiny.pt")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with pinned_threads(1):
        return train(_tiny_config(tmp_path_factory.mktemp("tiny")))


def test_tiny_training_loss_falls(tiny):
    first, last = tiny.history[0], tiny.history[-1]
    assert last["total"] < 0.6 * first["total"]
    assert last["data"] < first["data"]
    assert len(tiny.history) == 12


def test_checkpoint_round_trip(tiny):
    path = tiny.path
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["command"].startswith("npo-bench train --n 16")
    assert side["train_s"] > 0 and side["final_loss"]["total"] == tiny.history[-1]["total"]
    assert side["rhs_seeds"] == {"16": [100, 105]}
    model, meta = from_checkpoint(path)
    r = torch.randn(2, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(r), tiny.model(r))
    assert meta["versions"]["torch"] == torch.__version__
    ck = load_checkpoint(path)
    assert ck["format_version"] == FORMAT_VERSION and ck["config"]["width"] == 8


def test_training_is_deterministic(tiny):
    again = train(_tiny_config(epochs=2))
    assert again.history[0]["total"] == tiny.history[0]["total"]


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(fields=("nope",)), "unknown field"),
        (dict(n=(2,)), "grid sizes"),
        (dict(contrast=(10.0, 1.0)), "contrast"),
        (dict(num_rhs=(4, 4)), "num-rhs"),
        (dict(device="tpu"), "device"),
        (dict(precision="fp8"), "precision"),
    ],
)
def test_bad_training_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _tiny_config(**kw)


def test_cli_bad_field_writes_nothing_and_options_map_to_config(tmp_path, capsys):
    from npo.cli import build_parser, main

    out = tmp_path / "m.pt"
    code = main(["train", "--n", "16", "--field", "bogus", "--out", str(out)])
    assert code == 2 and "unknown field" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    args = build_parser().parse_args(["train", "--n", "16", "32", "--field", "jump", "lognormal",
                                      "--contrast", "1", "100", "--out", str(out)])
    from dataclasses import fields

    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})
    assert cfg.n == (16, 32) and cfg.uses_coef and cfg.contrast == (1.0, 100.0)
    assert cfg.warmup == 10  # 2.5% of the default 400 epochs


def test_warmup_scales_with_epochs():
    # a valid small request never fails on a default (was "warmup must be in [0, epochs)")
    assert TrainConfig(epochs=3, progress=False).warmup == 0
    assert TrainConfig(epochs=80, progress=False).warmup == 2
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(epochs=3, warmup=3, progress=False)


def test_train_out_checked_before_training(tmp_path, capsys, monkeypatch):
    import npo.neural.train as trainer
    from npo.cli import main

    def refuse(*a, **k):
        raise AssertionError("training started before --out was checked")
    monkeypatch.setattr(trainer, "train", refuse)
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the output directory should be
    code = main(["train", "--n", "16", "--epochs", "50", "--out", str(blocker / "m.pt")])
    assert code == 2 and "is not a directory" in capsys.readouterr().err


# --- checkpoint errors ------------------------------------------------------------------


@pytest.fixture()
def good_ckpt(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "good.pt"
    save_checkpoint(NAMG(width=8, num_coarse=4, heads=2, ffn_mult=1), path, {"train_s": 1.0})
    return path


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"corrupt\.pt.*not a readable"):
        from_checkpoint(bad)


def test_truncated_checkpoint(good_ckpt, tmp_path):
    bad = tmp_path / "truncated.pt"
    data = good_ckpt.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt.*not a readable"):
        from_checkpoint(bad)


def test_wrong_version_checkpoint(good_ckpt):
    ck = torch.load(good_ckpt, weights_only=True)
    ck["format_version"] = FORMAT_VERSION + 1
    torch.save(ck, good_ckpt)
    with pytest.raises(ValueError, match=r"good\.pt.*format version 2 is not supported"):
        from_checkpoint(good_ckpt)


def test_mismatched_checkpoint(good_ckpt):
    ck = torch.load(good_ckpt, weights_only=True)
    ck["state_dict"].pop("readout.bias")
    torch.save(ck, good_ckpt)
    with pytest.raises(ValueError, match=r"good\.pt.*missing keys \['readout.bias'\]"):
        from_checkpoint(good_ckpt)
    ck["state_dict"]["readout.bias"] = torch.zeros(3)
    torch.save(ck, good_ckpt)
    with pytest.raises(ValueError, match="readout.bias.*shape"):
        from_checkpoint(good_ckpt)
    ck["state_dict"]["readout.bias"] = torch.zeros(1)
    ck["config"]["width"] = 16
    torch.save(ck, good_ckpt)
    with pytest.raises(ValueError, match="shape"):
        from_checkpoint(good_ckpt)


def test_foreign_and_missing_checkpoints(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not an NPO checkpoint"):
        from_checkpoint(other)
    with pytest.raises(ValueError, match="expected one of"):
        from_checkpoint("no-such-model")


def test_oversized_config_is_refused_before_allocation(good_ckpt, tmp_path, monkeypatch):
    import npo.neural.checkpoint as ckmod

    ck = torch.load(good_ckpt, weights_only=True)
    ck["config"]["num_coarse"] = 10**9  # would allocate 128 GB of queries
    bad = tmp_path / "huge.pt"
    torch.save(ck, bad)

    def refuse(**config):
        raise AssertionError("the model was built before its config was checked")
    monkeypatch.setattr(ckmod, "NAMG", refuse)
    with pytest.raises(ValueError, match=r"num_coarse = 1000000000 is outside \[1, 4096\]"):
        from_checkpoint(bad)


@pytest.mark.parametrize("func, reason", [
    (print, "GLOBAL print was not an allowed global"),
    (os.system, "unsupported GLOBAL posix.system whose module posix is blocked"),
])
def test_malicious_pickle_is_refused_with_its_own_message(tmp_path, func, reason):
    class Evil:
        def __reduce__(self):
            return (func, ("echo owned",))

    bad = tmp_path / "evil.pt"
    torch.save({"format": Evil()}, bad)  # a torch file whose pickle calls func() on load
    with pytest.raises(ValueError) as exc:
        from_checkpoint(bad)
    msg = str(exc.value)
    assert "refused: the file holds objects that safe loading does not allow" in msg
    assert "possibly malicious" in msg and "corrupt" not in msg
    assert reason in msg  # torch's reason, kept whole


def test_save_rejects_non_json_metadata(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(NAMG(width=8, num_coarse=4, heads=2), tmp_path / "x.pt", {"a": object()})
    assert not (tmp_path / "x.pt").exists()


# --- the preconditioner ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def canonical():
    A = poisson_2d(32)
    with pinned_threads(1):
        M = get("npo", checkpoint=CANONICAL).setup(A)
    return A, grf_rhs(32, seed=42), M


def test_canonical_fcg_converges_fast(canonical):
    A, b, M = canonical
    cg = pcg(A, b, rtol=1e-10)
    res = fcg(A, b, M, rtol=1e-10)
    assert cg.iterations == 116
    assert res.converged and res.iterations <= 32
    assert np.linalg.norm(b - A @ res.x) <= 1e-9 * np.linalg.norm(b)


def test_canonical_plain_pcg_stalls(canonical):
    """Negative control: Fletcher-Reeves PCG with a nonlinear M does not converge."""
    A, b, M = canonical
    with pytest.warns(RuntimeWarning, match="nonlinear"):
        res = pcg(A, b, M, rtol=1e-10, maxiter=2000)
    assert not res.converged and res.reason == "maxiter" and res.iterations == 2000
    assert res.relres > 1e-8


def test_positive_homogeneity(canonical):
    _, b, M = canonical
    z = M.apply(b)
    for c in (1e-12, 0.37, 5.0, 1e8):
        np.testing.assert_allclose(M.apply(c * b), c * z, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(M.apply(np.zeros_like(b)), 0.0)
    assert M.apply(b).dtype == np.float64


def test_apply_rejects_bad_length_and_propagates_nan(canonical):
    _, b, M = canonical
    with pytest.raises(ValueError, match="shape"):
        M.apply(b[:-1])
    bad = b.copy()
    bad[3] = np.nan
    # like every adapter, a non-finite input gives a non-finite output; the
    # solver detects it and ends with a breakdown that names the preconditioner
    assert not np.all(np.isfinite(M.apply(bad)))
    res = fcg(poisson_2d(32), b, lambda r: M.apply(r) * np.nan)
    assert res.reason == "breakdown" and "non-finite" in res.detail


def test_setup_errors():
    with pytest.raises(ValueError, match="perfect square"):
        get("npo").setup(sp.identity(10, format="csr"))
    with pytest.raises(ValueError, match="expected one of"):
        get("npo", checkpoint="nope").setup(poisson_2d(8))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get("npo", device="cuda").setup(poisson_2d(8))
    with pytest.raises(ValueError, match="precision"):
        get("npo", precision="fp8")
    with pytest.raises(ValueError, match="device"):
        get("npo", device="gpu")


def test_info_and_flags(canonical):
    _, _, M = canonical
    assert M.linear is False and M.symmetric is False
    info = M.info
    assert info["checkpoint"] == CANONICAL and info["trained_n"] == [32]
    assert info["flops_per_apply"] > 5e7 and info["params"] == M.model.num_parameters()
    assert M.train_s == shipped_models()[CANONICAL]["train_s"]
    assert 4 * info["params"] <= M.nbytes < 4 * info["params"] + 100_000
    assert "NPO(N=1024" in repr(M)


@pytest.mark.parametrize("n, speedup", [(16, 1.0), (64, 3.0)])
def test_other_resolutions_converge(n, speedup):
    """The default multi-resolution model off its canonical grid (16 was never trained)."""
    A = poisson_2d(n)
    b = grf_rhs(n, seed=42)
    res = fcg(A, b, get("npo").setup(A), rtol=1e-10)
    cg = pcg(A, b, rtol=1e-10).iterations
    assert res.converged and res.iterations * speedup < cg


def test_varcoef_jump():
    n = 32
    A = diffusion_2d(n, coefficient("jump", n, 100.0))
    b = grf_rhs(n, seed=42)
    res = fcg(A, b, get("npo", checkpoint="varcoef").setup(A), rtol=1e-10)
    jac = pcg(A, b, get("jacobi").setup(A), rtol=1e-10)
    assert jac.iterations == 137
    assert res.converged and res.iterations <= 68


def test_scipy_linear_operator(canonical):
    _, b, M = canonical
    op = M.as_linear_operator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(op.matvec(b), M.apply(b))


# -- CUDA: the same NPO code path with tensors on the GPU (skipped without one) --
