"""The NAMG network: a two-grid V-cycle written as a small transformer.

Li, Xiao, Lai & Wang (arXiv:2502.01337) learn a preconditioner ``M_theta(r) ~
A^{-1} r`` whose information flow mirrors a two-grid cycle. This module is
the reduced, resolution-agnostic version described in report 06, section 2:

1. lift: 1x1 map of ``[r, x, y]`` (plus ``log a`` when ``coef_channel``) to
   ``width`` channels;
2. pre-relaxation ``v + ReLU(conv3x3(v))``, a learned local smoother whose
   hypothesis class contains the 5-point stencil;
3. restriction: ``num_coarse`` learned queries cross-attend to the N fine
   tokens (softmax over N, so the coarse tokens are resolution-consistent
   weighted averages of the fine field);
4. coarse self-attention + FFN, the global "coarse solve" at O(m^2) cost;
5. prolongation: the fine tokens cross-attend to the coarse tokens and the
   result is residual-added (the coarse-grid correction);
6. a fine FFN, post-relaxation ``v + ReLU(conv3x3(v))`` and a 1x1 read-out.

LayerNorms sit inside the residual branches (pre-norm), so the trunk keeps the
residual's amplitude, which the output must reproduce. Positions enter only as
coordinate channels in [0, 1]: there is no positional table, and one set of
weights runs on any n x n grid.

Layout and speed. A batch of fields is ``(B, n, n)`` row-major (flat index
``i*n + j`` with i = x the slow axis, as in :mod:`npo.problems`). Features are
kept channels-last, ``(B, n, n, C)``, for the whole forward pass: the token
view ``(B, N, C)`` is a free reshape, and the NCHW view the convolutions need
is a free permute that is already in torch's ``channels_last`` memory format,
which oneDNN convolves directly. Attention is
:func:`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NAMG", "coordinate_channels"]


def coordinate_channels(n: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Node coordinates ``(x, y)`` of the n x n interior grid, shape ``(n, n, 2)``.

    ``x_i = (i + 1) / (n + 1)`` along the slow (row) axis and ``y_j`` along the
    fast axis, matching the flattening of :mod:`npo.problems`.

    >>> c = coordinate_channels(3)
    >>> c[:, :, 0].tolist()[0], c[0, :, 1].tolist()
    ([0.25, 0.25, 0.25], [0.25, 0.5, 0.75])
    """
    t = torch.arange(1, n + 1, dtype=dtype, device=device) / (n + 1)
    x, y = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([x, y], dim=-1)


class _Attention(nn.Module):
    """Multi-head (cross-)attention on channels-last tokens via SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)  # one GEMM for keys and values
        self.out = nn.Linear(width, width)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor) -> torch.Tensor:
        B, Lq, C = xq.shape
        Lk = xkv.shape[1]
        h = self.heads
        d = C // h
        q = self.q(xq).view(B, Lq, h, d).transpose(1, 2)
        kv = self.kv(xkv).view(B, Lk, 2, h, d)
        k = kv[:, :, 0].transpose(1, 2)
        v = kv[:, :, 1].transpose(1, 2)
        if torch.is_autocast_enabled(q.device.type):
            # bf16 training autocasts the GEMMs and convolutions; the CPU
            # flash-attention backward is far slower in bf16 than in float32
            # (and softmax wants the range), so attention stays float32.
            with torch.autocast(q.device.type, enabled=False):
                o = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        else:
            o = F.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(B, Lq, C))


class _FFN(nn.Module):
    def __init__(self, width: int, mult: int):
        super().__init__()
        self.fc1 = nn.Linear(width, mult * width)
        self.fc2 = nn.Linear(mult * width, width)

    def forward(self, x):
        # in place: addmm's backward needs its inputs, not its output, so the
        # hidden activation can be overwritten (saves a large allocation)
        return self.fc2(F.relu(self.fc1(x), inplace=True))


class _Relax(nn.Module):
    """Residual 3x3 convolution ``v + ReLU(conv(v))`` on channels-last features."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        # (B, n, n, C) -> (B, C, n, n) is a view in channels_last format; zero
        # padding matches the homogeneous Dirichlet boundary.
        y = F.relu(self.conv(v.permute(0, 3, 1, 2)), inplace=True)
        return v + y.permute(0, 2, 3, 1)


class NAMG(nn.Module):
    """Neural-attention two-grid network mapping a residual field to a correction.

    Parameters
    ----------
    width : int
        Feature channels C (default 32).
    num_coarse : int
        Number m of learned coarse queries (default 64).
    heads : int
        Attention heads (default 4); must divide ``width``.
    ffn_mult : int
        Hidden width of the FFNs as a multiple of ``width`` (default 4).
    coef_channel : bool
        Read a log-coefficient channel as fourth input (variable coefficients).

    Examples
    --------
    >>> net = NAMG()
    >>> net.num_parameters()
    50529
    >>> net(torch.zeros(2, 16, 16)).shape
    torch.Size([2, 16, 16])
    """

    def __init__(
        self,
        width: int = 32,
        num_coarse: int = 64,
        heads: int = 4,
        ffn_mult: int = 4,
        coef_channel: bool = False,
    ):
        super().__init__()
        for name, val in (("width", width), ("num_coarse", num_coarse), ("heads", heads),
                          ("ffn_mult", ffn_mult)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"NAMG: {name} must be a positive integer, got {val!r}")
        if width % heads:
            raise ValueError(f"NAMG: width {width} is not divisible by heads {heads}")
        self.config = {
            "width": width,
            "num_coarse": num_coarse,
            "heads": heads,
            "ffn_mult": ffn_mult,
            "coef_channel": bool(coef_channel),
        }
        c_in = 4 if coef_channel else 3
        self.lift = nn.Linear(c_in, width)
        self.pre = _Relax(width)
        # restriction: learned queries, N(0, 1/sqrt(C)) as in the report
        self.queries = nn.Parameter(torch.randn(num_coarse, width) / math.sqrt(width))
        self.norm_rq = nn.LayerNorm(width)
        self.norm_rkv = nn.LayerNorm(width)
        self.restrict = _Attention(width, heads)
        # coarse level
        self.norm_cs = nn.LayerNorm(width)
        self.coarse_attn = _Attention(width, heads)
        self.norm_cf = nn.LayerNorm(width)
        self.coarse_ffn = _FFN(width, ffn_mult)
        # prolongation
        self.norm_pq = nn.LayerNorm(width)
        self.norm_pkv = nn.LayerNorm(width)
        self.prolong = _Attention(width, heads)
        # fine FFN, post-relaxation, read-out
        self.norm_ff = nn.LayerNorm(width)
        self.fine_ffn = _FFN(width, ffn_mult)
        self.post = _Relax(width)
        self.readout = nn.Linear(width, 1)

    @property
    def coef_channel(self) -> bool:
        return self.config["coef_channel"]

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters())

    def features(self, r: torch.Tensor, coef: torch.Tensor | None = None) -> torch.Tensor:
        """Input channels ``(B, n, n, c_in)`` for residual fields ``r`` of shape (B, n, n)."""
        if r.ndim != 3 or r.shape[1] != r.shape[2]:
            raise ValueError(f"NAMG: expected residual fields of shape (B, n, n), got {tuple(r.shape)}")
        B, n, _ = r.shape
        coords = coordinate_channels(n, dtype=r.dtype, device=r.device).expand(B, n, n, 2)
        chans = [r.unsqueeze(-1), coords]
        if self.coef_channel:
            if coef is None:
                raise ValueError("NAMG: this model reads a log-coefficient channel; pass coef")
            chans.append(coef.to(r.dtype).expand(B, n, n).unsqueeze(-1))
        return torch.cat(chans, dim=-1)

    def forward(self, r: torch.Tensor, coef: torch.Tensor | None = None,
                inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Map residual fields ``r`` (B, n, n) to corrections of the same shape.

        ``coef`` is the log-coefficient field, shape (n, n) or (B, n, n), for a
        model built with ``coef_channel=True``. ``inputs`` may carry the full
        ``(B, n, n, c_in)`` input tensor precomputed by :meth:`features` with
        the residual channel to be overwritten; callers that apply the network
        many times on one grid (the preconditioner) use it to skip rebuilding
        the constant channels.
        """
        if inputs is None:
            inputs = self.features(r, coef)
        else:
            inputs[..., 0].copy_(r)
        B, n = inputs.shape[:2]
        N = n * n
        v = self.lift(inputs)  # (B, n, n, C), contiguous channels-last
        v = self.pre(v)
        C = v.shape[-1]
        t = v.view(B, N, C)  # fine tokens, a view
        # restriction: coarse tokens = learned queries + attention-weighted fine averages
        q = self.queries.expand(B, -1, -1)
        c = q + self.restrict(self.norm_rq(q), self.norm_rkv(t))
        h = self.norm_cs(c)
        c = c + self.coarse_attn(h, h)
        c = c + self.coarse_ffn(self.norm_cf(c))
        # prolongation: coarse-grid correction added to the fine features
        t = t + self.prolong(self.norm_pq(t), self.norm_pkv(c))
        t = t + self.fine_ffn(self.norm_ff(t))
        v = self.post(t.view(B, n, n, C))
        return self.readout(v).squeeze(-1)
