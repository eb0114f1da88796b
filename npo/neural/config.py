"""Configuration of an NPO training run: every option, validated before any work.

:class:`TrainConfig` is what ``npo-bench train`` parses its options into
(the argparse lives in :mod:`npo.cli`) and what a checkpoint records; its
:meth:`~TrainConfig.command` reproduces the run.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import asdict, dataclass, field, fields

from npo.problems import FIELDS

__all__ = ["LIMITS", "TrainConfig", "WARMUP_FRACTION"]

#: default warm-up as a fraction of the epochs (10 of 400 for the shipped model)
WARMUP_FRACTION = 0.025
#: upper bounds on the model size, checked before anything is allocated
LIMITS = {"width": 1024, "num_coarse": 4096, "heads": 64, "ffn_mult": 16}


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
        Adam; linear warm-up over ``warmup`` epochs to ``lr``, cosine to
        ``lr_min``. ``warmup=None`` scales with the run: 2.5% of the epochs
        (10 of 400), never more than ``epochs - 1``.
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
    progress : bool or None
        Show a tqdm progress bar: True always, False never, None (default)
        on a terminal only.
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
    warmup: int | None = None
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
    progress: bool | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.warmup is None and isinstance(self.epochs, int) and self.epochs >= 1:
            self.warmup = min(self.epochs - 1, round(WARMUP_FRACTION * self.epochs))
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
        for name, limit in LIMITS.items():
            if getattr(self, name) > limit:
                raise ValueError(f"{name}: {getattr(self, name)} exceeds the limit {limit}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if not (isinstance(self.warmup, int) and 0 <= self.warmup < self.epochs):
            raise ValueError(f"warmup must be in [0, epochs) = [0, {self.epochs}), "
                             f"got {self.warmup}")
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
        parts = ["npo-bench", "train"]
        for f in fields(TrainConfig):
            v = getattr(self, f.name)
            if f.name == "progress" or v is None:
                continue
            if v == getattr(default, f.name) and f.name not in ("n", "epochs", "threads", "warmup"):
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
