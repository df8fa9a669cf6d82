"""The vqexplore demo: upload an image and see how each tokenizer reconstructs it.

    python app/gradio_app.py                   # http://127.0.0.1:7860 (GRADIO_SERVER_NAME/PORT honoured)

Also the ``app_file`` of the Hugging Face Space (see README.md) and the default command of the
Docker image. Everything shown is computed by ``vqexplore.reconstruct``; this file only wires
it to Gradio.

Environment variables:

``VQEXPLORE_CHECKPOINTS``  folder of checkpoint folders offered as the demo set (default: the
    repository's ``checkpoints/``). Each direct subfolder holding config.json + model.safetensors
    (or a run folder) is one checkpoint, named after the folder.
``VQEXPLORE_HUB_REPOS``    comma-separated Hub repo ids added to the demo set (e.g. for a Space
    whose repository does not carry the weights).
``VQEXPLORE_CONCURRENCY``  requests computed at once (default 2; the queue holds the rest).
``VQEXPLORE_QUEUE_SIZE``   requests waiting at most (default 64; more get "queue full").
``VQEXPLORE_TORCH_THREADS`` torch threads per request (default: CPU cores / concurrency, at least
    1, so that concurrent requests do not oversubscribe the cores).
``VQEXPLORE_MAX_FILE_SIZE`` largest accepted image, however it arrives: an upload, a file
    already in Gradio's upload folder or a ``data:`` URL in an API call (default "50mb";
    Gradio's size syntax: a whole number and b, kb, mb or gb, 1 kb = 1024 b).
``VQEXPLORE_MAX_BODY_SIZE`` largest request body other than a file upload, e.g. an API call
    carrying a ``data:`` URL (default "16mb"; same syntax). Refused with 413 from the
    Content-Length before a byte is read, or while streaming when there is none; an upload to
    ``/gradio_api/upload`` may be ``VQEXPLORE_MAX_FILE_SIZE`` plus 1 MB of form overhead.
``VQEXPLORE_MEMORY_BUDGET`` memory one image may take while decoded, converted and cropped
    (default "384mb", which keeps one request under 512 MB); a larger image is refused from its
    header with one sentence before it is decoded (``vqexplore.data.memory_budget``).
``VQEXPLORE_FILE_TTL``     seconds an uploaded image or a result image is kept (default 3600).
    Gradio deletes older ones every ``min(ttl, 300)`` s, and all of them when the server stops
    (Ctrl-C or SIGTERM).

Hosting: an image reaches the handler only as a file inside Gradio's upload folder or as a
``data:`` URL within the size limit (every other payload, e.g. a server path in an API call,
gets one and the same refusal); typed checkpoints are Hub repo ids only, never server folders.
"""
from __future__ import annotations

# The project is installed (requirements.txt's `-e .` line, as a Hugging Face Space installs it):
# `app`, `vqexplore` and `trainer` import as packages, whatever folder this file runs from.
import base64
import hashlib
import io
import logging
import math
import os
import re
import signal
import weakref
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder
import numpy as np
import torch

from vqexplore.data import MAX_PIXELS, builtin_photos, load_image, memory_budget
from vqexplore.errors import ImageError, VQExploreError
from vqexplore.hub import looks_like_repo_id
from vqexplore.reconstruct import NATIVE_MAX_PIXELS, prepare_for, reconstruct
from vqexplore.utils import parse_size, write_atomic

from app.demo_models import (DEFAULT_CHECKPOINTS, EXTRA_MODEL_CACHE, Entry, LpipsProvider,  # noqa: F401
                         ModelCache, demo_checkpoints)
from app.request_guard import BodyLimit, guard_inputs, validation_error

log = logging.getLogger("vqexplore.demo")

MODE_CHOICES = [  # "64" (its historic value) = each checkpoint's training resolution
    ("training resolution, center crop (64 x 64 for the demo set; a 256-px tokenizer gets 256 x 256)", "64"),
    (f"native resolution (sides a multiple of the tokenizer's downsampling: 4, or 16 for an f16 VQGAN; "
     f"at most {NATIVE_MAX_PIXELS:,} pixels = {math.isqrt(NATIVE_MAX_PIXELS)} x {math.isqrt(NATIVE_MAX_PIXELS)}; "
     f"larger images are downscaled)",
     "native"),
]
MAX_EXTRA_CHECKPOINTS = 4     # typed Hub repo ids per request
DEFAULT_MAX_FILE_SIZE = "50mb"
DEFAULT_MAX_BODY_SIZE = "16mb"
UPLOAD_OVERHEAD = 1024 ** 2   # multipart headers around an uploaded file
MAX_REPO_ID = 96              # characters of a Hub repo id (the Hub's own limit)
DEFAULT_FILE_TTL = 3600       # seconds an upload or a result image is kept
# The one answer to every image payload that is neither an upload nor a data: URL: it does not
# say whether the path exists, is a folder or is an image (no oracle of the server's disk).
NOT_UPLOADED = "The image did not come from this page's upload; upload the image file again."
EXPIRED = "The uploaded image was deleted before its turn came (uploads are kept for a limited time); upload it again."
TABLE_HEADERS = ["checkpoint", "quantizer", "codebook size", "token grid", "tokens", "bits",
                 "PSNR (dB)", "SSIM", "LPIPS"]
ERROR_MAP_NOTE = "mean absolute error per pixel: black = 0, yellow >= 0.5 of the range"

# Tokenizer images are small (64 x 64): show them enlarged with crisp (nearest-neighbour) pixels,
# in the gallery's preview too, without the preview's blurred backdrop (a blur of the image itself
# that would mix with the tokenizer's own blur). The gallery grows with its content (every
# checkpoint visible, no scroll box) and captions wrap instead of being cut.
CSS = """
.pixelated img { image-rendering: pixelated; }
#model-input img { width: 100%; height: 100%; object-fit: contain; }
#results .preview { backdrop-filter: none !important; -webkit-backdrop-filter: none !important;
                    background: var(--background-fill-primary) !important; }
#results .grid-wrap { height: auto !important; max-height: none !important; overflow: visible !important; }
#results .caption-label { white-space: normal !important; overflow: visible !important;
                          text-overflow: clip !important; position: static !important; max-width: 100% !important;
                          line-height: 1.25; }
#results .thumbnail-lg { height: auto !important; flex-direction: column; }
"""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return max(1, int(value))
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a whole number; set it to e.g. {default}") from None


def _env_size(name: str, default: str) -> int:
    text = (os.environ.get(name) or default).strip()
    size = parse_size(text)
    if size is None:
        raise SystemExit(f"{name}={text!r} is not a size; set it to e.g. {default}")
    return size


def max_file_size() -> int:
    """``$VQEXPLORE_MAX_FILE_SIZE`` in bytes: the one limit for every way an image arrives."""
    return _env_size("VQEXPLORE_MAX_FILE_SIZE", DEFAULT_MAX_FILE_SIZE)


def max_body_size() -> int:
    """``$VQEXPLORE_MAX_BODY_SIZE`` in bytes: the limit of every request body but a file upload."""
    return _env_size("VQEXPLORE_MAX_BODY_SIZE", DEFAULT_MAX_BODY_SIZE)


def body_limit_for(path: str) -> int:
    """The body limit of a request to ``path``: uploads carry a file, everything else JSON."""
    if path.rstrip("/").endswith("/upload"):
        return max_file_size() + UPLOAD_OVERHEAD
    return max_body_size()


def _body_refusal(limit: int) -> str:
    return (f"The request body is over this demo's limit of {_size(limit)}; upload images through the page "
            f"(or /gradio_api/upload, at most {_size(max_file_size())}) and send their path.")


def app_kwargs() -> dict:
    """The FastAPI settings of the demo's server: the body limit in front of every route and a
    422 answer that does not echo the request."""
    from fastapi.exceptions import RequestValidationError
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(OutputFiles),
                           Middleware(BodyLimit, limit_for=body_limit_for, describe=_body_refusal)],
            "exception_handlers": {RequestValidationError: validation_error}}


def _size(n: int) -> str:
    return f"{n / 1024 ** 2:.1f} MB" if n >= 1024 ** 2 else f"{n / 1024:.0f} KB"


def _too_large(n: int, limit: int) -> gr.Error:
    return gr.Error(f"The image is {_size(n)}, over this demo's limit of {_size(limit)}; "
                    f"downscale or compress it and upload it again.")


# --------------------------------------------------------------------------------------------
# Input component: gr.Image that hands the handler the uploaded file untouched
# --------------------------------------------------------------------------------------------

def uploaded_file(path: str) -> Path | None:
    """``path`` as a regular file inside Gradio's upload folder (symlinks and ``..`` resolved),
    or None. Gradio vets a file payload only when it carries ``meta``; a bare ``{"path": ...}``
    in an API call reaches ``preprocess`` as sent, so this is where server paths are refused."""
    from vqexplore.hub import inside

    if not isinstance(path, str) or not path or "\x00" in path or len(path) > 4096:
        return None
    try:
        real = Path(os.path.realpath(path))
        return real if inside(real, [get_upload_folder()]) and real.is_file() else None
    except (OSError, ValueError):  # a name too long for the file system, and the like
        return None


def passthrough_upload(image: gr.Image) -> gr.Image:
    """Make ``image`` hand its handler the uploaded file's path without Gradio decoding it.

    ``vqexplore.data.load_image`` then decodes every format (16-bit PNG, palette, RGBA, WebP,
    ...) and turns a bad file into one clear message, where Gradio's own decoding fails on a
    non-image with an opaque error. (An instance override rather than a subclass: Gradio writes
    a ``.pyi`` stub next to the source file of every Component subclass.)

    Accepted: a file inside Gradio's upload folder, or a ``data:`` URL; both at most
    ``max_file_size()`` bytes (checked before a byte is decoded). Anything else, e.g. a server
    path or an http URL, gets ``NOT_UPLOADED`` whatever it points at."""
    limit = max_file_size()

    def preprocess(payload):
        if payload is None:
            return None
        if payload.path:
            path = uploaded_file(payload.path)
            if path is None:
                raise gr.Error(NOT_UPLOADED)
            size = path.stat().st_size
            if size > limit:
                raise _too_large(size, limit)
            return str(path)
        url = payload.url or ""
        if url.startswith("data:") and "," in url:
            data = url.split(",", 1)[1]
            if len(data) // 4 * 3 > limit:  # the decoded size, known before decoding
                raise _too_large(len(data) // 4 * 3, limit)
            try:
                return base64.b64decode(data, validate=False)
            except ValueError:
                raise gr.Error("The uploaded image data is not valid base64; upload the file itself.") from None
        if url:
            raise gr.Error(NOT_UPLOADED)
        raise gr.Error("No image data arrived; upload the image again.")

    image.preprocess = preprocess
    return image


def _example_files() -> list[str]:
    """The built-in photos written once as PNG files in Gradio's upload folder (Gradio examples
    are files, and that folder is served without further configuration)."""
    from PIL import Image

    try:
        photos = builtin_photos()
    except VQExploreError as e:
        log.warning("no built-in example photos: %s", e)
        return []
    try:
        folder = Path(get_upload_folder()) / "vqexplore-examples"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, img in photos:
            path = folder / f"{name}.png"
            if not path.is_file():
                write_atomic(path, lambda f, img=img: Image.fromarray(img).save(f, format="PNG"), durable=False)
            paths.append(str(path))
        return paths
    except OSError as e:  # e.g. a folder left by another user: the demo works without examples
        log.warning("no example photos (%s)", e)
        return []


# --------------------------------------------------------------------------------------------
# The handler
# --------------------------------------------------------------------------------------------

def png_file(img: np.ndarray) -> str:
    """Write uint8 (H, W, 3) as a PNG file named by its content and return its path.

    Outputs are handed to Gradio as files rather than arrays: Gradio writes an array to its
    content-addressed cache in place (truncate, then write), so when two requests return the
    same image at the same moment (two users, same example photo and checkpoint) one of them
    can be served a half-written file. Here the file is written under a temporary name and
    renamed into place, and Gradio's own copy of a file is atomic too."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=3)
    data = buf.getvalue()
    folder = outputs_folder()
    if folder not in _MADE_FOLDERS:
        folder.mkdir(parents=True, exist_ok=True)
        _MADE_FOLDERS.add(folder)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:40]}.png"
    try:
        # Handed out again: restart its age (Gradio's scheduled deletion goes by ctime), so that it
        # is not deleted on the schedule of its first use before this client fetches it.
        os.utime(path)
    except FileNotFoundError:
        try:
            write_atomic(path, data, durable=False)
        except FileNotFoundError:  # the folder went with the TTL's deletion: make it again
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data, durable=False)
    return str(path)


OUTPUTS_DIR = "vqexplore-outputs"   # beside Gradio's uploads: result images, named by their content
_OUTPUT_NAME = re.compile(r"[0-9a-f]{40}\.png")
_MADE_FOLDERS: set[Path] = set()
FAST_OUTPUT_MAX = 4 * 1024 ** 2     # larger result images (native mode) go through Gradio's file route


def outputs_folder() -> Path:
    """Where :func:`png_file` writes: ``vqexplore-outputs`` in Gradio's upload folder (deleted with it on the TTL)."""
    return Path(os.path.abspath(get_upload_folder())) / OUTPUTS_DIR


class OutputFiles:
    """ASGI middleware: a GET (or HEAD) of a result image that :func:`png_file` wrote, answered here.

    Gradio's file route costs a request several thread hops (its login dependency, the file's stat,
    open and reads in worker threads), a route search and path checks with ``resolve()`` on every
    component; a one-checkpoint request downloads four such images. Only a file whose URL path is
    exactly ``<outputs folder>/<40 hex digits>.png`` (a name this server chose: no other file, no
    symlink, nothing outside that folder) and at most ``FAST_OUTPUT_MAX`` bytes is answered here,
    with the headers Gradio sends; anything else (a range request, a missing or deleted file, any
    other path) goes on to Gradio unchanged. The demo has no login (a server with one would need its
    check here too)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            data = self._output(scope)
            if data is not None:
                name = scope["path"].rsplit("/", 1)[1]
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"image/png"), (b"content-length", str(len(data)).encode()),
                    (b"accept-ranges", b"bytes"),
                    (b"content-disposition", f'inline; filename="{name}"'.encode())]})
                await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else data})
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _output(scope) -> bytes | None:
        path = scope.get("path", "")
        where = path.find("/file=")
        if where < 0 or any(k == b"range" for k, _ in scope.get("headers") or ()):
            return None
        folder, _, name = path[where + 6:].rpartition("/")
        if not _OUTPUT_NAME.fullmatch(name) or folder != str(outputs_folder()):
            return None
        try:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone (the TTL) or not a plain file: Gradio answers
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                data = f.read(FAST_OUTPUT_MAX + 1)
        except OSError:
            return None
        return data if len(data) <= FAST_OUTPUT_MAX else None


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


class Demo:
    def __init__(self, entries: list[Entry] | None = None):
        self.entries = demo_checkpoints() if entries is None else entries
        self.by_name = {e.name: e for e in self.entries}
        self.models = ModelCache({e.source for e in self.entries})
        self.lpips = LpipsProvider()

    def preload(self) -> None:
        """Load the demo set now (a broken one is logged and reported when chosen)."""
        for e in self.entries:
            try:
                self.models.get(e.source, hub=e.hub)
            except VQExploreError as err:
                log.warning("demo checkpoint %s cannot be loaded: %s", e.name, err)

    def _sources(self, chosen: list[str] | None, typed: str | None) -> list[Entry]:
        picked: list[Entry] = []
        for name in chosen or []:
            if name not in self.by_name:
                raise gr.Error(f"{name!r} is not one of the demo checkpoints "
                               f"({', '.join(self.by_name) or 'none'}); pick one of them or type a Hub repo id.")
            picked.append(self.by_name[name])
        extra = [t.strip() for t in (typed or "").replace("\n", ",").split(",") if t.strip()]
        if len(extra) > MAX_EXTRA_CHECKPOINTS:
            raise gr.Error(f"{len(extra)} repo ids typed; give at most {MAX_EXTRA_CHECKPOINTS} at a time.")
        for repo in extra:
            if len(repo) > MAX_REPO_ID:
                raise gr.Error(f"A typed repo id is {len(repo):,} characters long; Hub repo ids are at most "
                               f"{MAX_REPO_ID} characters, like user/name.")
            if repo in self.by_name:
                picked.append(self.by_name[repo])
            elif looks_like_repo_id(repo):
                picked.append(Entry(repo, repo, hub=True))
            else:
                raise gr.Error(f"{repo!r} is not a Hub repo id; type one like user/name.")
        unique = list({(e.source, e.hub): e for e in picked}.values())
        if not unique:
            raise gr.Error("No checkpoint chosen; tick at least one demo checkpoint or type a Hub repo id.")
        return unique

    def run(self, image, chosen, typed, mode):
        """-> (input as the models see it, gallery of [reconstruction, error map, token map] per
        checkpoint, table of numbers, notes). Every failure is one ``gr.Error`` sentence."""
        try:
            return self._run(image, chosen, typed, mode)
        except gr.Error:
            raise
        except Exception as e:  # a bug: log it, keep the message short (and blame nothing in particular)
            log.exception("reconstruction failed")
            raise gr.Error(f"The reconstruction failed unexpectedly ({type(e).__name__}; the server log has the "
                           f"details); please try again, or with another image or checkpoint.") from None

    def _run(self, image, chosen, typed, mode):
        if image is None:
            raise gr.Error("No image: upload one or pick an example photo first.")
        mode = "64" if mode == "train" else mode
        if mode not in dict((v, k) for k, v in MODE_CHOICES):
            raise gr.Error(f"Unknown mode {mode!r}; choose '64' (each checkpoint's training resolution, "
                           f"center crop) or 'native'.")
        entries = self._sources(chosen, typed)
        name = _image_name(image)
        try:
            original = load_image(image, max_pixels=MAX_PIXELS, name=name)
        except ImageError as e:
            if isinstance(image, str) and not os.path.isfile(image):  # deleted by the TTL while queued
                raise gr.Error(EXPIRED) from None
            raise gr.Error(_sentence(e)) from None
        except VQExploreError as e:
            raise gr.Error(_sentence(e)) from None

        gallery, rows, notes, inputs = [], [], [], {}
        first = None
        for entry in entries:
            try:
                model = self.models.get(entry.source, hub=entry.hub)
            except VQExploreError as e:
                raise gr.Error(f"{entry.name}: {_sentence(e)}") from None
            try:  # each tokenizer sees the image at its own size (training resolution / downsampling)
                prepared = prepare_for(original, model, mode)
            except VQExploreError as e:
                raise gr.Error(_sentence(e)) from None
            first = prepared if first is None else first
            h, w = prepared.shape[:2]
            inputs.setdefault(f"{w}x{h}", []).append(entry.name)
            try:
                [r] = reconstruct(model, [prepared], lpips=self.lpips.get())
            except VQExploreError as e:
                raise gr.Error(f"{entry.name}: {_sentence(e)}") from None
            except MemoryError:
                raise gr.Error(f"{entry.name}: not enough memory to reconstruct {name} "
                               f"({w}x{h} pixels); use the training-resolution mode or a smaller image.") from None
            except Exception as e:  # a bug: the log has the traceback, the visitor the names
                log.exception("reconstructing %s with %s failed", name, entry.name)
                raise gr.Error(f"{entry.name} could not reconstruct {name} ({w}x{h} pixels, "
                               f"{type(e).__name__}); try the training-resolution mode or another "
                               f"checkpoint.") from None
            grid = f"{r.indices.shape[0]}x{r.indices.shape[1]}"
            distinct = int(np.unique(r.indices).size)
            gallery += [
                (png_file(r.reconstruction), f"{entry.name}: reconstruction, PSNR {_fmt(r.psnr, 2)} dB, "
                                             f"SSIM {_fmt(r.ssim, 3)}"
                                             + (f", LPIPS {_fmt(r.lpips, 3)}" if r.lpips is not None else "")),
                (png_file(r.error_map), f"{entry.name}: |error| (black 0, yellow ≥ 0.5)"),
                (png_file(r.token_map), f"{entry.name}: tokens, {grid}, {distinct} distinct of {r.codebook_size}, "
                                        f"{r.bits:,.0f} bits"),
            ]
            rows.append([entry.name, getattr(model, "quantizer_type", "?"), r.codebook_size, grid, r.num_tokens,
                         round(r.bits, 1), round(r.psnr, 2), round(r.ssim, 4),
                         None if r.lpips is None else round(r.lpips, 4)])
        how = "training-resolution center crop" if mode == "64" else "native resolution"
        sizes = "; ".join(f"{size} ({', '.join(names)})" for size, names in inputs.items()) if len(inputs) > 1 \
            else next(iter(inputs))
        notes.append(f"Input {original.shape[1]}x{original.shape[0]} -> model input {sizes} ({how}). "
                     f"Bits per image = tokens x log2(codebook size). Error map: {ERROR_MAP_NOTE}.")
        if self.lpips.reason:
            notes.append(f"LPIPS not shown: {self.lpips.reason}")
        else:
            notes.append("LPIPS: AlexNet features (the `lpips` package), lower is closer to the input.")
        return png_file(first), gallery, rows, "\n\n".join(notes)


PROTOCOL_HEADERS = ["checkpoint", "usage (%)", "PSNR (dB)", "SSIM", "bits/image (entropy)", "bits/pixel (entropy)"]


def protocol_numbers(demo_state: "Demo"):
    """-> (rows, note): every demo checkpoint measured under the evaluation protocol of the held-out photos
    (``vqexplore.protocol``: the dashboard's default and the README's), through the same on-disk cache as
    the dashboard and ``trainer eval``, so one checkpoint shows one usage, PSNR and SSIM everywhere."""
    from vqexplore.hub import resolve
    from vqexplore.protocol import Protocol, cached_evaluation

    protocol = Protocol.heldout_photos()
    rows, problems = [], []
    for entry in demo_state.entries:
        try:
            model = demo_state.models.get(entry.source, hub=entry.hub)
            folder = resolve(entry.source).path
            m = cached_evaluation(folder, model, protocol).metrics
        except VQExploreError as e:
            problems.append(f"{entry.name}: {_sentence(e)}")
            continue
        except Exception as e:  # a bug: logged, one line on the page
            log.exception("measuring %s under the protocol failed", entry.name)
            problems.append(f"{entry.name}: could not be measured ({type(e).__name__}).")
            continue
        rows.append([entry.name, round(100 * m["usage"], 2), round(m["psnr"], 2), round(m["ssim"], 4),
                     round(m["bits_per_image_entropy"]), round(m["bits_per_pixel_entropy"], 3)])
    note = f"Measured under: {protocol.describe()}."
    return rows, "\n\n".join([note, *problems])


def clear_results():
    """The result components once the input image changes: empty."""
    return None, [], None, ""


def _image_name(image) -> str:
    """How messages call the input: an upload's file name (Gradio keeps it), else "the image"."""
    return Path(image).name if isinstance(image, str) else "the uploaded image"


def _sentence(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text if text.endswith(".") else text + "."


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------

def build_demo(entries: list[Entry] | None = None, *, preload: bool = False) -> gr.Blocks:
    """The demo's ``gr.Blocks`` (not launched, no queue settings: ``main`` adds those).

    entries: the demo checkpoints (default: ``demo_checkpoints()``, from the environment).
    preload: load every demo checkpoint now instead of at its first use."""
    demo_state = Demo(entries)
    if preload:
        demo_state.preload()
    names = [e.name for e in demo_state.entries]
    examples = _example_files()

    ttl = _env_int("VQEXPLORE_FILE_TTL", DEFAULT_FILE_TTL)
    # Gradio deletes the files this app handed out or received (uploads, result images) once
    # older than ``ttl``, and all of them when the server stops; example photos are kept.
    with gr.Blocks(title="vqexplore: how tokenizers see your image", delete_cache=(min(ttl, 300), ttl)) as demo:
        gr.Markdown(
            "# vqexplore: how do image tokenizers see your image?\n"
            "Upload an image (JPEG, PNG incl. 16-bit, WebP, grayscale, RGBA/palette; any size) or pick an "
            "example photo, choose tokenizers and press **Reconstruct**. For each checkpoint you get the "
            "reconstruction, the per-pixel error, the token map (one colour per code id, one cell per token), "
            "the number of tokens and bits per image, and PSNR / SSIM (LPIPS when its weights are installed). "
            "Images are returned as lossless PNG.")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                image = passthrough_upload(gr.Image(
                    label="Image", type="filepath", sources=["upload", "clipboard"], format="png", height=320,
                    elem_id="input-image"))
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[image], label="Example photos",
                                example_labels=[Path(p).stem for p in examples], cache_examples=False,
                                examples_per_page=len(examples))
                checkpoints = gr.CheckboxGroup(choices=names, value=names, label="Checkpoints (demo set)",
                                               elem_id="checkpoints")
                typed = gr.Textbox(label="More checkpoints: Hub repo ids (comma-separated, optional)",
                                   value="", placeholder="user/name, user/other", max_lines=2, elem_id="hub-ids")
                mode = gr.Radio(choices=MODE_CHOICES, value="64", label="Resolution", elem_id="mode")
                button = gr.Button("Reconstruct", variant="primary", elem_id="run")
            with gr.Column(scale=2):
                model_input = gr.Image(label="Input as the tokenizers see it", format="png", type="filepath",
                                       interactive=False, height=260, elem_classes=["pixelated"],
                                       elem_id="model-input")
                gallery = gr.Gallery(label="Per checkpoint: reconstruction | error map | token map",
                                     columns=3, format="png", object_fit="contain", height="auto",
                                     elem_classes=["pixelated"], elem_id="results", interactive=False)
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Numbers per checkpoint", interactive=False,
                                     elem_id="numbers")
                notes = gr.Markdown(label="Notes", elem_id="notes")
        with gr.Accordion("The checkpoints on the held-out photos (the dashboard's numbers)", open=False):
            protocol_table = gr.Dataframe(headers=PROTOCOL_HEADERS, interactive=False, elem_id="protocol-numbers")
            protocol_note = gr.Markdown(elem_id="protocol-note")
            protocol_button = gr.Button("Measure", elem_id="protocol-run", size="sm")
        protocol_button.click(lambda: protocol_numbers(demo_state), outputs=[protocol_table, protocol_note],
                              api_name="protocol")
        from app.gradio_surgery import add_surgery

        add_surgery(demo_state, image, mode, names, png_file=png_file, sentence=_sentence,
                    modes=[value for _, value in MODE_CHOICES])
        if not names:
            gr.Markdown("No demo checkpoints were found (set `VQEXPLORE_CHECKPOINTS` or `VQEXPLORE_HUB_REPOS`); "
                        "type a Hub repo id above.")
        inputs, outputs = [image, checkpoints, typed, mode], [model_input, gallery, table, notes]
        button.click(in_one_thread(demo_state.run, inputs, outputs), inputs=inputs, outputs=outputs,
                     api_name="reconstruct", preprocess=False, postprocess=False)
        # Another photo (an upload or an example): the old results go, so nothing on screen belongs
        # to an image that is no longer the input.
        image.change(clear_results, inputs=None, outputs=[model_input, gallery, table, notes], api_name=False,
                     queue=False)
    guard_inputs(demo, NOT_UPLOADED, lambda path: uploaded_file(path) is not None)
    _STATES[demo] = demo_state
    return demo


def in_one_thread(fn, inputs: list, outputs: list):
    """``fn`` with its components' processing done around it, in the request's one worker thread, for
    an event registered with ``preprocess=False, postprocess=False``: each input value goes through
    its component's ``preprocess`` and each return value through its output component's
    ``postprocess``, exactly what Gradio would do.

    Gradio otherwise runs each of those in a worker thread of its own (eight thread hops for the
    demo's four inputs and four outputs) and moves each result file into its cache twice
    (``resolve()`` on every path, once for the session's copy of the page and once for the answer);
    this way it moves each once. What is checked, computed and sent is the same: the inputs are
    still vetted (``request_guard.guard_inputs``) and moved into the cache by Gradio first."""
    from gradio.data_classes import GradioModel, GradioRootModel

    def run(*args):
        values = []
        for component, value in zip(inputs, args):
            model = getattr(component, "data_model", None)
            if model is not None and value is not None:
                value = model.model_validate(value, context={"validate_meta": True})
            values.append(component.preprocess(value))
        out = []
        for component, value in zip(outputs, fn(*values)):
            value = component.postprocess(value)
            out.append(value.model_dump() if isinstance(value, (GradioModel, GradioRootModel)) else value)
        return out

    run.__name__ = getattr(fn, "__name__", "run")
    run.__doc__ = fn.__doc__
    return run


_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def state_of(demo) -> "Demo":
    """The :class:`Demo` (checkpoints, model cache, handlers) behind a ``build_demo()`` app."""
    return _STATES[demo]


def configure_torch_threads(concurrency: int) -> int:
    """Split the cores between concurrent requests (OpenMP teams that oversubscribe the cores
    spin against each other and are several times slower)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = _env_int("VQEXPLORE_TORCH_THREADS", max(1, cores // concurrency))
    torch.set_num_threads(threads)
    return threads


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Gradio's queue rebuilds a pandas summary of up to 10,000 past events after every event, for
    # its monitoring page (off here); that grows to most of a request's CPU on a long-running demo.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    try:
        memory_budget()
    except VQExploreError as e:
        raise SystemExit(str(e)) from None
    max_body_size()
    concurrency = _env_int("VQEXPLORE_CONCURRENCY", 2)
    threads = configure_torch_threads(concurrency)
    demo = build_demo(preload=True)
    log.info("demo checkpoints: %s; concurrency %d x %d torch thread(s)",
             ", ".join(e.name for e in state_of(demo).entries) or "none", concurrency, threads)
    demo.queue(default_concurrency_limit=concurrency, max_size=_env_int("VQEXPLORE_QUEUE_SIZE", 64))
    # SIGTERM (docker stop, a Space restart) closes the server like Ctrl-C does, so that Gradio's
    # shutdown deletes the uploads and result images instead of leaving them on disk.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    demo.launch(max_file_size=max_file_size(), ssr_mode=False, css=CSS, app_kwargs=app_kwargs())


if __name__ == "__main__":
    main()
