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

from npo.methods import MethodSpec
from npo.precond.base import Preconditioner, register, tensor_nbytes

__all__ = ["METHODS", "NPO", "NPO_MAXITER", "NPO_MAX_N", "NPO_MODELS", "apply_cost"]


@register("npo")
class NPO(Preconditioner):
    """Neural preconditioner from a checkpoint (a shipped name or a ``.pt`` path).

    Parameters
    ----------
    checkpoint : str or Path
        Shipped model name (see :func:`npo.neural.shipped_models`) or a file.
    device : str
        ``"cpu"``: numpy vectors in and out, network on the CPU (the
        reference path). ``"torch:cpu"`` or ``"cuda[:k]"``: torch tensors in
        and out on that device, and the whole apply stays there (no host
        copy); ``"torch:cpu"`` runs, on the CPU, the code a GPU runs.
    precision : {"fp32", "bf16"}
        ``bf16`` autocasts the network's GEMMs and convolutions to bfloat16
        (the scaling around it stays float64).
    compile : bool
        Run the network through ``torch.compile(mode="reduce-overhead")``
        (CUDA graphs on a GPU, which removes the launch overhead of a batch-1
        apply); the compilation happens in ``setup``.

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

    def __init__(self, checkpoint="poisson", device: str = "cpu", precision: str = "fp32",
                 compile: bool = False):
        super().__init__()
        from npo.devices import check_device

        try:
            check_device(device)
        except ValueError:
            raise ValueError(f"npo: device must be cpu, torch:cpu or cuda[:k], got {device!r}") \
                from None
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"npo: precision must be 'fp32' or 'bf16', got {precision!r}")
        self.checkpoint = checkpoint
        self.device = device
        self.precision = precision
        self.compile = bool(compile)
        self.model = None
        self.metadata: dict = {}
        self.n = None
        self._inputs = None
        self._w = None
        self._w_t = None
        self._net = None
        self._flops = None

    def _setup(self, A) -> None:
        import torch

        from npo.devices import synchronize, torch_device
        from npo.env import apply_torch_threads
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
        self._w_t = torch.as_tensor(self._w, dtype=torch.float64, device=dev)
        coef = None
        if model.coef_channel:
            coef = torch.as_tensor(log_coefficient(A), dtype=torch.float32, device=dev)
        # the constant channels (coordinates, log-coefficient) are built once;
        # apply only overwrites the residual channel of this buffer
        self._inputs = model.features(torch.zeros(1, n, n, device=dev), coef)
        self._net = self._forward
        if self.compile:
            self._net = torch.compile(self._forward, mode="reduce-overhead", dynamic=False)
            with torch.inference_mode():  # compile now: a one-time cost of setup
                for _ in range(2):
                    self._net(torch.zeros(1, n, n, device=dev))
        synchronize(self.device)
        self._flops = None

    def _forward(self, u):
        """The network on unit-norm float32 fields u (B, n, n), in the chosen precision."""
        import torch

        inputs = self._inputs if u.shape[0] == 1 else self._inputs.expand(
            u.shape[0], -1, -1, -1).clone()
        with torch.autocast(u.device.type, dtype=torch.bfloat16,
                            enabled=self.precision == "bf16"):
            z = self.model(u, inputs=inputs)
        return z.float()

    def _apply(self, r):
        """``z = W ||W r|| net(W r / ||W r||)`` in float64; zero for ``r = 0``."""
        import torch

        if self.device == "cpu":
            u = np.asarray(r) * self._w
            norm = float(np.linalg.norm(u))
            if norm == 0.0:
                return np.zeros(self.shape[0])
            # normalise in float64, then cast: the network only ever sees unit vectors
            u = torch.from_numpy((u / norm).astype(np.float32).reshape(1, self.n, self.n))
            with torch.inference_mode():
                z = self._net(u)
            return z.numpy().reshape(-1).astype(np.float64) * (norm * self._w)
        # on a torch device: no host round trip, no host sync (r = 0 gives 0 * net(0) = 0)
        u = r * self._w_t
        norm = torch.linalg.vector_norm(u)
        unit = (u / torch.clamp(norm, min=torch.finfo(torch.float64).tiny)).float()
        with torch.inference_mode():
            z = self._net(unit.view(1, self.n, self.n))
        return z.view(-1).double() * (norm * self._w_t)

    def apply_batch(self, R):
        """Apply to the k columns of ``R`` (N x k) in one network call (batch k)."""
        import torch

        self._require_setup()
        on_host = self.device == "cpu"
        Rt = torch.as_tensor(np.asarray(R), dtype=torch.float64) if on_host else R
        if tuple(Rt.shape[:1]) != (self.shape[0],) or Rt.ndim != 2:
            raise ValueError(f"npo: apply_batch needs an ({self.shape[0]}, k) array, got "
                             f"{tuple(Rt.shape)}")
        w = torch.as_tensor(self._w, dtype=torch.float64) if on_host else self._w_t
        U = Rt * w[:, None]
        norms = torch.linalg.vector_norm(U, dim=0)
        unit = (U / torch.clamp(norms, min=torch.finfo(torch.float64).tiny)).float()
        with torch.inference_mode():
            Z = self._forward(unit.T.reshape(-1, self.n, self.n))
        Z = Z.reshape(Rt.shape[1], -1).T.double() * (norms * w[:, None])
        return Z.numpy() if on_host else Z

    # -- facts ------------------------------------------------------------------
    @property
    def train_s(self) -> float:
        """Wall-clock training seconds recorded in the checkpoint (NaN if absent)."""
        return float(self.metadata.get("train_s", float("nan")))

    @property
    def training(self) -> dict:
        """The checkpoint's training metadata (command, data, losses; no history)."""
        return {k: v for k, v in self.metadata.items() if k != "history"}

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
        extra = self._w.nbytes if self.device == "cpu" else tensor_nbytes(self._w_t)
        return tensor_nbytes(*tensors) + extra

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
            "precision": self.precision,
            "compiled": self.compile,
        }


def apply_cost(checkpoint: str = "poisson", n: int = 128, *, threads: int = 1,
               repeats: int = 7, device: str = "cpu", precision: str = "fp32",
               compile: bool = False, batch: int = 1) -> dict:
    """Median apply time, FLOPs and the fraction of float32 GEMM throughput at size n.

    Builds ``NPO(checkpoint, device, precision, compile).setup(poisson_2d(n))``
    (the model's field does not change the cost), times ``apply`` (or
    ``apply_batch`` on ``batch`` right-hand sides) on GRF residuals with
    ``threads`` pinned, synchronising the device before each clock stops,
    counts FLOPs (:func:`npo.neural.flops.count_flops`) and measures float32
    ``torch.mm`` on the same device (:func:`npo.neural.flops.mm_throughput`).

    Returns
    -------
    dict
        n, threads, device, precision, compile, batch, flops (per apply),
        flops_by_op, apply_s (per right-hand side), flops_per_s,
        mm_flops_per_s, mm_fraction, time_over_gemm_ideal, params.
    """
    from npo.devices import synchronize, to_tensor
    from npo.env import pinned_threads
    from npo.neural.flops import count_flops, median_time, mm_throughput
    from npo.problems import grf_rhs, poisson_2d

    with pinned_threads(threads):
        M = NPO(checkpoint, device=device, precision=precision, compile=compile).setup(
            poisson_2d(n))
        R = np.stack([grf_rhs(n, seed=7 + k) for k in range(batch)], axis=1)
        if device != "cpu":
            R = to_tensor(R, device)
        r = R[:, 0]

        def one():
            M.apply(r) if batch == 1 else M.apply_batch(R)
            synchronize(device)

        counted = count_flops(M.model, n, inputs=M._inputs)
        apply_s = median_time(one, repeats) / batch
        mm = mm_throughput(device=device)
    flops = counted["total"]
    return {
        "n": n,
        "threads": threads,
        "device": device,
        "precision": precision,
        "compile": compile,
        "batch": batch,
        "params": M.model.num_parameters(),
        "flops": flops,
        "flops_by_op": counted["by_op"],
        "apply_s": apply_s,
        "flops_per_s": flops / apply_s,
        "mm_flops_per_s": mm,
        "mm_fraction": flops / apply_s / mm,
        # lower is better: how many times slower than the GEMM rate would allow
        "time_over_gemm_ideal": apply_s * mm / flops,
    }


# --- how the NPO is benchmarked (its descriptors) ------------------------------------------

#: Which shipped model serves which coefficient family of ``diffusion_2d``.
NPO_MODELS = {"constant": "poisson", "jump": "varcoef", "lognormal": "varcoef"}
#: Cap for NPO solves: one apply is a transformer forward pass (1.6 ms at
#: n = 32, 20 ms at 128, 93 ms at 256), so 20,000 iterations would cost
#: minutes to hours. 2000 is also the cap of the plain-PCG negative control,
#: which stalls by design.
NPO_MAXITER = 2000
#: Largest grid an NPO runs on: the shipped models are trained at n <= 128,
#: and an apply at n = 512 costs ~0.4 s, so a 2000-iteration cap is ~15 min.
NPO_MAX_N = 256
#: The float32 network rounds differently with each CPU's vector kernels, so
#: against another platform's baseline the gate allows max(3, 10%) iterations.
NPO_ITERATION_TOLERANCE = (3, 0.10)


def _checkpoint_for(case, problem=None) -> dict:
    return {"checkpoint": NPO_MODELS.get(case.field.family)}


def _npo_skip(case) -> str | None:
    name = NPO_MODELS.get(case.field.family)
    if name is None:
        return f"no NPO model is trained for the {case.field.family} family"
    from npo.neural import shipped_models  # torch-free

    if name not in shipped_models():
        return f"NPO model {name!r} is not shipped in npo/neural/weights"
    return None


def _negative_control_skip(case) -> str | None:
    if case.n > 64:
        return "negative control (NPO in plain PCG) runs at small n only"
    return _npo_skip(case)


_NPO = dict(
    maxiter=NPO_MAXITER, max_n=NPO_MAX_N, problems=("diffusion_2d",), requires=("torch",),
    limit_reason="models are trained at n <= 128 and one apply costs ~0.4 s at n = 512, so a "
                 "capped FCG solve would take ~15 min",
    install_hint="torch is not installed: install npo-bench[neural]",
    devices=("cpu", "torch", "cuda"), torch_adapter=NPO,
    iteration_tolerance=NPO_ITERATION_TOLERANCE, options_for=_checkpoint_for,
)

METHODS = [
    MethodSpec("npo", NPO, krylov="fcg", skip=_npo_skip,
               description="Neural Preconditioning Operator in flexible CG", **_NPO),
    MethodSpec("npo_pcg", NPO, krylov="pcg", skip=_negative_control_skip,
               description="NPO in plain PCG: negative control",
               control="the nonlinear NPO inside plain PCG, which assumes a fixed linear "
                       "preconditioner", **_NPO),
]
