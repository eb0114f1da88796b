"""npo.diagnose and `npo-bench diagnose`: Ritz values, per-mode gains, (non)linearity, symmetry."""

import numpy as np
import pytest

from npo.cases import get_case
from npo.cli import main
from npo.diagnose import diagnose, sine_modes
from npo.problems import poisson_2d


def test_ritz_values_of_plain_cg_bracket_the_spectrum():
    d = diagnose(get_case("n16-constant-cg"))
    lam = np.linalg.eigvalsh(poisson_2d(16).toarray())
    assert d.ritz_min == pytest.approx(lam[0], rel=1e-6)
    assert d.ritz_max == pytest.approx(lam[-1], rel=1e-6)
    assert d.kappa == pytest.approx(lam[-1] / lam[0], rel=1e-5)


def test_sine_modes_are_unit_eigenvectors_of_poisson():
    n = 12
    A = poisson_2d(n)
    for v in sine_modes(n, [1, 3, 12]).values():
        Av = A @ v
        assert np.linalg.norm(v) == pytest.approx(1.0)
        assert np.linalg.norm(Av - (v @ Av) * v) < 1e-9 * np.linalg.norm(Av)


def test_multigrid_is_linear_and_symmetric_and_flattens_the_gains():
    d = diagnose(get_case("n64-constant-gmg"))
    assert d.nonlinearity < 1e-12 and d.symmetry < 1e-12
    gains = dict(d.modes)
    assert min(gains.values()) > 0.5  # every frequency near the ideal
    cg = dict(diagnose(get_case("n64-constant-cg")).modes)
    assert cg[1] < 1e-2  # without a preconditioner the smoothest mode gets almost nothing


def test_the_seed_npo_is_nonlinear():
    pytest.importorskip("torch")
    d = diagnose(get_case("n32-constant-npo"))
    assert d.nonlinearity > 1e-4 and d.krylov == "fcg"


def test_cli_writes_the_report_and_refuses_bad_input(tmp_path, capsys):
    assert main(["diagnose", "gmg", "cg", "--n", "32", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| gmg | 32 | constant | pcg |" in out
    assert (tmp_path / "diagnostics.md").exists() and (tmp_path / "diagnostics-gains.png").exists()
    assert main(["diagnose", "gmg", "--field", "plaid", "--no-write"]) == 2
    assert "unknown field 'plaid'" in capsys.readouterr().err
    assert main(["diagnose", "gmg", "--problem", "poisson_3d", "--n", "8", "--no-write"]) == 2
    assert "2-D grid operators" in capsys.readouterr().err
