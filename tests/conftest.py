"""Tests run with BLAS/OpenMP/torch pinned to one thread, like the harness."""

import matplotlib

from npo import env

matplotlib.use("Agg")
env.pin_process(env.DEFAULT_THREADS)
