"""Training of the multilevel NPO (``npo-bench train --arch mg``).

The loss and the data are described in :mod:`npo.neural.mg`; this module
holds the options (:class:`MGTrainConfig`), the training operators, the loop
and the metadata written beside the weights (:mod:`npo.neural.checkpoint`).
"""

from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from npo.gridmg import COARSEST
from npo.neural.mg import MGNPO, hierarchy_torch, stencil_apply, vcycle_torch

__all__ = ["MGTrainConfig", "energy_loss", "train_mg", "training_matrices"]


@dataclass
class MGTrainConfig:
    """Options of ``npo-bench train --arch mg`` (see :func:`train_mg`)."""

    n: tuple = (32, 64)
    fields: tuple = ("constant", "jump", "lognormal", "binary")
    contrast: tuple = (1.0, 1e4)
    num_coef: int = 16
    coef_seed: int = 1000
    steps: int = 1500
    batch_size: int = 4
    num_vectors: int = 12
    lr: float = 3e-3
    lr_min: float = 1e-4
    seed: int = 0
    width: int = 16
    threads: int = 2
    device: str = "cpu"
    out: str | None = None
    progress: bool | None = None

    def validate(self):
        from npo.problems import FIELDS

        if not self.n or any(int(k) < 2 * COARSEST for k in self.n):
            raise ValueError(f"--n: grid sizes must be at least {2 * COARSEST} (one level above "
                             f"the {COARSEST}x{COARSEST} coarsest grid), got {list(self.n)}")
        if any(int(k) > 256 for k in self.n):
            raise ValueError("--n: the multilevel NPO trains on small grids (<= 256); it runs "
                             "on any n")
        bad = [f for f in self.fields if f not in FIELDS]
        if bad or not self.fields:
            raise ValueError(f"--field: unknown famil(ies) {bad}; expected from {sorted(FIELDS)}")
        lo, hi = map(float, self.contrast)
        if not (1.0 <= lo <= hi and math.isfinite(hi)):
            raise ValueError(f"--contrast: need 1 <= LO <= HI, got {lo} {hi}")
        for name in ("num_coef", "steps", "batch_size", "num_vectors", "width", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if not (0 < self.lr_min <= self.lr):
            raise ValueError("--lr and --lr-min: need 0 < lr-min <= lr")

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("progress")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def command(self) -> str:
        """The command line that reproduces this configuration."""
        import shlex

        parts = ["npo-bench", "train", "--arch", "mg"]
        for k, v in self.as_dict().items():
            if v is None or k == "device" and v == "cpu":
                continue
            opt = "--field" if k == "fields" else "--" + k.replace("_", "-")
            vals = v if isinstance(v, list) else [v]
            parts += [opt, *(str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)
                             for x in vals)]
        return shlex.join(parts)


def training_matrices(cfg: MGTrainConfig):
    """The training operators: (n, family, contrast, seed) and the matrix, deterministic in cfg."""
    from npo.problems import coefficient, diffusion_2d

    out = []
    for n in cfg.n:
        for fi, fam in enumerate(cfg.fields):
            if fam == "constant":
                out.append(((int(n), fam, 1.0, 0), diffusion_2d(int(n), np.ones(n * n))))
                continue
            rng = np.random.default_rng([cfg.seed, int(n), fi])
            lo, hi = np.log(cfg.contrast[0]), np.log(cfg.contrast[1])
            for j in range(cfg.num_coef):
                c = round(float(np.exp(rng.uniform(lo, hi))), 6)
                seed = cfg.coef_seed + j
                out.append(((int(n), fam, c, seed),
                            diffusion_2d(int(n), coefficient(fam, int(n), c, seed))))
    return out


def _error_samples(S, k, gen):
    """k unit-energy-free error vectors per matrix: white noise, smooth, and relaxed noise."""
    M, _, n, _ = S.shape
    e = torch.randn(M, k, n, n, generator=gen, dtype=S.dtype)
    third = max(1, k // 3)
    # smooth: noise filtered in Fourier space (spectrum ~ 1/(1 + f^2)^2)
    f = torch.fft.fftfreq(n, dtype=S.dtype) * n
    filt = 1.0 / (1.0 + f[:, None] ** 2 + f[None, :] ** 2) ** 2
    e[:, :third] = torch.fft.ifft2(torch.fft.fft2(e[:, :third]) * filt).real
    # algebraically smooth: 20 sweeps of Jacobi (omega 2/3) on A e = 0
    d = S[:, 4, None]
    with torch.no_grad():
        z = e[:, third:2 * third]
        for _ in range(20):
            z = z - (2.0 / 3.0) * stencil_apply(S, z) / d
        e[:, third:2 * third] = z
    return e


def energy_loss(model, S, e, slow=None, slots_cache=None, sweeps: int = 2):
    """``mean_matrices log mean_samples ||E e||_A^2 / ||e||_A^2`` with ``E = I - M A``.

    E is the error propagation of one V-cycle, so the ratio is the energy
    error one cycle leaves. ``e`` are fresh samples; ``slow`` (optional, per
    matrix) are persistent ones that get ``sweeps`` more cycles (no gradient)
    and are renormalised first: a power iteration that follows the slowest
    modes of the current model, the ones PCG's convergence rests on (the mean
    over fresh samples alone barely sees them). The log per matrix gives every
    training operator the same say. Returns ``(loss, slow')``.
    """
    levels, L = hierarchy_torch(model, S, slots_cache)

    def E(v):
        return v - vcycle_torch(levels, L, stencil_apply(S, v))

    if slow is not None:
        with torch.no_grad():
            for _ in range(sweeps):
                slow = E(slow)
                slow = slow / slow.flatten(2).norm(dim=2)[..., None, None].clamp_min(1e-300)
        e = torch.cat([e, slow], dim=1)
    den = (e * stencil_apply(S, e)).sum(dim=(-1, -2))
    Ee = E(e)
    num = (Ee * stencil_apply(S, Ee)).sum(dim=(-1, -2))
    return torch.log((num / den).mean(dim=1)).mean(), slow


def train_mg(cfg: MGTrainConfig, on_step=None):
    """Train the multilevel NPO; returns ``(model, metadata)`` and writes cfg.out if set."""
    from npo.env import git_commit, machine_name, pinned_threads
    from npo.gridmg import stencil_from_csr

    cfg.validate()
    t0 = time.perf_counter()
    with pinned_threads(cfg.threads):
        torch.set_num_threads(int(cfg.threads))
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        mats = training_matrices(cfg)
        by_n: dict[int, list] = {}
        for (n, *_), A in mats:
            by_n.setdefault(n, []).append(torch.as_tensor(stencil_from_csr(A, n)))
        stacks = {n: torch.stack(v) for n, v in by_n.items()}
        # persistent samples per training matrix, iterated towards the slowest modes
        slow = {n: torch.randn(len(v), cfg.num_vectors, n, n, generator=gen, dtype=torch.float64)
                for n, v in stacks.items()}
        data_s = time.perf_counter() - t0
        model = MGNPO(width=cfg.width).double()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        sizes = sorted(stacks)
        cache: dict = {}
        history = []
        window = []
        bar = None
        steps = range(cfg.steps)
        if cfg.progress is not False:
            from tqdm import tqdm

            bar = tqdm(steps, desc=f"train npo_mg n={sizes}", unit="step", file=sys.stderr,
                       disable=None if cfg.progress is None else False)
            steps = bar
        for step in steps:
            frac = step / max(1, cfg.steps - 1)
            lr = cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * frac))
            for g in opt.param_groups:
                g["lr"] = lr
            n = sizes[step % len(sizes)]
            pick = rng.choice(len(stacks[n]), size=min(cfg.batch_size, len(stacks[n])),
                              replace=False)
            idx = torch.as_tensor(pick)
            S = stacks[n][idx]
            e = _error_samples(S, cfg.num_vectors, gen)
            loss, slow_new = energy_loss(model, S, e, slow[n][idx], cache)
            slow[n][idx] = slow_new
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            window.append(float(loss.detach()))
            if not math.isfinite(window[-1]):
                raise ValueError(f"training diverged at step {step}")
            if len(window) == 50 or step == cfg.steps - 1:
                rec = {"step": step + 1, "loss": float(np.mean(window)), "lr": lr}
                history.append(rec)
                window = []
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}")
                if on_step is not None:
                    on_step(rec)
        run_s = time.perf_counter() - t0
    meta = {
        "arch": "mg",
        "fields": list(cfg.fields),
        "n": [int(k) for k in cfg.n],
        "train_s": run_s,
        "run_s": run_s,
        "data_s": data_s,
        "final_loss": {"total": history[-1]["loss"]},
        "matrices": [{"n": k[0], "family": k[1], "contrast": k[2], "seed": k[3]}
                     for k, _ in mats],
        "train_config": cfg.as_dict(),
        "command": cfg.command(),
        "device": cfg.device,
        "threads": int(cfg.threads),
        "machine": machine_name(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "commit": git_commit(),
        "params": model.num_parameters(),
        "history": history,
    }
    model = model.float().eval()
    if cfg.out is not None:
        from npo.neural.checkpoint import save_checkpoint

        save_checkpoint(model, cfg.out, meta)
    return model, meta
