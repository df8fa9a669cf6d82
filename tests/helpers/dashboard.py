"""The dashboard in ``streamlit.testing.v1.AppTest``: its page list (from ``app.pages``, the one
registry) and opening a page by its key."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from app.pages import PAGES as REGISTRY

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app" / "dashboard.py"
PAGES = {p.key: p.heading for p in REGISTRY}  # key -> the heading the page shows
# The dashboard's folders and the environment variables that set them (app/dashboard.py, --checkpoints etc.)
FOLDER_VARS = {"checkpoints": "VQEXPLORE_CHECKPOINTS", "runs": "VQEXPLORE_RUNS", "cache": "VQEXPLORE_CACHE_DIR"}


def open_page(at, key: str):
    """Run the page ``key`` in ``at``. The pages are functions (``st.Page(render, url_path=key)``),
    and ``AppTest.switch_page`` only finds page files; a page function's script hash is the hash
    of its url_path, which is what a browser's request for ``/key`` selects."""
    from streamlit.util import calc_hash

    assert key in PAGES, f"no page {key!r} in app.pages"
    at._page_hash = calc_hash(key)
    return at.run()


def server_env(checkpoints=None, runs=None, cache=None, **extra: str) -> dict:
    """The environment for a dashboard server (``helpers.servers.start_dashboard``): this process's,
    with the folders given and the others unset (the dashboard's defaults), plus ``extra``."""
    env = dict(os.environ)
    for key, value in (("checkpoints", checkpoints), ("runs", runs), ("cache", cache)):
        env.pop(FOLDER_VARS[key], None)
        if value is not None:
            env[FOLDER_VARS[key]] = str(value)
    return {**env, **extra}


@contextmanager
def dashboard_env(paths: dict):
    """The dashboard's folders (``paths``: checkpoints, runs, cache) set in this process's
    environment, as AppTest runs the app in it, and restored afterwards."""
    names = {var: key for key, var in FOLDER_VARS.items()}
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: str(paths[v]) for k, v in names.items()})
    try:
        yield paths
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def demo_names() -> list[str]:
    """The demo set as documented: the checkpoints docs/demo_set.md lists (its grid's columns, in
    order), which the tests expect in checkpoints/ (one missing fails, never skips)."""
    import re

    text = (ROOT / "docs" / "demo_set.md").read_text()
    columns = re.search(r"Columns of docs/demo_grid\.png: input, then ([^.]+)\.", text)
    assert columns, "docs/demo_set.md lacks its 'Columns of docs/demo_grid.png' line"
    return [name.strip() for name in columns.group(1).split(",")]
