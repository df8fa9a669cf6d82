"""Code inspector: pick a code (type its id, or click it on the usage grid or the embedding) and
see the image patches the encoder maps to it, and its decoded tile."""
import numpy as np
import streamlit as st

from app import cached, keys, sources, ui


from vqexplore import plots


CLICKABLE_MAX = 4096  # codes drawn as clickable markers by default


def render() -> None:
    p, model, sample = ui.single_checkpoint_page("code_inspector")
    n = cached.sample_size()
    k = model.codebook_size

    with ui.shown_errors():
        stamp = sources.weights_stamp(p.path)
        counts = cached.usage_counts(p.path, stamp, sample)
        # The code to show lives in session state ("inspect_code"), so the usage page and the
        # embedding page can hand one over; the widget mirrors it.
        default = st.session_state.get(keys.INSPECT_CODE)
        if default is None or not 0 <= int(default) < k:
            default = int(np.argmax(counts))
        st.session_state[keys.INSPECT_CODE] = st.session_state["inspector_code"] = int(default)

        def _typed() -> None:
            st.session_state[keys.INSPECT_CODE] = int(st.session_state["inspector_code"])

        left, right = st.columns([1, 1])
        with left:
            code = int(st.number_input(f"Code id (0 to {k - 1})", 0, k - 1, key="inspector_code", on_change=_typed))
            # Above 4,096 codes, clickable markers (one per code) cost the browser seconds: the grid is
            # then drawn as a plain heatmap (fast, hover only), and the clickable one is a choice.
            big = k > CLICKABLE_MAX
            choices = ["usage grid", "embedding (PCA)", "embedding (UMAP)", "no chart"]
            if big:
                choices.insert(1, "usage grid (clickable)")
            if st.session_state.get("inspector_pick") not in choices:
                st.session_state["inspector_pick"] = "usage grid"
            pick_from = st.radio("Or pick it from", choices, horizontal=True, key="inspector_pick")
            if pick_from == "no chart":
                fig = None
                st.caption("No chart: type a code id above, or pick a chart to click a code on.")
            elif pick_from == "usage grid" and big:
                fig = plots.usage_heatmap(counts, highlight=code, title=f"Code usage ({k:,} codes): hover for ids")
                st.caption(f"{k:,} codes: this grid shows usage and ids on hover but is not clickable (a clickable "
                           f"marker per code costs the browser several seconds above {CLICKABLE_MAX:,}). Type the "
                           "id above, or choose \"usage grid (clickable)\" or an embedding to click one.")
            elif pick_from.startswith("usage grid"):
                fig = plots.usage_heatmap(counts, selectable=True, highlight=code, title="Click a code")
            else:
                method = "pca" if "PCA" in pick_from else "umap"
                proj = cached.projection(p.path, stamp, method, False, sample)
                fig = plots.embedding_scatter(proj.codes, counts, method=proj.method, highlight=code,
                                              title="Click a code")
            event = None if fig is None else st.plotly_chart(
                fig, width="stretch", key=f"inspector_pick_{pick_from}", on_select="rerun", selection_mode="points")
            ui.follow_clicked_code(None if event is None else plots.selected_code(event), code,
                                   "_inspector_last_click")
        with right:
            max_patches = st.slider("Patches to show", 4, 64, 24, step=4, key="inspector_max")
            with st.spinner("Finding patches..."):
                gallery = cached.code_gallery(p.path, stamp, code, sample, max_patches)
            used = int(counts[code])  # the protocol's count (the same as Codebook usage shows)
            share = used / max(int(counts.sum()), 1)
            st.markdown(f"### Code {code}")
            st.markdown(f"Used by **{used:,}** of {int(counts.sum()):,} tokens ({share:.2%}) under the protocol "
                        f"({n} images); {gallery.count:,} of them in the {n} square images the patches come from.")
            st.image(ui.enlarge(gallery.tile, 6), caption="decoded tile: a 4 x 4 grid of this code",
                     width=96)
            if used == 0:
                st.warning(f"Code {code} is dead on this sample: the encoder never maps a token to it.")
            elif gallery.count == 0:
                st.info(f"Code {code} is used only where the images are encoded whole at other sizes; "
                        f"no patch of the square images maps to it.")
            else:
                from vqexplore.nets import global_layers

                f = model.downsample
                st.markdown(f"Receptive-field crops ({gallery.receptive_field} x {gallery.receptive_field} px, "
                            f"the token's own {f} x {f} cell outlined), most typical first:"
                            + (" (this encoder's attention and GroupNorm see the whole image; the crop shows one "
                               "cell of context around the token)" if global_layers(model.encoder) else ""))
                st.image([ui.enlarge(x, 3) for x in gallery.patches],
                         caption=[f"img {b} ({r},{c}) d={d:.2f}" for (b, r, c), d in zip(gallery.locations.tolist(),
                                                                                         gallery.distances)],
                         width=102)

    ui.footer()
