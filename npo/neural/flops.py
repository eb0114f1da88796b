"""FLOPs and achieved throughput of one NPO apply.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode`
over one forward pass of the network. It counts matrix products and
convolutions only (``addmm``, ``mm``, ``bmm``, ``convolution``, and attention
as 4 * B * heads * Lq * Lk * d for the two products QK^T and PV). On the CPU
torch dispatches attention to ``_scaled_dot_product_flash_attention_for_cpu``,
which FlopCounterMode does not know, so we register the standard SDPA formula
for it. NOT counted: elementwise and reduction work (LayerNorm, softmax's
exp/sum, ReLU, residual adds, bias adds outside addmm), copies, and the
wrapper's float64 normalisation. These are memory-bound and are part of the
measured time, so "achieved FLOP/s" understates the arithmetic done.

Achieved FLOP/s of an apply is compared with float32 ``torch.mm`` of two
1024x1024 matrices measured in the same process with the same thread count:
the fraction says how close the small-channel network gets to the machine's
dense-GEMM rate, and unlike seconds it compares across machines.

>>> from npo.neural.model import NAMG
>>> c = count_flops(NAMG(), 32)
>>> c["total"] == sum(c["by_op"].values()) and c["by_op"]["attention"] > 0
True
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = ["count_flops", "median_time", "mm_throughput"]

_aten = torch.ops.aten
# FlopCounterMode knows the CUDA flash/efficient kernels; give the CPU one the same formula
_CUSTOM = {
    _aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
}
_ATTENTION = {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"}


def count_flops(model, n: int, *, inputs=None, batch: int = 1) -> dict:
    """FLOPs of one forward pass on an n x n grid: ``{"total", "by_op"}``.

    ``by_op`` groups the counts as ``linear`` (addmm/mm), ``conv`` and
    ``attention``.
    """
    dev = next(model.parameters()).device
    r = torch.zeros(batch, n, n, device=dev)
    coef = torch.zeros(n, n, device=dev) if model.coef_channel else None
    if inputs is not None and inputs.shape[0] != batch:
        inputs = None
    # requires_grad off: FlopCounterMode's module tracker hooks autograd and
    # fails on parameter views created under no_grad
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CUSTOM) as fc:
            model(r, coef, inputs=inputs)
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
    by_op = {"linear": 0, "conv": 0, "attention": 0, "other": 0}
    for op, cnt in fc.get_flop_counts()["Global"].items():
        name = str(op).split(".")[-1]
        if name in ("addmm", "mm", "bmm", "baddbmm"):
            by_op["linear"] += int(cnt)
        elif name == "convolution":
            by_op["conv"] += int(cnt)
        elif name in _ATTENTION:
            by_op["attention"] += int(cnt)
        else:
            by_op["other"] += int(cnt)
    if not by_op["other"]:
        del by_op["other"]
    return {"total": int(fc.get_total_flops()), "by_op": by_op}


def median_time(fn, repeats: int, min_time: float = 0.05) -> float:
    """Median seconds per call (batches of >= ``min_time``) after two warm-up calls."""
    from npo.timing import median_per_call

    fn()  # warm-up: lazy initialisation, allocator, cuDNN's algorithm choice
    fn()
    return median_per_call(fn, repeats, min_time)


def mm_throughput(size: int = 1024, repeats: int = 5, device: str = "cpu") -> float:
    """float32 ``torch.mm`` FLOP/s for ``size x size`` matrices on ``device``.

    On the CPU this uses the current thread setting. On a GPU each product
    is synchronised before the clock stops, as ``NPO.apply`` is (it copies
    its result back to the host), so both rates are wall-clock rates.
    torch's defaults apply (float32 matmuls do not use TF32 unless
    ``torch.backends.cuda.matmul.allow_tf32`` is set).
    """
    from npo.devices import torch_device

    dev = torch_device(device)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(dev)
    b = torch.randn(size, size, generator=g).to(dev)
    out = torch.empty(size, size, device=dev)
    if dev.type == "cuda":

        def fn():
            torch.mm(a, b, out=out)
            torch.cuda.synchronize(dev)
    else:

        def fn():
            torch.mm(a, b, out=out)

    dt = median_time(fn, repeats)
    return 2.0 * size**3 / dt
