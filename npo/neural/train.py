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

Shipped models (``npo/neural/weights``) and the exact commands that made them,
run in this order from the repository root (``npo-bench train ...`` takes the
same options)::

    # "poisson32": the canonical 32x32 Poisson model (report 06): 400 epochs,
    # batch 32, warm-up 10 epochs to 2e-3, cosine to 5e-5 (asserted <= 32 FCG
    # iterations on the canonical problem)
    python -m npo.neural.train --n 32 --epochs 400 --threads 2 --precision bf16 \
        --out npo/neural/weights/poisson32.pt
    # "varcoef": jump + lognormal fields, contrast log-uniform in [1, 1e3],
    # 12 fields per family (field seeds 1000..1011), started from poisson32
    python -m npo.neural.train --n 32 --field jump lognormal --contrast 1 1000 \
        --num-coef 12 --num-rhs 6 --record-iters 1 2 4 8 16 32 64 128 256 \
        --epochs 80 --lr 0.001 --warmup 3 --threads 2 --precision bf16 \
        --init poisson32 --out npo/neural/weights/varcoef.pt
    # "poisson" (the default): multi-resolution (n = 32, 64, 128) fine-tune of
    # poisson32
    python -m npo.neural.train --n 32 64 128 --num-rhs 40 20 16 --epochs 60 \
        --lr 0.001 --warmup 3 --threads 2 --precision bf16 --init poisson32 \
        --out npo/neural/weights/poisson.pt

Each sidecar JSON records its exact command (field ``command``), its
wall-clock training time (``train_s``, cumulative: a model started with
``--init`` includes its parent's time; ``run_s`` is its own run) and its loss
history. ``--precision bf16`` autocasts GEMMs and convolutions to bfloat16
while training (~1.4x faster on AMX CPUs); the shipped networks are float32.
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from npo.env import apply_torch_threads, git_commit, pinned_threads, torch_device
from npo.neural.data import GridData, MatrixSpec, build_grid_data
from npo.problems import FIELDS

__all__ = ["TrainConfig", "TrainResult", "add_train_parser", "main", "stencil_apply", "train"]


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    Parameters
    ----------
    n : tuple of int
        Grid sizes; several give multi-resolution training (each resolution
        keeps its own samples and batches).
    fields : tuple of str
        Coefficient families (see :data:`npo.problems.FIELDS`). ``constant``
        is the Poisson matrix.
    contrast : (float, float)
        Log-uniform range of the contrast of non-constant fields.
    num_coef : int
        Random coefficient matrices per non-constant family and resolution
        (field seeds ``coef_seed + j``, contrasts drawn from ``seed``).
    coef_seed : int
        First coefficient-field seed (1000, so the benchmark fields, seed 0,
        stay held out).
    num_rhs : tuple of int
        GRF right-hand sides per matrix, one value per entry of ``n`` (or one
        value for all). Seeds are ``rhs_seed, rhs_seed + 1, ...``, distinct
        across matrices.
    rhs_seed : int
        First GRF seed (100; the evaluation seed 42 stays held out).
    record_iters : tuple of int
        Plain-CG iterations whose residuals become samples.
    epochs, batch_size, lr, lr_min, warmup : training schedule
        Adam; linear warm-up over ``warmup`` epochs to ``lr``, cosine to ``lr_min``.
    seed : int
        torch and numpy seed (initialisation, contrasts, shuffling).
    width, num_coarse, heads, ffn_mult : model size (see :class:`NAMG`)
    coef_channel : bool or None
        Log-coefficient input channel; None means "on iff a non-constant field".
    threads : int
        torch/BLAS threads (pinned for the whole run).
    device : str
        ``cpu`` or ``cuda[:k]``.
    precision : str
        ``fp32``, or ``bf16``: autocast the GEMMs and convolutions to bfloat16
        during training (attention, losses and the optimiser stay float32).
        On CPUs with AMX this is ~1.4x faster; the shipped network is float32
        either way.
    init : str or None
        Start from this checkpoint's weights (shipped name or path; same model
        size) instead of a random initialisation. Its training time is added
        to ``train_s`` (the time to produce the model from scratch).
    out : str or None
        Checkpoint path (``.pt``); the JSON sidecar goes next to it.
    progress : bool
        Show a tqdm progress bar.
    """

    n: tuple[int, ...] = (32,)
    fields: tuple[str, ...] = ("constant",)
    contrast: tuple[float, float] = (1.0, 1.0)
    num_coef: int = 1
    coef_seed: int = 1000
    num_rhs: tuple[int, ...] = (40,)
    rhs_seed: int = 100
    record_iters: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    epochs: int = 400
    batch_size: int = 32
    lr: float = 2e-3
    lr_min: float = 5e-5
    warmup: int = 10
    seed: int = 0
    width: int = 32
    num_coarse: int = 64
    heads: int = 4
    ffn_mult: int = 4
    coef_channel: bool | None = None
    threads: int = 1
    device: str = "cpu"
    precision: str = "fp32"
    init: str | None = None
    out: str | None = None
    progress: bool = field(default=True, compare=False)

    def __post_init__(self):
        self.n = tuple(int(k) for k in _as_tuple(self.n))
        self.fields = tuple(str(f) for f in _as_tuple(self.fields))
        self.num_rhs = tuple(int(k) for k in _as_tuple(self.num_rhs))
        self.record_iters = tuple(int(k) for k in _as_tuple(self.record_iters))
        self.contrast = tuple(float(c) for c in _as_tuple(self.contrast))
        self.validate()

    def validate(self) -> None:
        """Raise a one-line ValueError for any bad option (before any work is done)."""
        if not self.n or any(k < 4 for k in self.n):
            raise ValueError(f"--n: grid sizes must be integers >= 4, got {list(self.n)}")
        if len(set(self.n)) != len(self.n):
            raise ValueError(f"--n: repeated grid size in {list(self.n)}")
        bad = [f for f in self.fields if f not in FIELDS]
        if bad or not self.fields:
            raise ValueError(f"--field: unknown field(s) {bad}; expected one of {sorted(FIELDS)}")
        if len(set(self.fields)) != len(self.fields):
            raise ValueError(f"--field: repeated field in {list(self.fields)}")
        if len(self.contrast) != 2 or not all(math.isfinite(c) for c in self.contrast) \
                or not 1.0 <= self.contrast[0] <= self.contrast[1]:
            raise ValueError(f"--contrast: need LO HI with 1 <= LO <= HI, got {list(self.contrast)}")
        if len(self.num_rhs) not in (1, len(self.n)) or any(k < 1 for k in self.num_rhs):
            raise ValueError(
                f"--num-rhs: need one positive count or one per grid size {list(self.n)}, "
                f"got {list(self.num_rhs)}"
            )
        if not self.record_iters or any(k < 1 for k in self.record_iters):
            raise ValueError(f"--record-iters: need positive iterations, got {list(self.record_iters)}")
        for name in ("num_coef", "epochs", "batch_size", "width", "num_coarse", "heads",
                     "ffn_mult", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: must be a positive integer, got {v!r}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if not (self.warmup >= 0 and self.warmup < self.epochs):
            raise ValueError(f"warmup must be in [0, epochs), got {self.warmup}")
        if not (0 < self.lr_min <= self.lr and math.isfinite(self.lr)):
            raise ValueError(f"need 0 < lr_min <= lr, got lr={self.lr}, lr_min={self.lr_min}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"--device must be 'cpu' or 'cuda[:k]', got {self.device!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"--precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.init is not None:
            from npo.neural import resolve_checkpoint

            resolve_checkpoint(self.init)  # unknown name or missing file: fail before any work
        if self.out is not None and not str(self.out).endswith(".pt"):
            raise ValueError(f"--out must name a .pt file, got {self.out!r}")

    @property
    def uses_coef(self) -> bool:
        if self.coef_channel is None:
            return any(f != "constant" for f in self.fields)
        return bool(self.coef_channel)

    def model_config(self) -> dict:
        return {"width": self.width, "num_coarse": self.num_coarse, "heads": self.heads,
                "ffn_mult": self.ffn_mult, "coef_channel": self.uses_coef}

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("progress")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def command(self) -> str:
        """The command line that reproduces this configuration."""
        default = TrainConfig(progress=False)
        parts = ["python", "-m", "npo.neural.train"]
        for f in fields(TrainConfig):
            v = getattr(self, f.name)
            if f.name == "progress" or v is None:
                continue
            if v == getattr(default, f.name) and f.name not in ("n", "epochs", "threads"):
                continue
            opt = "--field" if f.name == "fields" else "--" + f.name.replace("_", "-")
            if isinstance(v, bool):
                parts.append(opt if v else "--no-" + opt[2:])
            elif isinstance(v, tuple):
                parts += [opt, *(_fmt_num(x) for x in v)]
            else:
                parts += [opt, _fmt_num(v)]
        return shlex.join(parts)


def _fmt_num(x) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _as_tuple(v):
    if isinstance(v, str) or not hasattr(v, "__iter__"):
        return (v,)
    return tuple(v)


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


def train(cfg: TrainConfig) -> TrainResult:
    """Build the data, train the model, and (if ``cfg.out``) write the checkpoint.

    Returns a :class:`TrainResult`; the checkpoint is written atomically only
    after training finished, so an interrupted run leaves no file behind.
    """
    cfg.validate()
    import torch

    from npo.neural.model import NAMG

    dev = torch_device(cfg.device)
    with pinned_threads(cfg.threads):
        apply_torch_threads()
        t_start = time.perf_counter()
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)

        plan = matrix_plan(cfg)
        grids: list[GridData] = [build_grid_data(specs, seeds, cfg.record_iters)
                                 for specs, seeds in plan.values()]
        data_s = time.perf_counter() - t_start

        def to_t(a, dtype=torch.float32):
            return torch.as_tensor(a, dtype=dtype, device=dev)

        tensors = [
            (to_t(g.inputs), to_t(g.targets), to_t(g.stencils), to_t(g.logcoef),
             torch.as_tensor(g.is_rhs, device=dev), torch.as_tensor(g.matrix, device=dev))
            for g in grids
        ]
        model = NAMG(**cfg.model_config())
        init_meta = None
        if cfg.init is not None:
            from npo.neural.checkpoint import from_checkpoint

            init_model, init_meta = from_checkpoint(cfg.init)
            free = ("coef_channel",)
            mine = {k: v for k, v in cfg.model_config().items() if k not in free}
            theirs = {k: v for k, v in init_model.config.items() if k not in free}
            if mine != theirs or (init_model.coef_channel and not model.coef_channel):
                raise ValueError(f"--init {cfg.init}: model config {init_model.config} does "
                                 f"not match {cfg.model_config()}")
            state = init_model.state_dict()
            if model.coef_channel and not init_model.coef_channel:
                # a Poisson model seeds a variable-coefficient one: the new
                # log-coefficient input starts with zero weight, so training
                # starts from the Poisson preconditioner
                w = state["lift.weight"]
                state["lift.weight"] = torch.cat([w, torch.zeros(w.shape[0], 1)], dim=1)
            model.load_state_dict(state)
        model = model.to(dev)
        use_coef = cfg.uses_coef
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        steps_per_epoch = sum(math.ceil(len(g) / cfg.batch_size) for g in grids)
        total_steps = cfg.epochs * steps_per_epoch
        warm_steps = cfg.warmup * steps_per_epoch

        def lr_at(step: int) -> float:
            if step < warm_steps:
                return cfg.lr * (step + 1) / warm_steps
            frac = (step - warm_steps) / max(1, total_steps - warm_steps)
            return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * frac))

        history = []
        step = 0
        bar = range(cfg.epochs)
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(bar, desc=f"train NPO n={list(cfg.n)}", unit="epoch", file=sys.stderr)
        model.train()
        for epoch in bar:
            order = []
            for gi, g in enumerate(grids):
                perm = rng.permutation(len(g))
                order += [(gi, perm[i:i + cfg.batch_size]) for i in range(0, len(g), cfg.batch_size)]
            order = [order[i] for i in rng.permutation(len(order))]
            sums = np.zeros(6)
            for gi, idx in order:
                V, T, S, LC, RHS, MAT = tensors[gi]
                ii = torch.as_tensor(idx, device=dev)
                mat = MAT[ii]
                batch = (V[ii], T[ii], S[mat], LC[mat] if use_coef else None, RHS[ii])
                for group in opt.param_groups:
                    group["lr"] = lr_at(step)
                total, cs, nc, rs, nr, ds = _losses(model, batch, cfg.precision == "bf16")
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                step += 1
                sums += [float(cs.detach()), nc, float(rs.detach()), nr, float(ds.detach()), len(idx)]
            cond = sums[0] / max(sums[1], 1)
            res = sums[2] / max(sums[3], 1)
            dat = sums[4] / sums[5]
            rec = {"epoch": epoch, "total": cond + res + dat, "condition": cond,
                   "residual": res, "data": dat, "lr": lr_at(step - 1)}
            history.append(rec)
            if cfg.progress:
                bar.set_postfix(loss=f"{rec['total']:.4f}", cond=f"{cond:.3f}", data=f"{dat:.3f}")
            if not math.isfinite(rec["total"]):
                raise ValueError(f"training diverged at epoch {epoch} (loss {rec['total']})")
        model.eval()
        run_s = time.perf_counter() - t_start
        train_s = run_s + (float(init_meta.get("train_s", 0.0)) if init_meta else 0.0)
        threads = torch.get_num_threads()

    final = {k: history[-1][k] for k in ("total", "condition", "residual", "data")}
    metadata = {
        "fields": list(cfg.fields),
        "n": list(cfg.n),
        "train_s": train_s,
        "run_s": run_s,
        "data_s": data_s,
        "final_loss": final,
        "samples": {str(g.n): len(g) for g in grids},
        "matrices": [s.as_dict() for specs, _ in plan.values() for s in specs],
        "rhs_seeds": {str(n): [seeds[0][0], seeds[-1][-1]] for n, (_, seeds) in plan.items()},
        "train_config": cfg.as_dict(),
        "command": cfg.command(),
        "init": None if init_meta is None else {
            "checkpoint": str(cfg.init), "train_s": init_meta.get("train_s"),
            "command": init_meta.get("command"), "n": init_meta.get("n"),
        },
        "device": cfg.device,
        "threads": threads,
        "machine": platform.node(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "commit": git_commit(),
        "params": model.num_parameters(),
        "history": history,
    }
    result = TrainResult(model=model, history=history, metadata=metadata)
    if cfg.out is not None:
        from npo.neural.checkpoint import save_checkpoint

        result.path = save_checkpoint(model, cfg.out, metadata)
    return result


# --- command line --------------------------------------------------------------


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to an argparse ``subparsers`` object.

    Sets ``func`` so that ``args.func(args)`` runs the training and returns an
    exit code; bad options raise a one-line ValueError before any work.
    """
    d = TrainConfig.__dataclass_fields__
    p = subparsers.add_parser(
        "train",
        help="train an NPO model and write a checkpoint + JSON sidecar",
        description="Train the Neural Preconditioning Operator (report 06, section 4).",
    )
    p.add_argument("--n", type=int, nargs="+", default=list(d["n"].default),
                   help="grid size(s); several give multi-resolution training (default 32)")
    p.add_argument("--field", dest="fields", nargs="+", default=list(d["fields"].default),
                   help=f"coefficient field famil(ies), from {sorted(FIELDS)} (default constant)")
    p.add_argument("--contrast", type=float, nargs=2, default=list(d["contrast"].default),
                   metavar=("LO", "HI"), help="log-uniform contrast range of non-constant fields")
    p.add_argument("--num-coef", type=int, default=d["num_coef"].default,
                   help="random coefficient matrices per non-constant field and grid size")
    p.add_argument("--coef-seed", type=int, default=d["coef_seed"].default,
                   help="first coefficient-field seed (default 1000; benchmarks use 0)")
    p.add_argument("--num-rhs", type=int, nargs="+", default=list(d["num_rhs"].default),
                   help="GRF right-hand sides per matrix (one value, or one per --n)")
    p.add_argument("--rhs-seed", type=int, default=d["rhs_seed"].default)
    p.add_argument("--record-iters", type=int, nargs="+", default=list(d["record_iters"].default))
    p.add_argument("--epochs", type=int, default=d["epochs"].default)
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default)
    p.add_argument("--lr", type=float, default=d["lr"].default)
    p.add_argument("--lr-min", type=float, default=d["lr_min"].default)
    p.add_argument("--warmup", type=int, default=d["warmup"].default, help="warm-up epochs")
    p.add_argument("--seed", type=int, default=d["seed"].default)
    p.add_argument("--width", type=int, default=d["width"].default)
    p.add_argument("--num-coarse", type=int, default=d["num_coarse"].default)
    p.add_argument("--heads", type=int, default=d["heads"].default)
    p.add_argument("--ffn-mult", type=int, default=d["ffn_mult"].default)
    p.add_argument("--coef-channel", action=argparse.BooleanOptionalAction, default=None,
                   help="log-coefficient input channel (default: on iff a non-constant field)")
    p.add_argument("--threads", type=int, default=d["threads"].default)
    p.add_argument("--device", default=d["device"].default, help="cpu or cuda[:k]")
    p.add_argument("--precision", default=d["precision"].default, choices=None,
                   help="fp32 (default) or bf16 (autocast GEMMs/convolutions while training)")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint's weights (shipped name or .pt path)")
    p.add_argument("--out", required=True, help="checkpoint path (.pt); a .json sidecar is written next to it")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run_train)
    return p


def config_from_args(args) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def run_train(args) -> int:
    """``args.func`` of the ``train`` sub-command: train, save, print a summary."""
    cfg = config_from_args(args)
    res = train(cfg)
    m = res.metadata
    print(f"wrote {res.path} ({m['params']} params, n={m['n']}, fields={m['fields']}): "
          f"train_s={m['train_s']:.1f}, final loss {m['final_loss']['total']:.4f}")
    return 0


def main(argv=None) -> int:
    """``python -m npo.neural.train ...``: the same options as ``npo-bench train``."""
    parser = argparse.ArgumentParser(prog="python -m npo.neural.train")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["train", *argv])
    try:
        return args.func(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
