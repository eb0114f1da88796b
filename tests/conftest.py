"""Tests run with BLAS/OpenMP/torch pinned to one thread, like the harness."""

import matplotlib

from npo import env

matplotlib.use("Agg")
env.pin_process(env.DEFAULT_THREADS)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Keep committed pytest-benchmark JSON reviewable: drop the raw timing rounds.

    ``--benchmark-json`` stores every round of every benchmark (196,541 samples
    for one apply test, 51 MB for the quick suite); the statistics pytest-
    benchmark computed from them (min, max, quartiles, median, rounds) stay.
    """
    for bench in output_json.get("benchmarks", []):
        bench.pop("data", None)
