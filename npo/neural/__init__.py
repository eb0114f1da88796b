"""The Neural Preconditioning Operator: model, data, training, checkpoints.

Importing this package does not import torch: the catalogue and the reports
read the shipped models' metadata from their JSON sidecars with
:func:`shipped_models`. The torch-backed pieces (:class:`NAMG`,
:func:`from_checkpoint`) are loaded on first access. The trainer is
``npo.neural.train.train``: ``npo.neural.train`` is always the module, never a
lazily bound function of the same name, so it means one thing whether or not
the module has been imported.

Four rooms, as in neuraloperator: :mod:`npo.neural.model` (the NAMG network),
:mod:`npo.neural.data` (operators, CG residuals, exact targets),
:mod:`npo.neural.config` and :mod:`npo.neural.train` (options; the trainer)
and :mod:`npo.neural.checkpoint` (format, validation). :mod:`npo.neural.flops`
counts FLOPs. The evaluation figures are the ``npo`` suite
(``npo-bench run --suite npo``) and the asv benchmark ``bench_neural``. This
package imports neither the preconditioner adapters nor the protocol.

>>> sorted(shipped_models())
['mg', 'poisson', 'poisson32', 'varcoef']
>>> shipped_models()["varcoef"]["train_s"] > 0
True
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

__all__ = [
    "NAMG",
    "WEIGHTS_DIR",
    "from_checkpoint",
    "resolve_checkpoint",
    "shipped_models",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

_LAZY = {
    "NAMG": ("npo.neural.model", "NAMG"),
    "from_checkpoint": ("npo.neural.checkpoint", "from_checkpoint"),
}


def __getattr__(name):
    # torch is imported only when a torch-backed name is first used
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'npo.neural' has no attribute {name!r}")


def shipped_models() -> dict[str, dict]:
    """Metadata of every shipped model, by name, read from the JSON sidecars (no torch).

    Each value holds at least ``config``, ``fields``, ``n`` (trained grid
    sizes), ``train_s`` (wall-clock training seconds), ``command`` (the
    reproducing command) and ``history`` (per-epoch losses).
    """
    out = {}
    for side in sorted(WEIGHTS_DIR.glob("*.json")):
        if not side.with_suffix(".pt").exists():
            continue
        with open(side) as f:
            out[side.stem] = json.load(f)
    return out


def resolve_checkpoint(name_or_path) -> Path:
    """Path of a shipped model name (``"poisson"``) or of an existing file.

    >>> resolve_checkpoint("poisson").name
    'poisson.pt'
    >>> resolve_checkpoint("nope")
    Traceback (most recent call last):
    ...
    ValueError: no NPO checkpoint 'nope': not a shipped model (expected one of ['mg', 'poisson', 'poisson32', 'varcoef']) and no such file
    """
    if isinstance(name_or_path, str) and name_or_path and "/" not in name_or_path \
            and not name_or_path.endswith(".pt"):
        shipped = WEIGHTS_DIR / f"{name_or_path}.pt"
        if shipped.exists():
            return shipped
    path = Path(name_or_path)
    if path.is_file():
        return path
    names = sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))
    raise ValueError(
        f"no NPO checkpoint {str(name_or_path)!r}: not a shipped model "
        f"(expected one of {names}) and no such file"
    )
