"""Small HTML widgets of the dashboard (no Streamlit state; ``st.iframe`` draws them).

:func:`swipe_html`: two images of one size in one frame, drawn at 256 px or more with crisp
(nearest-neighbour) pixels; drag the slider or the image to swipe between them, press Flip to
show one or the other whole. The images travel as PNG data URLs at their own size (a 64 x 64
image is a few kB) and the browser enlarges them, so the page stays light.
"""
from __future__ import annotations

import base64
import html
import io
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


def swipe_html(left: np.ndarray, right: np.ndarray, *, labels: tuple[str, str] = ("input", "reconstruction"),
               min_side: int = MIN_SIDE, start: int = 50, uid: str = "swipe") -> tuple[str, int]:
    """(HTML, height in px) of a swipe between two uint8 (H, W, 3) images of one size: ``left``
    shows left of the divider, ``right`` to its right; ``start``: the divider's position in %."""
    if left.shape != right.shape:
        raise ValueError(f"swipe needs two images of one size, got {left.shape} and {right.shape}")
    h, w = left.shape[:2]
    k = display_scale(w, min_side)
    dw, dh = w * k, h * k
    a, b = html.escape(labels[0]), html.escape(labels[1])
    uid = html.escape(uid)
    page = f"""<!doctype html><html><head><style>
body {{ margin: 0; font: 13px sans-serif; color: #31333f; }}
.frame {{ position: relative; width: {dw}px; height: {dh}px; cursor: ew-resize; user-select: none;
          touch-action: none; background: #eee; }}
.frame img {{ position: absolute; inset: 0; width: {dw}px; height: {dh}px; image-rendering: pixelated; }}
.bar {{ position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: #ff00ff; }}
.tag {{ position: absolute; top: 4px; padding: 1px 5px; background: rgba(0,0,0,.55); color: #fff;
        border-radius: 3px; font-size: 12px; pointer-events: none; }}
.ctl {{ display: flex; align-items: center; gap: 8px; width: {dw}px; margin-top: 4px; }}
.ctl input {{ flex: 1; accent-color: #ff00ff; }}
.ctl button {{ font: inherit; padding: 2px 10px; border: 1px solid #bbb; border-radius: 6px; background: #fff;
               cursor: pointer; }}
</style></head><body>
<div class="frame" id="{uid}" data-testid="swipe-frame">
  <img class="left" src="{png_data_url(left)}" alt="{a}">
  <img class="right" src="{png_data_url(right)}" alt="{b}" data-testid="swipe-right">
  <div class="bar"></div>
  <span class="tag" style="left:4px">{a}</span><span class="tag" style="right:4px">{b}</span>
</div>
<div class="ctl">
  <input type="range" min="0" max="100" value="{int(start)}" aria-label="swipe between {a} and {b}"
         data-testid="swipe-range">
  <button type="button" data-testid="swipe-flip" title="show all of one image, then the other">Flip</button>
</div>
<script>
(function () {{
  const frame = document.getElementById("{uid}");
  const right = frame.querySelector("img.right"), bar = frame.querySelector(".bar");
  const range = document.querySelector(".ctl input"), flip = document.querySelector(".ctl button");
  function set(p) {{
    p = Math.max(0, Math.min(100, p));
    right.style.clipPath = "inset(0 0 0 " + p + "%)";
    bar.style.left = p + "%";
    range.value = p;
  }}
  range.addEventListener("input", () => set(+range.value));
  flip.addEventListener("click", () => set(+range.value > 0 ? 0 : 100));
  let dragging = false;
  function at(e) {{ const r = frame.getBoundingClientRect(); set(100 * (e.clientX - r.left) / r.width); }}
  frame.addEventListener("pointerdown", (e) => {{ dragging = true; frame.setPointerCapture(e.pointerId); at(e); }});
  frame.addEventListener("pointermove", (e) => {{ if (dragging) at(e); }});
  frame.addEventListener("pointerup", () => {{ dragging = false; }});
  set({int(start)});
}})();
</script></body></html>"""
    return page, dh + 36
