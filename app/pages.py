"""The dashboard's pages: ONE list that the navigation (``app/dashboard.py``), the tests, the
dashboard benchmark and the README check all read.

Each page is a function, ``render()`` of ``app/views/<key>.py``; its address is ``/<key>``. The
folder is deliberately not called ``pages/``: Streamlit would treat a ``pages/`` folder beside the
main script as an old-style multipage app.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    key: str     # address (/key) and module (app/views/key.py)
    title: str   # in the navigation and the README's list
    icon: str
    heading: str  # the page's own title

    def render(self) -> None:
        importlib.import_module(f"app.views.{self.key}").render()


PAGES: tuple[Page, ...] = (
    Page("compare", "Compare", ":material/table_chart:", "Compare checkpoints"),
    Page("codebook_usage", "Codebook usage", ":material/grid_view:", "Codebook usage"),
    Page("codebook_health", "Codebook health", ":material/health_and_safety:", "Codebook health"),
    Page("code_embeddings", "Code embeddings", ":material/scatter_plot:", "Code embeddings"),
    Page("reconstructions", "Reconstructions", ":material/image:", "Reconstructions"),
    Page("code_inspector", "Code inspector", ":material/search:", "Code inspector"),
    Page("aligned_codes", "Aligned codes", ":material/compare_arrows:", "Aligned codes"),
    Page("training", "Training", ":material/monitoring:", "Training"),
)
BY_KEY = {p.key: p for p in PAGES}


def st_page(page: Page | str, *, default: bool = False):
    """The ``st.Page`` of a page (by key or Page): what the navigation registers and what
    ``st.switch_page`` / ``st.page_link`` take."""
    import streamlit as st

    page = BY_KEY[page] if isinstance(page, str) else page
    return st.Page(page.render, title=page.title, icon=page.icon, url_path=page.key, default=default)


def switch_to(key: str) -> None:
    """Open another page (``st.switch_page``)."""
    import streamlit as st

    st.switch_page(st_page(key))
