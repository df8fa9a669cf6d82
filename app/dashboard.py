"""vqexplore dashboard: look inside codebooks, compare checkpoints, follow training live.

    streamlit run app/dashboard.py                       # demo checkpoints in checkpoints/
    streamlit run app/dashboard.py -- --checkpoints DIR --runs DIR

One navigation (``st.navigation``), however a page is reached: the pages are the functions
listed in ``app.pages.PAGES`` (each ``render()`` of ``app/views/<key>.py``), each with its own
address (``/compare``, ``/reconstructions``, ...).
The root address opens Compare at ``/compare``, keeping the query (a shared link).

Each page starts with ``ui.page()`` (page config, the shared sidebar with the checkpoint picker,
the view state read from / written to the URL query, a background warm-up of umap-learn).
"""
import streamlit as st

from app.pages import PAGES, st_page

NAVIGATION = [st_page(p) for p in PAGES]


def front_door() -> None:
    """``/`` -> ``/compare`` with the same query, so every view has one address."""
    st.switch_page(NAVIGATION[0], query_params=[(k, st.query_params.get_all(k)) for k in st.query_params])


page = st.navigation([st.Page(front_door, title="vqexplore", url_path="home", default=True, visibility="hidden"),
                      *NAVIGATION])
page.run()
