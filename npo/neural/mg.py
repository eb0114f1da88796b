"""The multilevel NPO: a learned multigrid operator whose hierarchy grows with the grid.

The seed's NPO (:mod:`npo.neural.model`) restricts with 64 learned queries
attending over every fine token, so its coarse space has a fixed size and its
iterations grow like n. Here the restriction is *local*, as in the paper's
learned multigrid operator: the hierarchy is the geometric one of
:mod:`npo.gridmg` (2:1 coarsening to a 16 x 16 grid solved exactly,
``R = P^T``, Galerkin coarse operators), so its depth grows with n, and the
network supplies two local, operator-dependent components at every level:

* **the smoother** ``B = D^{-1/2} K D^{-1/2}``: a 3x3 kernel per node (the
  pre-smoother; the post-smoother is ``B^T``, so the V-cycle is symmetric);
* **the prolongation's weights**, in the style of Greenfeld et al. (ICML
  2019): each fine node splits the bilinear weight mass of its coarse
  neighbours (one, two or four) by a softmax over scores, one per neighbour.
  With zero scores it is bilinear interpolation; operator-dependent scores
  let it follow high-contrast inclusions that bilinear interpolation cuts
  through.

Both read only the operator, normalised so that h never enters: per node the
row of A divided by its diagonal, on the node and its four edge neighbours
(the "patch" features, signed and as log-magnitudes), and the log ratio of
neighbouring diagonals. The same small MLPs serve every level and every n.
They are exactly equivariant under the 8 symmetries of the square (D4): a
score for the neighbour in direction d is computed in the frame that turns d
into a canonical direction, averaged over the reflection that fixes it, and
the smoother kernel is averaged over the whole group.

Training (:func:`npo.neural.mg_train.train_mg`) differentiates through the whole hierarchy: the
Galerkin products are formed by probing with 9 coloured vectors (a 9-point
operator's neighbours have distinct colours mod 3), the coarsest level by a
batched Cholesky factor. The loss is the project's data loss for a linear
preconditioner, ``||e - M A e||`` relative to ``||e||``, in the energy norm
(the error a V-cycle leaves, the quantity PCG's convergence rests on), on
random, smooth and algebraically smooth errors (relaxed random vectors, the
modes a smoother cannot remove and the prolongation must carry).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from npo.gridmg import COARSEST, COLOURS, OFFSETS, slot_fields

__all__ = ["MGConfig", "MGNPO", "galerkin", "hierarchy_torch", "stencil_apply", "vcycle_torch"]

_EDGES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))  # the node and its four edge neighbours
_LOG_FLOOR = 1e-6


# --- the symmetry group of the square acting on offsets --------------------------------------

def _d4():
    out = []
    for swap in (False, True):
        for s1 in (1, -1):
            for s2 in (1, -1):
                def g(d, swap=swap, s1=s1, s2=s2):
                    di, dj = (d[1], d[0]) if swap else d
                    return (s1 * di, s2 * dj)
                out.append(g)
    return out


_D4 = _d4()
_OFF = {d: o for o, d in enumerate(OFFSETS)}


def _inverse(g):
    return {g(d): d for d in OFFSETS}


def _patch_perm(g) -> list[int]:
    """Feature-channel order in the frame of g: channel (k, o) <- (g^-1 k, g^-1 o)."""
    inv = _inverse(g)
    perm = []
    for k in _EDGES:
        for o in OFFSETS:
            perm.append(_EDGES.index(inv[k]) * 9 + _OFF[inv[o]])
    return perm


def _frames(canonical):
    """For each direction d of canonical's orbit: the permutations of the g with g(d) = canonical."""
    out = {}
    for g in _D4:
        d = _inverse(g)[canonical]
        out.setdefault(d, []).append(_patch_perm(g))
    return out


_EDGE_FRAMES = _frames((-1, 0))
_CORNER_FRAMES = _frames((-1, -1))
_ALL_FRAMES = [(_patch_perm(g), [_OFF[g(o)] for o in OFFSETS]) for g in _D4]


# --- stencil algebra on (batch, ..., n, n) tensors ---------------------------------------------

def stencil_apply(S, u):
    """``S u`` for stencil fields S (M, 9, n, n) and vectors u (M, K, n, n)."""
    n = u.shape[-1]
    p = F.pad(u, (1, 1, 1, 1))
    out = 0
    for o, (di, dj) in enumerate(OFFSETS):
        out = out + S[:, o, None] * p[..., 1 + di:1 + di + n, 1 + dj:1 + dj + n]
    return out


def stencil_transpose(K):
    """Stencil of the transpose: ``K^T[o, p] = K[-o, p + o]`` (zero off the grid)."""
    n = K.shape[-1]
    p = F.pad(K, (1, 1, 1, 1))
    parts = []
    for di, dj in OFFSETS:
        parts.append(p[:, _OFF[(-di, -dj)], 1 + di:1 + di + n, 1 + dj:1 + dj + n])
    return torch.stack(parts, dim=1)


class _Slots:
    """Torch copies of :func:`npo.gridmg.slot_fields` for one fine size n."""

    def __init__(self, n, device, dtype):
        I, J, V, Wb = slot_fields(n)
        self.n, self.nc = n, n // 2
        idx = lambda a: torch.as_tensor(a + 1, device=device)  # noqa: E731 (+1: padded)
        self.I = [idx(I[s][:, 0]) for s in range(4)]
        self.J = [idx(J[s][0, :]) for s in range(4)]
        self.valid = torch.as_tensor(V, device=device)
        self.bilinear = torch.as_tensor(Wb, device=device, dtype=dtype)
        i, j = torch.meshgrid(torch.arange(n, device=device), torch.arange(n, device=device),
                              indexing="ij")
        self.colour = [((i % 2 == a) & (j % 2 == b)).to(dtype) for a, b in COLOURS]


def prolong(W, slots, uc):
    """``P uc``: W (M, 4, n, n) slot weights, uc (M, K, nc, nc) -> (M, K, n, n)."""
    pc = F.pad(uc, (1, 1, 1, 1))
    out = 0
    for s in range(4):
        g = pc.index_select(-2, slots.I[s]).index_select(-1, slots.J[s])
        out = out + W[:, s, None] * g
    return out


def restrict(W, slots, r):
    """``P^T r`` (the adjoint of :func:`prolong`)."""
    M, K, n, _ = r.shape
    nc = slots.nc
    out = 0
    for s in range(4):
        c = W[:, s, None] * r
        t = torch.zeros(M, K, nc + 2, n, dtype=r.dtype, device=r.device).index_add(
            -2, slots.I[s], c)
        out = out + torch.zeros(M, K, nc + 2, nc + 2, dtype=r.dtype, device=r.device).index_add(
            -1, slots.J[s], t)
    return out[..., 1:-1, 1:-1]


def galerkin(S, W, slots):
    """Stencil of ``P^T A P`` by probing with 9 colour vectors (exact for 3x3 couplings)."""
    nc = slots.nc
    dev, dt = S.device, S.dtype
    I, J = torch.meshgrid(torch.arange(nc, device=dev), torch.arange(nc, device=dev),
                          indexing="ij")
    colour = (I % 3) * 3 + (J % 3)
    probes = (colour[None] == torch.arange(9, device=dev)[:, None, None]).to(dt)
    Y = restrict(W, slots, stencil_apply(S, prolong(W, slots, probes.expand(
        S.shape[0], -1, -1, -1))))
    parts = []
    for di, dj in OFFSETS:
        col = (((I + di) % 3) * 3 + (J + dj) % 3).expand(S.shape[0], 1, -1, -1)
        inside = ((I + di >= 0) & (I + di < nc) & (J + dj >= 0) & (J + dj < nc)).to(dt)
        parts.append(torch.gather(Y, 1, col)[:, 0] * inside)
    return torch.stack(parts, dim=1)


def dense_from_stencil(S):
    """Dense (M, n^2, n^2) matrices of stencil fields (for the coarsest level)."""
    M, _, n, _ = S.shape
    A = torch.zeros(M, n * n, n * n, dtype=S.dtype, device=S.device)
    i, j = torch.meshgrid(torch.arange(n, device=S.device), torch.arange(n, device=S.device),
                          indexing="ij")
    for o, (di, dj) in enumerate(OFFSETS):
        ok = (i + di >= 0) & (i + di < n) & (j + dj >= 0) & (j + dj < n)
        r = (i * n + j)[ok]
        c = ((i + di) * n + (j + dj))[ok]
        A[:, r, c] = S[:, o][:, ok]
    return A


# --- the network ------------------------------------------------------------------------------

def features(S):
    """Per-node features (M, 90, n, n) of stencil fields S (M, 9, n, n): see the module docstring.

    Channels ``(k, o)`` for the node's patch k (itself and its 4 edge
    neighbours) and offset o: the row of A divided by its diagonal at the
    off-centre offsets, ``log(d_k / d_node)`` at the centre; then the same 45
    as log-magnitudes. Neighbours off the grid read 0 (and the log floor).
    """
    M, _, n, _ = S.shape
    d = S[:, 4]
    rowx = S / d[:, None]
    logd = torch.log(d)
    p = F.pad(rowx, (1, 1, 1, 1))
    pl = F.pad(logd, (1, 1, 1, 1))
    pm = F.pad(torch.ones_like(logd), (1, 1, 1, 1))
    chans = []
    for di, dj in _EDGES:
        sl = (slice(None), slice(None), slice(1 + di, 1 + di + n), slice(1 + dj, 1 + dj + n))
        patch = p[sl].clone()
        inside = pm[:, 1 + di:1 + di + n, 1 + dj:1 + dj + n]
        patch[:, 4] = (pl[:, 1 + di:1 + di + n, 1 + dj:1 + dj + n] - logd) * inside
        chans.append(patch)
    x = torch.cat(chans, dim=1)
    mag = torch.log(x.abs() + _LOG_FLOOR) / 5.0
    return torch.cat([x, mag], dim=1)


def _shift(a, di, dj):
    """``a[..., i + di, j + dj]`` with zeros off the grid."""
    n = a.shape[-1]
    p = F.pad(a, (1, 1, 1, 1))
    return p[..., 1 + di:1 + di + n, 1 + dj:1 + dj + n]


def collapsed_prior(S):
    """Log of the black-box (collapsed-stencil) interpolation weights, per slot (M, 4, n, n).

    Edge points split their weight by the couplings towards each coarse
    neighbour, summed across the other direction; cell centres by the
    harmonic extension ``sum_q -a_fq w_q(p)`` through their neighbours
    (Dendy's black box multigrid). These are inputs of the learned scores,
    not the weights: each score head learns how far to follow them.
    """
    o = _OFF
    col = lambda di: -(S[:, o[(di, -1)]] + S[:, o[(di, 0)]] + S[:, o[(di, 1)]])  # noqa: E731
    row = lambda dj: -(S[:, o[(-1, dj)]] + S[:, o[(0, dj)]] + S[:, o[(1, dj)]])  # noqa: E731
    tiny = 1e-300
    cx = torch.stack([col(-1), col(1)]).clamp_min(0)
    cy = torch.stack([row(-1), row(1)]).clamp_min(0)
    sx = cx / cx.sum(0).clamp_min(tiny)
    sy = cy / cy.sum(0).clamp_min(tiny)
    M, _, n, _ = S.shape
    out = torch.zeros(M, 4, n, n, dtype=S.dtype, device=S.device)
    out[:, 0], out[:, 2] = sx[0], sx[1]          # x-edge slots (-x, +x)
    ey = torch.zeros_like(out)
    ey[:, 0], ey[:, 1] = sy[0], sy[1]            # y-edge slots (-y, +y)
    corner = torch.zeros_like(out)
    for s, (si, sj) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))):
        wy = _shift(sy[0 if sj < 0 else 1], si, 0)  # the y-edge neighbour's weight towards p
        wx = _shift(sx[0 if si < 0 else 1], 0, sj)
        corner[:, s] = (-S[:, o[(si, sj)]] - S[:, o[(si, 0)]] * wy
                        - S[:, o[(0, sj)]] * wx).clamp_min(0)
    corner = corner / corner.sum(1, keepdim=True).clamp_min(tiny)
    return torch.log(out.clamp_min(_LOG_FLOOR)), torch.log(ey[:, :2].clamp_min(_LOG_FLOOR)), \
        torch.log(corner.clamp_min(_LOG_FLOOR))


class _MLP(nn.Module):
    def __init__(self, cin, width, cout):
        super().__init__()
        self.l1 = nn.Linear(cin, width)
        self.l2 = nn.Linear(width, width)
        self.out = nn.Linear(width, cout)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        return self.out(torch.tanh(self.l2(torch.tanh(self.l1(x)))))


def _take(x, perm, own_only):
    """Channels of x (..., 90) in a frame; own_only keeps the node's own patch."""
    idx = perm[:9] if own_only else perm
    return torch.cat([x[..., idx], x[..., [45 + i for i in idx]]], dim=-1)


@dataclass(frozen=True)
class MGConfig:
    """Sizes of the multilevel NPO (what a checkpoint must match)."""

    width: int = 16
    omega: float = 1.0
    coarsest: int = COARSEST

    def as_dict(self) -> dict:
        return asdict(self)


class MGNPO(nn.Module):
    """The learned components: smoother kernels and prolongation weights of one level.

    ``forward(S)`` maps stencil fields (M, 9, n, n) to ``(W, K)``: slot
    weights (M, 4, n, n) of the prolongation to the n//2 grid and smoother
    kernels (M, 9, n, n). With its initial (zero) read-out layers it is the
    skeleton ``gmg`` with a fixed omega: bilinear weights, damped Jacobi.
    """

    #: the checkpoint format (:mod:`npo.neural.checkpoint`)
    checkpoint_format = "npo-bench/mgnpo"

    def __init__(self, width: int = 16, omega: float = 1.0, coarsest: int = COARSEST):
        super().__init__()
        self.config = MGConfig(int(width), float(omega), int(coarsest)).as_dict()
        self.smoother = _MLP(18, width, 9)
        self.edge = _MLP(18, width, 1)
        self.corner = _MLP(90, width, 1)
        # how far each score follows the collapsed-stencil weights (0: bilinear)
        self.trust = nn.Parameter(torch.zeros(2))
        self.omega = float(omega)
        self.coarsest = int(coarsest)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def kernels(self, x):
        """(M, 9, n, n) smoother kernels from features x (M, n, n, 90), D4-averaged."""
        K = 0
        for perm, fwd in _ALL_FRAMES:
            out = self.smoother(_take(x, perm, True))  # kernel in the frame of g
            K = K + out[..., fwd]  # K[o] = out_g[g(o)]
        K = K / len(_ALL_FRAMES)
        K = K.permute(0, 3, 1, 2).clone()
        K[:, 4] = K[:, 4] + self.omega
        return K

    def _scores(self, x, frames, head, own_only):
        out = {}
        for d, perms in frames.items():
            out[d] = sum(head(_take(x, p, own_only))[..., 0] for p in perms) / len(perms)
        return out

    def weights(self, x, slots, S):
        """(M, 4, n, n) prolongation slot weights: bilinear mass split by a softmax of scores."""
        M, n = x.shape[0], x.shape[1]
        logits = torch.zeros(M, 4, n, n, dtype=x.dtype, device=x.device)
        px, py, pc = collapsed_prior(S)
        te, tc = self.trust[0], self.trust[1]
        ev, od = slice(0, n, 2), slice(1, n, 2)
        # edge points (one coordinate even): two neighbours along that axis
        ex = self._scores(x[:, ev, od], _EDGE_FRAMES, self.edge, True)
        logits[:, 0, ev, od] = ex[(-1, 0)] + te * px[:, 0, ev, od]
        logits[:, 2, ev, od] = ex[(1, 0)] + te * px[:, 2, ev, od]
        ey = self._scores(x[:, od, ev], _EDGE_FRAMES, self.edge, True)
        logits[:, 0, od, ev] = ey[(0, -1)] + te * py[:, 0, od, ev]
        logits[:, 1, od, ev] = ey[(0, 1)] + te * py[:, 1, od, ev]
        # cell centres (both even): four diagonal neighbours
        c = self._scores(x[:, ev, ev], _CORNER_FRAMES, self.corner, False)
        for s, d in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))):
            logits[:, s, ev, ev] = c[d] + tc * pc[:, s, ev, ev]
        valid = slots.valid[None]
        logits = logits.masked_fill(~valid, -torch.inf)
        mass = slots.bilinear[None].sum(dim=1, keepdim=True)
        return torch.softmax(logits, dim=1).nan_to_num(0.0) * mass * valid

    def forward(self, S, slots=None):
        if slots is None:
            slots = _Slots(S.shape[-1], S.device, S.dtype)
        x = features(S).permute(0, 2, 3, 1)
        # adjacency-masked: the smoother couples only what A couples
        return self.weights(x, slots, S), self.kernels(x) * (S != 0)


# --- the differentiable hierarchy and cycle (training) -----------------------------------------

def hierarchy_torch(model, S, slots_cache=None):
    """Levels ``(S, W, K, K^T, d^-1/2, slots, colour masks)`` and the coarsest Cholesky factor.

    Differentiable in the model's parameters; the sweeps' colours are those of
    :data:`npo.gridmg.COLOURS`.
    """
    levels = []
    slots_cache = {} if slots_cache is None else slots_cache
    while S.shape[-1] > model.coarsest:
        n = S.shape[-1]
        if n not in slots_cache:
            slots_cache[n] = _Slots(n, S.device, S.dtype)
        sl = slots_cache[n]
        W, K = model(S, sl)
        levels.append((S, W, K, stencil_transpose(K), S[:, 4, None] ** -0.5, sl, sl.colour))
        S = galerkin(S, W, sl)
    L = torch.linalg.cholesky(dense_from_stencil(S))
    return levels, L


def sweep_gather(S, K, s, masks, r):
    """The pre-sweep of :class:`npo.gridmg.Sweep` on stencil fields, from z = 0."""
    z = 0 * r
    for m in masks:
        z = z + m * (s * stencil_apply(K, s * (r - stencil_apply(S, z))))
    return z


def sweep_spread(S, KT, s, masks, r):
    """The post-sweep (the A-adjoint of :func:`sweep_gather`), from z = 0."""
    z = 0 * r
    for m in reversed(masks):
        z = z + s * stencil_apply(KT, s * (m * (r - stencil_apply(S, z))))
    return z


def vcycle_torch(levels, L, b, k=0):
    """The V(1,1) cycle of :func:`npo.gridmg.vcycle` on batched grids b (M, K, n, n)."""
    if k == len(levels):
        M, K, n, _ = b.shape
        x = torch.cholesky_solve(b.reshape(M, K, n * n).transpose(1, 2), L)
        return x.transpose(1, 2).reshape(M, K, n, n)
    S, W, Kf, KT, s, sl, masks = levels[k]
    x = sweep_gather(S, Kf, s, masks, b)
    x = x + prolong(W, sl, vcycle_torch(levels, L, restrict(W, sl, b - stencil_apply(S, x)),
                                        k + 1))
    return x + sweep_spread(S, KT, s, masks, b - stencil_apply(S, x))
