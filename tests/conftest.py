import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests import oracle and builders by name


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    """``slow`` tests (10-million-step streams, fuzzing, ...) run only when asked for:
    ``pytest -m slow`` or TINYRNN_SLOW=1, as pyproject.toml says. CI runs plain ``pytest``."""
    if "slow" in (config.getoption("-m") or "") or os.environ.get("TINYRNN_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: run with pytest -m slow (or TINYRNN_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
