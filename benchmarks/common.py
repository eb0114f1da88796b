"""The one base class of the asv suite: pinned threads and the protocol version.

asv owns the timing loop; :mod:`npo.measure` owns what a case is and how it
is built and solved. Every benchmark's ``version`` is the protocol version,
so a change of the measurement protocol shows in history as a discontinuity,
not as a regression (:mod:`npo.report.history`).
"""

from npo import env
from npo.schema import PROTOCOL_VERSION


class Benchmark:
    """Base: threads pinned in every benchmark process, protocol version as ``version``."""

    version = f"protocol-{PROTOCOL_VERSION}"
    timeout = 300

    def setup(self, *args):
        env.pin_process(env.DEFAULT_THREADS)
