"""Codebook usage: per-code counts on the validation sample as a grid heatmap (log colour, dead
codes in red) and a histogram; for a run, every code's usage across its checkpoints."""
import streamlit as st

import ui
from vqexplore import analysis, plots
from vqexplore.hub import list_checkpoints

p, model, sample = ui.single_checkpoint_page("Codebook usage")
n = ui.sample_size()

with ui.shown_errors():
    with st.spinner("Counting codes..."):
        counts = ui.counts_of(p)
    stats = analysis.usage_stats(counts)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Usage", f"{stats.usage:.2%}")
    c2.metric("Perplexity", f"{stats.perplexity:.1f}")
    c3.metric("Dead codes", f"{stats.dead_codes} / {stats.codebook_size}")
    c4.metric("Normalised entropy", f"{stats.normalized_entropy:.3f}")
    st.caption(f"On the protocol's {n} images ({int(counts.sum()):,} tokens counted).")
    event = st.plotly_chart(plots.usage_heatmap(counts, highlight=st.session_state.get("inspect_code")),
                            width="stretch", key="usage_heatmap")
    st.plotly_chart(plots.usage_histogram(counts), width="stretch", key="usage_histogram")

    top = counts.argsort()[::-1][:10]
    st.markdown("**Most used codes:** " + ", ".join(f"{int(i)} ({int(counts[i])})" for i in top))
    code = st.number_input("Inspect code id", 0, int(counts.size) - 1, int(top[0]), key="usage_code")
    if st.button("Open in Code inspector", key="usage_to_inspector"):
        st.session_state["inspect_code"] = int(code)
        st.switch_page("views/code_inspector.py")

st.subheader("Across the run's checkpoints")
run_dir = p.run_dir
ckpts = list_checkpoints(run_dir) if run_dir else []
if len(ckpts) < 2:
    st.info("This checkpoint is not part of a run with several checkpoints (select a run folder, "
            "`runs/<name>/`, to see when codes die or revive).")
else:
    with ui.shown_errors():
        # a slider needs a range: with two checkpoints both are used
        max_ckpts = st.slider("Checkpoints to use (spread over the run)", 2, min(48, len(ckpts)),
                              min(12, len(ckpts)), key="run_max_ckpts") if len(ckpts) >= 3 else len(ckpts)
        with st.spinner(f"Counting codes in {max_ckpts} checkpoints..."):
            over = ui.run_usage(run_dir, tuple(s for s, _ in ckpts), sample, max_ckpts)
        sort = st.radio("Order codes by", ["first_use", "id"], horizontal=True, key="run_sort",
                        format_func={"first_use": "first step used", "id": "code id"}.get)
        st.plotly_chart(plots.usage_over_steps(over.steps, over.counts, sort=sort), width="stretch",
                        key="usage_over_steps")

ui.footer()
