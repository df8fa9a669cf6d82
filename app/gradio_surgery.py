"""Token surgery in the Gradio demo: click cells of the token grid (or two corners of a box), pick
another code, and see the edited decode next to the original decode with the PSNR difference.

Everything shown is computed by ``vqexplore.surgery``; this file only wires it to Gradio. The
handlers are stateless (image, checkpoint, resolution and the cells as text in, pictures out),
so the API names ``surgery_grid`` and ``surgery`` work from ``gradio_client`` too.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr
import numpy as np

from vqexplore.data import MAX_PIXELS, load_image
from vqexplore.errors import VQExploreError
from vqexplore.reconstruct import prepare_for, reconstruct
from vqexplore.surgery import decoder_is_local, format_cells, majority_code, nearest_codes, parse_cells, token_surgery

PICKS = [("the nearest other code (among the codes the encoder uses on this image's grid)", "nearest"),
         ("the nearest other code (any)", "nearest-any"), ("a code id", "id")]
SELECT_MODES = [("click toggles a cell", "cell"), ("two clicks: corners of a box", "box")]
GRID_SIDE = 384          # the clickable grid is drawn at least this wide
_SELECTED = np.array([255, 0, 255], np.uint8)
_CORNER = np.array([0, 220, 255], np.uint8)


def _scale(width: int, side: int = GRID_SIDE) -> int:
    return max(1, -(-side // width)) if width < side else 1


def grid_picture(image: np.ndarray, indices: np.ndarray, cells: np.ndarray,
                 corner: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 picture of ``image`` enlarged (nearest-neighbour) with the token grid's lines, the
    selected ``cells`` outlined in magenta and a pending box ``corner`` in cyan."""
    h, w = indices.shape
    k = _scale(image.shape[1])
    big = image.repeat(k, 0).repeat(k, 1).copy()
    sy, sx = big.shape[0] // h, big.shape[1] // w
    big[::sy] = (big[::sy] * 0.7).astype(np.uint8)  # faint grid lines
    big[:, ::sx] = (big[:, ::sx] * 0.7).astype(np.uint8)
    for mask, color in ((cells, _SELECTED), (None, _CORNER)):
        where = np.argwhere(mask) if mask is not None else ([corner] if corner is not None else [])
        for r, c in where:
            y0, x0 = r * sy, c * sx
            t = max(1, sx // 8)
            big[y0:y0 + t, x0:x0 + sx] = color
            big[y0 + sy - t:y0 + sy, x0:x0 + sx] = color
            big[y0:y0 + sy, x0:x0 + t] = color
            big[y0:y0 + sy, x0 + sx - t:x0 + sx] = color
    return big


class Surgery:
    """The surgery handlers of one demo (``Demo`` gives the checkpoints and the model cache)."""

    def __init__(self, demo, png_file: Callable[[np.ndarray], str], sentence: Callable[[Exception], str],
                 modes: set[str]):
        self.demo, self.png_file, self.sentence, self.modes = demo, png_file, sentence, modes

    def _encode(self, image, checkpoint: str, mode: str):
        """(entry, model, prepared uint8 image, its Reconstruction) or one gr.Error sentence."""
        if image is None:
            raise gr.Error("No image: upload one or pick an example photo first.")
        mode = "64" if mode == "train" else mode
        if mode not in self.modes:
            raise gr.Error(f"Unknown mode {mode!r}; choose '64' (the checkpoint's training resolution, center crop) "
                           f"or 'native'.")
        if not checkpoint:
            raise gr.Error("Choose the checkpoint whose tokens to edit.")
        [entry] = self.demo._sources([checkpoint], "")
        try:
            name = Path(image).name if isinstance(image, str) else "the uploaded image"
            model = self.demo.models.get(entry.source, hub=entry.hub)
            prepared = prepare_for(load_image(image, max_pixels=MAX_PIXELS, name=name), model, mode)
            [r] = reconstruct(model, [prepared])
        except VQExploreError as e:
            raise gr.Error(f"{entry.name}: {self.sentence(e)}") from None
        return entry, model, prepared, r

    def _cells(self, text: str, shape) -> np.ndarray:
        try:
            return parse_cells(text, shape)
        except ValueError as e:
            raise gr.Error(self.sentence(e)) from None

    def grid(self, image, checkpoint, mode, cells_text):
        """-> (clickable grid picture, a line about the grid)."""
        _, model, _, r = self._encode(image, checkpoint, mode)
        cells = self._cells(cells_text, r.indices.shape)
        h, w = r.indices.shape
        return (self.png_file(grid_picture(r.reconstruction, r.indices, cells)),
                f"{checkpoint}: {h} x {w} tokens of {model.codebook_size} codes; {int(cells.sum())} cell(s) selected.")

    def click(self, image, checkpoint, mode, cells_text, select_mode, corner, evt: gr.SelectData):
        """A click on the grid picture: toggle the cell, or set / complete a box.
        -> (cells text, grid picture, pending corner text)."""
        _, _, _, r = self._encode(image, checkpoint, mode)
        shape = r.indices.shape
        cells = self._cells(cells_text, shape)
        k = _scale(r.reconstruction.shape[1])
        x, y = (int(v) for v in evt.index[:2])
        cell = (min(shape[0] - 1, y // (k * r.reconstruction.shape[0] // shape[0])),
                min(shape[1] - 1, x // (k * r.reconstruction.shape[1] // shape[1])))
        pending = None
        if select_mode == "box":
            if corner:
                r0, c0 = (int(v) for v in corner.split(","))
                cells[min(r0, cell[0]):max(r0, cell[0]) + 1, min(c0, cell[1]):max(c0, cell[1]) + 1] = True
            else:
                pending = cell
        else:
            cells[cell] = not cells[cell]
        text = format_cells(cells)
        note = (f"{checkpoint}: {shape[0]} x {shape[1]} tokens; {int(cells.sum())} cell(s) selected"
                + (f"; box corner at {pending[0]},{pending[1]}: click the opposite corner." if pending else "."))
        return (text, self.png_file(grid_picture(r.reconstruction, r.indices, cells, pending)),
                "" if pending is None else f"{pending[0]},{pending[1]}", note)

    def apply(self, image, checkpoint, mode, cells_text, pick, code):
        """-> ((original decode, edited decode) for the slider, changed-pixel picture, notes)."""
        entry, model, prepared, r = self._encode(image, checkpoint, mode)
        cells = self._cells(cells_text, r.indices.shape)
        if not cells.any():
            raise gr.Error("No cells selected: click cells of the token grid (or type them, e.g. 3,4 or 2-5,1-3).")
        from_code = majority_code(r.indices, cells)
        if pick in ("nearest", "nearest-any"):
            among = None
            if pick == "nearest":
                among = np.zeros(model.codebook_size, bool)
                among[np.unique(r.indices)] = True
            ids, dists = nearest_codes(model, from_code, 1, among=among)
            if not len(ids):
                raise gr.Error(f"Code {from_code} is the only code on this image's grid; choose 'any' or a code id.")
            new_code = int(ids[0])
            how = f"code {new_code}, the nearest other code to {from_code} (distance {float(dists[0]):.3g})"
        elif pick == "id":
            try:
                new_code = int(code)
            except (TypeError, ValueError):
                raise gr.Error("Type a code id (a whole number).") from None
            if not 0 <= new_code < model.codebook_size:
                raise gr.Error(f"Code {new_code} does not exist: "
                               f"{entry.name} has codes 0 to {model.codebook_size - 1}.")
            how = f"code {new_code}"
        else:
            raise gr.Error(f"Unknown choice {pick!r}; pick 'nearest', 'nearest-any' or 'id'.")
        res = token_surgery(model, r.indices, cells, new_code, original=prepared)
        k = _scale(prepared.shape[1])
        before, after = (x.repeat(k, 0).repeat(k, 1) for x in (res.before, res.after))
        overlay = res.after.copy()
        overlay[res.footprint & ~res.changed] = (overlay[res.footprint & ~res.changed] * 0.6).astype(np.uint8)
        overlay[res.changed] = (0.5 * overlay[res.changed] + [127, 0, 127]).astype(np.uint8)
        notes = (f"**{entry.name}**: {int(cells.sum())} cell(s) (mostly code {from_code}) → {how}.  \n"
                 f"PSNR against the input: original decode **{res.psnr_before:.2f} dB**, edited decode "
                 f"**{res.psnr_after:.2f} dB** ({res.psnr_delta:+.2f} dB).  \n"
                 + (f"{int(res.changed.sum())} pixels changed, all inside the {int(res.footprint.sum())} pixels the "
                    f"edited cells reach through the decoder (magenta: changed; darkened: the rest of that footprint)."
                    if decoder_is_local(model) else
                    f"{int(res.changed.sum())} of {res.changed.size} pixels changed (magenta). This decoder's "
                    f"GroupNorm and attention layers let every token reach the whole image, so the footprint is "
                    f"all of it."))
        return ((self.png_file(before), self.png_file(after)),
                self.png_file(overlay.repeat(k, 0).repeat(k, 1)), notes)


def add_surgery(demo, image: gr.Image, mode: gr.Radio, names: list[str], *, png_file, sentence, modes) -> None:
    """Draw the surgery section inside the current ``gr.Blocks`` and wire its events."""
    s = Surgery(demo, png_file, sentence, set(modes))
    with gr.Accordion("Token surgery: what does this token do here?", open=True, elem_id="surgery"):
        gr.Markdown("Show the token grid of a checkpoint, click cells (or two corners of a box), choose the code to "
                    "put there and press **Apply edit**: the edited grid is decoded next to the original decode. "
                    "Only the edited cells' decoder footprint can change.")
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                checkpoint = gr.Dropdown(choices=names, value=names[0] if names else None, label="Checkpoint to edit",
                                         elem_id="surgery-checkpoint")
                show = gr.Button("Show token grid", elem_id="surgery-show")
                select_mode = gr.Radio(choices=SELECT_MODES, value="cell", label="Clicks on the grid",
                                       elem_id="surgery-select")
                cells = gr.Textbox(label="Cells: row,col or a box r0-r1,c0-c1 (';' between)", value="",
                                   placeholder="e.g. 7,8 or 4-6,2-9", elem_id="surgery-cells")
                corner = gr.Textbox(visible=False, value="")
                pick = gr.Radio(choices=PICKS, value="nearest", label="Replace them with", elem_id="surgery-pick")
                code = gr.Number(label="Code id (for 'a code id')", value=0, precision=0, elem_id="surgery-code")
                apply = gr.Button("Apply edit", variant="primary", elem_id="surgery-apply")
            with gr.Column(scale=1, min_width=300):
                grid = gr.Image(label="Token grid (click cells)", type="filepath", format="png", interactive=False,
                                elem_classes=["pixelated"], elem_id="surgery-grid")
                grid_note = gr.Markdown(elem_id="surgery-grid-note")
            with gr.Column(scale=1, min_width=300):
                slider = gr.ImageSlider(label="Original decode | edited decode (drag to swipe)", type="filepath",
                                        format="png", interactive=False, elem_classes=["pixelated"],
                                        elem_id="surgery-slider")
                changed = gr.Image(label="Changed pixels", type="filepath", format="png", interactive=False,
                                   elem_classes=["pixelated"], elem_id="surgery-changed")
                notes = gr.Markdown(elem_id="surgery-notes")
    show.click(s.grid, inputs=[image, checkpoint, mode, cells], outputs=[grid, grid_note], api_name="surgery_grid")
    grid.select(s.click, inputs=[image, checkpoint, mode, cells, select_mode, corner],
                outputs=[cells, grid, corner, grid_note],
                api_name=False)
    apply.click(s.apply, inputs=[image, checkpoint, mode, cells, pick, code], outputs=[slider, changed, notes],
                api_name="surgery")
    # Another image: the grid, the cells picked on it and the last edit belong to the old one.
    image.change(clear_surgery, inputs=None, outputs=[grid, grid_note, cells, corner, slider, changed, notes],
                 api_name=False, queue=False)


def clear_surgery():
    """What the surgery section shows once another image is picked: nothing of the old image (its
    grid, its picked cells, its last edit), so a later Apply cannot use them."""
    return None, "", "", "", None, None, ""
