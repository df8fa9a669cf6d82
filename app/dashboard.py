"""vqexplore dashboard: look inside codebooks, compare checkpoints, follow training live.

    streamlit run app/dashboard.py                       # demo checkpoints in checkpoints/
    streamlit run app/dashboard.py -- --checkpoints DIR --runs DIR

One page per file in app/pages/; each page starts with ``ui.page()`` (page config, the shared
sidebar with the checkpoint picker, a background warm-up of umap-learn), so a page also works
when Streamlit runs it directly (a fresh server's first request to a deep link like /training
runs the page file without this script).
"""
import streamlit as st

import ui  # also puts the repository on sys.path for `vqexplore`

PAGES = [
    st.Page("pages/compare.py", title="Compare", icon=":material/table_chart:", default=True),
    st.Page("pages/codebook_usage.py", title="Codebook usage", icon=":material/grid_view:"),
    st.Page("pages/code_embeddings.py", title="Code embeddings", icon=":material/scatter_plot:"),
    st.Page("pages/reconstructions.py", title="Reconstructions", icon=":material/image:"),
    st.Page("pages/code_inspector.py", title="Code inspector", icon=":material/search:"),
    st.Page("pages/training.py", title="Training", icon=":material/monitoring:"),
]

page = st.navigation(PAGES)
page.run()
