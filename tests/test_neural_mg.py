"""npo.neural.mg: the multilevel NPO's network and its differentiable hierarchy."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from npo.gridmg import (  # noqa: E402
    OFFSETS,
    bilinear_weights,
    build_hierarchy,
    gauss_seidel_policy,
    kernel_matrix,
    prolongation,
    stencil_from_csr,
)
from npo.neural import mg  # noqa: E402
from npo.problems import coefficient, diffusion_2d, grf_rhs  # noqa: E402


def _random_model(seed=0):
    torch.manual_seed(seed)
    model = mg.MGNPO().double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _policy(model):
    def policy(S, n):
        with torch.no_grad():
            W, K = model(torch.from_numpy(S)[None])
        return W[0].numpy(), K[0].numpy()
    return policy


def _stencil(A):
    return torch.from_numpy(stencil_from_csr(A))[None]


def test_galerkin_by_probing_equals_the_sparse_triple_product():
    n = 32
    A = diffusion_2d(n, coefficient("binary", n, 1e4, 3))
    S = _stencil(A)
    model = _random_model()
    slots = mg._Slots(n, S.device, S.dtype)
    with torch.no_grad():
        W, _ = model(S, slots)
        Sc = mg.galerkin(S, W, slots)
    P = prolongation(W[0].numpy())
    ref = (P.T @ A @ P).toarray()
    got = np.zeros_like(ref)
    nc = n // 2
    for o, (di, dj) in enumerate(OFFSETS):
        for i in range(nc):
            for j in range(nc):
                if 0 <= i + di < nc and 0 <= j + dj < nc:
                    got[i * nc + j, (i + di) * nc + j + dj] = float(Sc[0, o, i, j])
    assert np.abs(got - ref).max() <= 1e-12 * np.abs(ref).max()


def test_the_training_cycle_is_the_benchmarked_cycle():
    n = 64
    A = diffusion_2d(n, coefficient("lognormal", n, 1e4, 5))
    model = _random_model(1)
    h = build_hierarchy(A, _policy(model))
    with torch.no_grad():
        levels, L = mg.hierarchy_torch(model, _stencil(A))
        b = grf_rhs(n)
        x = mg.vcycle_torch(levels, L, torch.from_numpy(b).reshape(1, 1, n, n)).numpy().ravel()
    ref = h.cycle(b)
    assert np.abs(x - ref).max() <= 1e-12 * np.abs(ref).max()


def test_smoother_transpose_stencil_is_the_matrix_transpose():
    n = 10
    A = diffusion_2d(n, coefficient("jump", n, 100.0))
    K = torch.randn(1, 9, n, n, dtype=torch.float64)
    B = kernel_matrix(K[0].numpy(), A.diagonal())
    BT = kernel_matrix(mg.stencil_transpose(K)[0].numpy(), A.diagonal())
    assert abs(BT - B.T).max() < 1e-14


def test_untrained_model_is_the_skeleton():
    # zero read-outs and zero trust: bilinear weights, Gauss-Seidel kernels
    n = 32
    A = diffusion_2d(n, coefficient("binary", n, 1e4, 0))
    model = mg.MGNPO().double()
    W, K = _policy(model)(stencil_from_csr(A), n)
    assert np.allclose(W, bilinear_weights(n))
    assert np.allclose(K, gauss_seidel_policy()(stencil_from_csr(A), n)[1])


def test_learned_components_are_equivariant_under_transposition():
    n = 16
    a = coefficient("binary", n, 1e4, 3).reshape(n, n)
    model = _random_model(2)
    W1, K1 = _policy(model)(stencil_from_csr(diffusion_2d(n, a)), n)
    W2, K2 = _policy(model)(stencil_from_csr(diffusion_2d(n, a.T.copy())), n)
    swap = [OFFSETS.index((dj, di)) for di, dj in OFFSETS]
    assert np.allclose(K2, K1[swap].transpose(0, 2, 1))
    # slot s = 2a + b: transposing swaps the x slot a with the y slot b
    assert np.allclose(W2, W1[[0, 2, 1, 3]].transpose(0, 2, 1))
