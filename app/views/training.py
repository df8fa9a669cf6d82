"""Training: a run's metrics.jsonl the way TensorBoard and W&B draw it: one chart per metric group
(each with its own legend), several runs overlaid, a smoothing control (TensorBoard's debiased
EMA), log-scale learning rate and losses, and the sample grids (validation originals over their
reconstructions) the run writes to samples/ as it trains; redrawn every few seconds while the run
is writing. Data-driven: any metric key a run logs gets its chart without a code change."""
import time
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from app import sources, ui, viewstate
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
        ui.stop()

    viewstate.track("smooth", "training_smoothing", float, lambda v: 0.0 <= v <= 0.99)
    chosen = st.session_state.get("training_runs") or []
    if not chosen or any(r not in runs for r in chosen):
        st.session_state["training_runs"] = list(runs)[:1]
    c1, c2, c3 = st.columns([3, 2, 1])
    names = c1.multiselect("Runs (overlaid)", list(runs), key="training_runs",
                           help="Several runs on the same charts, one colour per run and metric.")
    st.session_state.setdefault("training_smoothing", 0.6)
    smoothing = c2.slider("Smoothing", 0.0, 0.99, step=0.01, key="training_smoothing",
                          help="TensorBoard's smoothing: an exponential moving average with this weight, debiased at "
                               "the start; the raw curve stays faint underneath. 0 = raw.")
    live = c3.toggle("Refresh every 2 s", value=True, key="training_live")


    @st.fragment(run_every=2.0 if live else None)
    def curves() -> None:
        frames, lines = {}, []
        for name in names:
            path = Path(runs[name]) / RUN_METRICS_NAME
            if not path.is_file():
                lines.append(f"{name}: {path} does not exist yet (the run has not logged a step)")
                continue
            frame = analysis.training_curves(runs[name])
            frames[name] = frame
            age = time.time() - path.stat().st_mtime
            steps = int(frame["step"].max()) if len(frame) else 0
            state = "writing" if age < 30 else "idle"
            lines.append(f"{name}: {path} · last step {steps} · {len(list_checkpoints(runs[name]))} checkpoint(s) · "
                         f"updated {age:.0f} s ago ({state})")
        for line in lines:
            st.caption(line)
        if len(frames) == 1:
            frame = next(iter(frames.values()))
            latest = frame[frame["split"] == "train"].groupby("metric")["value"].last() if len(frame) else {}
            cols = st.columns(3)
            for col, metric in zip(cols, ("loss", "usage", "perplexity")):
                if metric in latest:
                    value = latest[metric]
                    col.metric(f"train {metric}", f"{value:.2%}" if metric == "usage" else f"{value:.4g}")
        charts = plots.training_charts(frames if len(frames) > 1 else {"": f for f in frames.values()},
                                       smoothing=smoothing)
        if not charts:
            st.info("No metrics logged yet.")
            return
        cols = st.columns(2)
        for i, (title, fig) in enumerate(charts.items()):
            with cols[i % 2]:
                st.plotly_chart(fig, width="stretch", key=f"training_chart_{title}")


    def sample_grids() -> None:
        """The sample grids each run wrote, one step at a time (a slider over the steps)."""
        for name in names:
            grids = analysis.sample_grids(runs[name])
            if not grids:
                st.caption(f"{name}: no sample grids yet (the trainer writes samples/step-N.png at each validation).")
                continue
            steps = [s for s, _ in grids]
            step = steps[-1] if len(steps) == 1 else st.select_slider(
                f"{name}: sample grid at step", steps, value=steps[-1], key=f"training_samples_{name}")
            with Image.open(dict(grids)[step]) as opened:
                img = np.asarray(opened.convert("RGB"))
            k = max(1, min(4, 1024 // max(img.shape[1], 1)))
            st.image(ui.enlarge(img, k), caption=f"{name}, step {step}: validation images (top) and their "
                                                 f"reconstructions (bottom), {k}x nearest-neighbour",
                     width=img.shape[1] * k)


    with ui.shown_errors():
        curves()
    if names:
        st.subheader("Sample grids")
        with ui.shown_errors():
            sample_grids()

    ui.footer()
