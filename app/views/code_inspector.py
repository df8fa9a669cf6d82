"""Code inspector: pick a code (type its id, or click it on the usage grid or the embedding) and
see the image patches the encoder maps to it, and its decoded tile."""
import numpy as np
import streamlit as st

import ui
from vqexplore import plots

p, model, sample = ui.single_checkpoint_page("Code inspector")
n = sample[0]
k = model.codebook_size

with ui.shown_errors():
    stamp = ui.weights_stamp(p.path)
    counts = ui.usage_counts(p.path, stamp, sample)
    # The code to show lives in session state ("inspect_code"), so the usage page and the
    # embedding page can hand one over; the widget mirrors it.
    default = st.session_state.get("inspect_code")
    if default is None or not 0 <= int(default) < k:
        default = int(np.argmax(counts))
    st.session_state["inspect_code"] = st.session_state["inspector_code"] = int(default)

    def _typed() -> None:
        st.session_state["inspect_code"] = int(st.session_state["inspector_code"])

    left, right = st.columns([1, 1])
    with left:
        code = int(st.number_input(f"Code id (0 to {k - 1})", 0, k - 1, key="inspector_code", on_change=_typed))
        # 16k clickable markers cost the browser seconds: big codebooks start without a chart.
        choices = ["usage grid", "embedding (PCA)", "embedding (UMAP)", "no chart"]
        pick_from = st.radio("Or pick it from", choices, index=0 if k <= 4096 else 3,
                             horizontal=True, key="inspector_pick")
        if pick_from == "no chart":
            fig = None
        elif pick_from == "usage grid":
            fig = plots.usage_heatmap(counts, selectable=True, highlight=code, title="Click a code")
        else:
            method = "pca" if "PCA" in pick_from else "umap"
            proj = ui.projection(p.path, stamp, method, False, sample)
            fig = plots.embedding_scatter(proj.codes, counts, method=proj.method, highlight=code,
                                          title="Click a code")
        event = None if fig is None else st.plotly_chart(
            fig, width="stretch", key=f"inspector_pick_{pick_from}", on_select="rerun", selection_mode="points")
        clicked = None if event is None else plots.selected_code(event)
        # A selection stays in the chart's state: act on a new click only, once.
        if clicked is not None and clicked != st.session_state.get("_inspector_last_click"):
            st.session_state["_inspector_last_click"] = clicked
            if clicked != code:
                st.session_state["inspect_code"] = clicked
                st.rerun()
    with right:
        max_patches = st.slider("Patches to show", 4, 64, 24, step=4, key="inspector_max")
        with st.spinner("Finding patches..."):
            gallery = ui.code_gallery(p.path, stamp, code, sample, max_patches)
        share = gallery.count / max(int(counts.sum()), 1)
        st.markdown(f"### Code {code}")
        st.markdown(f"Used by **{gallery.count}** of {int(counts.sum())} tokens ({share:.2%}) in {n} "
                    f"validation images.")
        st.image(ui.enlarge(gallery.tile, 6), caption="decoded tile: a 4 x 4 grid of this code",
                 width=96)
        if gallery.count == 0:
            st.warning(f"Code {code} is dead on this sample: the encoder never maps a token to it.")
        else:
            from vqexplore.nets import global_layers

            f = model.downsample
            st.markdown(f"Receptive-field crops ({gallery.receptive_field} x {gallery.receptive_field} px, "
                        f"the token's own {f} x {f} cell outlined), most typical first:"
                        + (" (this encoder's attention and GroupNorm see the whole image; the crop shows one "
                           "cell of context around the token)" if global_layers(model.encoder) else ""))
            st.image([ui.enlarge(x, 3) for x in gallery.patches],
                     caption=[f"img {b} ({r},{c}) d={d:.2f}" for (b, r, c), d in zip(gallery.locations.tolist(), gallery.distances)],
                     width=102)

ui.footer()
