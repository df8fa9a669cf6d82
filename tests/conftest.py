"""Session setup for the whole suite.

The project is meant to be installed (``pip install -e .``, as the README and CI do), so the apps'
scripts import ``vqexplore`` without touching ``sys.path``. Tests that start those scripts in a
subprocess must find this very checkout either way (installed or in a bare virtualenv), so the
checkout's root goes first on ``PYTHONPATH``: the same code an editable install would import.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
