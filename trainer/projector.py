"""``python -m trainer export --projector --ckpt ... --out DIR``: TensorBoard Embedding Projector files.

``tensorboard --logdir DIR`` then shows the codebook in its Projector tab (PCA, t-SNE, UMAP in
3-D, nearest-neighbour search), each code drawn as its decoded tile, with its usage as metadata
to colour or search by. Files written to DIR (each atomically):

- ``projector_config.pbtxt``: the projector's config (text protobuf) naming the files below;
- ``codebook.tsv``: the (K, D) code vectors as the decoder receives them
  (``model.codebook_vectors()``), one code per line, tab-separated;
- ``metadata.tsv``: a header row, then per code: ``code``, ``count`` (tokens mapped to it on the
  sample), ``share`` of the tokens, ``used`` (yes/no), ``quantizer``;
- ``sprite.png``: every code's decoded tile (a 4 x 4 grid of the code through the decoder) on one
  sheet, row-major by code id, at most 4096 px wide (the projector's limit is 8192).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from vqexplore.errors import CheckpointError
from vqexplore.utils import eval_mode, write_atomic

CONFIG_NAME = "projector_config.pbtxt"
TENSORS_NAME, METADATA_NAME, SPRITE_NAME = "codebook.tsv", "metadata.tsv", "sprite.png"
MAX_SPRITE_PX = 4096


@torch.no_grad()
def code_tiles(model, tile_grid: int | None = None, batch_size: int = 512) -> np.ndarray:
    """uint8 (K, S, S, 3): the decode of a (tile_grid x tile_grid) grid filled with each code.
    Default grid: 16 px tiles (4 x 4 tokens of SimpleCNN, one token of an f16 VQGAN)."""
    from vqexplore.data import tensor_to_image

    tile_grid = tile_grid or max(1, 16 // model.downsample)
    k = model.codebook_size
    device = next(model.parameters()).device
    tiles = []
    with eval_mode(model):
        for start in range(0, k, batch_size):
            ids = torch.arange(start, min(k, start + batch_size), device=device)
            grids = ids[:, None, None].expand(-1, tile_grid, tile_grid)
            images = model.decode_indices(grids).clamp(-1, 1).cpu()
            tiles.extend(tensor_to_image(x) for x in images)
    return np.stack(tiles)


def sprite_sheet(tiles: np.ndarray, max_px: int = MAX_SPRITE_PX) -> tuple[np.ndarray, int]:
    """Tiles (K, S, S, 3) on a square sheet, row-major, enlarged nearest-neighbour up to 4x while the
    sheet stays within ``max_px``: (uint8 sheet, tile side in the sheet)."""
    k, s = tiles.shape[0], tiles.shape[1]
    side = math.ceil(math.sqrt(k))
    factor = max(1, min(4, max_px // (side * s)))
    if side * s > max_px:  # too many codes for full-size tiles: shrink by striding
        step = math.ceil(side * s / max_px)
        tiles = tiles[:, ::step, ::step]
    else:
        tiles = tiles.repeat(factor, axis=1).repeat(factor, axis=2)
    t = tiles.shape[1]
    sheet = np.full((side * t, side * t, 3), 255, np.uint8)
    for i in range(k):
        r, c = divmod(i, side)
        sheet[r * t:(r + 1) * t, c * t:(c + 1) * t] = tiles[i]
    return sheet, t


def export_projector(ckpt: str, out: str | os.PathLike, *, data: str = "builtin", size: int | None = None,
                     num_images: int = 256, device: str = "auto") -> dict:
    """Write the projector files of ``ckpt`` into ``out`` (see the module docstring).

    Usage counts come from the first ``num_images`` validation images of ``data`` at ``size``
    (default: the run's data.size, else 64). Returns a summary (paths, K, D, used codes)."""
    import vqexplore
    from vqexplore.analysis import usage_counts
    from vqexplore.data import validation_batch
    from vqexplore.hub import resolve
    from PIL import Image

    from .distributed import pick_device
    from .runfacts import default_image_size

    src = resolve(ckpt)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} is a file; give a folder for the projector files")
    known = {CONFIG_NAME, TENSORS_NAME, METADATA_NAME, SPRITE_NAME}
    if out.is_dir() and any(p.name not in known for p in out.iterdir() if not p.name.startswith(".")):
        raise CheckpointError(f"--out {out} holds other files; choose an empty or new folder "
                              f"(tensorboard --logdir reads every run below it)")
    dev = pick_device(device)
    model = vqexplore.load(src.path, device=dev).eval()
    size = int(size or default_image_size(src, model))
    images = validation_batch(data, n=num_images, size=size)
    counts = usage_counts(model, images)
    vectors = model.codebook_vectors().detach().float().cpu().numpy()
    tiles = code_tiles(model)
    sheet, tile_px = sprite_sheet(tiles)

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / TENSORS_NAME, lambda f: np.savetxt(f, vectors, fmt="%.9g", delimiter="\t"))
    total = max(int(counts.sum()), 1)
    lines = ["code\tcount\tshare\tused\tquantizer"]
    quantizer = str(model.config.get("quantizer", "vq"))
    lines += [f"{i}\t{int(c)}\t{c / total:.6f}\t{'yes' if c else 'no'}\t{quantizer}" for i, c in enumerate(counts)]
    write_atomic(out / METADATA_NAME, lambda f: f.write(("\n".join(lines) + "\n").encode()))
    write_atomic(out / SPRITE_NAME, lambda f: Image.fromarray(sheet).save(f, format="PNG"))
    name = f"codebook {src.name}"
    config = (
        "embeddings {\n"
        f"  tensor_name: {json.dumps(name)}\n"
        f"  tensor_path: {json.dumps(TENSORS_NAME)}\n"
        f"  metadata_path: {json.dumps(METADATA_NAME)}\n"
        "  sprite {\n"
        f"    image_path: {json.dumps(SPRITE_NAME)}\n"
        f"    single_image_dim: {tile_px}\n"
        f"    single_image_dim: {tile_px}\n"
        "  }\n"
        "}\n")
    write_atomic(out / CONFIG_NAME, lambda f: f.write(config.encode()))
    return {"out": str(out), "tensor_name": name, "codebook_size": int(vectors.shape[0]),
            "code_dim": int(vectors.shape[1]), "used_codes": int((counts > 0).sum()),
            "num_images": int(images.shape[0]),
            "tile_px": tile_px, "sprite_px": int(sheet.shape[0])}
