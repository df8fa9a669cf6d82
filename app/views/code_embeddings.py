"""Code embeddings, closer to TensorBoard's Embedding Projector: UMAP (or PCA) of the codebook in 2-D
or 3-D, one point per code coloured by usage, a tall plot, encoder outputs as a visible layer; click
a code (or type its id) to see its decoded tile and its nearest codes (ringed on the plot, with their
distances and tiles). Tiles come on click, not on hover: plotly's hover labels cannot show images,
and shipping a tile per code into the page would cost seconds for 4,096 codes. Cached on disk per
checkpoint."""
import streamlit as st

from app import cached, keys, pages, sources, ui, viewstate
from vqexplore import plots


def render() -> None:
    # No model until it is needed (a click's tile, a layout that is not stored): a checkpoint that went
    # through `trainer export` / `eval` carries its layout and usage counts, and its first render reads them.
    p, config = ui.single_checkpoint_config_page("code_embeddings")
    sample = cached.sample()
    k = int(config["codebook_size"])

    viewstate.track("dims", "proj_dims", int, lambda v: v in (2, 3))
    c1, c2, c3, c4 = st.columns([2, 1, 3, 2])
    method = c1.radio("Projection", ["umap", "pca"], horizontal=True, key="proj_method",
                      format_func={"umap": "UMAP", "pca": "PCA (fast)"}.get)
    dims = c2.radio("Dimensions", [2, 3], horizontal=True, key="proj_dims", format_func=lambda d: f"{d}-D")
    with_latents = c3.toggle("Also project encoder outputs (up to 2048 tokens of the sample)", value=False,
                             key="proj_latents")
    n_near = c4.slider("Nearest codes to show", 0, 24, 8, key="proj_near")

    stored = False
    with ui.shown_errors():
        stamp = sources.weights_stamp(p.path)
        stored = not with_latents and cached.projection_stored(p.path, stamp, method, dims)
        if not stored and method == "umap":
            cached.prewarm()  # umap-learn's imports and kernels load while the counts are measured
        with st.spinner(f"Projecting {k} codes with {method.upper()} in {dims}-D "
                        "(once per checkpoint; cached on disk)..."):
            counts, n = cached.usage(p.path, stamp, sample)
            proj = cached.projection(p.path, stamp, method, with_latents, sample, dims)
        code = st.session_state.get(keys.INSPECT_CODE)
        code = int(code) if code is not None and 0 <= int(code) < k else None
        near_ids, near_d = [], []
        if code is not None and n_near:
            near_ids, near_d = cached.nearest(p.path, stamp, code, n_near, None)
        fig = plots.embedding_scatter(proj.codes, counts, latents_xy=proj.latents, method=proj.method,
                                      highlight=code, neighbours=[int(i) for i in near_ids])
        plot_col, side = st.columns([3, 1])
        with plot_col:
            event = st.plotly_chart(fig, width="stretch", key=f"embedding_scatter_{dims}", on_select="rerun",
                                    selection_mode="points")
            where = ("stored beside the checkpoint" if proj.stored
                     else "loaded from the disk cache" if proj.from_cache else "computed")
            st.caption(f"{proj.method.upper()} {where} (took {proj.seconds:.1f} s when computed); colour: "
                       f"log10(1 + count) on {n} validation images; red: dead codes"
                       + ("; blue: encoder outputs" if proj.latents is not None else "")
                       + ". Click a point for its decoded tile and nearest codes (tiles on click: plotly hover "
                         "labels cannot show images).")
        ui.follow_clicked_code(plots.selected_code(event), code, "_embedding_last_click")
        with side:
            def _typed() -> None:
                st.session_state[keys.INSPECT_CODE] = int(st.session_state["embedding_code"])

            st.session_state["embedding_code"] = code if code is not None else 0  # mirrors the shared code
            st.number_input(f"Code id (0 to {k - 1})", 0, k - 1, key="embedding_code", on_change=_typed)
            if code is None:
                st.info("Click a point, or type a code id, to see what it decodes to.")
            else:
                st.markdown(f"**Code {code}** · used {int(counts[code])} times")
                st.image(ui.enlarge(cached.tile(p.path, stamp, code), 6), width=96,
                         caption="decoded tile (4 x 4 of this code)")
                st.page_link(pages.st_page("code_inspector"), label=f"Open code {code} in the Code inspector",
                             icon="🔍")
        if code is not None and len(near_ids):
            st.markdown(f"**Nearest codes to code {code}** (euclidean distance in code space; ringed on the plot)")
            tiles = [ui.enlarge(cached.tile(p.path, stamp, int(i)), 4) for i in near_ids]
            st.image(tiles, width=64, caption=[f"{int(i)}: d={d:.3g}, used {int(counts[int(i)])}"
                                               for i, d in zip(near_ids, near_d)])

    ui.footer(warm_up=not stored)
