"""npo-bench: honest benchmarks of preconditioned Krylov solvers on 2-D elliptic PDEs.

Importing ``npo`` does not import torch; only ``npo.neural`` and the NPO
preconditioner's ``setup`` do.
"""

__version__ = "0.1.0"
