"""The dashboard in ``streamlit.testing.v1.AppTest``: its page list (from ``app.pages``, the one
registry) and opening a page by its key."""
from __future__ import annotations

from pathlib import Path

from app.pages import PAGES as REGISTRY

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app" / "dashboard.py"
PAGES = {p.key: p.heading for p in REGISTRY}  # key -> the heading the page shows


def open_page(at, key: str):
    """Run the page ``key`` in ``at``. The pages are functions (``st.Page(render, url_path=key)``),
    and ``AppTest.switch_page`` only finds page files; a page function's script hash is the hash
    of its url_path, which is what a browser's request for ``/key`` selects."""
    from streamlit.util import calc_hash

    assert key in PAGES, f"no page {key!r} in app.pages"
    at._page_hash = calc_hash(key)
    return at.run()
