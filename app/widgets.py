"""Small HTML widgets of the dashboard (no Streamlit state; ``st.iframe`` draws them).

:func:`swipe_html`: two images of one size in one frame, drawn at 256 px or more with crisp
(nearest-neighbour) pixels but never wider than the column it sits in (the frame scales down to
fit, keeping its aspect ratio); drag the slider or the image to swipe between them, press Flip to
show one or the other whole; zoom in with +, a double click or ctrl + wheel over the image
(nearest-neighbour again, up to 16x: a 512-px image shrunk into a narrow column is seen at its
native size and beyond), shift-drag to pan when zoomed. Widgets given the same ``group`` share
their swipe position and zoom (a ``BroadcastChannel``, same origin): the checkpoints of one image
move together. The images travel as PNG data URLs at their own size (a 64 x 64 image is a few kB)
and the browser enlarges them, so the page stays light.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math

import numpy as np

MIN_SIDE = 256


def png_data_url(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def display_scale(width: int, min_side: int = MIN_SIDE, max_side: int = 768) -> int:
    """Integer enlargement so that ``width`` px are drawn at ``min_side`` px or more (never past
    ``max_side`` by enlarging; large images are drawn at their own size)."""
    if width >= min_side:
        return 1
    return max(1, min(math.ceil(min_side / width), max_side // max(width, 1)))


MAX_ZOOM = 16


def colorbar_html(stops: list[tuple[float, str]], low: str, high: str, label: str) -> str:
    """A small horizontal colour scale (CSS gradient through ``stops`` = [(0..1, css colour)]) with
    its end values and what it measures, for image maps drawn without a plot (the error map)."""
    grad = ", ".join(f"{c} {100 * t:.0f}%" for t, c in stops)
    return (f'<div class="cbar" data-testid="colorbar"><span>{html.escape(low)}</span>'
            f'<i style="background: linear-gradient(to right, {grad})"></i><span>{html.escape(high)}</span>'
            f'<em>{html.escape(label)}</em></div>')


def error_colorbar(vmax: float = 0.5) -> str:
    """The colour scale of ``vqexplore.reconstruct.error_heatmap`` (inferno, 0 to ``vmax``)."""
    from matplotlib import colormaps

    cmap = colormaps["inferno"]
    stops = [(t, "rgb({},{},{})".format(*(int(round(255 * v)) for v in cmap(t)[:3]))) for t in np.linspace(0, 1, 7)]
    return colorbar_html(stops, "0", f"≥ {vmax:g}", "|error| per pixel, mean over RGB, images in [0, 1]")


def swipe_html(left: np.ndarray, right: np.ndarray, *, labels: tuple[str, str] = ("input", "reconstruction"),
               min_side: int = MIN_SIDE, start: int = 50, uid: str = "swipe", group: str | None = None,
               caption: str = "", below: str = "") -> tuple[str, int]:
    """(HTML, height in px at full width) of a swipe between two uint8 (H, W, 3) images of one size:
    ``left`` shows left of the divider, ``right`` to its right; ``start``: the divider's position in %.

    The frame is drawn ``display_scale`` x the image (256 px or more) but never wider than its
    container (draw it with ``st.iframe(..., width="stretch", height="content")``). ``group``: widgets
    with the same group share swipe and zoom. ``caption``: a line above the frame; ``below``: extra
    HTML under the controls (e.g. :func:`error_colorbar`)."""
    if left.shape != right.shape:
        raise ValueError(f"swipe needs two images of one size, got {left.shape} and {right.shape}")
    h, w = left.shape[:2]
    k = display_scale(w, min_side)
    dw, dh = w * k, h * k
    a, b = html.escape(labels[0]), html.escape(labels[1])
    uid = html.escape(uid)
    channel = json.dumps(f"vqexplore-swipe-{group}") if group else "null"
    cap = f'<div class="cap" data-testid="swipe-caption">{html.escape(caption)}</div>' if caption else ""
    page = f"""<!doctype html><html><head><style>
html, body {{ margin: 0; overflow: hidden; }}
body {{ font: 13px sans-serif; color: #31333f; }}
.wrap {{ width: 100%; max-width: {dw}px; }}
.cap {{ margin: 0 0 3px; line-height: 1.3; overflow-wrap: anywhere; }}
.frame {{ position: relative; width: 100%; aspect-ratio: {w} / {h}; overflow: hidden; cursor: ew-resize;
          user-select: none; touch-action: none; background: #eee; }}
.layer {{ position: absolute; inset: 0; overflow: hidden; }}
.layer img {{ position: absolute; left: 0; top: 0; width: 100%; height: 100%; transform-origin: 0 0;
              image-rendering: pixelated; -webkit-user-drag: none; }}
.bar {{ position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: #ff00ff; }}
.tag {{ position: absolute; top: 4px; padding: 1px 5px; background: rgba(0,0,0,.55); color: #fff;
        border-radius: 3px; font-size: 12px; pointer-events: none; max-width: 45%; overflow: hidden;
        white-space: nowrap; text-overflow: ellipsis; }}
.ctl {{ display: flex; flex-wrap: wrap; align-items: center; gap: 4px 6px; margin-top: 4px; }}
.ctl input {{ flex: 1 1 80px; min-width: 60px; accent-color: #ff00ff; }}
.ctl button {{ font: inherit; padding: 2px 8px; border: 1px solid #bbb; border-radius: 6px; background: #fff;
               cursor: pointer; }}
.ctl .z {{ min-width: 2.6em; text-align: right; color: #666; }}
.cbar {{ display: flex; align-items: center; gap: 4px; margin-top: 4px; font-size: 11px; flex-wrap: wrap; }}
.cbar i {{ display: inline-block; flex: 1 1 60px; height: 10px; border: 1px solid #999; }}
.cbar em {{ flex-basis: 100%; font-style: normal; color: #666; }}
</style></head><body><div class="wrap">{cap}
<div class="frame" id="{uid}" data-testid="swipe-frame"
     title="drag: swipe · double click or ctrl+wheel: zoom · shift-drag: pan">
  <div class="layer left"><img class="left" src="{png_data_url(left)}" alt="{a}" draggable="false"></div>
  <div class="layer right" data-testid="swipe-right-layer"><img class="right" src="{png_data_url(right)}" alt="{b}"
       draggable="false" data-testid="swipe-right"></div>
  <div class="bar"></div>
  <span class="tag" style="left:4px">{a}</span><span class="tag" style="right:4px">{b}</span>
</div>
<div class="ctl">
  <input type="range" min="0" max="100" value="{int(start)}" aria-label="swipe between {a} and {b}"
         data-testid="swipe-range">
  <button type="button" data-testid="swipe-flip" title="show all of one image, then the other">Flip</button>
  <button type="button" data-testid="swipe-zoom-out" title="zoom out" aria-label="zoom out">−</button>
  <button type="button" data-testid="swipe-zoom-in" title="zoom in (nearest-neighbour)" aria-label="zoom in">+</button>
  <span class="z" data-testid="swipe-zoom">1x</span>
</div>{below}</div>
<script>
(function () {{
  const frame = document.getElementById("{uid}");
  const rightLayer = frame.querySelector(".layer.right"), bar = frame.querySelector(".bar");
  const imgs = frame.querySelectorAll(".layer img");
  const range = document.querySelector(".ctl input");
  const [flip, zout, zin] = document.querySelectorAll(".ctl button");
  const zlabel = document.querySelector(".ctl .z");
  const channel = {channel} && window.BroadcastChannel ? new BroadcastChannel({channel}) : null;
  const st = {{ p: {int(start)}, z: 1, cx: 0.5, cy: 0.5 }};
  const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));
  function draw() {{
    rightLayer.style.clipPath = "inset(0 0 0 " + st.p + "%)";
    bar.style.left = st.p + "%";
    range.value = st.p;
    const t = "translate(" + (50 - st.cx * st.z * 100) + "%, " + (50 - st.cy * st.z * 100) + "%) scale(" + st.z + ")";
    imgs.forEach((im) => {{ im.style.transform = t; }});
    zlabel.textContent = st.z + "x";
  }}
  function set(next, share) {{
    Object.assign(st, next);
    st.p = clamp(st.p, 0, 100);
    st.z = clamp(st.z, 1, {MAX_ZOOM});
    const half = 0.5 / st.z;
    st.cx = clamp(st.cx, half, 1 - half);
    st.cy = clamp(st.cy, half, 1 - half);
    draw();
    if (share && channel) channel.postMessage({{ state: st }});
  }}
  if (channel) channel.onmessage = (e) => {{
    if (e.data && e.data.state) set(e.data.state, false);
    else if (e.data && e.data.hello) channel.postMessage({{ state: st }});
  }};
  // Where a point of the frame lies in the image (0..1), given the zoom.
  function imagePoint(e) {{
    const r = frame.getBoundingClientRect();
    return [st.cx + ((e.clientX - r.left) / r.width - 0.5) / st.z,
            st.cy + ((e.clientY - r.top) / r.height - 0.5) / st.z];
  }}
  range.addEventListener("input", () => set({{ p: +range.value }}, true));
  flip.addEventListener("click", () => set({{ p: st.p > 0 ? 0 : 100 }}, true));
  zin.addEventListener("click", () => set({{ z: st.z * 2 }}, true));
  zout.addEventListener("click", () => set({{ z: st.z / 2 }}, true));
  frame.addEventListener("dblclick", (e) => {{
    const [x, y] = imagePoint(e);
    set({{ z: st.z * 2, cx: x, cy: y }}, true);
  }});
  frame.addEventListener("wheel", (e) => {{
    if (!e.ctrlKey && !e.metaKey) return;  // a plain wheel scrolls the page
    e.preventDefault();
    const [x, y] = imagePoint(e);
    const z = clamp(e.deltaY < 0 ? st.z * 2 : st.z / 2, 1, {MAX_ZOOM});
    const r = frame.getBoundingClientRect();
    const fx = (e.clientX - r.left) / r.width - 0.5, fy = (e.clientY - r.top) / r.height - 0.5;
    set({{ z: z, cx: x - fx / z, cy: y - fy / z }}, true);  // the point under the cursor stays put
  }}, {{ passive: false }});
  let drag = null;
  function at(e) {{
    const r = frame.getBoundingClientRect();
    set({{ p: 100 * (e.clientX - r.left) / r.width }}, true);
  }}
  frame.addEventListener("pointerdown", (e) => {{
    drag = e.shiftKey ? {{ x: e.clientX, y: e.clientY, cx: st.cx, cy: st.cy }} : "swipe";
    frame.setPointerCapture(e.pointerId);
    if (drag === "swipe") at(e);
  }});
  frame.addEventListener("pointermove", (e) => {{
    if (drag === "swipe") at(e);
    else if (drag) {{
      const r = frame.getBoundingClientRect();
      set({{ cx: drag.cx - (e.clientX - drag.x) / r.width / st.z,
             cy: drag.cy - (e.clientY - drag.y) / r.height / st.z }}, true);
    }}
  }});
  frame.addEventListener("pointerup", () => {{ drag = null; }});
  set({{}}, false);
  if (channel) channel.postMessage({{ hello: true }});
}})();
</script></body></html>"""
    return page, dh + 70


def thumbs_html(images: list[tuple[np.ndarray, str]], side: int = 128) -> str:
    """Small crisp (nearest-neighbour) copies of uint8 images with a caption each, in a row that
    wraps: extra views under a swipe (its error map, its token map)."""
    cells = []
    for img, label in images:
        k = display_scale(img.shape[1], side)
        cells.append(f'<figure style="margin:0;max-width:{img.shape[1] * k}px;flex:1 1 90px">'
                     f'<img src="{png_data_url(img)}" alt="{html.escape(label)}" style="width:100%;'
                     f'image-rendering:pixelated;display:block"><figcaption style="font-size:11px;color:#666">'
                     f'{html.escape(label)}</figcaption></figure>')
    return f'<div style="display:flex;flex-wrap:wrap;gap:6px;margin-top:6px">{"".join(cells)}</div>'
