"""The torch path: Krylov on tensors, baselines and the NPO on a device, one device per table.

Every test runs on ``torch:cpu`` (the GPU code path, on the CPU: CI runs it)
and, where a GPU is present, on ``cuda`` too (``.ci/gpu-check``).
"""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from npo import cases, devices, krylov, measure  # noqa: E402
from npo.cli import main  # noqa: E402
from npo.problems import grf_rhs, poisson_2d  # noqa: E402

DEVICES = ["torch:cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# the quick cases our Krylov loop runs (PETSc's methods bring their own KSP)
QUICK = [c for c in cases.cases("quick") if c.method.solver is None]
_BASELINE = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" /
                        "gate_baseline.json").read_text())["cases"]
#: solves that never converge (spilu defaults at n = 64, the NPO in plain PCG) are
#: compared over their first iterations only: a stall takes the same path either way
STALL_CAP = 200
#: solves longer than this are the ill-conditioned ones (see the parity test)
LONG = 500


@pytest.mark.parametrize("case", QUICK, ids=lambda c: c.id)
def test_torch_krylov_takes_numpy_iterations(case):
    """PCG/FCG on tensors vs on numpy, same preconditioner, every quick case (float64 CPU)."""
    stalls = not _BASELINE.get(case.id, {"converged": True})["converged"]
    cap = STALL_CAP if stalls else case.maxiter
    ref, res = measure.krylov_parity(case, maxiter=cap)
    assert res.converged == ref.converged and res.reason == ref.reason
    if ref.iterations > LONG:
        # plain CG (and Nystrom, which barely changes it) on the jump field: kappa ~ 1e5,
        # 750-1800 iterations, and the count moves with the summation order of the dot
        # products -- OpenBLAS' Haswell and SkylakeX kernels alone give 1768 and 1757 for
        # CG at n = 64, and torch's kernel matches the latter; allow 1%
        assert abs(res.iterations - ref.iterations) <= 0.01 * ref.iterations
    elif stalls:
        assert res.iterations == ref.iterations == cap and not res.converged
        # same path (the float32 NPO amplifies the last bits: agreement to 1e-4)
        np.testing.assert_allclose(res.residuals[:50], ref.residuals[:50], rtol=1e-4)
    else:
        assert res.iterations == ref.iterations
    assert res.true_relres == pytest.approx(ref.true_relres, rel=0.5)
    np.testing.assert_allclose(res.x.numpy(), ref.x, rtol=0, atol=1e-6 * np.abs(ref.x).max())


def test_krylov_parity_refuses_a_method_with_its_own_solver():
    import dataclasses

    c = cases.get_case("n16-constant-jacobi")
    engine = dataclasses.replace(c, method=dataclasses.replace(
        c.method, krylov="own_engine", solver=krylov.pcg))  # as PETSc's KSP methods are
    with pytest.raises(ValueError, match="brings its own solver"):
        measure.krylov_parity(engine)


@pytest.mark.parametrize("device", DEVICES)
def test_solver_contract_on_tensors(device):
    A = devices.to_torch_csr(poisson_2d(16), device)
    b = devices.to_tensor(grf_rhs(16), device)
    res = krylov.pcg(A, b, rtol=1e-10)
    assert res.converged and res.x.device == b.device and res.true_relres <= 1e-9
    bad = krylov.fcg(A, b, lambda r: r * float("nan"))
    assert bad.reason == "breakdown" and "non-finite" in bad.detail
    with pytest.raises(ValueError, match="complex"):
        krylov.pcg(A, b.to(torch.complex128))
    with pytest.raises(ValueError, match="b must be a torch tensor"):
        krylov.pcg(A, grf_rhs(16))
    huge = krylov.pcg(A, b * 1e160, rtol=1e-10)
    assert huge.iterations == res.iterations


#: what the device run's iteration count may be against the CPU's: the same; at most one more
#: or less (a float32 network, same code); or up to twice as many (the device V-cycle smooths
#: with damped Jacobi instead of Gauss-Seidel)
SAME, FLOAT32, JACOBI_SMOOTHER = "same", "float32", "jacobi-smoother"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("cid", "expect"), [
    ("n32-constant-cg", SAME), ("n32-jump1e2-jacobi", SAME),
    ("n64-jump1e2-amg_sa", JACOBI_SMOOTHER), ("n64-constant-amg_rs", JACOBI_SMOOTHER),
    ("n32-constant-npo", FLOAT32), ("n32-jump1e2-npo", FLOAT32)])
def test_methods_on_a_device_measure_like_on_the_cpu(device, cid, expect):
    c = cases.get_case(cid, device=device)
    assert c.skip_reason is None
    rec = measure.measure(c, repeats=3)
    cpu = measure.measure(cases.get_case(cid), repeats=1)
    assert rec["device"] == device and rec["converged"] and rec["true_relres"] <= 1e-9
    assert rec["spmv_s"] > 0 and rec["apply_per_spmv"] > 0  # the SpMV of the same device
    if expect == JACOBI_SMOOTHER:
        assert cpu["iterations"] <= rec["iterations"] <= 2 * cpu["iterations"]
        assert json.loads(rec["info"])["smoother"] == "damped Jacobi"
    elif expect == FLOAT32:
        assert abs(rec["iterations"] - cpu["iterations"]) <= 1
    else:
        assert rec["iterations"] == cpu["iterations"]


def test_device_v_cycle_is_symmetric_and_its_hierarchy_is_pyamgs():
    from npo.precond.amg import AMG, TorchAMG

    A = poisson_2d(32)
    M = TorchAMG(solver="sa", device="torch:cpu").setup(A)
    u, v = (devices.to_tensor(np.random.default_rng(k).standard_normal(1024), "torch:cpu")
            for k in (1, 2))
    assert float(u @ M.apply(v)) == pytest.approx(float(v @ M.apply(u)), rel=1e-10)
    assert M.info["levels"] == len(AMG(solver="sa").setup(A).ml.levels)


@pytest.mark.parametrize("device", DEVICES)
def test_npo_stays_on_the_device_bf16_and_batched(device):
    from npo.precond.neural import NPO

    A, b = poisson_2d(32), grf_rhs(32)
    A_t, b_t = devices.to_torch_csr(A, device), devices.to_tensor(b, device)
    M = NPO("poisson32", device=device).setup(A)
    z = M.apply(b_t)
    assert isinstance(z, torch.Tensor) and z.device == b_t.device and z.dtype == torch.float64
    cpu = NPO("poisson32").setup(A).apply(b)
    np.testing.assert_allclose(z.cpu().numpy(), cpu, rtol=1e-4, atol=1e-6 * np.abs(cpu).max())
    assert float(torch.linalg.vector_norm(M.apply(torch.zeros_like(b_t)))) == 0.0
    fp32 = krylov.fcg(A_t, b_t, M, rtol=1e-10)
    bf16 = krylov.fcg(A_t, b_t, NPO("poisson32", device=device, precision="bf16").setup(A),
                      rtol=1e-10)
    assert fp32.converged and fp32.iterations <= 32
    assert bf16.converged and bf16.iterations <= 2 * fp32.iterations  # bf16 costs iterations
    R = torch.stack([b_t, 2 * b_t, 0.5 * b_t], dim=1)  # M(c r) = c M(r) for c > 0
    Z = M.apply_batch(R)
    for k, c in enumerate((1.0, 2.0, 0.5)):
        torch.testing.assert_close(Z[:, k], c * z, rtol=1e-5, atol=1e-9)


def test_npo_compiled_matches_eager():
    from npo.precond.neural import NPO

    A, b = poisson_2d(16), grf_rhs(16)
    b_t = devices.to_tensor(b, "torch:cpu")
    eager = NPO("poisson32", device="torch:cpu").setup(A).apply(b_t)
    compiled = NPO("poisson32", device="torch:cpu", compile=True).setup(A).apply(b_t)
    # inductor fuses the float32 kernels differently: agreement to float32 rounding
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5 * float(eager.abs().max()))


def test_one_device_per_table_and_skips_with_reasons(capsys):
    assert main(["cases", "--suite", "quick", "--device", "torch:cpu", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    run = {c["case"].rsplit("-", 1)[1] for c in data["cases"]}
    assert run == {"cg", "jacobi", "amg_sa", "amg_rs", "gmg", "npo_mg", "npo", "npo_pcg"}
    reasons = {s["case"]: s["reason"] for s in data["skipped"]}
    assert "no torch:cpu implementation" in reasons["n32-constant-ilu0"]
    if not torch.cuda.is_available():
        assert main(["run", "--device", "cuda", "--no-write"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["run", "--device", "tpu", "--no-write"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


@pytest.mark.parametrize("device", DEVICES)
def test_apply_cost_on_a_device(device):
    from npo.precond.neural import apply_cost

    c = apply_cost("poisson", 32, repeats=3, device=device)
    b = apply_cost("poisson", 32, repeats=3, device=device, batch=4)
    assert c["device"] == device and c["flops"] > 5e7 and c["apply_s"] > 0
    assert 0 < c["mm_fraction"] and c["time_over_gemm_ideal"] == pytest.approx(1 / c["mm_fraction"])
    assert b["batch"] == 4 and b["apply_s"] > 0  # per right-hand side
