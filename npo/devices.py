"""Devices: where a case's matrix, vectors and preconditioner live.

Ground floor: imports nothing from ``npo``; torch is imported only when a
torch device is asked for.

* ``"cpu"``: numpy arrays and scipy sparse matrices (the reference path);
* ``"torch:cpu"``: torch tensors on the CPU -- the GPU code path, run where
  there is no GPU (CI tests it);
* ``"cuda"``, ``"cuda:k"``: torch tensors on a GPU.

A table never mixes devices: every timing of a case, its SpMV included, is
taken on the case's device, and :func:`synchronize` is called before a
clock stops.
"""

from __future__ import annotations

import re
import warnings

__all__ = [
    "check_device",
    "is_torch",
    "synchronize",
    "to_tensor",
    "to_torch_csr",
    "torch_device",
]

_DEVICE = re.compile(r"^(cpu|torch:cpu|cuda(:\d+)?)$")


def is_torch(device: str) -> bool:
    """True for the devices whose arrays are torch tensors."""
    return device != "cpu"


def torch_device(device: str):
    """The ``torch.device`` of a harness device; ValueError when it is not available.

    ``"cpu"`` and ``"torch:cpu"`` both mean torch's CPU device here.
    """
    check_device(device)
    import torch

    name = "cpu" if device in ("cpu", "torch:cpu") else device
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available to this torch")
    return torch.device(name)


def check_device(device) -> str:
    """``device`` if it is a device name (see the module docstring), else ValueError."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ValueError(f"unknown device {device!r}; expected cpu, torch:cpu or cuda[:k]")
    if is_torch(device):
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ValueError(f"device {device!r} needs torch: install npo-bench[neural]")
    return device


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


def to_torch_csr(A, device: str, dtype=None):
    """A scipy sparse matrix as a torch sparse CSR tensor on ``device`` (float64 default)."""
    import numpy as np
    import scipy.sparse as sp
    import torch

    A = sp.csr_matrix(A)
    dev = torch_device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(A.indptr.astype(np.int64)), torch.from_numpy(A.indices.astype(np.int64)),
            torch.from_numpy(np.asarray(A.data, dtype=np.float64)), size=A.shape,
            dtype=dtype or torch.float64, device=dev, check_invariants=False)


def to_tensor(v, device: str, dtype=None):
    """A numpy vector as a (contiguous, float64 by default) tensor on ``device``."""
    import numpy as np
    import torch

    return torch.as_tensor(np.ascontiguousarray(v), dtype=dtype or torch.float64,
                           device=torch_device(device))
