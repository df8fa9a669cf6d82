"""Session setup for the whole suite.

The project is meant to be installed (``pip install -e .``, as the README and CI do), so the apps'
scripts import ``vqexplore`` without touching ``sys.path``. Tests that start those scripts in a
subprocess must find this very checkout either way (installed or in a bare virtualenv), so the
checkout's root goes first on ``PYTHONPATH``: the same code an editable install would import.
"""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's script runner (AppTest) installs the page it runs as ``sys.modules["__main__"]``
    and leaves it there; torch.multiprocessing's spawned children would then re-import that page
    (app/dashboard.py) instead of pytest. Put the real ``__main__`` back after every test."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
