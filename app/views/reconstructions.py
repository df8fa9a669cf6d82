"""Reconstructions: each image drawn at 256 px or more with crisp pixels, swiping between the input
and each checkpoint's reconstruction (or error map, or token map), per-image PSNR / SSIM (/ LPIPS)
and batch means, several checkpoints side by side; then token surgery: pick cells of the token
grid, replace their code, and see the decode change next to the original decode."""
import hashlib
import math

import numpy as np
import pandas as pd
import streamlit as st

from app import cached, keys, sources, ui, viewstate, widgets


from vqexplore import plots
from vqexplore.metricinfo import METRIC
from vqexplore.data import load_image, tensor_to_image
from vqexplore.errors import ImageError
from vqexplore.reconstruct import prepare_image
from vqexplore.surgery import cells_from_points, format_cells, majority_code, parse_cells


def render() -> None:
    ui.page("reconstructions")
    picked = ui.require_selection()
    labels = [p.name for p in picked]
    viewstate.track("mode", "recon_mode", str, lambda v: v in ("64", "native"))
    viewstate.track("count", "recon_count", int, lambda v: 1 <= v <= 16)
    viewstate.track("per_row", "recon_per_row", int, lambda v: 1 <= v <= 6)
    chosen = st.multiselect("Checkpoints side by side", labels, default=labels, key="recon_ckpts")
    c1, c2, c3 = st.columns([2, 1, 2])
    source = c1.radio("Images", ["validation", "upload"], horizontal=True, key="recon_source",
                      format_func={"validation": "validation photos", "upload": "upload your own"}.get)
    size = cached.sample().size
    mode = c2.radio("Size", ["64", "native"], horizontal=True, key="recon_mode",
                    format_func={"64": f"{size} x {size} crop", "native": "native (up to 512 x 512)"}.get)
    LAYERS = {"reconstruction": "reconstruction", "error": "|error|", "tokens": "token map"}
    viewstate.track("layer", "recon_layer", str, lambda v: v in LAYERS)
    layer = c3.radio("Swipe the input against", list(LAYERS), horizontal=True, key="recon_layer",
                     format_func=LAYERS.get)

    # "native" keeps each image's own size, cropped to a multiple of every chosen tokenizer's
    # downsampling (4 for SimpleCNN, 16 for an f16 VQGAN)
    multiple = 4
    for label in chosen:
        with ui.shown_errors(f"{label}: "):
            multiple = math.lcm(multiple, int(cached.model_of(picked[labels.index(label)]).downsample))
    images, names = [], []
    if source == "validation":
        available = min(16, cached.sample_size())
        count = st.slider("Number of validation images", 1, available, min(4, available), key="recon_count") \
            if available > 1 else 1
        batch = cached.validation_images(cached.sample())[:count]
        images = [prepare_image(tensor_to_image(x), mode, size=size, multiple=multiple) for x in batch]
        names = [f"val {i}" for i in range(len(images))]
    else:
        files = st.file_uploader("Images (JPEG, PNG, WebP)", accept_multiple_files=True, key="recon_upload")
        for f in files or []:
            try:
                images.append(prepare_image(load_image(f, name=f.name), mode, size=size, multiple=multiple))
                names.append(f.name)
            except ImageError as e:
                st.error(str(e))
            except ValueError as e:  # e.g. an image too small for the model
                st.error(f"{f.name} cannot be used: {e}")
        if not files:
            st.info("Upload one or more images to reconstruct them.")

    if not images or not chosen:
        ui.footer()
        st.stop()

    with_lpips = cached.lpips_module() is not None
    key = hashlib.sha256(b"".join(np.ascontiguousarray(im).tobytes() + str(im.shape).encode()
                                  for im in images)).hexdigest()
    results: dict[str, list] = {}
    models: dict[str, object] = {}
    for label in chosen:
        p = picked[labels.index(label)]
        with ui.shown_errors(f"{label}: "):
            models[label] = cached.model_of(p)
            with st.spinner(f"Reconstructing with {label}..."):
                results[label] = cached.reconstructions(p.path, sources.weights_stamp(p.path), key, tuple(images),
                                                        with_lpips)
            # The checkpoint's numbers under the protocol (the same evaluation as Compare and Codebook
            # usage); the numbers of the images shown are in the table below.
            m = cached.evaluation_of(p, with_lpips).metrics
            st.markdown(f"**{label}** · usage {METRIC['usage'].format(m['usage'])} · "
                        f"PSNR {METRIC['psnr'].format(m['psnr'])} · SSIM {METRIC['ssim'].format(m['ssim'])}"
                        + (f" · LPIPS {METRIC['lpips'].format(m['lpips'])}" if m.get("lpips") is not None else "")
                        + f" · {m['bits_per_pixel_entropy']:.3f} bits/pixel",
                        help=f"On all {m['num_images']} images of the protocol ({m['protocol_description']}).")
    done = [label for label in chosen if label in results]
    means = [{"checkpoint": label, "K": models[label].codebook_size,
              "PSNR (dB)": np.mean([r.psnr for r in results[label]]), "SSIM": np.mean([r.ssim for r in results[label]]),
              **({"LPIPS": np.mean([r.lpips for r in results[label]])} if with_lpips else {})} for label in done]
    if means:
        st.dataframe(pd.DataFrame(means), hide_index=True, width="content",
                     column_config={"PSNR (dB)": st.column_config.NumberColumn(format="%.2f"),
                                    "SSIM": st.column_config.NumberColumn(format="%.4f"),
                                    "LPIPS": st.column_config.NumberColumn(format="%.4f")})
    # Widgets wrap into rows of a few columns and each one fits its column (it never spills over its
    # neighbour); the frames of one image share swipe and zoom.
    wide = max(im.shape[1] for im in images)
    default_per_row = max(1, min(len(done), 3 if wide * widgets.display_scale(wide) <= 320 else 2))
    if not 1 <= int(st.session_state.get("recon_per_row", default_per_row)) <= 6:
        st.session_state["recon_per_row"] = default_per_row
    st.session_state.setdefault("recon_per_row", default_per_row)
    per_row = st.select_slider("Checkpoints per row", list(range(1, 7)), key="recon_per_row")
    scale = widgets.display_scale(images[0].shape[1])
    st.caption(f"Each image is drawn up to {scale}x (nearest-neighbour, at most {images[0].shape[1] * scale} px wide, "
               "less when its column is narrower): drag the slider or the image to swipe between the input (left) and "
               f"the checkpoint's {LAYERS[layer]} (right); Flip shows all of one, then the other; + / − / double click "
               "(or ctrl + wheel) zoom with crisp pixels up to 16x, shift-drag pans. The checkpoints of one image "
               "swipe and zoom together.")

    rows = []
    for i, name in enumerate(names):
        group = f"{key[:12]}-{i}"
        for start in range(0, len(done), per_row):
            cols = st.columns(per_row)
            for col, label in zip(cols, done[start:start + per_row]):
                r = results[label][i]
                right = {"reconstruction": r.reconstruction, "error": r.error_map, "tokens": r.token_map}[layer]
                below = widgets.thumbs_html([(r.error_map, f"{name} · |error|"),
                                             (r.token_map, f"{r.num_tokens} tokens")], side=128)
                page_html, _ = widgets.swipe_html(
                    r.original, right, labels=("input", LAYERS[layer]), uid=f"swipe-{i}-{done.index(label)}",
                    group=group, caption=f"{name} · {label} · PSNR {r.psnr:.2f} dB · SSIM {r.ssim:.4f}",
                    below=below + widgets.error_colorbar())
                with col:
                    st.iframe(page_html, width="stretch", height="content",
                              alt=f"{name}: input vs {label} {LAYERS[layer]}")
        for label in done:
            r = results[label][i]
            rows.append({"checkpoint": label, "image": name, "PSNR": r.psnr, "SSIM": r.ssim,
                         "LPIPS": r.lpips, "tokens": r.num_tokens, "bits": round(r.bits, 1)})

    if rows:
        frame = pd.DataFrame(rows)
        st.subheader("Per image")
        st.dataframe(frame, hide_index=True, width="stretch",
                     column_config={"PSNR": st.column_config.NumberColumn("PSNR (dB)", format="%.2f"),
                                    "SSIM": st.column_config.NumberColumn(format="%.4f"),
                                    "LPIPS": st.column_config.NumberColumn(format="%.4f")})
        if not with_lpips:
            st.caption("LPIPS: " + (cached.weights_status().get("lpips") or "unavailable"))

    # ---------------------------------------------------------------------------------------------
    # Token surgery
    # ---------------------------------------------------------------------------------------------
    st.subheader("Token surgery: what does this token do here?")
    if not done:
        ui.footer()
        st.stop()
    st.caption("Click a cell of the token grid (the chart's toolbar has box and lasso select for several; or type "
               "them), pick another code, and see "
               "what the decoder makes of the edited grid next to the original decode. Only the edited cells' "
               "decoder footprint can change (checked exactly in the tests).")
    viewstate.track("edit", "surgery_ckpt", str, lambda v: v in done)
    viewstate.track("img", "surgery_image", int, lambda v: 0 <= v < len(names))
    viewstate.track("cells", "surgery_cells", str)
    viewstate.track("pick", "surgery_pick", str, lambda v: v in ("nearest", "id", "inspector"))
    viewstate.track("to", "surgery_code", int, lambda v: v >= 0)
    if st.session_state.get("surgery_ckpt") not in done:
        st.session_state["surgery_ckpt"] = done[0]
    if not 0 <= int(st.session_state.get("surgery_image", 0)) < len(names):
        st.session_state["surgery_image"] = 0
    s1, s2, s3 = st.columns([2, 1, 2])
    edit_label = s1.selectbox("Checkpoint to edit", done, key="surgery_ckpt")
    img_i = s2.selectbox("Image", list(range(len(names))), format_func=lambda i: names[i], key="surgery_image")
    background = s3.radio("Draw the grid over", ["reconstruction", "input", "tokens"], horizontal=True,
                          key="surgery_bg", format_func={"reconstruction": "reconstruction", "input": "input",
                                                         "tokens": "token map"}.get)
    p = picked[labels.index(edit_label)]
    model = models[edit_label]
    r = results[edit_label][img_i]
    grid = r.indices
    stamp = sources.weights_stamp(p.path)

    left, right = st.columns([1, 1])
    with left:
        bg = {"reconstruction": r.reconstruction, "input": r.original, "tokens": r.token_map}[background]
        try:
            current = parse_cells(st.session_state.get("surgery_cells", ""), grid.shape)
        except ValueError:
            current = np.zeros(grid.shape, bool)
        st.caption(f"{names[img_i]} · {grid.shape[0]} x {grid.shape[1]} tokens of {model.codebook_size} codes "
                   f"(hover a cell for its code)")
        fig = plots.token_grid(bg, grid, cells=current, size=max(256, min(448, bg.shape[1] * scale)))
        fig.update_layout(margin=dict(t=30))  # room for the chart's toolbar above the image
        event = st.plotly_chart(fig, width="content", key=f"surgery_grid_{edit_label}_{img_i}", on_select="rerun",
                                selection_mode=("points", "box", "lasso"))
        clicked = cells_from_points((event or {}).get("selection", {}).get("points", []), grid.shape)
        signature = format_cells(clicked)
        # A selection stays in the chart's state: act on a new one only, once.
        if clicked.any() and signature != st.session_state.get("_surgery_last_pick"):
            st.session_state["_surgery_last_pick"] = signature
            st.session_state["surgery_cells"] = signature
            st.rerun()
        st.text_input("Cells to edit: row,col or a box r0-r1,c0-c1 (several separated by ';')", key="surgery_cells",
                      placeholder="e.g. 7,8 or 4-6,2-9")
    with right:
        try:
            cells = parse_cells(st.session_state.get("surgery_cells", ""), grid.shape)
        except ValueError as e:
            st.error(str(e))
            cells = np.zeros(grid.shape, bool)
        from_code = majority_code(grid, cells)
        inspected = st.session_state.get(keys.INSPECT_CODE)
        options = ["nearest",
                   "id"] + (["inspector"] if inspected is not None and 0 <= int(inspected) < model.codebook_size
                                       else [])
        if st.session_state.get("surgery_pick") not in options:
            st.session_state["surgery_pick"] = "nearest"
        pick = st.radio("Replace them with", options, key="surgery_pick", format_func={
            "nearest": "the nearest other code", "id": "a code id",
            "inspector": f"the Code inspector's code ({inspected})"}.get)
        new_code = None
        if pick == "nearest":
            used_only = st.checkbox("only codes the encoder uses (on the validation sample)", value=True,
                                    key="surgery_used")
            if from_code is not None:
                used = (cached.usage_counts(p.path, stamp, cached.sample()) > 0) if used_only else None
                ids, dists = cached.nearest(p.path, stamp, from_code, 5, used)
                if len(ids):
                    new_code = int(ids[0])
                    st.caption(f"Nearest to code {from_code}: " + ", ".join(f"{c} ({d:.3g})" for c, d in zip(ids,
                                                                                                             dists)))
                else:
                    st.warning(f"Code {from_code} has no other used code to move to; untick the box.")
        elif pick == "id":
            if st.session_state.get("surgery_code", 0) >= model.codebook_size:
                st.session_state["surgery_code"] = 0
            new_code = int(st.number_input(f"Code id (0 to {model.codebook_size - 1})", 0, model.codebook_size - 1,
                                           key="surgery_code"))
        else:
            new_code = int(inspected)
        if not cells.any():
            st.info("Pick one or more cells on the grid (or type them) to edit.")
        elif new_code is not None:
            n_cells = int(cells.sum())
            st.markdown(f"**{n_cells} cell{'s' if n_cells > 1 else ''}** (mostly code {from_code}) → **code "
                        f"{new_code}**")
            with ui.shown_errors(f"{edit_label}: "):
                res = cached.surgery(p.path, stamp, grid, cells, new_code, r.original)
                m = st.columns(3)
                m[0].metric("PSNR, original decode", f"{res.psnr_before:.2f} dB")
                m[1].metric("PSNR, edited decode", f"{res.psnr_after:.2f} dB", delta=f"{res.psnr_delta:+.2f} dB")
                m[2].metric("Pixels changed", f"{int(res.changed.sum())}",
                            help=(f"All inside the {int(res.footprint.sum())} pixels the edited cells can reach "
                                  f"through the decoder." if res.footprint.sum() < res.footprint.size else
                                  "This decoder's GroupNorm and attention layers let every token reach every pixel."))
                page_html, _ = widgets.swipe_html(res.before, res.after,
                                                  labels=("original decode", "edited decode"), uid="swipe-surgery")
                st.iframe(page_html, width="stretch", height="content", alt="original decode vs edited decode")
                overlay = res.after.copy()
                overlay[res.footprint & ~res.changed] = (overlay[res.footprint & ~res.changed] * 0.6).astype(np.uint8)
                overlay[res.changed] = (0.5 * overlay[res.changed] + [127, 0, 127]).astype(np.uint8)
                k = widgets.display_scale(overlay.shape[1], 192)
                st.image(ui.enlarge(overlay, k), width=overlay.shape[1] * k,
                         caption="changed pixels in magenta, the rest of the decoder footprint darkened")

    ui.footer()
