"""Every plotly figure the apps draw, so the Streamlit dashboard and the Gradio app look alike.

Functions take numpy arrays / pandas frames (from :mod:`vqexplore.analysis`) and return a
``plotly.graph_objects.Figure``; none computes anything a test could not check separately.
Points that stand for a code carry the code id in ``customdata`` (first column), so an app can
turn a click into a code id with :func:`selected_code`.

The habits of the field, kept by every figure here: one colour-blind-safe palette (:data:`PALETTE`,
twelve distinct colours) for series, log axes labelled at decades only (:func:`log_axis`), usage
as a percentage, a colour bar on every map, units on the axes, integer ticks for counts.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "usage_curves", "usage_heatmap", "usage_histogram", "usage_over_steps", "embedding_scatter",
    "training_curves", "grid_shape", "selected_code", "DEAD_COLOR", "health_distances", "code_norms",
    "usage_vs_quality",
]

DEAD_COLOR = "#d62728"      # dead codes: red everywhere
COLORSCALE = "Viridis"
_MARGIN = dict(l=50, r=20, t=50, b=40)
# CARTO's "Safe" qualitative palette (colour-blind safe; twelve colours at least 21 CIELAB units
# apart): series colours of every figure, in this order.
PALETTE = ("#88CCEE", "#CC6677", "#DDCC77", "#117733", "#332288", "#AA4499", "#44AA99", "#999933", "#882255",
           "#661100", "#6699CC", "#888888")

__all__ += ["PALETTE", "log_axis", "series_color"]


def series_color(i: int) -> str:
    """The i-th series colour (:data:`PALETTE`, cycling past twelve)."""
    return PALETTE[int(i) % len(PALETTE)]


def log_axis(fig: go.Figure, axis: str = "y", values=None, **where) -> None:
    """Make an axis logarithmic with ticks labelled at decades only (1, 10, 100 or 10^-3 ...); when
    ``values`` span less than a decade, at 1-2-5 steps instead (a decade-only axis would have no
    tick). ``where``: ``row=``, ``col=`` of a subplot."""
    dtick: int | str = 1
    if values is not None:
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v) & (v > 0)]
        if v.size and np.log10(v.max() / v.min()) < 1:
            dtick = "D2"
    update = dict(type="log", dtick=dtick, exponentformat="power", minor=dict(ticks="inside", ticklen=3))
    (fig.update_yaxes if axis == "y" else fig.update_xaxes)(**update, **where)


def _integer_ticks(fig: go.Figure, top: float, axis: str = "y") -> None:
    """Counts never get ticks of half a code: a step of 1 for small ranges, integer labels always."""
    update = dict(tickformat=",d", rangemode="tozero")
    if top <= 10:
        update["dtick"] = 1
    (fig.update_yaxes if axis == "y" else fig.update_xaxes)(**update)


def _counts(counts) -> np.ndarray:
    arr = np.asarray(counts).reshape(-1)
    if arr.size == 0:
        raise ValueError("counts must be a non-empty (K,) array")
    return arr.astype(np.int64)


def grid_shape(codebook_size: int) -> tuple[int, int]:
    """(rows, cols) of the near-square grid the heatmaps lay the codes out on (row-major ids)."""
    cols = max(1, math.ceil(math.sqrt(codebook_size)))
    return math.ceil(codebook_size / cols), cols


def usage_curves(named_counts: Mapping[str, np.ndarray], *, x: str = "fraction", log_y: bool = True) -> go.Figure:
    """Per-code usage sorted from most to least used, one line per checkpoint.

    y: share of the tokens that each code takes, in % (log scale); x: the code's rank as a fraction of
    the codebook ("fraction", so codebooks of different sizes line up) or as a rank ("rank").
    A curve that drops to the floor early is a collapsed codebook; dead codes are cut off
    (their share is 0) and the legend says how many there are.
    """
    if x not in ("fraction", "rank"):
        raise ValueError(f"x must be 'fraction' or 'rank', got {x!r}")
    fig = go.Figure()
    shares = []
    for i, (name, counts) in enumerate(named_counts.items()):
        c = _counts(counts)
        total = max(int(c.sum()), 1)
        share = 100.0 * np.sort(c)[::-1] / total
        used = int((c > 0).sum())
        ranks = np.arange(1, c.size + 1)
        xs = ranks / c.size if x == "fraction" else ranks
        # Only the used codes: zero shares have no place on a log axis.
        fig.add_trace(go.Scattergl(
            x=xs[:used], y=share[:used], mode="lines", name=f"{name} ({used}/{c.size} used)",
            line=dict(color=series_color(i)),
            customdata=np.stack([ranks[:used], np.sort(c)[::-1][:used]], axis=1),
            hovertemplate=f"{name}<br>rank %{{customdata[0]}}<br>count %{{customdata[1]}}"
                          "<br>share %{y:.3g}%<extra></extra>"))
        shares.append(share[:used])
    fig.update_layout(
        title="Per-code usage, most used first", margin=_MARGIN, legend=dict(orientation="h", y=-0.2),
        xaxis_title="code rank / codebook size" if x == "fraction" else "code rank",
        yaxis_title="share of tokens (%)", hovermode="closest")
    if log_y:
        log_axis(fig, "y", np.concatenate(shares) if shares else None)
    if x == "fraction":
        fig.update_xaxes(range=[0, 1])
    return fig


def usage_heatmap(counts, *, title: str | None = None, selectable: bool = False,
                  highlight: int | None = None) -> go.Figure:
    """Codes laid out row-major on a near-square grid, coloured by log10(1 + count); dead codes
    (count 0) drawn in :data:`DEAD_COLOR`. Hover shows the code id and its count.

    ``selectable=True`` draws the cells as square markers (a scatter) instead of a heatmap, so that
    clicking a cell selects its code in apps (plotly heatmaps emit no selection events).
    ``highlight``: a code id to ring.
    """
    c = _counts(counts)
    k = c.size
    rows, cols = grid_shape(k)
    ids = np.arange(k)
    logc = np.log10(1.0 + c)
    dead = int((c == 0).sum())
    title = title or f"Code usage ({k - dead}/{k} used, {dead} dead in red)"
    fig = go.Figure()
    if selectable:
        r, q = np.divmod(ids, cols)
        # Marker sizes are in pixels, not data units: keep them small enough not to overlap
        # in a half-width column; dead codes go underneath so they never hide a used one.
        size = max(2.0, min(12.0, 360.0 / max(rows, cols)))
        alive = c > 0
        fig.add_trace(go.Scattergl(
            x=q[~alive], y=r[~alive], mode="markers", name="dead",
            marker=dict(symbol="square", size=size, color=DEAD_COLOR),
            customdata=np.stack([ids[~alive], c[~alive]], axis=1),
            hovertemplate="code %{customdata[0]}<br>dead (count 0)<extra></extra>"))
        fig.add_trace(go.Scattergl(
            x=q[alive], y=r[alive], mode="markers", name="used",
            marker=dict(symbol="square", size=size, color=logc[alive], colorscale=COLORSCALE,
                        cmin=0, cmax=max(float(logc.max()), 1e-9),
                        colorbar=dict(title="log10(1+count)")),
            customdata=np.stack([ids[alive], c[alive]], axis=1),
            hovertemplate="code %{customdata[0]}<br>count %{customdata[1]}<extra></extra>"))
        fig.update_layout(showlegend=False)
    else:
        z = np.full(rows * cols, np.nan)
        z[:k] = np.where(c > 0, logc, np.nan)
        dead_z = np.full(rows * cols, np.nan)
        dead_z[:k] = np.where(c == 0, 1.0, np.nan)
        id_grid = np.full(rows * cols, -1)
        id_grid[:k] = ids
        count_grid = np.full(rows * cols, -1)
        count_grid[:k] = c
        custom = np.stack([id_grid.reshape(rows, cols), count_grid.reshape(rows, cols)], axis=-1)
        # Dead codes are their own single-colour layer under the used ones, so they stand out
        # whatever the colour scale does.
        fig.add_trace(go.Heatmap(
            z=dead_z.reshape(rows, cols), colorscale=[[0, DEAD_COLOR], [1, DEAD_COLOR]], showscale=False,
            customdata=custom, hovertemplate="code %{customdata[0]}<br>dead (count 0)<extra></extra>",
            name="dead"))
        fig.add_trace(go.Heatmap(
            z=z.reshape(rows, cols), colorscale=COLORSCALE, zmin=0,
            colorbar=dict(title="log10(1+count)"), customdata=custom,
            hovertemplate="code %{customdata[0]}<br>count %{customdata[1]}<extra></extra>", name="used"))
    if highlight is not None and 0 <= int(highlight) < k:
        hr, hq = divmod(int(highlight), cols)
        fig.add_trace(go.Scatter(x=[hq], y=[hr], mode="markers", name=f"code {int(highlight)}",
                                 marker=dict(symbol="square-open", size=16, color="white",
                                             line=dict(width=3, color="white")), hoverinfo="skip"))
    fig.update_layout(title=title, margin=_MARGIN, plot_bgcolor="white")
    fig.update_xaxes(showgrid=False, zeroline=False, title=f"code id mod {cols}",
                     range=[-0.5, cols - 0.5], constrain="domain")
    fig.update_yaxes(showgrid=False, zeroline=False, title=f"code id // {cols}", autorange="reversed",
                     scaleanchor="x", scaleratio=1, constrain="domain")
    return fig


def usage_histogram(counts) -> go.Figure:
    """How many codes are used how often: histogram of per-code counts on log-spaced bins, with
    dead codes (count 0) as their own red bar."""
    c = _counts(counts)
    used = c[c > 0]
    dead = int((c == 0).sum())
    fig = go.Figure()
    if used.size:
        top = max(1.0, float(np.log10(used.max())))
        edges = np.unique(np.round(np.logspace(0, top + 1e-9, num=min(40, max(2, int(top * 10) + 2)))).astype(int))
        hist, edges = np.histogram(used, bins=np.append(edges, edges[-1] + 1) if edges.size < 2 else edges)
        centers = np.sqrt(edges[:-1] * np.maximum(edges[1:], 1))
        fig.add_trace(go.Bar(
            x=centers, y=hist, width=np.diff(edges) * 0.95, name="used codes", marker_color=PALETTE[4],
            customdata=np.stack([edges[:-1], edges[1:]], axis=1),
            hovertemplate="count in [%{customdata[0]}, %{customdata[1]})<br>%{y} codes<extra></extra>"))
        log_axis(fig, "x", used)
        _integer_ticks(fig, float(hist.max()))
    fig.update_layout(
        title=f"Histogram of per-code counts ({dead} dead codes)", margin=_MARGIN, bargap=0,
        xaxis_title="tokens assigned to a code (log)", yaxis_title="number of codes", showlegend=False)
    if dead:
        fig.add_annotation(text=f"{dead} dead codes (count 0)", xref="paper", yref="paper", x=0.99, y=0.98,
                           showarrow=False, font=dict(color=DEAD_COLOR))
    return fig


def usage_over_steps(steps: Sequence[int], counts: np.ndarray, *, sort: str = "first_use",
                     max_rows: int = 2048, live_only: bool = False) -> go.Figure:
    """Codes x steps heatmap of a run (counts: (K, S)), log colour, dead cells red: shows when
    codes die or revive.

    live_only: only the codes used at some step (the live-codes view): when a few hundred of
    thousands of codes live, the full heatmap is a red sheet with 1-px lines; this one gives each
    live code a readable row.

    sort: "id" keeps code order; "first_use" orders codes by the first step they are used (never
    used last), so dying and reviving stand out. Codebooks larger than ``max_rows`` are summed
    over consecutive sorted codes into ``max_rows`` bands (hover says which).
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != len(steps):
        raise ValueError(f"counts must be (K, S) with S = len(steps) = {len(steps)}, got {counts.shape}")
    k_all, s = counts.shape
    ids = np.arange(k_all)
    usage = (counts > 0).mean(0) if k_all else np.zeros(s)
    if live_only:
        ever = (counts > 0).any(1)
        ids, counts = ids[ever], counts[ever]
    k = counts.shape[0]
    if sort == "first_use":
        used = counts > 0
        first = np.where(used.any(1), used.argmax(1), s)
        order = np.lexsort((-counts.sum(1), first))
    elif sort == "id":
        order = np.arange(k)
    else:
        raise ValueError(f"sort must be 'first_use' or 'id', got {sort!r}")
    sorted_counts = counts[order]
    if k == 0:
        fig = go.Figure()
        fig.update_layout(title="No code is used at any of these checkpoints", margin=_MARGIN)
        return fig
    if k > max_rows:
        band = math.ceil(k / max_rows)
        n = math.ceil(k / band)
        padded = np.zeros((n * band, s), dtype=np.int64)
        padded[:k] = sorted_counts
        z_counts = padded.reshape(n, band, s).sum(1)
        alive = (padded > 0).reshape(n, band, s).sum(1)
        label = [f"codes sorted #{i * band}-{min((i + 1) * band, k) - 1}" for i in range(n)]
        hover = "%{customdata}<br>step %{x}<br>total count %{z:.2f} (log10)<extra></extra>"
        ylabel = f"codes ({band} per row, sorted by {sort.replace('_', ' ')})"
    else:
        z_counts, alive = sorted_counts, (sorted_counts > 0).astype(int)
        label = [f"code {int(i)}" for i in ids[order]]
        hover = "%{customdata}<br>step %{x}<br>log10(1+count) %{z:.2f}<extra></extra>"
        ylabel = f"code (sorted by {sort.replace('_', ' ')})"
    z = np.where(alive > 0, np.log10(1.0 + z_counts), np.nan)
    dead = np.where(alive > 0, np.nan, 1.0)
    x = [str(int(v)) for v in steps]
    custom = np.repeat(np.asarray(label, dtype=object)[:, None], s, axis=1)
    fig = go.Figure()
    fig.add_trace(go.Heatmap(z=dead, x=x, colorscale=[[0, DEAD_COLOR], [1, DEAD_COLOR]], showscale=False,
                             customdata=custom, hovertemplate="%{customdata}<br>step %{x}<br>dead<extra></extra>"))
    fig.add_trace(go.Heatmap(z=z, x=x, colorscale=COLORSCALE, zmin=0, colorbar=dict(title="log10(1+count)"),
                             customdata=custom, hovertemplate=hover))
    shown = f"the {k:,} codes used at some step, of {k_all:,}" if live_only else f"all {k_all:,} codes"
    fig.update_layout(title=f"Code usage across checkpoints, {shown} (dead in red); usage "
                            + " / ".join(f"{100 * u:.1f}%" for u in usage[[0, -1]]) + " first / last",
                      margin=_MARGIN, plot_bgcolor="white")
    fig.update_xaxes(title="training step", type="category")
    fig.update_yaxes(title=ylabel, autorange="reversed", showticklabels=False)
    return fig


def embedding_scatter(codes_xy: np.ndarray, counts, *, latents_xy: np.ndarray | None = None,
                      method: str = "umap", highlight: int | None = None, title: str | None = None,
                      neighbours: Sequence[int] = (), height: int = 720) -> go.Figure:
    """Codebook projection: one point per code coloured by log10(1 + usage count), dead codes red,
    hover with id and count; optional encoder outputs as a visible translucent layer (blue,
    beneath the codes). ``codes_xy`` (K, 2) or (K, 3): a 3-D layout draws a rotatable 3-D scatter.
    ``neighbours``: code ids ringed as the highlighted code's nearest codes. WebGL (Scattergl) so
    16k+ points stay fluid. Code ids are ``customdata[0]``."""
    xy = np.asarray(codes_xy, dtype=np.float32)
    c = _counts(counts)
    if xy.ndim != 2 or xy.shape[0] != c.size or xy.shape[1] not in (2, 3):
        raise ValueError(f"codes_xy must be (K, 2) or (K, 3) with K = len(counts) = {c.size}, got {xy.shape}")
    three = xy.shape[1] == 3
    ids = np.arange(c.size)
    alive = c > 0
    label = method.upper()
    fig = go.Figure()

    def points(pts, **kw):
        if three:
            kw["marker"] = {**kw.get("marker", {}), "size": max(2, kw.get("marker", {}).get("size", 4) * 0.6)}
            return go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], **kw)
        return go.Scattergl(x=pts[:, 0], y=pts[:, 1], **kw)

    if latents_xy is not None and len(latents_xy):
        lat = np.asarray(latents_xy)
        fig.add_trace(points(lat, mode="markers", name=f"encoder outputs ({len(lat):,})",
                             marker=dict(size=5, color=PALETTE[0], opacity=0.45), hoverinfo="skip"))
    size = 4 if c.size > 4096 else 6 if c.size > 1024 else 8
    fig.add_trace(points(
        xy[~alive], mode="markers", name=f"dead codes ({int((~alive).sum())})",
        marker=dict(size=size, color=DEAD_COLOR, opacity=0.6),
        customdata=np.stack([ids[~alive], c[~alive]], axis=1),
        hovertemplate="code %{customdata[0]}<br>dead (count 0)<extra></extra>"))
    logc = np.log10(1.0 + c)
    fig.add_trace(points(
        xy[alive], mode="markers", name=f"used codes ({int(alive.sum())})",
        marker=dict(size=size + 1, color=logc[alive], colorscale=COLORSCALE, cmin=0,
                    cmax=max(float(logc.max()), 1e-9), colorbar=dict(title="log10(1+count)")),
        customdata=np.stack([ids[alive], c[alive]], axis=1),
        hovertemplate="code %{customdata[0]}<br>count %{customdata[1]}<extra></extra>"))
    near = np.asarray([int(n) for n in neighbours if 0 <= int(n) < c.size], dtype=int)
    if near.size:
        fig.add_trace(points(xy[near], mode="markers", name=f"nearest codes ({near.size})",
                             marker=dict(symbol="diamond-open" if not three else "diamond", size=14,
                                         color=PALETTE[5], line=dict(width=2, color=PALETTE[5])),
                             customdata=np.stack([near, c[near]], axis=1),
                             hovertemplate="code %{customdata[0]} (a nearest code)<br>count %{customdata[1]}"
                                           "<extra></extra>"))
    if highlight is not None and 0 <= int(highlight) < c.size:
        h = int(highlight)
        fig.add_trace(points(xy[h:h + 1], mode="markers", name=f"code {h}",
                             marker=dict(symbol="circle-open", size=18, color="black", line=dict(width=3)),
                             customdata=[[h, int(c[h])]],
                             hovertemplate="code %{customdata[0]}<br>count %{customdata[1]}<extra></extra>"))
    fig.update_layout(title=title or f"{label} of the codebook ({c.size} codes), colour = usage",
                      margin=_MARGIN, legend=dict(orientation="h", y=-0.08), plot_bgcolor="white", height=height)
    if three:
        fig.update_layout(scene=dict(xaxis_title=f"{label} 1", yaxis_title=f"{label} 2", zaxis_title=f"{label} 3"))
    else:
        fig.update_xaxes(title=f"{label} 1", showgrid=False, zeroline=False)
        fig.update_yaxes(title=f"{label} 2", showgrid=False, zeroline=False)
    return fig


def training_curves(frame, groups: Mapping[str, Sequence[str]] | None = None, *, log_loss: bool = True) -> go.Figure:
    """Metrics vs step from :func:`vqexplore.analysis.training_curves` (long format), one panel
    per group (``analysis.curve_groups``: losses together, then one panel per metric), train
    solid and val dashed."""
    from .analysis import curve_groups

    groups = dict(groups) if groups is not None else curve_groups(frame)
    if not groups:
        fig = go.Figure()
        fig.update_layout(title="No metrics logged yet", margin=_MARGIN)
        return fig
    names = list(groups)
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, vertical_spacing=min(0.08, 0.3 / len(names)),
                        subplot_titles=names)
    for row, group in enumerate(names, start=1):
        for metric in groups[group]:
            part = frame[frame["metric"] == metric]
            for split, sub in part.groupby("split", sort=True):
                fig.add_trace(go.Scatter(
                    x=sub["step"], y=sub["value"], mode="lines+markers" if len(sub) < 30 else "lines",
                    name=f"{split}/{metric}", line=dict(dash="dash" if split != "train" else "solid"),
                    hovertemplate=f"{split}/{metric}<br>step %{{x}}<br>%{{y:.4g}}<extra></extra>"), row=row, col=1)
        if group == "losses" and log_loss and (frame[frame["metric"].isin(groups[group])]["value"] > 0).all():
            fig.update_yaxes(type="log", row=row, col=1)
    fig.update_layout(height=200 * len(names) + 100, margin=_MARGIN, hovermode="x unified",
                      title="Training curves")
    fig.update_xaxes(title="step", row=len(names), col=1)
    return fig


__all__ += ["training_charts"]

_UNITS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "rfid": "rFID", "perplexity": "perplexity (codes)",
          "dead_codes": "dead codes", "lr": "learning rate", "normalized_entropy": "normalised entropy"}


def _is_usage(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1].lower() == "usage"


def _is_lr(metric: str) -> bool:
    name = metric.rsplit("/", 1)[-1].lower()
    return name in ("lr", "learning_rate") or name.startswith("lr_") or name.endswith("_lr")


def training_charts(runs, groups: Mapping[str, Sequence[str]] | None = None, *, smoothing: float = 0.0,
                    log_loss: bool = True, height: int = 340) -> dict[str, go.Figure]:
    """The Training page the way TensorBoard and W&B draw it: one chart per group (each with its
    own legend), every run overlaid, train solid and val dashed, smoothed with TensorBoard's
    debiased EMA (``smoothing`` in [0, 1); the raw curve stays faint underneath).

    runs: a long-format frame of :func:`vqexplore.analysis.training_curves` or {run name: frame};
    groups: {chart title: metrics} (default ``analysis.curve_groups`` over all runs: any metric a
    run logs gets a chart, new keys included). Usage is drawn in %, learning rate and losses on
    decade-labelled log axes, counts with integer ticks; one colour per (run, metric), from
    :data:`PALETTE`."""
    import pandas as pd

    from .analysis import curve_groups, ema_smooth

    if not isinstance(runs, Mapping):
        runs = {"": runs}
    runs = {name: frame for name, frame in runs.items() if frame is not None and len(frame)}
    if not runs:
        return {}
    everything = pd.concat(list(runs.values()), ignore_index=True)
    groups = dict(groups) if groups is not None else curve_groups(everything)
    charts: dict[str, go.Figure] = {}
    for title, metrics in groups.items():
        fig = go.Figure()
        values = []
        series = 0
        for run_name, frame in runs.items():
            for metric in metrics:
                part = frame[frame["metric"] == metric]
                if not len(part):
                    continue
                color = series_color(series)
                series += 1
                for split, sub in part.groupby("split", sort=True):
                    y = sub["value"].to_numpy(dtype=float) * (100.0 if _is_usage(metric) else 1.0)
                    values.append(y)
                    name = " · ".join(x for x in (run_name, f"{split}/{metric}") if x)
                    dash = "solid" if split == "train" else "dash"
                    smooth = smoothing > 0 and len(y) > 2
                    if smooth:
                        fig.add_trace(go.Scatter(x=sub["step"], y=y, mode="lines", name=f"{name} (raw)",
                                                 legendgroup=name, showlegend=False, opacity=0.25, hoverinfo="skip",
                                                 line=dict(color=color, dash=dash, width=1)))
                    fig.add_trace(go.Scatter(
                        x=sub["step"], y=ema_smooth(y, smoothing) if smooth else y,
                        mode="lines+markers" if len(sub) < 30 else "lines", name=name, legendgroup=name,
                        line=dict(color=color, dash=dash), marker=dict(color=color, size=5),
                        hovertemplate=f"{name}<br>step %{{x}}<br>%{{y:.4g}}"
                                      + (" (smoothed)" if smooth else "") + "<extra></extra>"))
        if not fig.data:
            continue
        flat = np.concatenate(values) if values else np.zeros(0)
        if all(_is_usage(m) for m in metrics):
            ytitle = "codebook usage (%)"
        elif len(metrics) == 1:
            ytitle = _UNITS.get(metrics[0].rsplit("/", 1)[-1].lower(), metrics[0])
        else:
            ytitle = title
        logy = (title == "losses" and log_loss) or all(_is_lr(m) for m in metrics)
        if logy and flat.size and (flat > 0).all():
            log_axis(fig, "y", flat)
        elif all(m.rsplit("/", 1)[-1].lower() == "dead_codes" for m in metrics) and flat.size:
            _integer_ticks(fig, float(np.nanmax(flat)))
        fig.update_layout(title=title, height=height, margin=dict(l=60, r=20, t=40, b=40), hovermode="x unified",
                          legend=dict(orientation="h", y=-0.25), xaxis_title="training step", yaxis_title=ytitle)
        charts[title] = fig
    return charts


def _custom(data) -> list:
    """A selection point's customdata as a list: Streamlit hands a row of a 2-D customdata array
    back as a list, or as a dict keyed "0", "1", ... (plotly's typed arrays)."""
    if isinstance(data, dict):
        keys = sorted((k for k in data if str(k).isdigit()), key=int)
        return [data[k] for k in keys]
    if isinstance(data, (list, tuple)):
        return list(data)
    return [] if data is None else [data]


def selected_code(event) -> int | None:
    """The code id of the first point in a Streamlit plotly selection event (``st.plotly_chart(...,
    on_select="rerun")``) or a plotly click payload, or None. Relies on customdata[0] = code id."""
    try:
        selection = event["selection"] if "selection" in event else event
        points = selection.get("points") or []
    except (TypeError, KeyError, AttributeError):
        return None
    for point in points:
        data = _custom(point.get("customdata"))
        if data:
            data = data[0]
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return int(data)
    return None


# ---------------------------------------------------------------------------------------------
# Token surgery, rate-distortion, aligned codes
# ---------------------------------------------------------------------------------------------

__all__ += ["token_grid", "rate_distortion", "QUANTIZER_COLORS", "alignment_scatter"]

# From PALETTE: one colour per quantizer family, the same in every figure.
QUANTIZER_COLORS = {"VQ": "#332288", "FSQ": "#999933", "SimVQ": "#117733", "LFQ": "#88CCEE", "BSQ": "#CC6677",
                    "IBQ": "#AA4499"}
_CELL_SELECTED = "#ff00ff"


def token_grid(image: np.ndarray, indices: np.ndarray, *, cells: np.ndarray | None = None,
               size: int = 384, title: str | None = None) -> go.Figure:
    """An image (uint8 (H, W, 3)) with one clickable square per token of its (h, w) code grid,
    for picking cells to edit: click a cell, or drag a box / lasso over several. Each cell's
    ``customdata`` is (row, col, code) (see :func:`vqexplore.surgery.cells_from_points`);
    ``cells``: bool (h, w) currently selected cells, outlined. Drawn ``size`` px wide, pixels
    nearest-neighbour (no smoothing)."""
    image = np.asarray(image)
    indices = np.asarray(indices)
    h, w = indices.shape
    sy, sx = image.shape[0] / h, image.shape[1] / w
    rows, cols = np.mgrid[0:h, 0:w]
    rows, cols = rows.ravel(), cols.ravel()
    width = int(size)
    height = int(round(size * image.shape[0] / image.shape[1]))
    cell_px = max(1.0, width / w)
    fig = go.Figure(go.Image(z=image, hoverinfo="skip"))
    trace = go.Scattergl if h * w > 4096 else go.Scatter
    # Nearly transparent markers that cover each cell: what clicks and box selections hit.
    fig.add_trace(trace(
        x=cols * sx + (sx - 1) / 2, y=rows * sy + (sy - 1) / 2, mode="markers", name="tokens",
        marker=dict(symbol="square", size=cell_px * 0.95, color="rgba(255,255,255,0.02)", line=dict(width=0)),
        customdata=np.stack([rows, cols, indices.ravel()], axis=1),
        hovertemplate="cell (%{customdata[0]}, %{customdata[1]})<br>code %{customdata[2]}<extra></extra>",
        selected=dict(marker=dict(color="rgba(255,0,255,0.35)")), unselected=dict(marker=dict(opacity=1))))
    if cells is not None and np.any(cells):
        r, c = np.nonzero(np.asarray(cells))
        fig.add_trace(go.Scatter(
            x=c * sx + (sx - 1) / 2, y=r * sy + (sy - 1) / 2, mode="markers", name="selected", hoverinfo="skip",
            marker=dict(symbol="square-open", size=cell_px * 0.9, color=_CELL_SELECTED, line=dict(width=2))))
    # No dragmode here: Streamlit's selection starts in "pan", where a click selects a cell; its
    # mode bar switches to box or lasso select (in select modes a click selects nothing).
    fig.update_layout(width=width + 10, height=height + (40 if title else 10), showlegend=False,
                      margin=dict(l=5, r=5, t=35 if title else 5, b=5), title=title)
    fig.update_xaxes(visible=False, range=[-0.5, image.shape[1] - 0.5])
    fig.update_yaxes(visible=False, range=[image.shape[0] - 0.5, -0.5])
    return fig


RD_X = ("bits (entropy)", "bits (fixed)", "bpp (entropy)", "bpp (fixed)")
_RD_UNITS = {"PSNR": "PSNR (dB)", "SSIM": "SSIM", "LPIPS": "LPIPS"}
_RD_FORMAT = {"PSNR": ".2f", "SSIM": ".4f", "LPIPS": ".4f"}
# Label positions tried in turn for labelled points that share an x (fixed bits: every codebook
# of one size sits on one vertical line).
_LABEL_SPOTS = ("middle right", "middle left", "top right", "bottom right", "top left", "bottom left",
                "top center", "bottom center")


def _label_positions(xs: np.ndarray, ys: np.ndarray, labelled: np.ndarray) -> list[str]:
    """A text position per point: labelled points on about one x (within 5% of the x range) go round it
    in turn instead of piling up on the same spot."""
    pos = ["top center"] * len(xs)
    if not len(xs):
        return pos
    span = float(np.nanmax(xs) - np.nanmin(xs)) or 1.0
    groups: dict[int, list[int]] = {}
    for i in np.flatnonzero(labelled):
        groups.setdefault(int(round(float(xs[i]) / (0.05 * span))), []).append(int(i))
    for members in groups.values():
        if len(members) < 2:
            continue
        for rank, i in enumerate(sorted(members, key=lambda j: ys[j])):
            pos[i] = _LABEL_SPOTS[rank % len(_LABEL_SPOTS)]
    return pos


def rate_distortion(frame, *, x: str = "bits (entropy)", y: str = "PSNR", highlight: Sequence[str] = ()) -> go.Figure:
    """Bits against quality, one point per checkpoint, coloured by quantizer.

    frame: :func:`vqexplore.ratedistortion.rate_distortion_table` rows, plus an optional "set"
    column (e.g. "selected", "CPU sweep") drawn with its own marker; x: "bits (entropy)" or
    "bits (fixed)" per image, or "bpp (entropy)" / "bpp (fixed)": the same per pixel (bits / H W),
    which puts 32-px and 64-px rows on one axis. Per image with several image sizes, each size
    gets its own panel (bits per image of different sizes do not compare); y: "PSNR", "SSIM" or
    "LPIPS" (lower is better: the axis is reversed so that up is always better). ``highlight``:
    checkpoint names labelled on the plot (in the first set only; labels on one x fan out).
    """
    if x not in RD_X:
        raise ValueError(f"x must be one of {', '.join(RD_X)}, got {x!r}")
    if y not in ("PSNR", "SSIM", "LPIPS"):
        raise ValueError(f"y must be PSNR, SSIM or LPIPS, got {y!r}")
    data = frame.copy()
    if "set" not in data.columns:
        data["set"] = "checkpoints"
    data = data[data[y].notna()] if len(data) else data
    per_pixel = x.startswith("bpp")
    source = x.replace("bpp", "bits")
    pixels = data["image size"].astype(float) ** 2 if "image size" in data.columns else np.nan
    data["_x"] = data[source] / pixels if per_pixel else data[source]
    sizes = sorted({int(v) for v in data["image size"].dropna()}) if "image size" in data.columns and len(data) \
        else []
    facets = sizes if (not per_pixel and len(sizes) > 1) else [None]
    fig = make_subplots(rows=1, cols=len(facets), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[f"{s} x {s} images" for s in facets] if facets[0] is not None else None) \
        if len(facets) > 1 else go.Figure()
    sets = list(dict.fromkeys(data["set"]))
    symbols = ["circle", "diamond-open", "square-open", "x", "triangle-up-open"]
    fmt = _RD_FORMAT[y]
    unit = " dB" if y == "PSNR" else ""
    shown_in_legend = set()
    for col, facet in enumerate(facets, start=1):
        fdata = data if facet is None else data[data["image size"] == facet]
        for s_index, group in enumerate(sets):
            for quantizer in [q for q in QUANTIZER_COLORS if q in set(fdata["quantizer"])] + \
                    sorted(set(fdata["quantizer"]) - set(QUANTIZER_COLORS)):
                part = fdata[(fdata["set"] == group) & (fdata["quantizer"] == quantizer)]
                if not len(part):
                    continue
                # Presets may share names with the selection (vq-512 of the sweep): label the first set only.
                labels = [n if n in highlight and s_index == 0 else "" for n in part["checkpoint"]]
                color = QUANTIZER_COLORS.get(quantizer, "#888888")
                name = f"{quantizer} · {group}"
                trace = go.Scatter(
                    x=part["_x"], y=part[y], mode="markers+text" if any(labels) else "markers",
                    name=name, legendgroup=name, showlegend=name not in shown_in_legend, text=labels,
                    textposition="top center",
                    marker=dict(color=color, symbol=symbols[s_index % len(symbols)], size=13 if s_index == 0 else 10,
                                line=dict(width=2, color=color)),
                    customdata=np.stack([part["checkpoint"], part["variant"], part["codebook size"],
                                         part["bits (fixed)"].round(0), part["bits (entropy)"].round(1),
                                         part["source"], part.get("image size", _blank(len(part)))], axis=1),
                    hovertemplate="<b>%{customdata[0]}</b> (%{customdata[1]}, K=%{customdata[2]}, "
                                  "%{customdata[6]} px)<br>bits/image: %{customdata[3]} fixed, %{customdata[4]} "
                                  f"entropy<br>{y} %{{y:{fmt}}}{unit}<br>%{{customdata[5]}}<extra></extra>")
                shown_in_legend.add(name)
                if len(facets) > 1:
                    fig.add_trace(trace, row=1, col=col)
                else:
                    fig.add_trace(trace)
    # Labels that share an x fan out around it (per panel, over every labelled trace).
    for col in range(1, len(facets) + 1):
        traces = [t for t in fig.data if t.text is not None and any(t.text)
                  and (len(facets) == 1 or (t.xaxis or "x") == ("x" if col == 1 else f"x{col}"))]
        if not traces:
            continue
        xs = np.concatenate([np.asarray(t.x, dtype=float) for t in traces])
        ys = np.concatenate([np.asarray(t.y, dtype=float) for t in traces])
        lab = np.concatenate([np.asarray([bool(v) for v in t.text]) for t in traces])
        pos = _label_positions(xs, ys, lab)
        start = 0
        for t in traces:
            t.textposition = pos[start:start + len(t.x)]
            start += len(t.x)
    label = {"bits (entropy)": "bits per image: tokens x entropy of the token distribution (what a model pays)",
             "bits (fixed)": "bits per image: tokens x log2(codebook size)",
             "bpp (entropy)": "bits per pixel: tokens x entropy / pixels",
             "bpp (fixed)": "bits per pixel: tokens x log2(codebook size) / pixels"}[x]
    what = "bits per pixel" if per_pixel else "bits per image"
    fig.update_layout(title=f"Rate-distortion: {y} vs {what}", margin=_MARGIN, hovermode="closest",
                      legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(title=label if len(facets) == 1 else "bits per image")
    ytitle = _RD_UNITS[y] + (" (lower is better, axis reversed)" if y == "LPIPS" else "")
    if len(facets) > 1:
        fig.update_yaxes(title=ytitle, col=1)
    else:
        fig.update_yaxes(title=ytitle)
    fig.update_yaxes(tickformat=".1f" if y == "PSNR" else ".3f")
    if y == "LPIPS":
        fig.update_yaxes(autorange="reversed")
    return fig


def _blank(n: int) -> np.ndarray:
    """n missing values (a column a frame may lack)."""
    return np.full(n, "", dtype=object)


def alignment_scatter(distance: np.ndarray, counts: np.ndarray, persists: np.ndarray, codes: np.ndarray,
                      threshold: float, *, title: str | None = None) -> go.Figure:
    """Matched codes of an alignment: how far each live code of A moved (x, euclidean distance
    to its match in B) against how often A uses it (y, log); persisting codes (moved less than
    ``threshold``, the dashed line) in green, the others red. ``customdata[0]`` is the A code id."""
    distance, counts = np.asarray(distance, dtype=float), np.asarray(counts)
    persists, codes = np.asarray(persists, dtype=bool), np.asarray(codes)
    fig = go.Figure()
    for mask, name, color in ((persists, "persists", PALETTE[3]), (~persists, "moved / replaced", DEAD_COLOR)):
        fig.add_trace(go.Scatter(
            x=distance[mask], y=np.maximum(counts[mask], 1), mode="markers", name=f"{name} ({int(mask.sum())})",
            marker=dict(color=color, size=8, opacity=0.8),
            customdata=np.stack([codes[mask], counts[mask], distance[mask]], axis=1),
            hovertemplate="code %{customdata[0]}<br>count %{customdata[1]}<br>moved %{customdata[2]:.3f}"
                          "<extra></extra>"))
    fig.add_vline(x=threshold, line=dict(dash="dash", color="#555"), annotation_text="threshold")
    fig.update_layout(title=title or "Live codes: distance to their match vs usage", margin=_MARGIN,
                      legend=dict(orientation="h", y=-0.2), xaxis_title="distance to the matched code",
                      yaxis_title="tokens assigned in A (log)", hovermode="closest")
    log_axis(fig, "y", np.maximum(counts, 1))
    return fig


def health_distances(nearest: np.ndarray, dead: np.ndarray, far_threshold: float) -> go.Figure:
    """Distance from each code to its nearest encoder output, live codes and dead codes overlaid,
    with the line past which a dead code counts as "far from the data" (``vqexplore.health``)."""
    nearest, dead = np.asarray(nearest, dtype=float), np.asarray(dead, dtype=bool)
    fig = go.Figure()
    edges = np.linspace(0, float(nearest.max()) * 1.02 + 1e-9, 61)
    for mask, name, color in ((~dead, "live codes", PALETTE[4]), (dead, "dead codes", DEAD_COLOR)):
        if mask.any():
            hist, _ = np.histogram(nearest[mask], bins=edges)
            fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=hist, name=f"{name} ({int(mask.sum())})",
                                 marker_color=color, opacity=0.7, width=np.diff(edges),
                                 hovertemplate="distance %{x:.3f}<br>%{y} codes<extra></extra>"))
    if np.isfinite(far_threshold):
        fig.add_vline(x=far_threshold, line_dash="dash", annotation_text="far from the data",
                      annotation_position="top right")
    fig.update_layout(title="Distance from each code to its nearest encoder output", barmode="overlay",
                      margin=_MARGIN, xaxis_title="distance (code-space units)", yaxis_title="codes (log)", bargap=0)
    log_axis(fig, "y")
    return fig


def code_norms(norms: np.ndarray, dead: np.ndarray) -> go.Figure:
    """Spread of the code norms, live and dead codes apart (box plots)."""
    norms, dead = np.asarray(norms, dtype=float), np.asarray(dead, dtype=bool)
    fig = go.Figure()
    for mask, name, color in ((~dead, "live", PALETTE[4]), (dead, "dead", DEAD_COLOR)):
        if mask.any():
            fig.add_trace(go.Box(x=norms[mask], name=f"{name} ({int(mask.sum())})", marker_color=color,
                                 boxpoints=False, orientation="h"))
    fig.update_layout(title="Code norms", margin=_MARGIN, xaxis_title="|code| (code-space units)", showlegend=False,
                      height=260)
    if norms.size and float(np.ptp(norms)) <= 1e-4 * max(float(np.abs(norms).max()), 1e-12):
        # Equal norms (l2-normalised codes): a box on an axis of float rounding says nothing; say it.
        mean = float(norms.mean())
        fig.update_xaxes(range=[mean * 0.9 - 0.05, mean * 1.1 + 0.05])
        fig.add_annotation(text=f"every code has norm {mean:.4g}", xref="paper", yref="paper", x=0.5, y=1.0,
                           showarrow=False)
    return fig


def usage_vs_quality(frame, *, group: str = "remedy", y: str = "PSNR") -> go.Figure:
    """One point per checkpoint: codebook usage (%) against ``y``, coloured by ``group`` (a column
    of ``analysis.comparison_table``: "remedy", "quantizer", ...)."""
    fig = go.Figure()
    groups = frame[group].fillna("").replace("", "none") if group in frame else ["all"] * len(frame)
    unit = " dB" if y == "PSNR" else ""
    for i, name in enumerate(dict.fromkeys(groups)):
        part = frame[np.asarray(groups) == name]
        fig.add_trace(go.Scatter(x=part["usage %"], y=part[y], mode="markers+text", name=str(name),
                                 text=part["checkpoint"], textposition="top center",
                                 marker=dict(size=11, color=series_color(i)),
                                 hovertemplate="%{text}<br>usage %{x:.2f}%<br>" + y
                                 + (" %{y:.2f}" if y == "PSNR" else " %{y:.4f}") + unit + "<extra></extra>"))
    fig.update_layout(title=f"Usage against {y}, by {group}", margin=_MARGIN, xaxis_title="codebook usage (%)",
                      yaxis_title=_RD_UNITS.get(y, y), legend_title=group)
    log_axis(fig, "x", frame["usage %"] if "usage %" in frame else None)
    return fig
