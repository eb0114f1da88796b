"""pytest plugin for mutation runs: the fastest tests first, so that ``-x`` stops early.

mutmut runs every test that reaches a mutated function, in collection order, and stops at the
first failure. Ordering them by the durations mutmut recorded (``mutmut-stats.json`` in the
``mutants/`` directory it runs from) makes a killed mutant cost its fastest failing test
instead of every slower test collected before it; a surviving mutant runs them all either way.
Loaded only by mutation runs (``[tool.mutmut] pytest_add_cli_args`` in ``pyproject.toml``).
"""

import json
from pathlib import Path


def pytest_collection_modifyitems(session, config, items):
    stats = Path("mutmut-stats.json")
    try:
        durations = json.loads(stats.read_text()).get("duration_by_test", {})
    except (OSError, ValueError, AttributeError):
        return  # not a mutation run, or its first statistics run
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))  # stable: ties keep their order
