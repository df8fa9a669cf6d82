"""Aligned codes: which codes survive training. Match the codes of two checkpoints (two steps of a
run, or two runs) by a Hungarian assignment on the codebook vectors, count the codes that persist,
and measure the token agreement on the same validation images once the ids are translated; for a
run, the codes x steps heatmap with each row following one code through the alignments."""
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import cached, sources, ui, viewstate
from vqexplore import plots
from vqexplore.hub import list_checkpoints


def _code_dim(path: str) -> int | None:
    """The dimension of a checkpoint's code space (None when it cannot be loaded)."""
    try:
        return int(cached.load_model(path, sources.weights_stamp(path)).codebook_vectors().shape[1])
    except Exception:  # a broken checkpoint: the page reports it when it is picked
        return None


def render() -> None:
    ui.page("aligned_codes")
    picked = ui.require_selection()
    sample = cached.sample()
    n = sample[0]

    # Every selected checkpoint, and every step of the selected runs, can be A or B.
    choices: dict[str, str] = {}
    runs: dict[str, str] = {}
    for p in picked:
        choices[p.name] = str(p.path)
        if p.run_dir:
            steps = list_checkpoints(p.run_dir)
            if len(steps) >= 2:
                runs[p.name] = str(p.run_dir)
            for step, path in steps:
                choices[f"{Path(p.run_dir).name} @ step {step}"] = str(path)
    labels = list(choices)
    if len(labels) < 2:
        st.info("Select two checkpoints in the sidebar (or a run folder, `runs/<name>/`, with several "
                "checkpoints) to match their codes.")
        ui.footer()
        st.stop()

    # Default pair: the first and last step of a run when one is selected, else the first two
    # checkpoints whose codes live in one space (the same code dimension), else the first two.
    run_steps = [lab for lab in labels if " @ step " in lab]
    if len(run_steps) >= 2:
        default_a, default_b = run_steps[0], run_steps[-1]
    else:
        default_a, default_b = next(((a, b) for i, a in enumerate(labels) for b in labels[i + 1:]
                                     if _code_dim(choices[a]) == _code_dim(choices[b]) is not None),
                                    (labels[0], labels[1]))
    viewstate.track("a", "align_a", str, lambda v: v in choices)
    viewstate.track("b", "align_b", str, lambda v: v in choices)
    for key, default in (("align_a", default_a), ("align_b", default_b)):
        if st.session_state.get(key) not in choices:
            st.session_state[key] = default
    c1, c2 = st.columns(2)
    label_a = c1.selectbox("Checkpoint A (earlier)", labels, key="align_a")
    label_b = c2.selectbox("Checkpoint B (later)", labels, key="align_b")
    path_a, path_b = choices[label_a], choices[label_b]

    with ui.shown_errors():
        try:
            with st.spinner(f"Matching codes on {n} validation images..."):
                al, info = cached.alignment(path_a, sources.weights_stamp(path_a), path_b,
                                            sources.weights_stamp(path_b), sample)
        except ValueError as e:  # e.g. codebooks of different code dimensions
            st.error(str(e))
            ui.footer()
            st.stop()
        s = al.summary()
        m = st.columns(5)
        m[0].metric("Live codes A", s["live A"])
        m[1].metric("Live codes B", s["live B"])
        m[2].metric("Persisting", s["persisting"], help="Live in both, matched one-to-one, and closer than the "
                                                        "threshold (the median spacing of B's live codes).")
        m[3].metric("… with the same id", s["persisting, same id"])
        agree = info["agreement_aligned"]
        raw = info["agreement_raw"]
        m[4].metric("Token agreement", f"{agree:.1%}",
                    delta=None if raw is None else f"{100 * (agree - raw):+.1f} pts vs raw ids ({raw:.1%})",
                    help="Tokens of the same images (same positions) whose B code is A's code translated by the "
                         "alignment; 'raw ids' compares the ids as they are. Raw above aligned means codes kept "
                         "their ids while moving further than codes are apart: the assignment by vectors then "
                         "pairs them differently.")
        st.caption(f"{s['method']}. Threshold {al.threshold:.4g} (euclidean). {n} validation images.")

        live_ids = np.flatnonzero(al.live_a)
        if live_ids.size:
            counts_a, counts_b = info["counts_a"], info["counts_b"]
            left, right = st.columns([3, 2])
            with left:
                fig = plots.alignment_scatter(al.distance[live_ids], counts_a[live_ids], al.persists[live_ids],
                                              live_ids,
                                              al.threshold,
                                              title="Live codes of A: how far each moved to its match in B")
                event = st.plotly_chart(fig, width="stretch", key="align_scatter", on_select="rerun",
                                        selection_mode="points")
            clicked = plots.selected_code(event)
            viewstate.track("pair", "align_code", int, lambda v: 0 <= v < al.mapping.size)
            if clicked is not None:
                st.session_state["align_code"] = clicked
            code = st.session_state.get("align_code")
            if code is None or not al.live_a[int(code)]:
                code = int(live_ids[np.argmax(counts_a[live_ids])])
                st.session_state["align_code"] = code
            with right:
                match = int(al.mapping[code])
                st.markdown(f"#### Code {code} of A → code {match} of B")
                st.markdown(f"moved {al.distance[code]:.4g} · "
                            f"{'**persists**' if al.persists[code] else 'does not persist'}"
                            f" · used {int(counts_a[code])} times in A, {int(counts_b[match])} in B")
                t1, t2 = st.columns(2)
                t1.image(ui.enlarge(cached.tile(path_a, sources.weights_stamp(path_a), code), 8),
                         caption=f"A: code {code}",
                         width=128)
                t2.image(ui.enlarge(cached.tile(path_b, sources.weights_stamp(path_b), match), 8),
                         caption=f"B: code {match}",
                         width=128)
                st.caption("Decoded tiles (a 4 x 4 grid of the code through each decoder). Click a point to pick a "
                           "code.")
            st.subheader("Matched codes, most used first")
            st.dataframe(al.pairs(counts_a, counts_b).head(200), hide_index=True, width="stretch", height=250,
                         column_config={"distance": st.column_config.NumberColumn(format="%.4f")})

    st.subheader("Across a run: codes x steps, following aligned codes")
    if not runs:
        st.info("Select a run folder (`runs/<name>/`) with several checkpoints to follow its codes from step to step.")
    else:
        run_label = st.selectbox("Run", list(runs), key="align_run")
        run_dir = runs[run_label]
        ckpts = list_checkpoints(run_dir)
        with ui.shown_errors():
            max_ckpts = st.slider("Checkpoints to use (spread over the run)", 2, min(24, len(ckpts)), min(8,
                                                                                                          len(ckpts)),
                                  key="align_max_ckpts")
            with st.spinner(f"Aligning {max_ckpts} checkpoints..."):
                followed = cached.aligned_run_usage(run_dir, tuple(s for s, _ in ckpts), sample, max_ckpts)
            follow = st.radio("Rows", ["aligned", "id"], horizontal=True, key="align_rows",
                              format_func={"aligned": "follow aligned codes", "id": "fixed code ids"}.get)
            if follow == "aligned":
                counts = followed.counts
                note = (f"Row r follows the code that is id r at step {int(followed.steps[-1])} back through the "
                        f"alignments ({followed.moved} codes change id along the way).")
            else:
                over = cached.run_usage(run_dir, tuple(s for s, _ in ckpts), sample, max_ckpts)
                counts = over.counts
                note = "Rows are fixed code ids: a code that moves to another id shows as a death plus a birth."
            st.plotly_chart(plots.usage_over_steps(followed.steps, counts, sort="first_use"), width="stretch",
                            key="align_over_steps")
            st.caption(note)
            steps = followed.steps
            st.dataframe(pd.DataFrame({"from step": steps[:-1], "to step": steps[1:],
                                       "persisting codes": followed.persisting,
                                       "token agreement (aligned)": followed.agreement}),
                         hide_index=True, width="stretch",
                         column_config={"token agreement (aligned)": st.column_config.NumberColumn(format="%.3f")})

    ui.footer()
