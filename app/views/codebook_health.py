"""Codebook health: why the dead codes are dead (far from the data, or outcompeted by a
neighbour), how the code norms spread, and a diagnosis that names the remedies for what it sees,
with the CPU sweep rows that tried them (vqexplore.health); remedies the checkpoint's config
already uses are said to be on, never recommended."""
import streamlit as st

from app import cached, sources, ui
from vqexplore import plots
from vqexplore.health import FAR_FACTOR


def render() -> None:
    p, model, sample = ui.single_checkpoint_page("codebook_health")
    n = sample[0]

    with ui.shown_errors():
        with st.spinner("Measuring distances between codes and encoder outputs..."):
            health = cached.health(p.path, sources.weights_stamp(p.path), sample, cached.remedy_rows())
        dead = int(health.dead.sum())
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Dead codes", f"{dead:,} / {health.codebook_size:,}")
        c2.metric("far from the data", f"{health.dead_far:,}")
        c3.metric("outcompeted", f"{health.dead_near:,}")
        c4.metric("Norm spread (std/mean)", f"{health.norm_spread:.2f}")
        st.subheader("Diagnosis")
        for sentence in health.diagnosis:
            st.markdown(f"- {sentence}")
        st.caption(f"On {n} validation images. A dead code is far from the data when its nearest encoder output "
                   f"is over {FAR_FACTOR:g}x the live codes' median distance to theirs. Sweep rows: "
                   f"configs/cpu/<row>.yaml, results in docs/cpu_sweep.md.")
        st.plotly_chart(plots.health_distances(health.nearest, health.dead, health.far_threshold), width="stretch",
                        key="health_distances")
        if health.explicit and health.norms_constant:
            st.caption(f"Code norms: every code has norm {float(health.norms.mean()):.4g}"
                       + (" (l2-normalised codes)" if model.config.get("l2_norm") else "") + ", so there is no "
                       "spread to plot.")
        elif health.explicit:
            st.plotly_chart(plots.code_norms(health.norms, health.dead), width="stretch", key="code_norms")

    ui.footer()
