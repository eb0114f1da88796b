"""NPO checkpoints: state_dict + constructor config + format version + metadata.

A checkpoint is a plain dict saved by :func:`torch.save` and read back with
``torch.load(..., weights_only=True)``, so it may hold only tensors and
primitive containers (no custom classes, no numpy arrays)::

    {"format": "npo-bench/namg", "format_version": 1,
     "config": {width, num_coarse, heads, ffn_mult, coef_channel},

(the seed's network, :class:`npo.neural.model.NAMG`) or, for the multilevel
NPO (:class:`npo.neural.mg.MGNPO`), ``"format": "npo-bench/mgnpo"`` with
``"config": {width, omega, coarsest}``; the rest is the same:
     "state_dict": {name: tensor},
     "metadata": {training config, data seeds, train_s, final losses,
                  versions, device, git commit, command, history}}

Every shipped ``<name>.pt`` has a JSON sidecar ``<name>.json`` with the same
metadata, which :mod:`npo.neural` reads without importing torch.

Loading validates everything it can and raises a ValueError that names the
file and the problem: unreadable or truncated bytes, a foreign format, a
different format version, a bad config, state_dict keys or shapes that do not
match the config, or non-finite weights. Writes go to a temporary file that
is moved into place, so a failure never leaves a partial checkpoint.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from npo.fileio import atomic_path, write_text
from npo.neural import WEIGHTS_DIR, resolve_checkpoint
from npo.neural.config import LIMITS
from npo.neural.model import NAMG

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MG_FORMAT",
    "from_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "WEIGHTS_DIR",
]

FORMAT = "npo-bench/namg"
MG_FORMAT = "npo-bench/mgnpo"
FORMAT_VERSION = 1
_CONFIG_KEYS = {"width", "num_coarse", "heads", "ffn_mult", "coef_channel"}


def _check_namg_config(config) -> str | None:
    for key, limit in LIMITS.items():
        v = config[key]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit:
            return f"model config {key} = {v!r} is outside [1, {limit}]"
    if not isinstance(config["coef_channel"], bool):
        return "model config coef_channel must be true or false"
    return None


def _check_mg_config(config) -> str | None:
    w, c, om = config["width"], config["coarsest"], config["omega"]
    for key, v, lo, hi in (("width", w, 1, 512), ("coarsest", c, 2, 64)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            return f"model config {key} = {v!r} is outside [{lo}, {hi}]"
    if isinstance(om, bool) or not isinstance(om, int | float) or not 0 < om < 2:
        return f"model config omega = {om!r} is outside (0, 2)"
    return None


def _mg_model(**config):
    from npo.neural.mg import MGNPO

    return MGNPO(**config)


#: format -> (config keys, config check, model constructor)
_FORMATS = {
    FORMAT: (_CONFIG_KEYS, _check_namg_config, lambda **c: NAMG(**c)),
    MG_FORMAT: ({"width", "omega", "coarsest"}, _check_mg_config, _mg_model),
}


def _plain(obj):
    """numpy scalars -> Python scalars (json.dumps rejects numpy ints)."""
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", None) == 0:
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not a JSON primitive")


def _check_json(obj, where="metadata"):
    """Metadata must survive both weights_only unpickling and JSON: plain types only."""
    if obj is None or type(obj) in (bool, int, float, str):
        return
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_json(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: key {k!r} is not a string")
            _check_json(v, f"{where}.{k}")
        return
    raise ValueError(f"{where}: {type(obj).__name__} is not a JSON primitive")


def save_checkpoint(model: NAMG, path, metadata: dict | None = None, *, sidecar: bool = True) -> Path:
    """Write ``model`` (+ ``metadata``) to ``path`` atomically, and a JSON sidecar.

    Parameters
    ----------
    model : NAMG
    path : str or Path
        Destination ``.pt`` file; the sidecar is ``path.with_suffix(".json")``.
    metadata : dict, optional
        JSON-compatible training metadata (lists, dicts, numbers, strings).
    sidecar : bool
        Also write the JSON sidecar (default True).
    """
    path = Path(path)
    # a JSON round trip turns tuples into lists and numpy scalars into Python
    # ones, which weights_only unpickling would otherwise reject
    try:
        metadata = json.loads(json.dumps(dict(metadata or {}), default=_plain))
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint metadata is not JSON-compatible: {e}") from None
    _check_json(metadata)
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    fmt = getattr(model, "checkpoint_format", FORMAT)
    ckpt = {
        "format": fmt,
        "format_version": FORMAT_VERSION,
        "config": dict(model.config),
        "state_dict": state,
        "metadata": metadata,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    if sidecar:
        side = {
            "name": path.stem,
            "format": fmt,
            "format_version": FORMAT_VERSION,
            "config": dict(model.config),
            "params": int(sum(v.numel() for v in state.values())),
            "bytes": path.stat().st_size,
            **metadata,
        }
        write_text(path.with_suffix(".json"), json.dumps(side, indent=1) + "\n")
    return path


def _unpickler_reason(msg: str) -> str:
    """The informative part of torch's weights_only error (whole, on one line)."""
    flat = " ".join(msg.split())
    if "WeightsUnpickler error:" in flat:
        flat = flat.split("WeightsUnpickler error:", 1)[1]
        flat = flat.split(" Check the documentation of torch.load", 1)[0]
    return flat.strip()


def load_checkpoint(path_or_name, map_location="cpu", expect: str | None = None) -> dict:
    """Read and validate a checkpoint; return its dict (see the module docstring).

    ``path_or_name`` is a file path or the name of a shipped model; ``expect``
    a format the caller needs (default: the seed's network; None accepts any).
    """
    path = resolve_checkpoint(path_or_name)
    where = str(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(str(e))
        # torch words it two ways: "Unsupported global: GLOBAL x was not an allowed global"
        # and "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
        if "unsupported global" in reason.lower():
            raise ValueError(
                f"{where}: refused: the file holds objects that safe loading does not allow "
                f"(possibly not a checkpoint, possibly malicious); torch: {reason}"
            ) from None
        raise ValueError(f"{where}: not a readable NPO checkpoint (corrupt or truncated file: "
                         f"{reason})") from None
    except Exception as e:  # noqa: BLE001 - torch raises several types for bad bytes
        raise ValueError(
            f"{where}: not a readable NPO checkpoint (corrupt or truncated file: "
            f"{type(e).__name__}: {' '.join(str(e).split())})"
        ) from None
    got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
    wanted = [expect] if expect is not None else list(_FORMATS)
    if not isinstance(ckpt, dict) or got not in wanted:
        raise ValueError(f"{where}: not an NPO checkpoint of the right kind (format {got!r}, "
                         f"expected {' or '.join(map(repr, wanted))})")
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{where}: checkpoint format version {version!r} is not supported "
            f"(this code reads version {FORMAT_VERSION})"
        )
    for key, typ in (("config", dict), ("state_dict", dict), ("metadata", dict)):
        if not isinstance(ckpt.get(key), typ):
            raise ValueError(f"{where}: checkpoint has no valid {key!r} entry")
    config = ckpt["config"]
    keys, check, _ = _FORMATS[got]
    if set(config) != keys:
        raise ValueError(
            f"{where}: model config keys {sorted(config)} do not match the expected "
            f"{sorted(keys)}"
        )
    # bound the sizes before anything is allocated from them
    bad = check(config)
    if bad:
        raise ValueError(f"{where}: {bad}")
    return ckpt


def from_checkpoint(path_or_name, map_location="cpu", expect: str | None = FORMAT):
    """Rebuild the model of a checkpoint; returns ``(model in eval mode, metadata)``.

    ``expect`` is the format the caller needs (default: the seed's NAMG;
    :data:`MG_FORMAT` for the multilevel NPO; None: either). Raises ValueError
    when the state_dict does not match the stored config (missing or
    unexpected keys, wrong shapes) or holds non-finite values.
    """
    ckpt = load_checkpoint(path_or_name, map_location=map_location, expect=expect)
    where = str(resolve_checkpoint(path_or_name))
    try:
        model = _FORMATS[ckpt["format"]][2](**ckpt["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: invalid model config {ckpt['config']}: {e}") from None
    expected = model.state_dict()
    state = ckpt["state_dict"]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{where}: state_dict does not match the model config: "
            f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{where}: state_dict entry {k!r} is not a tensor")
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(
                f"{where}: state_dict entry {k!r} has shape {tuple(v.shape)}, "
                f"the config needs {tuple(expected[k].shape)}"
            )
        if not torch.isfinite(v).all():
            raise ValueError(f"{where}: state_dict entry {k!r} contains NaN or Inf")
    model.load_state_dict(state)
    model.eval()
    return model, ckpt["metadata"]
