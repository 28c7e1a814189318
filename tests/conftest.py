"""Test-session settings: the evaluation's baseline cache lives in a temporary folder, never in the user's home."""
import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _baseline_cache_dir(tmp_path_factory):
    old = os.environ.get("NFM_CACHE_DIR")
    os.environ["NFM_CACHE_DIR"] = str(tmp_path_factory.mktemp("nfm_cache"))
    yield
    if old is None:
        os.environ.pop("NFM_CACHE_DIR", None)
    else:
        os.environ["NFM_CACHE_DIR"] = old
