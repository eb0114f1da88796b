"""npo.precond.multigrid: gmg (the skeleton) and npo_mg (the multilevel NPO) as benchmarked."""

import numpy as np
import pytest

from npo.cases import get_case
from npo.krylov import fcg, pcg
from npo.methods import get_method
from npo.precond.multigrid import GMG, NPOMG
from npo.problems import coefficient, diffusion_2d, grf_rhs, poisson_2d

torch = pytest.importorskip("torch")


def _iters(M, A, b, solver=pcg):
    return solver(A, b, M.setup(A), rtol=1e-10, maxiter=500).iterations


def test_shipped_npo_mg_is_flat_and_beats_its_skeleton_on_poisson():
    learned = [_iters(NPOMG(), poisson_2d(n), grf_rhs(n)) for n in (32, 64, 128)]
    skeleton = [_iters(GMG(), poisson_2d(n), grf_rhs(n)) for n in (32, 64, 128)]
    assert max(learned) <= 10, learned
    assert all(a < b for a, b in zip(learned, skeleton, strict=True)), (learned, skeleton)


def test_learned_prolongation_carries_a_binary_high_contrast_field():
    n = 128
    A = diffusion_2d(n, coefficient("binary", n, 1e4, 0))
    b = grf_rhs(n)
    assert _iters(NPOMG(), A, b) < 0.7 * _iters(GMG(), A, b)


def test_pcg_and_fcg_take_the_same_iterations():
    n = 64
    A = diffusion_2d(n, coefficient("jump", n, 100.0))
    b = grf_rhs(n)
    assert _iters(NPOMG(), A, b) == _iters(NPOMG(), A, b, fcg)


@pytest.mark.parametrize("cls", [GMG, NPOMG])
def test_torch_path_takes_the_numpy_iterations(cls):
    n = 64
    A = diffusion_2d(n, coefficient("lognormal", n, 1e4, 0))
    b = grf_rhs(n)
    from npo.devices import to_tensor, to_torch_csr

    cpu = pcg(A, b, cls().setup(A), rtol=1e-10)
    dev = pcg(to_torch_csr(A, "torch:cpu"), to_tensor(b, "torch:cpu"),
              cls(device="torch:cpu").setup(A), rtol=1e-10)
    assert abs(cpu.iterations - dev.iterations) <= 1
    assert dev.converged and float(dev.true_relres) < 1e-9


def test_descriptors_run_in_pcg_and_skip_what_is_not_a_2d_grid():
    assert get_method("npo_mg").krylov == "pcg" and get_method("npo_mg_fcg").krylov == "fcg"
    assert get_case("poisson_3d-n16-constant-gmg").skip_reason.startswith(
        "geometric multigrid runs on 2-D grid operators")
    assert get_case("n1024-binary1e4-npo_mg").skip_reason is None


def test_facts_and_training_cost_are_reported():
    M = NPOMG().setup(poisson_2d(256))
    assert M.info["levels"] == 5 and M.nbytes > 0
    assert M.train_s > 0 and "command" in M.training and "history" not in M.training
    assert np.isnan(GMG().train_s)


def test_bad_options_and_matrices_are_refused():
    with pytest.raises(ValueError, match="omega"):
        GMG(omega=2.5)
    with pytest.raises(ValueError, match="device"):
        NPOMG(device="tpu")
    import scipy.sparse as sp

    with pytest.raises(ValueError, match="grid operator"):
        GMG().setup(sp.identity(10, format="csr"))
