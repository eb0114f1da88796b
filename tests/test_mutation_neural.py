"""Mutation-testing tests for the NPO's torch-free parts and its checkpoint/adapter contracts:
npo.neural (sidecars), npo.neural.config, npo.neural.data, npo.neural.checkpoint."""

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from npo import neural
from npo.neural import config as cfgmod
from npo.neural import data
from npo.neural.config import TrainConfig
from npo.problems import coefficient, diffusion_2d, grf_rhs, poisson_2d


def _cfg(**kw):
    return TrainConfig(progress=False, **kw)


# --- npo.neural ----------------------------------------------------------------------


def test_shipped_models_and_resolve(tmp_path):
    models = neural.shipped_models()
    assert list(models) == sorted(models) and {"poisson", "poisson32", "varcoef"} <= set(models)
    for name, meta in models.items():
        with open(neural.WEIGHTS_DIR / f"{name}.json") as f:
            assert meta == json.load(f)
    assert neural.resolve_checkpoint("poisson") == neural.WEIGHTS_DIR / "poisson.pt"
    p = tmp_path / "m.pt"
    p.write_bytes(b"x")
    assert neural.resolve_checkpoint(p) == p and neural.resolve_checkpoint(str(p)) == p
    (tmp_path / "poisson").write_bytes(b"x")
    names = sorted(q.stem for q in neural.WEIGHTS_DIR.glob("*.pt"))
    for bad in ("nope", "", "a/poisson", "poisson.pt", tmp_path / "none.pt"):
        with pytest.raises(ValueError) as e:
            neural.resolve_checkpoint(bad)
        assert str(e.value) == (f"no NPO checkpoint {str(bad)!r}: not a shipped model (expected "
                                f"one of {names}) and no such file")
    with pytest.raises(AttributeError) as e:
        neural.nope  # noqa: B018
    assert str(e.value) == "module 'npo.neural' has no attribute 'nope'"
    assert neural._LAZY == {"NAMG": ("npo.neural.model", "NAMG"),
                            "from_checkpoint": ("npo.neural.checkpoint", "from_checkpoint")}


def test_shipped_models_skip_sidecars_without_weights(tmp_path, monkeypatch):
    (tmp_path / "a.json").write_text('{"x": 1}')
    (tmp_path / "a.pt").write_bytes(b"")
    (tmp_path / "orphan.json").write_text('{"y": 2}')
    (tmp_path / "0first.json").write_text('{"z": 3}')  # sorts first, has no weights either
    (tmp_path / "z.json").write_text('{"w": 4}')
    (tmp_path / "z.pt").write_bytes(b"")
    monkeypatch.setattr(neural, "WEIGHTS_DIR", tmp_path)
    assert neural.shipped_models() == {"a": {"x": 1}, "z": {"w": 4}}


# --- config --------------------------------------------------------------------------


def test_config_defaults_and_derived():
    assert cfgmod.WARMUP_FRACTION == 0.025
    assert cfgmod.LIMITS == {"width": 1024, "num_coarse": 4096, "heads": 64, "ffn_mult": 16}
    c = _cfg()
    assert (c.n, c.fields, c.contrast, c.num_coef, c.coef_seed, c.num_rhs, c.rhs_seed,
            c.record_iters, c.epochs, c.batch_size, c.lr, c.lr_min, c.warmup, c.seed, c.width,
            c.num_coarse, c.heads, c.ffn_mult, c.coef_channel, c.threads, c.device, c.precision,
            c.init, c.out) == ((32,), ("constant",), (1.0, 1.0), 1, 1000, (40,), 100,
                               (1, 2, 4, 8, 16, 32, 64), 400, 32, 2e-3, 5e-5, 10, 0, 32, 64, 4,
                               4, None, 1, "cpu", "fp32", None, None)
    assert c.uses_coef is False and _cfg(fields=("jump",)).uses_coef is True
    assert _cfg(fields=("jump",), coef_channel=False).uses_coef is False
    assert _cfg(coef_channel=True).uses_coef is True
    assert c.model_config() == {"width": 32, "num_coarse": 64, "heads": 4, "ffn_mult": 4,
                                "coef_channel": False}
    assert TrainConfig(progress=True) == TrainConfig(progress=False)  # progress is not compared
    d = c.as_dict()
    assert "progress" not in d and d["n"] == [32] and d["contrast"] == [1.0, 1.0]
    assert d["record_iters"] == [1, 2, 4, 8, 16, 32, 64] and d["warmup"] == 10
    assert list(d) == [f for f in TrainConfig.__dataclass_fields__ if f != "progress"]


def test_config_normalises():
    c = _cfg(n=16, fields="jump", num_rhs=[3.0], record_iters=(1, 2.0), contrast=[2, 5])
    assert (c.n, c.fields, c.num_rhs, c.record_iters, c.contrast) == (
        (16,), ("jump",), (3,), (1, 2), (2.0, 5.0))
    assert isinstance(c.contrast[0], float)
    for epochs, warm in ((1, 0), (2, 0), (3, 0), (20, 0), (21, 1), (60, 2), (400, 10),
                         (1000, 25)):
        assert _cfg(epochs=epochs).warmup == warm, epochs
    assert _cfg(epochs=5, warmup=4).warmup == 4


@pytest.mark.parametrize("kw, msg", [
    ({"n": ()}, "--n: grid sizes must be integers >= 4, got []"),
    ({"n": (3,)}, "--n: grid sizes must be integers >= 4, got [3]"),
    ({"n": (8, 8)}, "--n: repeated grid size in [8, 8]"),
    ({"fields": ("nope", "jump")}, "--field: unknown field(s) ['nope']; expected one of "
                                   "['binary', 'checkerboard', 'constant', 'jump', 'lognormal']"),
    ({"fields": ()}, "--field: unknown field(s) []; expected one of ['binary', 'checkerboard', "
                     "'constant', 'jump', 'lognormal']"),
    ({"fields": ("jump", "jump")}, "--field: repeated field in ['jump', 'jump']"),
    ({"contrast": (2.0, 1.0)}, "--contrast: need LO HI with 1 <= LO <= HI, got [2.0, 1.0]"),
    ({"contrast": (0.5, 1.0)}, "--contrast: need LO HI with 1 <= LO <= HI, got [0.5, 1.0]"),
    ({"contrast": (1.0,)}, "--contrast: need LO HI with 1 <= LO <= HI, got [1.0]"),
    ({"contrast": (1.0, math.inf)}, "--contrast: need LO HI with 1 <= LO <= HI, got [1.0, inf]"),
    ({"num_rhs": (1, 2)}, "--num-rhs: need one positive count or one per grid size [32], "
                          "got [1, 2]"),
    ({"num_rhs": (0,)}, "--num-rhs: need one positive count or one per grid size [32], got [0]"),
    ({"record_iters": ()}, "--record-iters: need positive iterations, got []"),
    ({"record_iters": (0, 1)}, "--record-iters: need positive iterations, got [0, 1]"),
    ({"num_coef": 0}, "num_coef: must be a positive integer, got 0"),
    ({"epochs": True}, "epochs: must be a positive integer, got True"),
    ({"batch_size": 2.0}, "batch_size: must be a positive integer, got 2.0"),
    ({"threads": 0}, "threads: must be a positive integer, got 0"),
    ({"heads": 0}, "heads: must be a positive integer, got 0"),
    ({"width": 2048}, "width: 2048 exceeds the limit 1024"),
    ({"num_coarse": 4097}, "num_coarse: 4097 exceeds the limit 4096"),
    ({"heads": 128, "width": 128}, "heads: 128 exceeds the limit 64"),
    ({"ffn_mult": 17}, "ffn_mult: 17 exceeds the limit 16"),
    ({"width": 30}, "width 30 is not divisible by heads 4"),
    ({"warmup": 400}, "warmup must be in [0, epochs) = [0, 400), got 400"),
    ({"warmup": -1}, "warmup must be in [0, epochs) = [0, 400), got -1"),
    ({"warmup": 1.5}, "warmup must be in [0, epochs) = [0, 400), got 1.5"),
    ({"lr": 1e-3, "lr_min": 2e-3}, "need 0 < lr_min <= lr, got lr=0.001, lr_min=0.002"),
    ({"lr_min": 0.0}, "need 0 < lr_min <= lr, got lr=0.002, lr_min=0.0"),
    ({"lr": math.inf}, "need 0 < lr_min <= lr, got lr=inf, lr_min=5e-05"),
    ({"device": "gpu"}, "--device must be 'cpu' or 'cuda[:k]', got 'gpu'"),
    ({"precision": "fp16"}, "--precision must be 'fp32' or 'bf16', got 'fp16'"),
    ({"out": "m.pth"}, "--out must name a .pt file, got 'm.pth'"),
    ({"init": "nope"}, None),
])
def test_config_validation_messages(kw, msg):
    with pytest.raises(ValueError) as e:
        _cfg(**kw)
    if msg is not None:
        assert str(e.value) == msg


def test_config_accepts_edges():
    _cfg(n=(4,), contrast=(1.0, 1.0), lr=1e-3, lr_min=1e-3, width=1024, heads=64,
         num_coarse=4096, ffn_mult=16, warmup=0, device="cuda:1", precision="bf16",
         init="poisson", out="x.pt", num_rhs=(2,))
    _cfg(n=(8, 16), num_rhs=(1, 2))


def test_config_command():
    assert _cfg().command() == "npo-bench train --n 32 --epochs 400 --warmup 10 --threads 1"
    c = _cfg(n=(16, 32), fields=("jump", "lognormal"), contrast=(1, 100), epochs=10,
             coef_channel=False, init="poisson", out="x y.pt", lr=1e-3)
    assert c.command() == ("npo-bench train --n 16 32 --field jump lognormal --contrast 1 100 "
                           "--epochs 10 --lr 0.001 --warmup 0 --no-coef-channel --threads 1 "
                           "--init poisson --out 'x y.pt'")
    assert _cfg(coef_channel=True, lr_min=2.5e-5).command().endswith(
        "--lr-min 2.5e-05 --warmup 10 --coef-channel --threads 1")
    assert cfgmod._fmt_num(2.0) == "2" and cfgmod._fmt_num(2.5) == "2.5"
    assert cfgmod._fmt_num(3) == "3" and cfgmod._fmt_num("a") == "a"
    assert cfgmod._as_tuple("ab") == ("ab",) and cfgmod._as_tuple(3) == (3,)
    assert cfgmod._as_tuple([1, 2]) == (1, 2)


# --- data ----------------------------------------------------------------------------


def test_grid_size_and_log_coefficient():
    assert data.grid_size(poisson_2d(5)) == 5
    for A in (sp.identity(10), sp.csr_matrix((16, 15))):
        with pytest.raises(ValueError) as e:
            data.grid_size(A)
        assert str(e.value) == (f"matrix of size N = {A.shape[0]} is not an n x n grid operator "
                                "(N is not a perfect square)")
    A = diffusion_2d(4, coefficient("jump", 4, 10.0))
    want = np.log(A.diagonal() * (1 / 5) ** 2 / 4.0).reshape(4, 4)
    np.testing.assert_allclose(data.log_coefficient(A), want, rtol=1e-15, atol=1e-15)
    bad = poisson_2d(3).tolil()
    bad[4, 4] = 0.0
    with pytest.raises(ValueError) as e:
        data.log_coefficient(bad.tocsr())
    assert str(e.value) == "A has a non-positive or non-finite diagonal entry; it is not SPD"
    bad[4, 4] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        data.log_coefficient(bad.tocsr())


def test_jacobi_weights_and_scaled_operator():
    assert data.jacobi_weights(poisson_2d(6) * 3.0).tolist() == [1.0] * 36
    A = diffusion_2d(5, coefficient("lognormal", 5, 100.0, seed=2))
    w = data.jacobi_weights(A)
    np.testing.assert_allclose(w, (A.diagonal() / 36 / 4.0) ** -0.5, rtol=1e-14)
    Ahat, w2 = data.scaled_operator(A)
    np.testing.assert_array_equal(w, w2)
    assert sp.isspmatrix_csr(Ahat)
    np.testing.assert_allclose(Ahat.toarray(), (np.diag(w) @ A.toarray() @ np.diag(w)) / 36,
                               rtol=1e-13)
    np.testing.assert_allclose(Ahat.diagonal(), 4.0, rtol=1e-13)
    P, ones = data.scaled_operator(poisson_2d(4))
    np.testing.assert_allclose(P.toarray(), poisson_2d(4).toarray() / 25, rtol=1e-15)


def test_stencil_fields_exactly():
    A = diffusion_2d(4, coefficient("lognormal", 4, 10.0, seed=1))
    S = data.stencil_fields(A)
    D = A.toarray()
    for i in range(4):
        for j in range(4):
            k = i * 4 + j
            nb = [k, k - 4 if i else None, k + 4 if i < 3 else None, k - 1 if j else None,
                  k + 1 if j < 3 else None]
            for s, m in enumerate(nb):
                assert S[s, i, j] == (D[k, m] if m is not None else 0.0), (s, i, j)
    with pytest.raises(ValueError) as e:
        data.stencil_fields(poisson_2d(3) + sp.eye(9, k=3) * 0 + sp.eye(9, k=2))
    assert str(e.value) == "A has entries outside the 5-point stencil of an n x n grid"
    wrap = poisson_2d(3).tolil()
    wrap[2, 3] = wrap[3, 2] = -1.0
    with pytest.raises(ValueError) as e:
        data.stencil_fields(wrap.tocsr())
    assert str(e.value) == "A couples nodes across grid-row ends: not a 5-point grid operator"
    wrap = poisson_2d(3).tolil()
    wrap[3, 2] = -1.0
    with pytest.raises(ValueError, match="across grid-row ends"):
        data.stencil_fields(wrap.tocsr())


def test_recording_identity_and_residuals():
    rec = data.RecordingIdentity()
    r = np.ones(3)
    assert rec.linear is True and rec.apply(r) is r and rec.residuals[0] is not r
    r[0] = 5.0
    assert rec.residuals[0].tolist() == [1.0, 1.0, 1.0]
    A, b = poisson_2d(6), grf_rhs(6, seed=3) * 7.0
    got = data.record_cg_residuals(A, b, [4, 1, 2, 4])
    assert sorted(got) == [1, 2, 4]
    # the residual after k plain-CG steps, in the caller's scaling
    from npo.krylov import pcg

    for k, rk in got.items():
        x = pcg(A, b, rtol=1e-300, maxiter=k).x
        np.testing.assert_allclose(rk, b - A @ x, rtol=1e-9, atol=1e-9 * np.abs(b).max())
    assert sorted(data.record_cg_residuals(A, b, [1, 500], rtol=1e-6)) == [1]
    for bad in ([], [0, 1], [-2]):
        with pytest.raises(ValueError) as e:
            data.record_cg_residuals(A, b, bad)
        assert str(e.value) == (f"record iterations must be positive integers, got "
                                f"{sorted({int(k) for k in bad})}")


def test_matrix_spec_and_matrix_for():
    s = data.MatrixSpec(6)
    assert (s.field, s.contrast, s.seed) == ("constant", 1.0, 0)
    assert s.as_dict() == {"n": 6, "field": "constant", "contrast": 1.0, "seed": 0}
    assert (data.matrix_for(s) != poisson_2d(6)).nnz == 0
    j = data.MatrixSpec(6, "jump", 10.0, 2)
    assert (data.matrix_for(j) != diffusion_2d(6, coefficient("jump", 6, 10.0, 2))).nnz == 0
    with pytest.raises(ValueError) as e:
        data.matrix_for(data.MatrixSpec(6, "wavy"))
    assert str(e.value) == ("unknown coefficient field 'wavy'; expected one of ['binary', "
                            "'checkerboard', 'constant', 'jump', 'lognormal']")


def test_build_grid_data_exactly():
    specs = [data.MatrixSpec(6), data.MatrixSpec(6, "jump", 10.0, 1)]
    g = data.build_grid_data(specs, [[5], [6, 7]], record_iters=(1, 3), alpha=3.0, tau=2.0)
    assert g.n == 6 and g.specs == specs and len(g) == 3 * 3
    assert g.is_rhs.tolist() == [True, False, False] * 3
    assert g.matrix.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert g.inputs.shape == (9, 6, 6) and g.targets.shape == (9, 6, 6)
    assert g.stencils.shape == (2, 5, 6, 6) and g.logcoef.shape == (2, 6, 6)
    A1 = data.matrix_for(specs[1])
    Ahat, w = data.scaled_operator(A1)
    np.testing.assert_array_equal(g.stencils[1], data.stencil_fields(Ahat))
    np.testing.assert_array_equal(g.logcoef[1], data.log_coefficient(A1))
    b = w * grf_rhs(6, alpha=3.0, tau=2.0, seed=7)
    np.testing.assert_allclose(g.inputs[6].ravel(), b / np.linalg.norm(b), rtol=1e-13)
    r1 = data.record_cg_residuals(Ahat, b, (1, 3))[3]
    np.testing.assert_allclose(g.inputs[8].ravel(), r1 / np.linalg.norm(r1), rtol=1e-10)
    lu = splu(Ahat.tocsc())
    for k in (3, 6, 8):
        np.testing.assert_allclose(g.targets[k].ravel(), lu.solve(g.inputs[k].ravel()),
                                   rtol=1e-12)
    norms = np.linalg.norm(g.inputs.reshape(9, -1), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-14)
    d = data.build_grid_data([data.MatrixSpec(4)], [[1]])
    assert len(d) == 1 + 4  # of the default record_iters, CG at n = 4 reaches 1, 2, 4, 8


def test_build_grid_data_drops_zero_samples_and_checks_input():
    g = data.build_grid_data([data.MatrixSpec(4)], [[3]], record_iters=(1, 100))
    assert len(g) == 2 and g.is_rhs.tolist() == [True, False]
    for specs, seeds, msg in (([], [], "no training matrices"),
                              ([data.MatrixSpec(4), data.MatrixSpec(5)], [[1], [1]],
                               "build_grid_data: all specs must share one n"),
                              ([data.MatrixSpec(4)], [[1], [2]],
                               "build_grid_data: need one list of rhs seeds per matrix")):
        with pytest.raises(ValueError) as e:
            data.build_grid_data(specs, seeds)
        assert str(e.value) == msg


# --- checkpoint ----------------------------------------------------------------------


def test_checkpoint_save_sidecar_and_load(tmp_path):
    torch = pytest.importorskip("torch")
    from npo.neural import checkpoint as ck
    from npo.neural.model import NAMG

    assert (ck.FORMAT, ck.FORMAT_VERSION) == ("npo-bench/namg", 1)
    assert ck._CONFIG_KEYS == {"width", "num_coarse", "heads", "ffn_mult", "coef_channel"}
    torch.manual_seed(0)
    net = NAMG(width=8, num_coarse=4, heads=2, ffn_mult=1)
    meta = {"train_s": np.float64(2.5), "n": (16, 32), "k": np.int64(3), "d": {"x": [1, None]}}
    path = tmp_path / "sub" / "m.pt"
    path.parent.mkdir()
    assert ck.save_checkpoint(net, path, meta) == path
    side = json.loads(path.with_suffix(".json").read_text())
    params = sum(p.numel() for p in net.state_dict().values())
    assert side == {"name": "m", "format": "npo-bench/namg", "format_version": 1,
                    "config": net.config, "params": params, "bytes": path.stat().st_size,
                    "train_s": 2.5, "n": [16, 32], "k": 3, "d": {"x": [1, None]}}
    assert path.with_suffix(".json").read_text().endswith("}\n")
    raw = ck.load_checkpoint(path)
    assert raw["format"] == "npo-bench/namg" and raw["metadata"] == {
        "train_s": 2.5, "n": [16, 32], "k": 3, "d": {"x": [1, None]}}
    model, m2 = ck.from_checkpoint(path)
    assert m2 == raw["metadata"] and not model.training
    for k, v in net.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    p2 = tmp_path / "nos.pt"
    ck.save_checkpoint(net, p2, sidecar=False)
    assert not p2.with_suffix(".json").exists() and ck.load_checkpoint(p2)["metadata"] == {}
    with pytest.raises(ValueError) as e:
        ck.save_checkpoint(net, tmp_path / "bad.pt", {"a": object()})
    assert str(e.value).startswith("checkpoint metadata is not JSON-compatible: ")
    assert not (tmp_path / "bad.pt").exists()


def test_checkpoint_json_checks():
    pytest.importorskip("torch")
    from npo.neural import checkpoint as ck

    assert ck._plain(np.float32(1.5)) == 1.5 and ck._plain(np.array(3)) == 3
    with pytest.raises(TypeError) as e:
        ck._plain(np.ones(2))
    assert str(e.value) == "ndarray is not a JSON primitive"
    ck._check_json({"a": [1, 2.0, "s", None, True, (1,)]})
    for obj, msg in (({1: 2}, "metadata: key 1 is not a string"),
                     ({"a": [1, {"b": {3}}]}, "metadata.a[1].b: set is not a JSON primitive"),
                     ((1, b"x"), "metadata[1]: bytes is not a JSON primitive")):
        with pytest.raises(ValueError) as e:
            ck._check_json(obj)
        assert str(e.value) == msg
    assert ck._unpickler_reason("Weights only load failed.  WeightsUnpickler error: Unsupported "
                                "global: GLOBAL os.system\n\n Check the documentation of "
                                "torch.load to learn more") == "Unsupported global: GLOBAL os.system"
    assert ck._unpickler_reason("  plain\n message ") == "plain message"


def _saved(tmp_path, mutate):
    torch = pytest.importorskip("torch")
    from npo.neural import checkpoint as ck
    from npo.neural.model import NAMG

    path = tmp_path / "c.pt"
    ck.save_checkpoint(NAMG(width=8, num_coarse=4, heads=2, ffn_mult=1), path, {"t": 1})
    obj = torch.load(path, weights_only=True)
    out = mutate(obj)
    torch.save(out if out is not None else obj, path)
    return path


@pytest.mark.parametrize("mutate, tail", [
    (lambda c: [1], "not an NPO checkpoint of the right kind (format 'list', expected "
                    "'npo-bench/namg')"),
    (lambda c: c.update(format="x"), "not an NPO checkpoint of the right kind (format 'x', "
                                     "expected 'npo-bench/namg')"),
    (lambda c: c.pop("format_version") and None, "checkpoint format version None is not supported (this "
                                        "code reads version 1)"),
    (lambda c: c.update(config=[1]), "checkpoint has no valid 'config' entry"),
    (lambda c: c.update(state_dict=None), "checkpoint has no valid 'state_dict' entry"),
    (lambda c: c.update(metadata="m"), "checkpoint has no valid 'metadata' entry"),
    (lambda c: c["config"].pop("heads") and None, "model config keys ['coef_channel', 'ffn_mult', "
                                         "'num_coarse', 'width'] do not match the expected "
                                         "['coef_channel', 'ffn_mult', 'heads', 'num_coarse', "
                                         "'width']"),
    (lambda c: c["config"].update(width=0), "model config width = 0 is outside [1, 1024]"),
    (lambda c: c["config"].update(heads=True), "model config heads = True is outside [1, 64]"),
    (lambda c: c["config"].update(ffn_mult=2.0), "model config ffn_mult = 2.0 is outside [1, 16]"),
    (lambda c: c["config"].update(coef_channel=1), "model config coef_channel must be true or "
                                                   "false"),
    (lambda c: c["config"].update(width=9), None),
    (lambda c: c["state_dict"].update(extra=c["state_dict"]["readout.bias"]),
     "state_dict does not match the model config: missing keys [], unexpected keys ['extra']"),
    (lambda c: c["state_dict"].update({"readout.bias": c["state_dict"]["readout.bias"] * np.nan}),
     "state_dict entry 'readout.bias' contains NaN or Inf"),
    (lambda c: c["state_dict"].update({"readout.bias": [1.0]}),
     "state_dict entry 'readout.bias' is not a tensor"),
])
def test_checkpoint_refusals_exactly(tmp_path, mutate, tail):
    from npo.neural import checkpoint as ck

    path = _saved(tmp_path, mutate)
    with pytest.raises(ValueError) as e:
        ck.from_checkpoint(path)
    if tail is None:
        assert str(e.value).startswith(f"{path}: invalid model config ")
    else:
        assert str(e.value) == f"{path}: {tail}"


def test_checkpoint_many_missing_keys_are_abbreviated(tmp_path):
    from npo.neural import checkpoint as ck

    def drop(c):
        for k in list(c["state_dict"])[:7]:
            del c["state_dict"][k]

    path = _saved(tmp_path, drop)
    with pytest.raises(ValueError) as e:
        ck.from_checkpoint(path)
    msg = str(e.value)
    assert "missing keys [" in msg and "]..., unexpected keys []" in msg
    assert msg.count("'") == 10  # five names shown


def test_unreadable_checkpoint_messages(tmp_path):
    torch = pytest.importorskip("torch")
    from npo.neural import checkpoint as ck

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError) as e:
        ck.load_checkpoint(bad)
    assert str(e.value).startswith(f"{bad}: not a readable NPO checkpoint (corrupt or truncated "
                                   "file: ")
    assert "\n" not in str(e.value)

    class Evil:
        def __reduce__(self):
            return (print, ("x",))

    torch.save({"format": "npo-bench/namg", "x": Evil()}, bad)
    with pytest.raises(ValueError) as e:
        ck.load_checkpoint(bad)
    assert str(e.value).startswith(f"{bad}: refused: the file holds objects that safe loading "
                                   "does not allow (possibly not a checkpoint, possibly "
                                   "malicious); torch: ")


def test_lazy_names_resolve_to_their_modules():
    pytest.importorskip("torch")
    from npo.neural import checkpoint as ck
    from npo.neural import model

    assert neural.NAMG is model.NAMG
    assert neural.from_checkpoint is ck.from_checkpoint


def test_npo_neural_train_is_the_module_before_and_after_its_import():
    # it used to be a lazy name for the train() function, which the submodule shadowed once
    # imported (the CLI's `npo-bench train` does): one name, two meanings
    pytest.importorskip("torch")
    import importlib
    import inspect

    assert "train" not in neural._LAZY and "train" not in neural.__all__
    mod = importlib.import_module("npo.neural.train")
    assert inspect.ismodule(neural.train) and neural.train is mod
    assert inspect.isfunction(mod.train) and mod.train.__name__ == "train"


def test_config_command_never_lists_progress():
    assert "progress" not in TrainConfig(progress=True).command()
    assert TrainConfig(progress=True).command() == _cfg().command()


def test_unpickler_reason_keeps_what_lies_between_the_first_markers():
    from npo.neural.checkpoint import _unpickler_reason

    msg = ("Weights only load failed. WeightsUnpickler error: Unsupported global: a\n"
           "WeightsUnpickler error: b Check the documentation of torch.load c"
           " Check the documentation of torch.load d")
    assert _unpickler_reason(msg) == "Unsupported global: a WeightsUnpickler error: b"
    assert _unpickler_reason("  plain\n message ") == "plain message"


def test_stencil_fields_reads_each_row_of_a_nonsymmetric_operator():
    n = 4
    A = poisson_2d(n).tolil()
    for k in range(n, n * n):
        A[k, k - n] *= 3.0  # only the (i - 1) coupling changes
    A = A.tocsr()
    S = data.stencil_fields(A)
    h2 = -A[n, 0] / 3.0  # the unchanged coupling, -1/h^2
    assert S[1][1:].tolist() == (-3.0 * h2 * np.ones((n - 1, n))).tolist()
    assert S[2][:-1].tolist() == (-h2 * np.ones((n - 1, n))).tolist()
    assert (S[1][0] == 0).all() and (S[2][-1] == 0).all()


def test_record_cg_residuals_bounds_and_tolerance():
    A, b = poisson_2d(6), grf_rhs(6, seed=3)
    full = data.record_cg_residuals(A, b, range(1, 300))
    assert sorted(full) == list(range(1, max(full) + 1))
    loose = data.record_cg_residuals(A, b, range(1, 300), rtol=1e-3)
    assert sorted(loose) == list(range(1, max(loose) + 1)) and max(loose) < max(full)


def test_matrix_for_uses_the_field_seed():
    s = data.MatrixSpec(6, "lognormal", 10.0, 2)
    assert (data.matrix_for(s) != diffusion_2d(6, coefficient("lognormal", 6, 10.0, 2))).nnz == 0
    assert (data.matrix_for(s) != data.matrix_for(data.MatrixSpec(6, "lognormal", 10.0, 0))).nnz


def test_build_grid_data_defaults_and_zero_samples(monkeypatch):
    import inspect

    params = inspect.signature(data.build_grid_data).parameters
    assert (params["alpha"].default, params["tau"].default) == (2.0, 3.0)
    assert params["record_iters"].default == (1, 2, 4, 8, 16, 32, 64)
    monkeypatch.setattr(data, "record_cg_residuals",
                        lambda A, b, its: {1: np.zeros_like(b), 2: np.ones_like(b)})
    g = data.build_grid_data([data.MatrixSpec(4)], [[3]])
    assert len(g) == 2 and g.is_rhs.tolist() == [True, False]
    assert np.isfinite(g.inputs).all()
    np.testing.assert_allclose(g.inputs[1], 0.25)


def test_checkpoint_sidecar_is_indented_and_plain_refuses_item_without_ndim(tmp_path):
    torch = pytest.importorskip("torch")
    from npo.neural import checkpoint as ck
    from npo.neural.model import NAMG

    torch.manual_seed(0)
    net = NAMG(width=8, num_coarse=4, heads=2, ffn_mult=1)
    path = ck.save_checkpoint(net, tmp_path / "m.pt", {"a": 1})
    text = path.with_suffix(".json").read_text()
    assert text == json.dumps(json.loads(text), indent=1) + "\n"

    class ItemOnly:
        def item(self):
            return 1

    with pytest.raises(TypeError) as e:
        ck._plain(ItemOnly())
    assert str(e.value) == "ItemOnly is not a JSON primitive"



def test_stencil_fields_refuses_an_east_wrap_alone_and_tiny_entries_off_the_stencil():
    n = 3
    A = poisson_2d(n).tolil()
    A[n - 1, n] = -1.0  # (0, n-1) -> (1, 0) only: the west side stays clean
    with pytest.raises(ValueError, match="across grid-row ends"):
        data.stencil_fields(A.tocsr())
    for scale in (1.0, 1e-12):
        B = (poisson_2d(n) * scale).tolil()
        B[0, 2 * n] = 1e-7 * scale * 4 * (n + 1) ** 2  # far below the entries, still outside
        with pytest.raises(ValueError, match="outside the 5-point stencil"):
            data.stencil_fields(B.tocsr())


def test_a_name_with_a_slash_is_a_path_not_a_shipped_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="no NPO checkpoint './poisson'"):
        neural.resolve_checkpoint("./poisson")
    assert neural.resolve_checkpoint("poisson").name == "poisson.pt"


def test_a_truncated_checkpoint_names_torchs_error_on_one_line(tmp_path):
    pytest.importorskip("torch")
    from npo.neural.checkpoint import load_checkpoint, save_checkpoint
    from npo.neural.model import NAMG

    p = save_checkpoint(NAMG(width=8, num_coarse=4, heads=2, ffn_mult=1), tmp_path / "m.pt")
    raw = p.read_bytes()
    (tmp_path / "t.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError) as e:
        load_checkpoint(tmp_path / "t.pt")
    assert str(e.value) == (f"{tmp_path / 't.pt'}: not a readable NPO checkpoint (corrupt or "
                            "truncated file: OSError: [Errno 22] Invalid argument)")
