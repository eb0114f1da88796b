"""The preconditioner contract and the adapter registry.

**The contract** (PETSc's PCSetUp/PCApply split), which every adapter, built
in or third-party, follows; :class:`PreconditionerProtocol` states it as a
:class:`typing.Protocol`, and :class:`Preconditioner` is the base class that
implements the shared parts:

* the constructor stores options only, and rejects unknown ones;
* ``setup(A)`` does all one-time work and returns self;
* ``apply(r)`` maps a residual of length N to a correction ``z ~ A^{-1} r``
  with no setup work; a wrong length is a ValueError naming the method;
* ``linear`` and ``symmetric`` say which Krylov method is safe: ``pcg``
  needs a fixed SPD operator, ``fcg`` tolerates a nonlinear one;
* ``nbytes`` is the memory the preconditioner holds (excluding A), ``info``
  a dict of facts about what it built (levels, complexity, fill, rank...),
  and ``device`` where ``apply`` runs;
* optionally ``train_s`` (seconds of training behind it; NaN when none) and
  ``training`` (metadata of that training).

The registry maps adapter names to classes (``get(name, **options)``); how a
method is *benchmarked* lives in its descriptor (:mod:`npo.methods`).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from npo.methods import check_options

__all__ = ["Preconditioner", "PreconditionerProtocol", "TorchPreconditioner", "available",
           "get", "register", "tensor_nbytes"]

_REGISTRY: dict[str, type[Preconditioner]] = {}


@runtime_checkable
class PreconditionerProtocol(Protocol):
    """What the harness needs of a preconditioner (see the module docstring)."""

    linear: bool
    symmetric: bool
    device: str

    def setup(self, A) -> PreconditionerProtocol: ...

    def apply(self, r): ...

    @property
    def nbytes(self) -> int: ...

    @property
    def info(self) -> dict: ...


def register(name: str):
    """Class decorator: register a preconditioner under ``name``."""

    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"preconditioner {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Sorted names of the registered preconditioners."""
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str, **options) -> Preconditioner:
    """Build the preconditioner registered as ``name`` with ``options``.

    >>> get("jacobi")
    Jacobi(not set up)
    >>> get("nope")
    Traceback (most recent call last):
    ...
    ValueError: unknown preconditioner 'nope'; expected one of [...]
    >>> get("jacobi", omega=2)
    Traceback (most recent call last):
    ...
    ValueError: unknown option(s) ['omega'] for preconditioner 'jacobi'; valid: []
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown preconditioner {name!r}; expected one of {available()}")
    cls = _REGISTRY[name]
    check_options(cls, options, f"preconditioner {name!r}")
    return cls(**options)


def _load_builtin() -> None:
    # import for the side effect of registration (the registry's own import
    # cycle); the neural module imports torch lazily, inside setup()
    from npo.precond import amg, basic, ilu, multigrid, neural, nystrom, petsc  # noqa: F401


def _array_nbytes(*objs) -> int:
    total = 0
    for o in objs:
        if o is None:
            continue
        if sp.issparse(o):
            o = o.tocsr() if not hasattr(o, "indptr") else o
            total += o.data.nbytes + o.indices.nbytes + o.indptr.nbytes
        elif isinstance(o, np.ndarray):
            total += o.nbytes
    return int(total)


class Preconditioner:
    """Base class: subclasses implement ``_setup(A)`` and ``_apply(r)``."""

    name = "base"
    linear = True
    symmetric = True
    device = "cpu"

    def __init__(self):
        self.A = None
        self.shape = None

    # -- protocol ---------------------------------------------------------
    def setup(self, A) -> Preconditioner:
        """One-time work on the SPD matrix ``A``; returns self."""
        if not sp.issparse(A):
            raise ValueError(f"{self.name}: A must be a scipy sparse matrix, got {type(A).__name__}")
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"{self.name}: A must be square, got shape {A.shape}")
        if np.iscomplexobj(A.data):
            raise ValueError(f"{self.name}: A is complex; only real SPD matrices are supported")
        A = sp.csr_matrix(A, dtype=float)
        if not np.all(np.isfinite(A.data)):
            raise ValueError(f"{self.name}: A contains NaN or Inf")
        self.A = A
        self.shape = A.shape
        self._setup(A)
        return self

    def _setup(self, A) -> None:
        raise NotImplementedError

    def apply(self, r: np.ndarray) -> np.ndarray:
        """Return ``z = M(r)`` for a residual of length N (checked; O(1))."""
        if self.shape is None:
            raise RuntimeError(f"{self.name}: call setup(A) before apply()")
        if getattr(r, "shape", None) != (self.shape[0],):
            raise ValueError(f"{self.name}: residual has shape {getattr(r, 'shape', None)}, "
                             f"expected ({self.shape[0]},)")
        return self._apply(r)

    def _apply(self, r: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, r):
        return self.apply(r)

    @property
    def is_setup(self) -> bool:
        return self.shape is not None

    def _require_setup(self):
        if not self.is_setup:
            raise RuntimeError(f"{self.name}: call setup(A) before apply()")

    @property
    def nbytes(self) -> int:
        """Memory held by the preconditioner (bytes), excluding A itself."""
        return 0

    @property
    def info(self) -> dict:
        """Method-specific facts: levels, complexity, fill ratio, rank, ..."""
        return {}

    @property
    def train_s(self) -> float:
        """Seconds of training behind this preconditioner (NaN: none)."""
        return math.nan

    @property
    def training(self) -> dict:
        """Metadata of that training (empty when there is none)."""
        return {}

    def as_linear_operator(self) -> LinearOperator:
        """scipy LinearOperator whose matvec is one ``apply`` (for scipy's cg)."""
        self._require_setup()
        return LinearOperator(self.shape, matvec=self.apply, dtype=float)

    def __repr__(self) -> str:
        if not self.is_setup:
            return f"{type(self).__name__}(not set up)"
        facts = ", ".join(f"{k}={_fmt(v)}" for k, v in self.info.items())
        sep = ", " if facts else ""
        return f"{type(self).__name__}(N={self.shape[0]}{sep}{facts}, nbytes={self.nbytes})"


class TorchPreconditioner(Preconditioner):
    """Base of the adapters that run on torch tensors (``device`` torch:cpu or cuda[:k]).

    ``setup(A)`` takes the scipy matrix, as everywhere, and builds what it
    needs on the device; ``apply(r)`` takes and returns a tensor of length N
    on that device, and must not copy anything to the host.
    """

    def __init__(self, device: str = "torch:cpu"):
        super().__init__()
        from npo.devices import check_device, is_torch

        if not is_torch(check_device(device)):
            raise ValueError(f"{self.name}: device must be torch:cpu or cuda[:k], got {device!r}")
        self.device = device

    @property
    def tdev(self):
        from npo.devices import torch_device

        return torch_device(self.device)


def tensor_nbytes(*tensors) -> int:
    """Bytes held by torch tensors (sparse CSR: its three arrays)."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        if getattr(t, "layout", None) is not None and "sparse_csr" in str(t.layout):
            parts = (t.crow_indices(), t.col_indices(), t.values())
        else:
            parts = (t,)
        total += sum(x.numel() * x.element_size() for x in parts)
    return int(total)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)
