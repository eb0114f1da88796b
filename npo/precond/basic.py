"""Identity and Jacobi (diagonal scaling).

Jacobi approximates A by its diagonal. On a constant-coefficient Laplacian the
diagonal is the constant 4/h^2, so Jacobi-PCG iterates exactly as plain CG; it
pays off only when the coefficient varies, where it equilibrates the rows.
"""

from __future__ import annotations

import numpy as np

from npo.methods import MethodSpec
from npo.precond.base import Preconditioner, register


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
        d = A.diagonal()
        if np.any(d <= 0):
            k = int(np.argmax(d <= 0))
            raise ValueError(f"jacobi: A is not SPD: diagonal entry {k} is {float(d[k])!r} (must be > 0)")
        self.dinv = 1.0 / d

    def _apply(self, r):
        return r * self.dinv

    @property
    def nbytes(self) -> int:
        return 0 if self.dinv is None else int(self.dinv.nbytes)


METHODS = [
    MethodSpec("cg", Identity, krylov="pcg", description="plain CG"),
    MethodSpec("jacobi", Jacobi, krylov="pcg", description="diagonal scaling"),
]
