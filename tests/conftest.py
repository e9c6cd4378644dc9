import os

import pytest

from helpers.cluster import LOOPBACK_ENV

# Every Ray cluster a test starts, and every process a test runs, talks over 127.0.0.1 only.
os.environ.update(LOOPBACK_ENV)


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory):
    """Every test session builds the tiny pipelines afresh into its own cache."""
    path = tmp_path_factory.mktemp("tiny-cache")
    old = os.environ.get("DQB_CACHE")
    os.environ["DQB_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DQB_CACHE", None)
    else:
        os.environ["DQB_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_paths(tiny_cache):
    from helpers.pipelines import ensure_tiny

    from helpers.registry import MODELS

    return {m: str(ensure_tiny(m)) for m in MODELS}
