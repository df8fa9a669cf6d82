"""Codebook usage: per-code counts on the validation sample as a grid heatmap (log colour, dead
codes in red) and a histogram; for a run, every code's usage across its checkpoints."""
import streamlit as st

from app import pages, cached, keys, ui


from vqexplore import analysis, plots
from vqexplore.metricinfo import METRIC
from vqexplore.hub import list_checkpoints


def render() -> None:
    p, model, sample = ui.single_checkpoint_page("codebook_usage")
    n = sample[0]

    with ui.shown_errors():
        with st.spinner("Counting codes..."):
            counts = cached.counts_of(p)
        stats = analysis.usage_stats(counts)
        c1, c2, c3, c4 = st.columns(4)
        shown = stats.as_dict()
        for col, key in zip((c1, c2, c3, c4), ("usage", "perplexity", "dead_codes", "normalized_entropy")):
            value = METRIC[key].format(shown[key])
            col.metric(METRIC[key].label, f"{value} / {stats.codebook_size:,}" if key == "dead_codes" else value,
                       help=METRIC[key].help)
        st.caption(f"On {n} validation images ({int(counts.sum())} tokens).")
        st.plotly_chart(plots.usage_heatmap(counts, highlight=st.session_state.get(keys.INSPECT_CODE)),
                        width="stretch", key="usage_heatmap")
        st.plotly_chart(plots.usage_histogram(counts), width="stretch", key="usage_histogram")

        top = analysis.most_used_codes(counts, 10)  # never a code used 0 times
        st.markdown("**Most used codes:** " + (", ".join(f"{i} ({c:,} tokens)" for i, c in top) if top else "none"))
        code = st.number_input("Inspect code id", 0, int(counts.size) - 1, top[0][0] if top else 0, key="usage_code")
        if st.button("Open in Code inspector", key="usage_to_inspector"):
            st.session_state[keys.INSPECT_CODE] = int(code)
            pages.switch_to("code_inspector")

    st.subheader("Across the run's checkpoints")
    run_dir = p.run_dir
    ckpts = list_checkpoints(run_dir) if run_dir else []
    if len(ckpts) < 2:
        st.info("This checkpoint is not part of a run with several checkpoints (select a run folder, "
                "`runs/<name>/`, to see when codes die or revive).")
    else:
        with ui.shown_errors():
            max_ckpts = st.slider("Checkpoints to use (spread over the run)", 2, min(48, len(ckpts)),
                                  min(12, len(ckpts)), key="run_max_ckpts")
            with st.spinner(f"Counting codes in {max_ckpts} checkpoints..."):
                over = cached.run_usage(run_dir, tuple(s for s, _ in ckpts), sample, max_ckpts)
            c1, c2 = st.columns(2)
            sort = c1.radio("Order codes by", ["first_use", "id"], horizontal=True, key="run_sort",
                            format_func={"first_use": "first step used", "id": "code id"}.get)
            ever = int((over.counts > 0).any(1).sum())
            # With few live codes the full heatmap is a red sheet with 1-px lines: start on live codes.
            if "run_live_only" not in st.session_state:
                st.session_state["run_live_only"] = ever < 0.25 * over.counts.shape[0]
            live_only = c2.toggle(f"Live codes only ({ever:,} of {over.counts.shape[0]:,} used at some step)",
                                  key="run_live_only")
            st.plotly_chart(plots.usage_over_steps(over.steps, over.counts, sort=sort, live_only=live_only),
                            width="stretch", key="usage_over_steps")

    ui.footer()
