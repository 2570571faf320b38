"""`export --push-to-hub REPO` against a stand-in of the hub's HTTP API on 127.0.0.1 (create repo, preupload,
commit: the calls huggingface_hub makes), and `--base-id`, which records the adapter's base as a hub id."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from langgraft.cli import main
from langgraft.train.stages import train
from helpers import tiny_run


class StandInHub(BaseHTTPRequestHandler):
    """Answers as the hub does for a new repo; records every call and the committed files."""

    calls: list = []
    cards: list = []
    files: dict = {}
    repos: dict = {}

    def log_message(self, *args):  # quiet
        pass

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def _answer(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server's name
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            import gzip

            raw = gzip.decompress(raw)
        self.calls.append(("POST", self.path))
        path = self.path.split("?")[0]
        if path == "/api/repos/create":
            body = json.loads(raw)
            repo = f"{body.get('organization') or 'me'}/{body['name']}"
            self.repos[repo] = body
            return self._answer({"url": f"{self.endpoint}/{repo}", "name": repo})
        if path == "/api/validate-yaml":  # the hub reads the card's YAML header before the upload
            import yaml

            content = json.loads(raw)["content"]
            try:
                header = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else None
            except yaml.YAMLError as exc:
                return self._answer({"errors": [{"message": str(exc)}]}, 400)
            if not isinstance(header, dict):
                return self._answer({"errors": [{"message": "no YAML header"}]}, 400)
            self.cards.append(header)
            return self._answer({"warnings": []})
        if "/preupload/" in path:
            files = json.loads(raw)["files"]
            return self._answer({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                           for f in files]})
        if "/commit/" in path:
            for line in raw.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            repo = path.split("/api/models/")[1].split("/commit/")[0]
            return self._answer({"commitUrl": f"{self.endpoint}/{repo}/commit/{'ab' * 20}", "commitOid": "ab" * 20,
                                 "pullRequestUrl": None})
        return self._answer({"error": f"not in the stand-in: {path}"}, 404)


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    StandInHub.calls, StandInHub.cards, StandInHub.files, StandInHub.repos = [], [], {}, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_TOKEN", "hf_standin")
    try:
        yield StandInHub
    finally:
        server.shutdown()
        server.server_close()


def test_push_uploads_the_export_in_one_commit_with_the_base_as_a_hub_id(tmp_path, data_dir, hub, capsys):
    cfg = tiny_run(tmp_path, data_dir, 40, 8, max_steps=2, checkpoint_every=0, eval_every=0)
    train("pretrain", cfg, out=tmp_path / "run")
    out = tmp_path / "export"
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(out), "--base-id", "me/tiny-fa-extended",
                 "--push-to-hub", "me/tiny-fa", "--private"]) == 0
    assert "pushed " in capsys.readouterr().out
    assert hub.repos["me/tiny-fa"].get("visibility", "private" if hub.repos["me/tiny-fa"].get("private") else None) \
        == "private"
    assert [c for c in hub.calls if "/commit/" in c[1]] == [("POST", "/api/models/me/tiny-fa/commit/main")]
    sent = hub.files
    local = {p.relative_to(out / "model").as_posix(): p for p in (out / "model").rglob("*") if p.is_file()}
    local.update({p.relative_to(out).as_posix(): p for p in (out / "adapter").rglob("*") if p.is_file()})
    assert set(sent) == set(local) and all(sent[k] == p.read_bytes() for k, p in local.items())
    assert "config.json" in sent and "model.safetensors" in sent and "adapter/adapter_model.safetensors" in sent
    assert "manifest.json" not in sent  # this machine's paths stay here
    adapter_cfg = json.loads(sent["adapter/adapter_config.json"])
    assert adapter_cfg["base_model_name_or_path"] == "me/tiny-fa-extended"
    assert sent["adapter/README.md"].decode().startswith("---\nbase_model: me/tiny-fa-extended\n")
    # the card's header is what huggingface_hub itself reads
    from huggingface_hub import ModelCard

    card = ModelCard(sent["README.md"].decode())
    assert card.data.library_name == "transformers" and "langgraft" in card.data.tags
    assert hub.cards and hub.cards[0]["library_name"] == "transformers"  # the hub's YAML check saw the card


def test_push_and_base_id_errors_are_one_line(tmp_path, data_dir, hub, capsys):
    assert main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "o"), "--base-id", "not a hub id"]) == 2
    assert "--base-id not a hub id: not a hub id" in capsys.readouterr().err
    from langgraft.errors import UserError
    from langgraft.export.run import push_export

    with pytest.raises(UserError, match="holds no export"):
        push_export(tmp_path, "me/x")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"--push-to-hub me/bad name: "):
        push_export(tmp_path, "me/bad name")
