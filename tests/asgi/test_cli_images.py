"""``tailor create --images DIR`` / ``tailor predict --images DIR`` against the v1 app in
process (a tiny random ViT): folders become base64 examples and inputs, lines name files."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from adapters import AdapterStore, Limits, Tailor
from adapters.encoders import open_encoder
from service import cli
from service.api import create_app
from service.client import Client
from tests.asgi.test_image_api import picture, vit_folder  # noqa: F401  (fixture)


@pytest.fixture
def client(vit_folder, tmp_path, monkeypatch):  # noqa: F811
    enc = open_encoder(vit_folder)
    v1 = create_app()
    v1.state.tailor = Tailor(enc, AdapterStore(tmp_path / "store", enc.identity),
                             limits=Limits(max_images=16))
    outer = FastAPI()
    outer.mount("/v1", v1)
    with TestClient(outer, raise_server_exceptions=False) as http:
        monkeypatch.setattr(cli, "Client", lambda url, api_key=None: Client(url, api_key, http=http))
        yield http


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli.main(["--url", "http://testserver", *args])
    return rc, out.getvalue()


def test_create_and_predict_from_folders(client, tmp_path):
    for lab, name in enumerate(["left", "right"]):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "train" / name / f"{i}.png").write_bytes(picture(lab, i * 2 + lab))
    (tmp_path / "train" / "notes.txt").write_text("not an example")  # files beside folders: ignored
    (tmp_path / "new" / "sub").mkdir(parents=True)
    (tmp_path / "new" / "a.png").write_bytes(picture(0, 50))
    (tmp_path / "new" / "sub" / "b.PNG").write_bytes(picture(1, 51))
    rc, out = run("create", "corner", "--images", str(tmp_path / "train"))
    assert rc == 0, out
    assert json.loads(out)["labels"] == ["left", "right"] and json.loads(out)["metrics"]["examples"] == 8
    rc, out = run("predict", "corner", "--images", str(tmp_path / "new"), "--batch", "1")
    lines = [json.loads(x) for x in out.splitlines()]
    assert rc == 0 and [x["image"] for x in lines] == ["a.png", "sub/b.PNG"]
    assert all(x["adapter"] == "corner@1" for x in lines)
    assert [x["label"] for x in lines] == ["left", "right"]  # each file's own answer, in order


def test_empty_or_missing_folders_are_errors(client, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run("create", "x", "--images", str(tmp_path / "empty"))[0] == 1
    assert "sub-folder" in capsys.readouterr().err
    assert run("predict", "x", "--images", str(tmp_path / "nope"))[0] == 1
    assert "not a folder" in capsys.readouterr().err
