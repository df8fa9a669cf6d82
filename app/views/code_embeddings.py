"""Code embeddings: UMAP (or PCA) of the codebook vectors, one point per code coloured by usage,
optionally with encoder outputs projected alongside. Cached on disk per checkpoint."""
import streamlit as st

from app import pages, cached, keys, sources, ui


from vqexplore import plots


def render() -> None:
    p, model, sample = ui.single_checkpoint_page("code_embeddings")
    n = cached.sample_size()

    c1, c2 = st.columns([1, 2])
    method = c1.radio("Projection", ["umap", "pca"], horizontal=True, key="proj_method",
                      format_func={"umap": "UMAP", "pca": "PCA (fast)"}.get)
    with_latents = c2.toggle("Also project encoder outputs (up to 2048 tokens of the sample)", value=False,
                             key="proj_latents")

    with ui.shown_errors():
        stamp = sources.weights_stamp(p.path)
        with st.spinner(f"Projecting {model.codebook_size} codes with {method.upper()} "
                        "(once per checkpoint; cached on disk)..."):
            proj = cached.projection(p.path, stamp, method, with_latents, sample)
            counts = cached.usage_counts(p.path, stamp, sample)
        fig = plots.embedding_scatter(proj.codes, counts, latents_xy=proj.latents, method=proj.method,
                                      highlight=st.session_state.get(keys.INSPECT_CODE))
        event = st.plotly_chart(fig, width="stretch", key="embedding_scatter", on_select="rerun",
                                selection_mode="points")
        where = "loaded from the disk cache" if proj.from_cache else "computed"
        st.caption(f"{proj.method.upper()} {where} (took {proj.seconds:.1f} s when computed); colour: "
                   f"log10(1 + count) on {n} validation images; red: dead codes. Click a point to inspect it.")
        code = plots.selected_code(event)
        if code is not None:
            st.session_state[keys.INSPECT_CODE] = code
            st.success(f"Code {code} selected: used {int(counts[code])} times.")
            st.page_link(pages.st_page("code_inspector"), label=f"Open code {code} in the Code inspector", icon="🔍")

    ui.footer()
