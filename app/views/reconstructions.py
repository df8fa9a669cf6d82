"""Reconstructions: original | reconstruction | per-pixel error | token map for validation images
or uploads, per-image PSNR / SSIM (/ LPIPS) and batch means, several checkpoints side by side."""
import hashlib

import numpy as np
import pandas as pd
import streamlit as st

import ui
from vqexplore.data import load_image, tensor_to_image
from vqexplore.errors import ImageError
from vqexplore.reconstruct import prepare_image

ui.page("Reconstructions")
picked = ui.require_selection()
labels = [p.name for p in picked]
chosen = st.multiselect("Checkpoints side by side", labels, default=labels[:min(3, len(labels))],
                        key="recon_ckpts")
c1, c2 = st.columns([2, 1])
source = c1.radio("Images", ["validation", "upload"], horizontal=True, key="recon_source",
                  format_func={"validation": "validation photos", "upload": "upload your own"}.get)
size = ui.sample()[1]
mode = c2.radio("Size", ["64", "native"], horizontal=True, key="recon_mode",
                format_func={"64": f"{size} x {size} crop", "native": "native (up to 512 x 512)"}.get)

images, names = [], []
if source == "validation":
    count = st.slider("Number of validation images", 1, 16, 4, key="recon_count")
    batch = ui.validation_images(ui.sample())[:count]
    images = [prepare_image(tensor_to_image(x), mode, size=size) for x in batch]
    names = [f"val {i}" for i in range(len(images))]
else:
    files = st.file_uploader("Images (JPEG, PNG, WebP)", accept_multiple_files=True, key="recon_upload")
    for f in files or []:
        try:
            images.append(prepare_image(load_image(f, name=f.name), mode, size=size))
            names.append(f.name)
        except ImageError as e:
            st.error(str(e))
        except ValueError as e:  # e.g. an image too small for the model
            st.error(f"{f.name} cannot be used: {e}")
    if not files:
        st.info("Upload one or more images to reconstruct them.")

if not images or not chosen:
    st.stop()

with_lpips = ui.lpips_module() is not None
key = hashlib.sha256(b"".join(np.ascontiguousarray(im).tobytes() + str(im.shape).encode() for im in images)).hexdigest()
rows = []
columns = st.columns(len(chosen))
for col, label in zip(columns, chosen):
    p = picked[labels.index(label)]
    with col, ui.shown_errors(f"{label}: "):
        model = ui.model_of(p)
        with st.spinner(f"Reconstructing with {label}..."):
            recs = ui.reconstructions(p.path, ui.weights_stamp(p.path), key, tuple(images), with_lpips)
        psnr = np.mean([r.psnr for r in recs])
        ssim = np.mean([r.ssim for r in recs])
        st.markdown(f"**{label}** · K={model.codebook_size} · PSNR {psnr:.2f} dB · SSIM {ssim:.4f}"
                    + (f" · LPIPS {np.mean([r.lpips for r in recs]):.4f}" if with_lpips else ""))
        for name, r in zip(names, recs):
            st.image([r.original, r.reconstruction, r.error_map, r.token_map],
                     caption=[name, f"PSNR {r.psnr:.2f}", "|error|", f"{r.num_tokens} tokens"],
                     width=min(128, max(64, r.original.shape[1])) if r.original.shape[1] <= 128 else 160)
            rows.append({"checkpoint": label, "image": name, "PSNR": r.psnr, "SSIM": r.ssim,
                         "LPIPS": r.lpips, "tokens": r.num_tokens, "bits": round(r.bits, 1)})

if rows:
    frame = pd.DataFrame(rows)
    st.subheader("Per image")
    st.dataframe(frame, hide_index=True, width="stretch")
    st.subheader("Batch means")
    st.dataframe(frame.groupby("checkpoint", sort=False)[["PSNR", "SSIM", "LPIPS"]].mean().reset_index(),
                 hide_index=True, width="stretch")
    if not with_lpips:
        st.caption("LPIPS: " + (ui.weights_status().get("lpips") or "unavailable"))

ui.footer()
