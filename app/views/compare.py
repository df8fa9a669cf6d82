"""Compare: the selected checkpoints in the study's table layout and their sorted per-code usage
curves on one chart (collapse at a glance); or, as the second view, rate-distortion: bits per
image against PSNR / SSIM / LPIPS, one point per checkpoint, with the CPU sweep's rows as a preset."""
import streamlit as st

from app import cached, sources, ui, viewstate
from vqexplore import analysis, plots
from vqexplore.metricinfo import METRICS


def render() -> None:
    ui.page("compare")
    picked = ui.require_selection()
    sample = cached.sample()
    n = sample[0]
    with_lpips = cached.lpips_module() is not None
    VIEWS = {"table": "table and usage curves", "rd": "rate-distortion"}
    viewstate.track("view", "compare_view", str, lambda v: v in VIEWS)
    view = st.radio("View", list(VIEWS), horizontal=True, key="compare_view", format_func=VIEWS.get,
                    label_visibility="collapsed")

    rows, curves = [], {}
    with st.spinner(f"Measuring {len(picked)} checkpoint(s) on {n} validation images..."):
        for p in picked:
            with ui.shown_errors(f"{p.name}: "):
                stamp = sources.weights_stamp(p.path)
                rows.append(cached.comparison_row(p.path, stamp, p.name, sample, with_lpips))
                curves[p.name] = cached.usage_counts(p.path, stamp, sample)

    if rows and view == "table":
        table = analysis.comparison_table(rows)
        st.dataframe(
            table, hide_index=True, width="stretch",
            column_config={m.column: st.column_config.NumberColumn(m.label, format=m.streamlit_format, help=m.help)
                           for m in METRICS if m.column in table.columns})
        notes = []
        if not with_lpips:
            notes.append("LPIPS: " + (cached.weights_status().get("lpips") or "unavailable"))
        notes.append("rFID is shown only where a checkpoint's metrics.json has it (`python -m trainer eval`).")
        st.caption(" · ".join(notes))
        st.download_button("Download table (CSV)", table.to_csv(index=False), "comparison.csv", "text/csv")
        if len(table) > 1:
            group = st.radio("Group points by", ["remedy", "quantizer"], horizontal=True, key="compare_group")
            st.plotly_chart(plots.usage_vs_quality(table, group=group), width="stretch", key="usage_vs_psnr")
            st.caption("One point per checkpoint: does a remedy buy usage without losing PSNR? "
                       "The CPU sweep's remedy rows: docs/cpu_sweep.md, \"Remedies at 16,384 codes\".")

    if curves and view == "table":
        x = st.radio("x axis", ["fraction", "rank"], horizontal=True, key="curve_x",
                     format_func={"fraction": "rank / codebook size", "rank": "rank"}.get)
        st.plotly_chart(plots.usage_curves(curves, x=x), width="stretch", key="usage_curves")
        st.caption(f"Counts on the same {n} validation images for every checkpoint; a curve that falls "
                   f"early means most codes go unused (codebook collapse).")

    if view == "rd":
        from vqexplore.hub import read_metrics
        from vqexplore.ratedistortion import point_from_row, rate_distortion_table

        points = []
        for p, row in zip(picked, rows):
            with ui.shown_errors(f"{p.name}: "):
                saved = read_metrics(p.path) or {}
                # Rate and distortion come from where the row's numbers came from: metrics.json (its
                # image size) or the live sample (the sidebar's).
                size = int(saved.get("image_size") or sample[1]) if "perplexity" in saved else sample[1]
                try:
                    points.append(point_from_row(row, cached.model_of(p).config, size))
                except ValueError as e:
                    st.warning(str(e))
        viewstate.track("sweep", "rd_sweep", lambda v: v == "1")
        viewstate.track("runs", "rd_runs", lambda v: v == "1")
        c1, c2, c3, c4 = st.columns([2, 2, 2, 2])
        x = c1.radio("Rate", ["bpp (entropy)", "bpp (fixed)", "bits (entropy)", "bits (fixed)"], key="rd_x",
                     format_func={"bpp (entropy)": "bits per pixel, entropy", "bpp (fixed)": "bits per pixel, log2 K",
                                  "bits (entropy)": "bits per image, entropy",
                                  "bits (fixed)": "bits per image, log2 K"}.get,
                     help="Bits per pixel put checkpoints of different image sizes on one axis; bits per image "
                          "draws one panel per image size.")
        metrics = ["PSNR", "SSIM"] + (["LPIPS"] if any(pt.lpips is not None for pt in points) else [])
        y = c2.radio("Quality", metrics, key="rd_y")
        sweep = c3.toggle("CPU sweep preset", key="rd_sweep",
                          help=f"Every row of {cached.SWEEP_TABLE.name} (`python -m trainer sweep configs/cpu` writes "
                               "it "
                               f"beside its markdown tables)")
        runs = c4.toggle("evaluated runs", key="rd_runs",
                         help=f"Every run in {sources.runs_root()} whose newest checkpoint has a metrics.json "
                              f"(`python -m trainer eval --ckpt RUN`)")
        frame = rate_distortion_table(points)
        frame["set"] = "selected"
        import pandas as pd

        extra = []
        if sweep:
            sweep_points = cached.sweep_points(str(cached.SWEEP_TABLE))
            if not sweep_points:
                st.warning(f"{cached.SWEEP_TABLE} has no sweep rows; write them with "
                           f"`python -m trainer sweep configs/cpu`.")
            extra.append(rate_distortion_table(sweep_points).assign(set="CPU sweep"))
        if runs:
            run_points = cached.run_points(str(sources.runs_root()))
            if not run_points:
                st.info(f"No run under {sources.runs_root()} has an evaluated checkpoint (`python -m trainer eval "
                        "--ckpt RUN`).")
            extra.append(rate_distortion_table(run_points).assign(set="runs"))
        frame = pd.concat([frame, *[e for e in extra if len(e)]], ignore_index=True) if extra else frame
        if y == "LPIPS" and not frame["LPIPS"].notna().any():
            y = "PSNR"
        st.plotly_chart(plots.rate_distortion(frame, x=x, y=y, highlight=[pt.name for pt in points]), width="stretch",
                        key="rate_distortion")
        st.caption("One point per checkpoint, coloured by quantizer (filled: the selected checkpoints, open: presets). "
                   "Entropy bits = tokens x the empirical entropy of the token distribution on the validation images "
                   "(log2 of the perplexity): what a downstream model that learned the code frequencies pays. "
                   "Fixed bits = tokens x log2(codebook size). Numbers come from each checkpoint's metrics.json "
                   "where it has one (its image size), else from the live sample; the sweep's from the rows file it "
                   "writes beside its tables.")
        st.dataframe(frame, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.4f")
                                    for c in ("SSIM", "LPIPS", "bits/token (entropy)")} |
                     {"PSNR": st.column_config.NumberColumn("PSNR (dB)", format="%.2f")} |
                     {c: st.column_config.NumberColumn(format="%.0f") for c in ("bits (fixed)", "bits (entropy)")})

    ui.footer()
