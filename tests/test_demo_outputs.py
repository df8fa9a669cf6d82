"""The demo's lighter request path (app/gradio_app.py): result images are answered by the ``OutputFiles``
middleware, byte for byte what ``png_file`` wrote, and nothing else is: any other path, name, a symlink,
a range request, a deleted file or a POST goes on to the app behind it (Gradio, whose file route refuses
what it must). Real files in a real upload folder, a real ASGI stack (Starlette's test client); the app
behind the middleware is a stand-in that records what reached it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(client, reached) with GRADIO_TEMP_DIR in ``tmp_path``: ``reached`` lists the paths the app behind
    the middleware received."""
    from starlette.testclient import TestClient

    from app import gradio_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    reached = []

    async def behind(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"refused by the app behind"})

    return TestClient(gradio_app.OutputFiles(behind)), reached


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_result_images_are_served_byte_for_byte(served):
    from app.gradio_app import png_file

    client, reached = served
    img = _image(0)
    path = png_file(img)
    r = client.get(f"/gradio_api/file={path}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == Path(path).read_bytes() and int(r.headers["content-length"]) == len(r.content)
    with Image.open(Path(path)) as im:
        assert np.array_equal(np.asarray(im), img)
    head = client.head(f"/gradio_api/file={path}")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == r.headers[
        "content-length"]
    assert reached == []


def test_everything_else_goes_on_to_the_app(served, tmp_path):
    from app.gradio_app import outputs_folder, png_file

    client, reached = served
    path = Path(png_file(_image(1)))
    folder = outputs_folder()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for the public")
    link = folder / ("b" * 40 + ".png")
    os.symlink(secret, link)
    other = tmp_path / "gradio" / "elsewhere"
    other.mkdir(parents=True)
    (other / path.name).write_bytes(path.read_bytes())
    cases = [
        f"/gradio_api/file={link}",                               # a symlink with an output's name
        f"/gradio_api/file={other / path.name}",                  # the right name, another folder
        f"/gradio_api/file={folder}/../elsewhere/{path.name}",    # .. out of the folder
        f"/gradio_api/file={folder / ('a' * 40 + '.png')}",       # no such file (the TTL deleted it)
        f"/gradio_api/file={folder / 'notes.txt'}",               # not a name this server chooses
        f"/gradio_api/file={secret}",
        "/gradio_api/upload",
    ]
    for url in cases:
        r = client.get(url)
        assert r.status_code == 403 and r.content == b"refused by the app behind", (url, r.status_code)
    assert client.get(f"/gradio_api/file={path}", headers={"Range": "bytes=0-9"}).status_code == 403
    assert client.post(f"/gradio_api/file={path}").status_code == 403
    assert len(reached) == len(cases) + 2
    assert b"not for the public" not in b"".join(client.get(u).content for u in cases)
