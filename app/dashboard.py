"""vqexplore dashboard: look inside codebooks, compare checkpoints, follow training live.

    streamlit run app/dashboard.py                       # demo checkpoints in checkpoints/
    streamlit run app/dashboard.py -- --checkpoints DIR --runs DIR

One navigation (``st.navigation``), however a page is reached: every page lives in
``app/views/`` and has its own address (``/compare``, ``/reconstructions``, ...). The folder is
deliberately not called ``pages/``: Streamlit treats a ``pages/`` folder beside the main script
as an old-style multipage app until ``st.navigation`` first runs, so a fresh server's first
request to ``/compare`` would run the page file alone, with a sidebar of file names.
The root address opens Compare at ``/compare``, keeping the query (a shared link).

Each page starts with ``ui.page()`` (page config, the shared sidebar with the checkpoint picker,
the view state read from / written to the URL query, a background warm-up of umap-learn).
"""
import streamlit as st

import ui  # noqa: F401  (sets up the app folder on import)

PAGES = [
    st.Page("views/compare.py", title="Compare", icon=":material/table_chart:", url_path="compare"),
    st.Page("views/codebook_usage.py", title="Codebook usage", icon=":material/grid_view:"),
    st.Page("views/codebook_health.py", title="Codebook health", icon=":material/health_and_safety:"),
    st.Page("views/code_embeddings.py", title="Code embeddings", icon=":material/scatter_plot:"),
    st.Page("views/reconstructions.py", title="Reconstructions", icon=":material/image:"),
    st.Page("views/code_inspector.py", title="Code inspector", icon=":material/search:"),
    st.Page("views/aligned_codes.py", title="Aligned codes", icon=":material/compare_arrows:"),
    st.Page("views/training.py", title="Training", icon=":material/monitoring:"),
]


def front_door() -> None:
    """``/`` -> ``/compare`` with the same query, so every view has one address."""
    st.switch_page(PAGES[0], query_params=[(k, st.query_params.get_all(k)) for k in st.query_params])


page = st.navigation([st.Page(front_door, title="vqexplore", url_path="home", default=True, visibility="hidden"),
                      *PAGES])
page.run()
