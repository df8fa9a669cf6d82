"""Training: loss, usage, perplexity (and validation metrics) vs step from a run's
metrics.jsonl, redrawn every few seconds while the run is writing."""
import time
from pathlib import Path

import streamlit as st

from app import sources, ui
from vqexplore import analysis, plots
from vqexplore.hub import RUN_METRICS_NAME, list_checkpoints


def render() -> None:
    ui.page("training")
    picked = ui.selected()
    runs = {}
    for p in picked:
        if p.run_dir:
            runs.setdefault(Path(p.run_dir).name, p.run_dir)
    for label, path in sources.discover(sources.checkpoint_root(), sources.runs_root()).items():
        if label.startswith("run: "):
            runs.setdefault(label[5:], path)
    if not runs:
        st.info(f"No training run found: select a run folder in the sidebar, or start one with "
                f"`python -m trainer --cfg configs/cpu/<name>.yaml` (it writes {sources.runs_root()}/<name>/).")
        st.stop()

    name = st.selectbox("Run", list(runs), key="training_run")
    run_dir = runs[name]
    live = st.toggle("Refresh every 2 s", value=True, key="training_live")


    @st.fragment(run_every=2.0 if live else None)
    def curves() -> None:
        path = Path(run_dir) / RUN_METRICS_NAME
        if not path.is_file():
            st.info(f"{path} does not exist yet (the run has not logged a step).")
            return
        frame = analysis.training_curves(run_dir)
        age = time.time() - path.stat().st_mtime
        steps = int(frame["step"].max()) if len(frame) else 0
        state = "writing" if age < 30 else "idle"
        ckpts = list_checkpoints(run_dir)
        st.caption(f"{path} · last step {steps} · {len(ckpts)} checkpoint(s) · updated {age:.0f} s ago ({state})")
        latest = frame[frame["split"] == "train"].groupby("metric")["value"].last() if len(frame) else {}
        cols = st.columns(3)
        for col, metric in zip(cols, ("loss", "usage", "perplexity")):
            if metric in latest:
                value = latest[metric]
                col.metric(f"train {metric}", f"{value:.2%}" if metric == "usage" else f"{value:.4g}")
        st.plotly_chart(plots.training_curves(frame), width="stretch", key="training_curves")


    with ui.shown_errors():
        curves()

    ui.footer()
