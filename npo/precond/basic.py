"""Identity and Jacobi (diagonal scaling), on numpy arrays and on torch tensors.

Jacobi approximates A by its diagonal. On a constant-coefficient Laplacian the
diagonal is the constant 4/h^2, so Jacobi-PCG iterates exactly as plain CG; it
pays off only when the coefficient varies, where it equilibrates the rows.
The torch versions (``TorchIdentity``, ``TorchJacobi``) are the same
operations on a device, for the GPU honesty table.
"""

from __future__ import annotations

import numpy as np

from npo.methods import MethodSpec
from npo.precond.base import Preconditioner, TorchPreconditioner, register, tensor_nbytes


@register("none")
class Identity(Preconditioner):
    """No preconditioning: ``apply(r)`` returns r itself (no copy)."""

    def _setup(self, A) -> None:
        pass

    def _apply(self, r):
        return r


@register("jacobi")
class Jacobi(Preconditioner):
    """Diagonal scaling ``z = r / diag(A)``."""

    def __init__(self):
        super().__init__()
        self.dinv = None

    def _setup(self, A) -> None:
        self.dinv = 1.0 / _positive_diagonal(A, self.name)

    def _apply(self, r):
        return r * self.dinv

    @property
    def nbytes(self) -> int:
        return 0 if self.dinv is None else int(self.dinv.nbytes)


def _positive_diagonal(A, name) -> np.ndarray:
    d = A.diagonal()
    if np.any(d <= 0):
        k = int(np.argmax(d <= 0))
        raise ValueError(f"{name}: A is not SPD: diagonal entry {k} is {float(d[k])!r} (must be > 0)")
    return d


@register("none_torch")
class TorchIdentity(TorchPreconditioner):
    """No preconditioning on a torch device."""

    def _setup(self, A) -> None:
        pass

    def _apply(self, r):
        return r


@register("jacobi_torch")
class TorchJacobi(TorchPreconditioner):
    """Diagonal scaling ``z = r / diag(A)`` on a torch device."""

    def __init__(self, device: str = "torch:cpu"):
        super().__init__(device)
        self.dinv = None

    def _setup(self, A) -> None:
        import torch

        d = _positive_diagonal(A, self.name)
        self.dinv = torch.as_tensor(1.0 / d, dtype=torch.float64, device=self.tdev)

    def _apply(self, r):
        return r * self.dinv

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.dinv)


_ON_DEVICES = ("cpu", "torch", "cuda")

METHODS = [
    MethodSpec("cg", Identity, krylov="pcg", torch_adapter=TorchIdentity, devices=_ON_DEVICES,
               description="plain CG"),
    MethodSpec("jacobi", Jacobi, krylov="pcg", torch_adapter=TorchJacobi, devices=_ON_DEVICES,
               description="diagonal scaling"),
]
