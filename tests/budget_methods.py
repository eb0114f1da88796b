"""Misbehaving methods for the harness's budget and error tests (loaded as ``--method
budget_methods:HOG`` with ``tests/`` on the path). Each is a real preconditioner (Jacobi) whose
setup does one bad thing."""

from __future__ import annotations

import time

import numpy as np

from npo.methods import MethodSpec
from npo.precond.base import Preconditioner

#: what Hog allocates: 4x the 512 MiB budget the tests give
HOG_BYTES = 4 * 512 * 2**20


class _Jacobi(Preconditioner):
    def _setup(self, A) -> None:
        self.d = 1.0 / A.diagonal()

    def _apply(self, r):
        return self.d * r


class Hog(_Jacobi):
    """Allocates (and touches) HOG_BYTES in setup."""

    def _setup(self, A) -> None:
        self.block = np.ones(HOG_BYTES // 8)
        super()._setup(A)


class Sleeper(_Jacobi):
    """Never finishes its setup."""

    def _setup(self, A) -> None:
        while True:
            time.sleep(60)


class Raiser(_Jacobi):
    """Raises in setup on matrices with more than 2,000 rows (n = 64), works below."""

    def _setup(self, A) -> None:
        if A.shape[0] > 2000:
            raise ValueError("this setup refuses large matrices")
        super()._setup(A)


HOG = MethodSpec("hog", Hog, krylov="pcg", description="allocates 2 GiB in setup")
SLEEPER = MethodSpec("sleeper", Sleeper, krylov="pcg", description="hangs in setup")
RAISER = MethodSpec("raiser", Raiser, krylov="pcg", description="raises in setup at n = 64")
