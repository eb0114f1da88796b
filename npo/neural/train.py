"""Train the NPO (report 06, section 4) and write a checkpoint + JSON sidecar.

Losses, all scale-free on unit-norm samples v with the scaled operator
``Ahat = h**2 A`` of the sample's matrix:

* condition loss (paper Eq. 9), on recorded CG residuals:
  ``||Ahat M(v) - v||^2``;
* residual loss (paper Eq. 10), on the right-hand sides themselves: the same
  expression;
* data loss: ``||M(v) - Ahat^{-1} v||^2 / ||Ahat^{-1} v||^2`` with exact targets
  from one sparse LU per matrix. It is the only term with a strong gradient
  on the smooth modes, which the operator losses weight by the small
  eigenvalues of Ahat.

The total is their unweighted sum; Adam with a linear warm-up to ``lr`` and a
cosine decay to ``lr_min``. Seeds fix torch's initialisation and the
shuffling, so a run with the same thread count is reproducible.

Four rooms: :mod:`npo.neural.config` (the options), this module (the
:class:`Trainer`: ``train`` -> ``train_one_epoch`` -> ``train_one_batch``,
initialisation from a checkpoint, the metadata), :mod:`npo.neural.checkpoint`
(the file format) and the argparse front end in :mod:`npo.cli`.

Shipped models (``npo/neural/weights``) and the commands that made them, run
in this order from the repository root (they were recorded as ``python -m
npo.neural.train ...``, the earlier spelling of ``npo-bench train``)::

    # "poisson32": the canonical 32x32 Poisson model (report 06): 400 epochs,
    # batch 32, warm-up 10 epochs to 2e-3, cosine to 5e-5 (asserted <= 32 FCG
    # iterations on the canonical problem)
    npo-bench train --n 32 --epochs 400 --threads 2 --precision bf16 \
        --out npo/neural/weights/poisson32.pt
    # "varcoef": jump + lognormal fields, contrast log-uniform in [1, 1e3],
    # 12 fields per family (field seeds 1000..1011), started from poisson32
    npo-bench train --n 32 --field jump lognormal --contrast 1 1000 \
        --num-coef 12 --num-rhs 6 --record-iters 1 2 4 8 16 32 64 128 256 \
        --epochs 80 --lr 0.001 --warmup 3 --threads 2 --precision bf16 \
        --init poisson32 --out npo/neural/weights/varcoef.pt
    # "poisson" (the default): multi-resolution (n = 32, 64, 128) fine-tune of
    # poisson32
    npo-bench train --n 32 64 128 --num-rhs 40 20 16 --epochs 60 \
        --lr 0.001 --warmup 3 --threads 2 --precision bf16 --init poisson32 \
        --out npo/neural/weights/poisson.pt

Each sidecar JSON records its exact command (field ``command``), its
wall-clock training time (``train_s``, cumulative: a model started with
``--init`` includes its parent's time; ``run_s`` is its own run) and its loss
history. ``--precision bf16`` autocasts GEMMs and convolutions to bfloat16
while training (~1.4x faster on AMX CPUs); the shipped networks are float32.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npo.devices import torch_device
from npo.env import apply_torch_threads, git_commit, machine_name, pinned_threads
from npo.neural.config import TrainConfig
from npo.neural.data import GridData, MatrixSpec, build_grid_data

__all__ = ["TrainConfig", "TrainResult", "Trainer", "matrix_plan", "stencil_apply", "train"]


def matrix_plan(cfg: TrainConfig) -> dict[int, tuple[list[MatrixSpec], list[list[int]]]]:
    """Training operators and their GRF seeds, per resolution (deterministic in cfg.seed)."""
    plan = {}
    for idx, n in enumerate(cfg.n):
        R = cfg.num_rhs[idx] if len(cfg.num_rhs) > 1 else cfg.num_rhs[0]
        specs = []
        for fi, fam in enumerate(cfg.fields):
            if fam == "constant":
                specs.append(MatrixSpec(n, "constant", 1.0, 0))
                continue
            rng = np.random.default_rng([cfg.seed, n, fi])
            lo, hi = np.log(cfg.contrast[0]), np.log(cfg.contrast[1])
            for j in range(cfg.num_coef):
                c = float(np.exp(rng.uniform(lo, hi)))
                specs.append(MatrixSpec(n, fam, round(c, 6), cfg.coef_seed + j))
        seeds = [[cfg.rhs_seed + k * R + i for i in range(R)] for k in range(len(specs))]
        plan[n] = (specs, seeds)
    return plan


def estimate_bytes(cfg: TrainConfig) -> int:
    """Rough peak memory of a run: the float32 samples, targets and activations."""
    total = 0
    for n, (_, seeds) in matrix_plan(cfg).items():
        samples = sum(len(s) for s in seeds) * (1 + len(cfg.record_iters))
        total += samples * n * n * 4 * 3  # inputs, targets, float64 staging
        # activations of one batch: ~ (ffn_mult + 8) channels of width per node, with grads
        total += cfg.batch_size * n * n * cfg.width * (cfg.ffn_mult + 8) * 4 * 3
    return int(total)


@dataclass
class TrainResult:
    """A trained model plus what the checkpoint records about it."""

    model: object
    history: list[dict]
    metadata: dict
    path: Path | None = None


def stencil_apply(S, u):
    """Apply a batch of five-point operators: ``S`` (B, 5, n, n), ``u`` (B, n, n).

    Zero padding is the Dirichlet boundary; stencil order as in
    :func:`npo.neural.data.stencil_fields`.
    """
    import torch.nn.functional as F

    p = F.pad(u, (1, 1, 1, 1))
    return (S[:, 0] * u + S[:, 1] * p[:, :-2, 1:-1] + S[:, 2] * p[:, 2:, 1:-1]
            + S[:, 3] * p[:, 1:-1, :-2] + S[:, 4] * p[:, 1:-1, 2:])


def _losses(model, batch, bf16: bool = False):
    """(total, cond_sum, n_cond, res_sum, n_res, data_sum) of one batch."""
    import torch

    v, t, S, coef, rhs = batch
    with torch.autocast(v.device.type, dtype=torch.bfloat16, enabled=bf16):
        z = model(v, coef)
    z = z.float()
    op = (stencil_apply(S, z) - v).square().sum(dim=(1, 2))  # v has unit norm
    data = (z - t).square().sum(dim=(1, 2)) / t.square().sum(dim=(1, 2))
    n_res = int(rhs.sum())
    n_cond = len(rhs) - n_res
    cond_sum = op[~rhs].sum()
    res_sum = op[rhs].sum()
    total = data.mean()
    if n_cond:
        total = total + cond_sum / n_cond
    if n_res:
        total = total + res_sum / n_res
    return total, cond_sum, n_cond, res_sum, n_res, data.sum()


class Trainer:
    """The training loop: ``train`` -> ``train_one_epoch`` -> ``train_one_batch``.

    Construction builds the data (one sparse LU per matrix) and the model
    (optionally from ``cfg.init``); :meth:`train` runs the epochs and returns
    a :class:`TrainResult`; :meth:`save` writes the checkpoint. Hooks:
    ``on_epoch(trainer, record)`` after each epoch.
    """

    def __init__(self, cfg: TrainConfig, on_epoch=None):
        cfg.validate()
        import torch

        from npo.neural.model import NAMG

        self.cfg = cfg
        self.on_epoch = on_epoch
        self.torch = torch
        self.dev = torch_device(cfg.device)
        self.t_start = time.perf_counter()
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.plan = matrix_plan(cfg)
        self.grids: list[GridData] = [build_grid_data(specs, seeds, cfg.record_iters)
                                      for specs, seeds in self.plan.values()]
        self.data_s = time.perf_counter() - self.t_start
        self.tensors = [self._to_device(g) for g in self.grids]
        self.model = NAMG(**cfg.model_config())
        self.init_meta = self.init_from_checkpoint(cfg.init) if cfg.init is not None else None
        self.model = self.model.to(self.dev)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.steps_per_epoch = sum(math.ceil(len(g) / cfg.batch_size) for g in self.grids)
        self.step = 0
        self.history: list[dict] = []

    def _to_device(self, g: GridData):
        torch = self.torch

        def t(a, dtype=torch.float32):
            return torch.as_tensor(a, dtype=dtype, device=self.dev)

        return (t(g.inputs), t(g.targets), t(g.stencils), t(g.logcoef),
                torch.as_tensor(g.is_rhs, device=self.dev),
                torch.as_tensor(g.matrix, device=self.dev))

    def init_from_checkpoint(self, name) -> dict:
        """Load ``name``'s weights into the model (same size); returns its metadata.

        A Poisson model may seed a variable-coefficient one: the new
        log-coefficient input starts with zero weight, so training starts
        from the Poisson preconditioner.
        """
        from npo.neural.checkpoint import from_checkpoint

        torch = self.torch
        cfg = self.cfg
        init_model, init_meta = from_checkpoint(name)
        free = ("coef_channel",)
        mine = {k: v for k, v in cfg.model_config().items() if k not in free}
        theirs = {k: v for k, v in init_model.config.items() if k not in free}
        if mine != theirs or (init_model.coef_channel and not self.model.coef_channel):
            raise ValueError(f"--init {name}: model config {init_model.config} does not match "
                             f"{cfg.model_config()}")
        state = init_model.state_dict()
        if self.model.coef_channel and not init_model.coef_channel:
            w = state["lift.weight"]
            state["lift.weight"] = torch.cat([w, torch.zeros(w.shape[0], 1)], dim=1)
        self.model.load_state_dict(state)
        return init_meta

    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        total = cfg.epochs * self.steps_per_epoch
        warm = cfg.warmup * self.steps_per_epoch
        if step < warm:
            return cfg.lr * (step + 1) / warm
        frac = (step - warm) / max(1, total - warm)
        return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * frac))

    def train_one_batch(self, gi: int, idx) -> np.ndarray:
        """One optimiser step on samples ``idx`` of resolution ``gi``; returns loss sums."""
        torch = self.torch
        V, T, S, LC, RHS, MAT = self.tensors[gi]
        ii = torch.as_tensor(idx, device=self.dev)
        mat = MAT[ii]
        batch = (V[ii], T[ii], S[mat], LC[mat] if self.cfg.uses_coef else None, RHS[ii])
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        total, cs, nc, rs, nr, ds = _losses(self.model, batch, self.cfg.precision == "bf16")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        self.step += 1
        return np.array([float(cs.detach()), nc, float(rs.detach()), nr, float(ds.detach()),
                         len(idx)])

    def train_one_epoch(self, epoch: int) -> dict:
        """Every sample once, in shuffled batches (each batch one resolution)."""
        cfg = self.cfg
        order = []
        for gi, g in enumerate(self.grids):
            perm = self.rng.permutation(len(g))
            order += [(gi, perm[i:i + cfg.batch_size]) for i in range(0, len(g), cfg.batch_size)]
        order = [order[i] for i in self.rng.permutation(len(order))]
        sums = np.zeros(6)
        for gi, idx in order:
            sums += self.train_one_batch(gi, idx)
        cond = sums[0] / max(sums[1], 1)
        res = sums[2] / max(sums[3], 1)
        dat = sums[4] / sums[5]
        rec = {"epoch": epoch, "total": cond + res + dat, "condition": cond, "residual": res,
               "data": dat, "lr": self.lr_at(self.step - 1)}
        if not math.isfinite(rec["total"]):
            raise ValueError(f"training diverged at epoch {epoch} (loss {rec['total']})")
        return rec

    def train(self) -> TrainResult:
        cfg = self.cfg
        epochs = range(cfg.epochs)
        bar = None
        if cfg.progress is not False:
            from tqdm import tqdm

            # progress=None: a bar on a terminal only (tqdm's disable=None)
            bar = tqdm(epochs, desc=f"train NPO n={list(cfg.n)}", unit="epoch", file=sys.stderr,
                       disable=None if cfg.progress is None else False)
            epochs = bar
        self.model.train()
        for epoch in epochs:
            rec = self.train_one_epoch(epoch)
            self.history.append(rec)
            if bar is not None:
                bar.set_postfix(loss=f"{rec['total']:.4f}", cond=f"{rec['condition']:.3f}",
                                data=f"{rec['data']:.3f}")
            if self.on_epoch is not None:
                self.on_epoch(self, rec)
        self.model.eval()
        return TrainResult(model=self.model, history=self.history, metadata=self.metadata())

    def metadata(self) -> dict:
        """What the checkpoint records: data, schedule, losses, time, machine, versions."""
        cfg, torch = self.cfg, self.torch
        run_s = time.perf_counter() - self.t_start
        init = self.init_meta
        final = {k: self.history[-1][k] for k in ("total", "condition", "residual", "data")}
        return {
            "fields": list(cfg.fields),
            "n": list(cfg.n),
            "train_s": run_s + (float(init.get("train_s", 0.0)) if init else 0.0),
            "run_s": run_s,
            "data_s": self.data_s,
            "final_loss": final,
            "samples": {str(g.n): len(g) for g in self.grids},
            "matrices": [s.as_dict() for specs, _ in self.plan.values() for s in specs],
            "rhs_seeds": {str(n): [seeds[0][0], seeds[-1][-1]]
                          for n, (_, seeds) in self.plan.items()},
            "train_config": cfg.as_dict(),
            "command": cfg.command(),
            "init": None if init is None else {
                "checkpoint": str(cfg.init), "train_s": init.get("train_s"),
                "command": init.get("command"), "n": init.get("n"),
            },
            "device": cfg.device,
            "threads": torch.get_num_threads(),
            "machine": machine_name(),
            "versions": {"torch": torch.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
            "commit": git_commit(),
            "params": self.model.num_parameters(),
            "history": self.history,
        }

    def save(self, result: TrainResult, path) -> Path:
        from npo.neural.checkpoint import save_checkpoint

        result.path = save_checkpoint(result.model, path, result.metadata)
        return result.path


def train(cfg: TrainConfig, on_epoch=None) -> TrainResult:
    """Build the data, train the model, and (if ``cfg.out``) write the checkpoint.

    The checkpoint is written atomically only after training finished, so
    an interrupted run leaves no file behind.
    """
    cfg.validate()
    with pinned_threads(cfg.threads):
        apply_torch_threads()
        trainer = Trainer(cfg, on_epoch=on_epoch)
        result = trainer.train()
    if cfg.out is not None:
        trainer.save(result, cfg.out)
    return result
