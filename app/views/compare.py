"""Compare: the selected checkpoints in the study's table layout, and their sorted per-code
usage curves on one chart (collapse at a glance)."""
import streamlit as st

import ui
from vqexplore import analysis, plots

ui.page("Compare checkpoints")
picked = ui.require_selection()
sample = ui.sample()
n = sample[0]
with_lpips = ui.lpips_module() is not None

rows, curves = [], {}
with st.spinner(f"Measuring {len(picked)} checkpoint(s) on {n} validation images..."):
    for p in picked:
        with ui.shown_errors(f"{p.name}: "):
            stamp = ui.weights_stamp(p.path)
            rows.append(ui.comparison_row(p.path, stamp, p.name, sample, with_lpips))
            curves[p.name] = ui.usage_counts(p.path, stamp, sample)

if rows:
    table = analysis.comparison_table(rows)
    st.dataframe(
        table, hide_index=True, width="stretch",
        column_config={
            "usage %": st.column_config.NumberColumn("usage", format="%.2f%%"),
            "perplexity": st.column_config.NumberColumn(format="%.1f"),
            "PSNR": st.column_config.NumberColumn(format="%.4f"),
            "SSIM": st.column_config.NumberColumn(format="%.4f"),
            "LPIPS": st.column_config.NumberColumn(format="%.4f"),
            "rFID": st.column_config.NumberColumn(format="%.2f"),
        })
    notes = []
    if not with_lpips:
        notes.append("LPIPS: " + (ui.weights_status().get("lpips") or "unavailable"))
    notes.append("rFID is shown only where a checkpoint's metrics.json has it (`python -m trainer eval`).")
    st.caption(" · ".join(notes))
    st.download_button("Download table (CSV)", table.to_csv(index=False), "comparison.csv", "text/csv")

if curves:
    x = st.radio("x axis", ["fraction", "rank"], horizontal=True, key="curve_x",
                 format_func={"fraction": "rank / codebook size", "rank": "rank"}.get)
    st.plotly_chart(plots.usage_curves(curves, x=x), width="stretch", key="usage_curves")
    st.caption(f"Counts on the same {n} validation images for every checkpoint; a curve that falls "
               f"early means most codes go unused (codebook collapse).")

ui.footer()
