"""The Neural Preconditioning Operator (NPO) as a preconditioner.

A trained NAMG network (:mod:`npo.neural.model`) maps a residual to an
approximation of ``Ahat^{-1} r`` with ``Ahat = h**2 A``; Krylov iterates are
invariant under ``M -> c M``, so that preconditions A itself. It helps where
the network has learned the operator family: on the 32x32 Poisson problem it
cuts CG's 116 iterations to ~30. It is *nonlinear* (ReLUs, LayerNorms,
softmax), so it must run inside flexible CG (:func:`npo.krylov.fcg`); plain
PCG's Fletcher-Reeves beta assumes a fixed SPD M and stalls near 1e-5. Each
apply is a transformer forward pass, hundreds of SpMVs' worth of work, so it
loses on wall-clock wherever a matvec is cheap.

For variable coefficients the network inverts the Jacobi-scaled operator
``h**2 W A W`` with ``W = diag(A / median diag A)^{-1/2}`` (W = I for Poisson;
:func:`npo.neural.data.scaled_operator`), so ``M(r) = W net(W r)``.

Resolution: the network has no positional table and runs on any n x n grid,
but its smooth-mode gain must grow like n^2 relative to its local part, and
it cannot see h. Measured (FCG iterations vs CG, rtol 1e-10): the
multi-resolution default ``"poisson"`` (trained on n = 32, 64, 128) gets 23 /
72 / 342 against CG's 116 / 227 / 457 at n = 32 / 64 / 128 and breaks down
at 256; the 32-only ``"poisson32"`` (22 at n = 32) also gets 72 at 64 but
does not beat CG at 128. ``"varcoef"`` (jump + lognormal, n = 32) reads the
log-coefficient channel.

``apply`` feeds the network the unit-norm (scaled) residual and scales the
output back, so ``M(c r) = c M(r)`` for c > 0 and ``M(0) = 0``: the network
sees the distribution it was trained on at every stage of a solve, and
residuals of 1e-10 never underflow float32. Like AMG it sees only A: models with a
coefficient channel read ``log(diag(A) h^2 / 4)``, which is 0 for Poisson and
the log of the mean face coefficient for :func:`npo.problems.diffusion_2d`.

torch is imported in ``setup``, never at module import.
"""

from __future__ import annotations

import numpy as np

from npo.precond.base import Preconditioner, register

__all__ = ["NPO"]


@register("npo")
class NPO(Preconditioner):
    """Neural preconditioner from a checkpoint (a shipped name or a ``.pt`` path).

    Parameters
    ----------
    checkpoint : str or Path
        Shipped model name (see :func:`npo.neural.shipped_models`) or a file.
    device : str
        ``"cpu"`` or ``"cuda[:k]"``; both run the identical code path, only
        the tensors' device differs. ValueError if CUDA is unavailable.

    Examples
    --------
    >>> from npo.problems import poisson_2d, grf_rhs
    >>> from npo.krylov import fcg
    >>> M = NPO("poisson32").setup(poisson_2d(32))
    >>> fcg(poisson_2d(32), grf_rhs(32), M, rtol=1e-10).iterations <= 32
    True
    """

    linear = False
    symmetric = False

    def __init__(self, checkpoint="poisson", device: str = "cpu"):
        super().__init__()
        if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
            raise ValueError(f"npo: device must be 'cpu' or 'cuda[:k]', got {device!r}")
        self.checkpoint = checkpoint
        self.device = device
        self.model = None
        self.metadata: dict = {}
        self.n = None
        self._inputs = None
        self._w = None
        self._flops = None

    def _setup(self, A) -> None:
        import torch

        from npo.env import apply_torch_threads, torch_device
        from npo.neural.checkpoint import from_checkpoint
        from npo.neural.data import grid_size, jacobi_weights, log_coefficient

        apply_torch_threads()
        dev = torch_device(self.device)
        n = grid_size(A)
        model, meta = from_checkpoint(self.checkpoint, map_location="cpu")
        self.model = model.to(dev).eval().requires_grad_(False)
        self.metadata = meta
        self.n = n
        self._w = jacobi_weights(A)
        coef = None
        if model.coef_channel:
            coef = torch.as_tensor(log_coefficient(A), dtype=torch.float32, device=dev)
        # the constant channels (coordinates, log-coefficient) are built once;
        # apply only overwrites the residual channel of this buffer
        self._inputs = model.features(torch.zeros(1, n, n, device=dev), coef)
        self._flops = None

    def apply(self, r: np.ndarray) -> np.ndarray:
        """``z = W ||W r|| net(W r / ||W r||)`` as float64; zero for ``r = 0``."""
        self._require_setup()
        import torch

        r = np.asarray(r)
        N = self.shape[0]
        if r.shape != (N,):
            raise ValueError(f"npo: residual has shape {r.shape}, expected ({N},)")
        if not np.all(np.isfinite(r)):
            raise ValueError("npo: residual contains NaN or Inf")
        u = r * self._w
        norm = float(np.linalg.norm(u))
        if norm == 0.0:
            return np.zeros(N)
        # normalise in float64, then cast: the network only ever sees unit vectors
        u = torch.from_numpy((u / norm).astype(np.float32).reshape(1, self.n, self.n))
        with torch.inference_mode():
            z = self.model(u.to(self._inputs.device), inputs=self._inputs)
        return z.cpu().numpy().reshape(N).astype(np.float64) * (norm * self._w)

    # -- facts ------------------------------------------------------------------
    @property
    def train_s(self) -> float:
        """Wall-clock training seconds recorded in the checkpoint (NaN if absent)."""
        return float(self.metadata.get("train_s", float("nan")))

    @property
    def flops_per_apply(self) -> int:
        """Counted FLOPs of one apply (see :func:`npo.neural.flops.count_flops`)."""
        self._require_setup()
        if self._flops is None:
            from npo.neural.flops import count_flops

            self._flops = count_flops(self.model, self.n, inputs=self._inputs)["total"]
        return self._flops

    @property
    def nbytes(self) -> int:
        if self.model is None:
            return 0
        tensors = list(self.model.parameters()) + list(self.model.buffers()) + [self._inputs]
        return int(sum(t.numel() * t.element_size() for t in tensors)) + self._w.nbytes

    @property
    def info(self) -> dict:
        if self.model is None:
            return {}
        name = self.checkpoint if isinstance(self.checkpoint, str) else str(self.checkpoint)
        return {
            "checkpoint": name,
            "params": self.model.num_parameters(),
            "flops_per_apply": self.flops_per_apply,
            "train_s": self.train_s,
            "trained_n": list(self.metadata.get("n", [])),
            "trained_fields": list(self.metadata.get("fields", [])),
            "device": self.device,
        }
