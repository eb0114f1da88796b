"""Spectrum diagnostics of a preconditioner on one case (``npo-bench diagnose``).

For a method on a case (problem, n, field), with the case's own Krylov method
and tolerance:

* **Ritz values** from the Lanczos coefficients of the run itself
  (:func:`npo.krylov.ritz_values`): the extreme ones and
  ``kappa(MA) ~ max/min``. For PCG with a fixed SPD M these describe the
  preconditioned operator; for flexible CG with a nonlinear M, the run;
* **per-mode gain** ``v^T A M(v) / lambda_max`` on the unit sine modes
  ``v_k = sin(k pi x) sin(k pi y)`` of a 2-D grid: how much of the ideal (1,
  the gain of the best-resolved direction) each frequency gets. Krylov
  methods ignore a global scale of M, so the gains are divided by the
  largest Ritz value; the seed's raw ``v^T Ahat M(v)`` of the NPO is the same
  curve on another scale;
* **nonlinearity** ``||M(a+b) - M(a) - M(b)|| / (||M(a)|| + ||M(b)||)`` and
  **symmetry** ``|a.M(b) - b.M(a)| / max(|a.M(b)|, |b.M(a)|)`` on two fixed
  GRF vectors (zero, up to rounding, for a linear symmetric M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from npo import env, krylov
from npo.cases import Case

__all__ = ["Diagnosis", "diagnose", "sine_modes", "write_report"]


@dataclass
class Diagnosis:
    case: str
    method: str
    n: int
    field: str
    krylov: str
    iterations: int
    converged: bool
    ritz_min: float
    ritz_max: float
    kappa: float
    nonlinearity: float
    symmetry: float
    modes: list = field(default_factory=list)  # [(k, gain)]
    ritz: list = field(default_factory=list)

    def row(self) -> dict:
        gains = dict(self.modes)
        return {"method": self.method, "n": self.n, "field": self.field,
                "krylov": self.krylov, "iterations": self.iterations,
                "lambda_min": self.ritz_min, "lambda_max": self.ritz_max, "kappa": self.kappa,
                "gain_k1": gains.get(1, math.nan), "gain_min": min(gains.values(), default=math.nan),
                "nonlinearity": self.nonlinearity, "symmetry": self.symmetry}


def sine_modes(n: int, ks) -> dict[int, np.ndarray]:
    """Unit-norm modes ``sin(k pi x) sin(k pi y)`` on the n x n interior grid, flat row-major."""
    x = np.arange(1, n + 1) / (n + 1)
    out = {}
    for k in ks:
        s = np.sin(k * np.pi * x)
        v = np.outer(s, s).ravel()
        out[int(k)] = v / np.linalg.norm(v)
    return out


def _mode_numbers(n: int) -> list[int]:
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks if ks[-1] == n else ks + [n]


def diagnose(case: Case) -> Diagnosis:
    """Run the diagnostics of the module docstring for one case (on the CPU)."""
    from npo.measure import make_preconditioner, problem, solve
    from npo.problems import grf_rhs

    with env.pinned_threads(1):
        p = problem(case)
        M = make_preconditioner(case, p).setup(p.A)
        res = solve(case, p.A, p.b, M)
        ritz = krylov.ritz_values(res)
        lo, hi = (float(ritz[0]), float(ritz[-1])) if len(ritz) else (math.nan, math.nan)
        grid = case.info.get("grid")
        modes = []
        if grid and len(grid) == 2 and hi > 0:
            n = int(grid[0])
            for k, v in sine_modes(n, _mode_numbers(n)).items():
                modes.append((k, float(v @ (p.A @ M.apply(v))) / hi))
        N = p.N
        n_side = int(round(math.sqrt(N)))
        if n_side * n_side == N:
            a, b = grf_rhs(n_side, seed=11), grf_rhs(n_side, seed=12)
        else:
            rng = np.random.default_rng(11)
            a, b = rng.standard_normal(N), rng.standard_normal(N)
        Ma, Mb, Mab = M.apply(a), M.apply(b), M.apply(a + b)
        nonlin = float(np.linalg.norm(Mab - Ma - Mb) / (np.linalg.norm(Ma) + np.linalg.norm(Mb)))
        ab, ba = float(a @ Mb), float(b @ Ma)
        sym = abs(ab - ba) / max(abs(ab), abs(ba), 1e-300)
    return Diagnosis(case.id, case.method.label, case.n, case.field.label, res.method,
                     res.iterations, res.converged, lo, hi, hi / lo if lo > 0 else math.inf,
                     nonlin, sym, modes, [float(r) for r in ritz])


def table(diags) -> str:
    """Markdown table of diagnoses."""
    head = ("| method | n | field | krylov | iterations | lambda_min | lambda_max | kappa(MA) | "
            "gain k=1 | min gain | nonlinearity | symmetry |")
    lines = [head, "|" + "---|" * 12]
    for d in diags:
        r = d.row()
        lines.append(
            f"| {r['method']} | {r['n']} | {r['field']} | {r['krylov']} | {r['iterations']}"
            f"{'' if d.converged else ' (not converged)'} | {r['lambda_min']:.3g} | "
            f"{r['lambda_max']:.3g} | {r['kappa']:.3g} | {r['gain_k1']:.3g} | "
            f"{r['gain_min']:.3g} | {r['nonlinearity']:.1e} | {r['symmetry']:.1e} |")
    return "\n".join(lines) + "\n"


def write_report(diags, out, stem: str = "diagnostics") -> list:
    """``<out>/<stem>.md`` (table + notes) and a plot of the per-mode gains per (n, field)."""
    from pathlib import Path

    from npo.fileio import atomic_path, write_text
    from npo.report.plots import _plt, style

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    paths = []
    groups: dict = {}
    for d in diags:
        groups.setdefault((d.n, d.field), []).append(d)
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, ((n, fld), ds) in zip(axes[0], sorted(groups.items()), strict=True):
        for d in ds:
            if d.modes:
                k, g = zip(*d.modes, strict=True)
                ax.plot(k, g, label=d.method, **style(d.method))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sine mode k (sin(k pi x) sin(k pi y))")
        ax.set_ylabel("gain v^T A M(v) / lambda_max")
        ax.set_title(f"n = {n}, {fld}")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    png = out / f"{stem}-gains.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    paths.append(png)
    md = out / f"{stem}.md"
    write_text(md, "# Spectrum diagnostics\n\n" + (__doc__.split("\n\n", 1)[1]) + "\n"
               + table(diags) + f"\n![per-mode gains]({png.name})\n")
    paths.append(md)
    return paths
