"""Mutation-testing tests for the NPO adapter, network and FLOP counter: exact formulas of the
apply (scaling, weights, batch), its info and memory, the catalogue entries, the cost report."""

import math

import numpy as np
import pytest

from npo import cases
from npo.env import pinned_threads
from npo.methods import get_method
from npo.problems import coefficient, diffusion_2d, grf_rhs, poisson_2d

torch = pytest.importorskip("torch")

from npo.neural import checkpoint, flops, model, shipped_models  # noqa: E402
from npo.neural.data import jacobi_weights, log_coefficient  # noqa: E402
from npo.precond import neural  # noqa: E402
from npo.precond.base import tensor_nbytes  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    with pinned_threads(1):
        yield


@pytest.fixture(scope="module")
def varcoef():
    A = diffusion_2d(8, coefficient("jump", 8, 10.0))
    with pinned_threads(1):
        M = neural.NPO("varcoef").setup(A)
    return A, M


def test_constructor_checks_and_defaults():
    M = neural.NPO()
    assert (M.checkpoint, M.device, M.precision, M.compile, M.model, M.metadata, M.n) == (
        "poisson", "cpu", "fp32", False, None, {}, None)
    assert M.linear is False and M.symmetric is False and M.nbytes == 0 and M.info == {}
    assert neural.NPO(compile=1).compile is True
    with pytest.raises(ValueError) as e:
        neural.NPO(device="gpu")
    assert str(e.value) == "npo: device must be cpu, torch:cpu or cuda[:k], got 'gpu'"
    with pytest.raises(ValueError) as e:
        neural.NPO(precision="fp16")
    assert str(e.value) == "npo: precision must be 'fp32' or 'bf16', got 'fp16'"
    neural.NPO(device="torch:cpu", precision="bf16")


def test_apply_is_the_documented_formula(varcoef):
    A, M = varcoef
    r = grf_rhs(8, seed=3)
    w = jacobi_weights(A)
    np.testing.assert_array_equal(M._w, w)
    u = r * w
    norm = np.linalg.norm(u)
    net, meta = checkpoint.from_checkpoint("varcoef")
    coef = torch.as_tensor(log_coefficient(A), dtype=torch.float32)
    with torch.inference_mode():
        z = net(torch.from_numpy((u / norm).astype(np.float32).reshape(1, 8, 8)), coef)
    want = z.numpy().reshape(-1).astype(np.float64) * (norm * w)
    np.testing.assert_allclose(M.apply(r), want, rtol=1e-5, atol=1e-7 * np.abs(want).max())
    assert M.apply(r).dtype == np.float64 and M.apply(np.zeros(64)).tolist() == [0.0] * 64
    assert M.n == 8 and M.metadata == meta and not M.model.training
    assert all(not p.requires_grad for p in M.model.parameters())
    x = M._inputs
    assert x.shape == (1, 8, 8, 4)
    np.testing.assert_allclose(x[0, :, :, 3].numpy(), log_coefficient(A), rtol=1e-6)


def test_batch_apply_matches_single_applies(varcoef):
    A, M = varcoef
    R = np.stack([grf_rhs(8, seed=k) * (k + 1) for k in range(3)], axis=1)
    R[:, 1] = 0.0
    Z = M.apply_batch(R)
    assert Z.shape == (64, 3) and isinstance(Z, np.ndarray) and Z.dtype == np.float64
    for k in range(3):
        np.testing.assert_allclose(Z[:, k], M.apply(R[:, k]), rtol=1e-4,
                                   atol=1e-6 * np.abs(Z).max())
    assert not Z[:, 1].any()
    for bad in (np.ones((63, 2)), np.ones(64)):
        with pytest.raises(ValueError) as e:
            M.apply_batch(bad)
        assert str(e.value) == (f"npo: apply_batch needs an (64, k) array, got "
                                f"{tuple(bad.shape)}")
    with pytest.raises(RuntimeError, match="call setup"):
        neural.NPO().apply_batch(R)


def test_torch_device_path_matches_the_host_path(varcoef):
    A, M = varcoef
    T = neural.NPO("varcoef", device="torch:cpu").setup(A)
    r = grf_rhs(8, seed=5)
    rt = torch.as_tensor(r)
    z = T.apply(rt)
    assert isinstance(z, torch.Tensor) and z.dtype == torch.float64
    np.testing.assert_allclose(z.numpy(), M.apply(r), rtol=1e-5, atol=1e-8)
    assert not T.apply(torch.zeros(64, dtype=torch.float64)).any()
    Z = T.apply_batch(torch.stack([rt, 2 * rt], dim=1))
    assert isinstance(Z, torch.Tensor)
    np.testing.assert_allclose(Z[:, 1].numpy(), 2 * z.numpy(), rtol=1e-4,
                               atol=1e-6 * float(z.abs().max()))
    assert T.nbytes == (tensor_nbytes(*T.model.parameters(), *T.model.buffers(), T._inputs)
                        + tensor_nbytes(T._w_t))
    assert T.info["device"] == "torch:cpu"
    with pytest.raises(ValueError, match="apply_batch needs"):
        T.apply_batch(torch.ones(5, 2, dtype=torch.float64))


def test_bf16_changes_the_result_only_slightly(varcoef):
    A, M = varcoef
    B = neural.NPO("varcoef", precision="bf16").setup(A)
    r = grf_rhs(8, seed=2)
    zb, z = B.apply(r), M.apply(r)
    assert not np.array_equal(zb, z)
    assert np.linalg.norm(zb - z) < 0.1 * np.linalg.norm(z)
    assert B.info["precision"] == "bf16"


def test_info_memory_and_training(varcoef, monkeypatch):
    A, M = varcoef
    meta = shipped_models()["varcoef"]
    assert M.info == {"checkpoint": "varcoef", "params": M.model.num_parameters(),
                      "flops_per_apply": flops.count_flops(M.model, 8, inputs=M._inputs)["total"],
                      "train_s": meta["train_s"], "trained_n": list(meta["n"]),
                      "trained_fields": list(meta["fields"]), "device": "cpu",
                      "precision": "fp32", "compiled": False}
    assert M.train_s == float(meta["train_s"])
    stored = checkpoint.load_checkpoint("varcoef")["metadata"]
    assert M.training == {k: v for k, v in stored.items() if k != "history"}
    assert "history" not in M.training and "train_s" in M.training
    assert M.nbytes == tensor_nbytes(*M.model.parameters(), *M.model.buffers(),
                                     M._inputs) + M._w.nbytes
    calls = []
    real = flops.count_flops
    monkeypatch.setattr(flops, "count_flops", lambda *a, **k: calls.append(1) or real(*a, **k))
    fresh = neural.NPO("poisson").setup(poisson_2d(8))
    assert fresh.flops_per_apply == fresh.flops_per_apply and len(calls) == 1
    with pytest.raises(RuntimeError, match="call setup"):
        neural.NPO().flops_per_apply  # noqa: B018
    fresh.metadata = {}
    assert math.isnan(fresh.train_s)
    from pathlib import Path

    p = neural.NPO(Path(checkpoint.resolve_checkpoint("poisson32"))).setup(poisson_2d(8))
    assert p.info["checkpoint"] == str(checkpoint.resolve_checkpoint("poisson32"))
    assert p.info["trained_n"] == [32]


def test_constant_coefficient_model_ignores_coef():
    A = poisson_2d(6)
    M = neural.NPO("poisson32").setup(A)
    assert M._inputs.shape == (1, 6, 6, 3) and M._w.tolist() == [1.0] * 36
    assert M._w_t.dtype == torch.float64


def test_catalogue_entries():
    assert neural.NPO_MODELS == {"constant": "poisson", "jump": "varcoef",
                                 "lognormal": "varcoef"}
    assert (neural.NPO_MAXITER, neural.NPO_MAX_N, neural.NPO_ITERATION_TOLERANCE) == (
        2000, 256, (3, 0.10))
    npo, ctrl = get_method("npo"), get_method("npo_pcg")
    for s, kry, skip, desc in ((npo, "fcg", neural._npo_skip,
                                "Neural Preconditioning Operator in flexible CG"),
                               (ctrl, "pcg", neural._negative_control_skip,
                                "NPO in plain PCG: negative control")):
        assert (s.adapter, s.torch_adapter, s.krylov, s.skip, s.description, s.maxiter,
                s.max_n, s.problems, s.requires, s.devices, s.iteration_tolerance,
                s.options_for) == (neural.NPO, neural.NPO, kry, skip, desc, 2000, 256,
                                   ("diffusion_2d",), ("torch",), ("cpu", "torch", "cuda"),
                                   (3, 0.10), neural._checkpoint_for)
        assert s.install_hint == "torch is not installed: install npo-bench[neural]"
        assert s.limit_reason == ("models are trained at n <= 128 and one apply costs ~0.4 s at "
                                  "n = 512, so a capped FCG solve would take ~15 min")
    c = cases.get_case("n32-jump1e2-npo")
    assert neural._checkpoint_for(c) == {"checkpoint": "varcoef"}
    assert neural._checkpoint_for(cases.get_case("n32-binary1e4-npo")) == {"checkpoint": None}
    assert neural._npo_skip(c) is None
    assert neural._npo_skip(cases.get_case("n32-binary1e4-npo")) == (
        "no NPO model is trained for the binary family")
    assert neural._negative_control_skip(cases.get_case("n64-constant-npo_pcg")) is None
    assert neural._negative_control_skip(cases.get_case("n65-constant-npo_pcg")) == (
        "negative control (NPO in plain PCG) runs at small n only")
    assert neural._negative_control_skip(cases.get_case("n32-binary1e4-npo_pcg")) == (
        "no NPO model is trained for the binary family")


def test_npo_skip_when_a_model_is_not_shipped(monkeypatch):
    import npo.neural as pkg

    monkeypatch.setattr(pkg, "shipped_models", lambda: {"poisson": {}})
    assert neural._npo_skip(cases.get_case("n32-jump1e2-npo")) == (
        "NPO model 'varcoef' is not shipped in npo/neural/weights")


def test_apply_cost_report(monkeypatch):
    times = []
    monkeypatch.setattr(flops, "median_time", lambda fn, repeats: (times.append(repeats),
                                                                   fn(), 0.002)[2])
    monkeypatch.setattr(flops, "mm_throughput", lambda device="cpu": 1e10)
    out = neural.apply_cost("poisson32", n=8, repeats=3, batch=2)
    M = neural.NPO("poisson32").setup(poisson_2d(8))
    counted = flops.count_flops(M.model, 8, inputs=M._inputs)
    assert times == [3]
    assert out == {"n": 8, "threads": 1, "device": "cpu", "precision": "fp32", "compile": False,
                   "batch": 2, "params": M.model.num_parameters(), "flops": counted["total"],
                   "flops_by_op": counted["by_op"], "apply_s": 0.001,
                   "flops_per_s": counted["total"] / 0.001, "mm_flops_per_s": 1e10,
                   "mm_fraction": counted["total"] / 0.001 / 1e10,
                   "time_over_gemm_ideal": 0.001 * 1e10 / counted["total"]}
    one = neural.apply_cost("poisson32", n=8, device="torch:cpu")
    assert one["apply_s"] == 0.002 and one["device"] == "torch:cpu" and one["batch"] == 1
    assert times == [3, 7]


# --- the network and the FLOP counter -----------------------------------------------------


def test_coordinates_and_model_checks():
    c = model.coordinate_channels(4)
    assert c.shape == (4, 4, 2) and c.dtype == torch.float32
    assert c[:, 0, 0].tolist() == (torch.arange(1, 5, dtype=torch.float32) / 5).tolist()
    assert c[0, :, 1].tolist() == c[:, 0, 0].tolist() and (c[:, :, 0] == c[:, :1, 0]).all()
    assert model.coordinate_channels(2, dtype=torch.float64).dtype == torch.float64
    for kw, msg in (({"width": 0}, "NAMG: width must be a positive integer, got 0"),
                    ({"num_coarse": 2.0}, "NAMG: num_coarse must be a positive integer, got 2.0"),
                    ({"heads": True}, "NAMG: heads must be a positive integer, got True"),
                    ({"ffn_mult": -1}, "NAMG: ffn_mult must be a positive integer, got -1"),
                    ({"width": 6, "heads": 4}, "NAMG: width 6 is not divisible by heads 4")):
        with pytest.raises(ValueError) as e:
            model.NAMG(**kw)
        assert str(e.value) == msg
    with pytest.raises(ValueError) as e:
        model._Attention(6, 4)
    assert str(e.value) == "width 6 is not divisible by heads 4"
    net = model.NAMG(width=8, num_coarse=3, heads=2, ffn_mult=2, coef_channel=1)
    assert net.config == {"width": 8, "num_coarse": 3, "heads": 2, "ffn_mult": 2,
                          "coef_channel": True}
    assert net.coef_channel is True and net.lift.in_features == 4
    assert net.queries.shape == (3, 8) and net.fine_ffn.fc1.out_features == 16
    assert net.readout.out_features == 1 and net.pre.conv.kernel_size == (3, 3)
    assert net.pre.conv.padding == (1, 1)
    with pytest.raises(ValueError) as e:
        net.features(torch.zeros(1, 4, 5))
    assert str(e.value) == "NAMG: expected residual fields of shape (B, n, n), got (1, 4, 5)"
    with pytest.raises(ValueError) as e:
        net.features(torch.zeros(4, 4))
    assert "got (4, 4)" in str(e.value)
    with pytest.raises(ValueError) as e:
        net.features(torch.zeros(1, 4, 4))
    assert str(e.value) == "NAMG: this model reads a log-coefficient channel; pass coef"
    f = net.features(torch.ones(2, 4, 4), torch.full((4, 4), 3.0))
    assert f.shape == (2, 4, 4, 4) and (f[..., 0] == 1).all() and (f[..., 3] == 3).all()
    assert torch.equal(f[0, :, :, 1:3], model.coordinate_channels(4))
    plain = model.NAMG(width=8, num_coarse=3, heads=2, ffn_mult=2)
    assert plain.lift.in_features == 3 and plain.features(torch.ones(1, 3, 3)).shape == (
        1, 3, 3, 3)
    assert plain.num_parameters() == sum(p.numel() for p in plain.parameters())


def test_forward_with_precomputed_inputs_and_pieces():
    torch.manual_seed(0)
    net = model.NAMG(width=8, num_coarse=3, heads=2, ffn_mult=2).eval()
    r = torch.randn(2, 5, 5)
    with torch.no_grad():
        direct = net(r)
        inputs = net.features(torch.zeros(2, 5, 5))
        again = net(r, inputs=inputs)
    assert torch.equal(direct, again) and torch.equal(inputs[..., 0], r)
    assert direct.shape == (2, 5, 5)
    # the pieces, spelled out
    x = torch.randn(1, 4, 8)
    ffn = net.fine_ffn
    assert torch.allclose(ffn(x), ffn.fc2(torch.relu(ffn.fc1(x))))
    v = torch.randn(1, 3, 3, 8)
    relax = net.pre
    want = v + torch.relu(relax.conv(v.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
    assert torch.allclose(relax(v), want)
    att = net.restrict
    q, kv = torch.randn(1, 2, 8), torch.randn(1, 6, 8)
    Q = att.q(q).view(1, 2, 2, 4).transpose(1, 2)
    KV = att.kv(kv).view(1, 6, 2, 2, 4)
    K, V = KV[:, :, 0].transpose(1, 2), KV[:, :, 1].transpose(1, 2)
    w = torch.softmax(Q @ K.transpose(-1, -2) / 2.0, dim=-1)
    o = (w @ V).transpose(1, 2).reshape(1, 2, 8)
    assert torch.allclose(att(q, kv), att.out(o), atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = att(q, kv)
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), att.out(o), atol=5e-2)


def test_count_flops_and_throughput(monkeypatch):
    net = model.NAMG(width=8, num_coarse=4, heads=2, ffn_mult=2)
    c = flops.count_flops(net, 6)
    assert set(c["by_op"]) == {"linear", "conv", "attention"}
    assert c["total"] == sum(c["by_op"].values())
    N, C, m = 36, 8, 4
    assert c["by_op"]["conv"] == 2 * (2 * N * C * C * 9)
    assert c["by_op"]["attention"] == 4 * (m * N + m * m + N * m) * C
    assert flops.count_flops(net, 6, batch=3)["total"] == 3 * c["total"]
    assert all(p.requires_grad for p in net.parameters())
    inputs = net.features(torch.zeros(1, 6, 6))
    assert flops.count_flops(net, 6, inputs=inputs) == c
    assert flops.count_flops(net, 6, inputs=inputs, batch=2)["total"] == 2 * c["total"]
    net.lift.weight.requires_grad_(False)
    flops.count_flops(net, 6)
    assert not net.lift.weight.requires_grad and net.lift.bias.requires_grad
    coef = model.NAMG(width=8, num_coarse=4, heads=2, ffn_mult=2, coef_channel=True)
    assert flops.count_flops(coef, 6)["total"] > 0
    calls = []

    def fake_median(fn, repeats, min_time=0.05):
        calls.append((repeats, min_time))
        fn()
        return 0.5

    from npo import timing

    monkeypatch.setattr(timing, "median_per_call", fake_median)
    n = [0]

    def f():
        n[0] += 1

    assert flops.median_time(f, 4) == 0.5 and n[0] == 3 and calls == [(4, 0.05)]
    assert flops.median_time(f, 2, min_time=0.2) == 0.5 and calls[-1] == (2, 0.2)
    assert flops.mm_throughput(size=16, repeats=2) == 2.0 * 16**3 / 0.5
    assert calls[-1] == (2, 0.05)
    assert flops.mm_throughput() == 2.0 * 1024**3 / 0.5 and calls[-1] == (5, 0.05)


def _on_host(x):
    return x.numpy(force=True) if isinstance(x, torch.Tensor) else np.array(x)


@pytest.mark.parametrize(("device", "batch"), [("cpu", 1), ("cpu", 3), ("torch:cpu", 1)])
def test_apply_cost_builds_and_calls_what_it_reports(monkeypatch, device, batch):
    import inspect

    made, calls, mm, counted = [], [], [], []

    class Spy(neural.NPO):
        def __init__(self, *a, **kw):
            made.append((a, kw))
            super().__init__(*a, **kw)

        def apply(self, r):
            calls.append(("apply", type(r).__module__.split(".")[0], _on_host(r)))
            return super().apply(r)

        def apply_batch(self, R):
            calls.append(("batch", type(R).__module__.split(".")[0], _on_host(R)))
            return super().apply_batch(R)

    real_count = flops.count_flops
    monkeypatch.setattr(neural, "NPO", Spy)
    monkeypatch.setattr(flops, "median_time", lambda fn, repeats: (fn(), 0.002)[1])
    monkeypatch.setattr(flops, "mm_throughput", lambda device="cpu": mm.append(device) or 1e10)
    monkeypatch.setattr(flops, "count_flops", lambda model, n, inputs=None: (
        counted.append(inputs), real_count(model, n, inputs=inputs))[1])
    neural.apply_cost("poisson32", n=8, device=device, precision="bf16", batch=batch)
    assert made == [(("poisson32",), {"device": device, "precision": "bf16", "compile": False})]
    want = np.stack([grf_rhs(8, seed=7 + k) for k in range(batch)], axis=1)
    kind, module, arg = calls[-1]
    assert kind == ("apply" if batch == 1 else "batch")
    assert module == ("numpy" if device == "cpu" else "torch")
    np.testing.assert_array_equal(arg, want[:, 0] if batch == 1 else want)
    assert mm == [device] and counted[0] is not None and len(counted) == 1
    params = inspect.signature(neural.apply_cost).parameters
    assert (params["checkpoint"].default, params["n"].default) == ("poisson", 128)


class _OpsNet(torch.nn.Module):
    """Every matrix product FlopCounterMode knows, plus an op it does not group (mul)."""

    def __init__(self, coef_channel=False):
        super().__init__()
        self.coef_channel = coef_channel
        self.w = torch.nn.Parameter(torch.ones(4, 4))
        self.seen = []

    def forward(self, r, coef, inputs=None):
        self.seen.append((None if coef is None else tuple(coef.shape), inputs))
        x = r.reshape(-1, 4)[:4]
        a = x @ self.w  # mm
        b = torch.bmm(a[None], a[None])
        c = torch.baddbmm(b, a[None], a[None])
        d = torch.addmm(a, a, a)
        return torch.mul(d, 2.0) + c.sum()


def test_count_flops_groups_every_counted_op(monkeypatch):
    monkeypatch.setitem(flops._CUSTOM, torch.ops.aten.mul, lambda *a, out_shape=None, **k: 7)
    monkeypatch.setitem(flops._CUSTOM, torch.ops.aten.sum, lambda *a, out_shape=None, **k: 5)
    net = _OpsNet()
    c = flops.count_flops(net, 4)
    assert c == {"total": 4 * 128 + 12, "by_op": {"linear": 4 * 128, "conv": 0, "attention": 0,
                                                  "other": 12}}
    assert net.seen == [(None, None)]
    inputs = torch.zeros(1, 5)
    flops.count_flops(net, 4, inputs=inputs)
    assert net.seen[-1][1] is inputs
    flops.count_flops(net, 4, inputs=inputs, batch=2)  # inputs of another batch are rebuilt
    assert net.seen[-1][1] is None
    coef_net = _OpsNet(coef_channel=True)
    flops.count_flops(coef_net, 4)
    assert coef_net.seen == [((4, 4), None)]
