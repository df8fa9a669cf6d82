"""What stands between a request and the demo's handlers: a body size limit before any parsing,
answers that never echo the request, and input values checked before Gradio processes them.

- :class:`BodyLimit`, an ASGI middleware: a request body over its limit is refused with 413 from
  its ``Content-Length`` before a byte is read, and while streaming when it has none (chunked):
  at most the limit is ever held, and the answer is one sentence, never the body.
- :func:`validation_error`: FastAPI's answer to a malformed request (422) without the ``input``
  it would otherwise echo back (a 300 MB string came back whole).
- :func:`guard_inputs`: every input value of every event is checked against what its component
  accepts before Gradio moves, validates or preprocesses it; a malformed value (a NUL byte in a
  path, a number where a file belongs, ``null`` checkpoints, a NaN code id) is one ``gr.Error``
  sentence naming the field instead of an empty error event, and an image path that is not one
  of this page's uploads gets the demo's one refusal whether or not it carries ``meta``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import gradio as gr

__all__ = ["BodyLimit", "validation_error", "guard_inputs", "MAX_TEXT", "MAX_PATH"]

MAX_TEXT = 10_000   # characters of a text field (typed repo ids, cell lists)
MAX_PATH = 4096     # characters of a file path (Linux PATH_MAX)


def _mb(n: int) -> str:
    return f"{n / 1024 ** 2:.1f} MB" if n >= 1024 ** 2 else f"{n / 1024:.0f} KB"


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit_for(path)`` bytes with 413.

    ``describe(limit)``: the sentence of the refusal (never quotes the request)."""

    def __init__(self, app, limit_for: Callable[[str], int], describe: Callable[[int], str]):
        self.app, self.limit_for, self.describe = app, limit_for, describe

    async def _answer(self, send, status: int, text: str) -> None:
        import json

        body = json.dumps({"error": text, "detail": text}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope.get("path", ""))
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            text = length.decode("latin-1").strip()
            if not text.isdigit() or len(text) > 18:
                return await self._answer(send, 400, "The request's Content-Length is not a whole number; "
                                                     "send it as a browser or HTTP library does.")
            if int(text) > limit:
                return await self._answer(send, 413, self.describe(limit))
        state = {"received": 0, "over": False}

        async def limited_receive():
            message = await receive()
            if message.get("type") == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["over"] = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            if not state["over"]:  # the app's answer to a body cut short is replaced by the 413
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        except Exception:
            if not state["over"]:
                raise
        if state["over"]:
            await self._answer(send, 413, self.describe(limit))


async def validation_error(request, exc) -> Any:
    """FastAPI's 422 for a malformed request, naming where and what, without echoing the input."""
    from fastapi.responses import JSONResponse

    problems = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")[:80]
        problems.append(f"{where or 'the body'}: {str(err.get('msg', 'invalid'))[:120]}")
    text = f"The request is malformed ({'; '.join(problems)}); send it as the page or gradio_client does."
    return JSONResponse({"error": text, "detail": text}, status_code=422)


# --------------------------------------------------------------------------------------------
# Input values, checked before Gradio touches them
# --------------------------------------------------------------------------------------------

def _label(block) -> str:
    return str(getattr(block, "label", None) or type(block).__name__)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_image(block, value, not_uploaded: str, is_upload: Callable[[str], bool]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise gr.Error(not_uploaded)
    path, url = value.get("path"), value.get("url")
    for field in (path, url):  # (a data: URL's length is bounded by the body limit)
        if field is not None and (not isinstance(field, str) or "\x00" in field):
            raise gr.Error(not_uploaded)
    if path is not None:
        if len(path) > MAX_PATH or not is_upload(path):
            raise gr.Error(not_uploaded)
    elif url is not None and not url.startswith("data:"):
        raise gr.Error(not_uploaded)


def _check_names(block, value) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) and len(v) <= MAX_PATH for v in value) \
            or len(value) > 1000:
        raise gr.Error(f"{_label(block)} must be a list of names (e.g. [\"vq-4096\"]), got {_kind(value)}; "
                       f"send it as the page does.")


def _check_text(block, value) -> None:
    if value is not None and not isinstance(value, str):
        raise gr.Error(f"{_label(block)} must be text, got {_kind(value)}; send it as the page does.")
    if value is not None and len(value) > MAX_TEXT:
        raise gr.Error(f"{_label(block)} is {len(value):,} characters long, more than {MAX_TEXT:,}; shorten it.")


def _check_number(block, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or abs(value) > 2 ** 53:
        shown = value if isinstance(value, float) else _kind(value)
        raise gr.Error(f"{_label(block)} must be a whole number, got {shown}; type a code id such as 0.")


def check_inputs(inputs: Any, blocks: list, not_uploaded: str, is_upload: Callable[[str], bool]) -> None:
    """Raise one gr.Error sentence for the first input value its component cannot take."""
    if not isinstance(inputs, list) or len(inputs) < len(blocks):
        raise gr.Error(f"This call takes {len(blocks)} input values "
                       f"({', '.join(_label(b) for b in blocks if b is not None)}); "
                       f"send them as the page does.")
    for block, value in zip(blocks, inputs):
        if block is None:  # a component property input: Gradio's own shape
            continue
        if isinstance(block, gr.Image):
            _check_image(block, value, not_uploaded, is_upload)
        elif isinstance(block, gr.CheckboxGroup):
            _check_names(block, value)
        elif isinstance(block, (gr.Textbox, gr.Radio, gr.Dropdown)):
            if isinstance(block, gr.Dropdown) and isinstance(value, list):
                _check_names(block, value)
            else:
                _check_text(block, value)
        elif isinstance(block, gr.Number):
            _check_number(block, value)


def guard_inputs(demo: gr.Blocks, not_uploaded: str, is_upload: Callable[[str], bool]) -> None:
    """Check every event's input values (:func:`check_inputs`) before Gradio processes them.

    (An instance attribute over ``Blocks.preprocess_data``, which every event goes through.)"""
    original = demo.preprocess_data

    async def preprocess_data(block_fn, inputs, state, explicit_call: bool = False):
        props = set(getattr(block_fn, "component_prop_inputs", ()) or ())
        blocks = [None if i in props else b for i, b in enumerate(block_fn.inputs)]
        check_inputs(inputs, blocks, not_uploaded, is_upload)
        return await original(block_fn, inputs, state, explicit_call)

    demo.preprocess_data = preprocess_data
