"""Pretrained weights by name: registry, download (loopback server), verification, cache, import, CLI."""

from __future__ import annotations

import hashlib
import http.server
import sys
import threading
import types
from pathlib import Path

import pytest
import torch

from allinone_ir import cli, create_model
from allinone_ir.errors import CheckpointError, DownloadError, MissingDependencyError, UnknownNameError
from allinone_ir.models._weights import (
    _WEIGHTS,
    PretrainedWeights,
    WeightsSource,
    default_weights,
    get_weights,
    list_pretrained,
    register_weights,
)
from allinone_ir.weights import download_weights, import_weights, load_pretrained

TINY = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1}
NAME = "restormer.tiny_test"


class _Server:
    """A loopback HTTP server serving ``files`` (path -> bytes); ``cut`` sends only part of a body
    (``chunked``: in one chunk that declares the whole body)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: int | None = None
        self.chunked = False
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                if outer.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(f"{len(body):x}\r\n".encode())
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                self.wfile.write(body if outer.cut is None else body[: outer.cut])
                self.wfile.flush()
                if outer.cut is not None:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _official_bytes(tmp_path: Path, config: dict = TINY, seed: int = 0) -> tuple[bytes, dict]:
    """A BasicSR-style ``{"params": state_dict}`` file of a tiny Restormer, as bytes."""
    torch.manual_seed(seed)
    net = create_model("restormer", **config)
    path = tmp_path / f"official_{seed}.pth"
    torch.save({"params": net.state_dict()}, path)
    return path.read_bytes(), net.state_dict()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.stop()


@pytest.fixture
def entry_factory():
    """Register test-only entries (removed afterwards)."""
    added: list[str] = []

    def make(base: str, *, name: str = NAME, sha256: str | None = None, size: int | None = None, **kw):
        _WEIGHTS.pop(name, None)
        entry = PretrainedWeights(
            name=name,
            arch="restormer",
            config=TINY,
            file_name="tiny.pth",
            sources=kw.pop("sources", (WeightsSource("url", f"{base}/files/tiny.pth"),)),
            sha256=sha256,
            size=size,
            tasks=("rain",),
            license="test",
            **kw,
        )
        register_weights(entry)
        added.append(name)
        return entry

    yield make
    for name in added:
        _WEIGHTS.pop(name, None)


def test_every_registered_entry_builds_with_its_declared_parameter_count():
    assert {"promptir.three_task", "restormer.deraining", "nafnet.sidd_width64", "adair.three_task"} <= set(
        list_pretrained()
    )
    for name in list_pretrained():
        entry = get_weights(name)
        with torch.device("meta"):
            net = create_model(entry.arch, **entry.config)
        if entry.num_params is not None:
            assert sum(p.numel() for p in net.parameters()) == entry.num_params, name
        assert entry.sources, name
        assert entry.sha256 is None or len(entry.sha256) == 64
        if entry.size is not None:  # a float32 state dict: 4 bytes a parameter, plus the pickle's overhead
            assert 0 < entry.size - 4 * entry.num_params < 0.01 * entry.size, name
    sized = [n for n in list_pretrained() if get_weights(n).size is not None]
    assert sized == [
        f"nafnet.{v}"
        for v in ("gopro_width32", "gopro_width64", "reds_width64", "sidd_width32", "sidd_width64")
    ]
    assert all(get_weights(n).sha256 is not None for n in sized)


def test_list_pattern_and_defaults():
    assert list_pretrained("nafnet.sidd*") == ["nafnet.sidd_width32", "nafnet.sidd_width64"]
    assert default_weights("promptir").name == "promptir.three_task"
    with pytest.raises(UnknownNameError, match="several pretrained weights"):
        default_weights("restormer_biasfree")
    with pytest.raises(
        UnknownNameError, match="no pretrained weights are registered for the model 'pip_restormer'"
    ):
        default_weights("pip_restormer")
    with pytest.raises(UnknownNameError, match=r"Did you mean: promptir\.three_task"):
        get_weights("promptir.three_tsk")


def test_download_verify_convert_and_cache_hit_without_network(tmp_path, server, entry_factory):
    body, state = _official_bytes(tmp_path)
    server.files["/files/tiny.pth"] = body
    entry_factory(server.base, sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    cache = tmp_path / "cache"
    net = load_pretrained(NAME, cache_dir=cache, progress=False)
    assert not net.training
    assert torch.equal(net.state_dict()["output.weight"], state["output.weight"])
    folder = cache / NAME
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tiny.pth"]
    server.stop()  # no network from now on
    again = load_pretrained(NAME, cache_dir=cache, progress=False)
    assert torch.equal(again.state_dict()["output.weight"], state["output.weight"])
    assert server.hits == 1


def test_a_damaged_converted_cache_says_to_delete_the_folder(tmp_path, server, entry_factory):
    server.files["/files/tiny.pth"] = _official_bytes(tmp_path)[0]
    entry_factory(server.base)
    folder = download_weights(NAME, cache_dir=tmp_path / "c", progress=False)
    (folder / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(
        CheckpointError, match=f"not a valid safetensors file.*; delete {folder} to fetch {NAME} again$"
    ):
        load_pretrained(NAME, cache_dir=tmp_path / "c")


def test_mirror_variable_replaces_the_sources(tmp_path, server, entry_factory, monkeypatch):
    body, _ = _official_bytes(tmp_path)
    server.files[f"/{NAME}/tiny.pth"] = body
    entry_factory("http://127.0.0.1:9")  # an unreachable source
    monkeypatch.setenv("ALLINONE_IR_MIRROR", server.base + "/")
    monkeypatch.setenv("ALLINONE_IR_CACHE", str(tmp_path / "envcache"))
    assert download_weights(NAME, progress=False) == tmp_path / "envcache" / NAME


def test_sha_mismatch_deletes_the_file(tmp_path, server, entry_factory):
    body, _ = _official_bytes(tmp_path)
    server.files["/files/tiny.pth"] = body
    entry_factory(server.base, sha256="0" * 64)
    with pytest.raises(CheckpointError, match="does not match the published 0000"):
        download_weights(NAME, cache_dir=tmp_path / "c", progress=False)
    assert list((tmp_path / "c" / NAME).iterdir()) == []


def test_wrong_architecture_is_deleted(tmp_path, server, entry_factory):
    body, _ = _official_bytes(tmp_path, {**TINY, "dim": 16})
    server.files["/files/tiny.pth"] = body
    entry_factory(server.base)
    with pytest.raises(
        CheckpointError,
        match=r"is not the restormer network that restormer.tiny_test declares \(the file was deleted\)",
    ):
        download_weights(NAME, cache_dir=tmp_path / "c", progress=False)
    assert list((tmp_path / "c" / NAME).iterdir()) == []


def test_interrupted_download_leaves_no_file_then_retry_works(tmp_path, server, entry_factory):
    body, _ = _official_bytes(tmp_path)
    server.files["/files/tiny.pth"] = body
    server.cut = len(body) // 2
    entry_factory(server.base)
    cache = tmp_path / "c"
    with pytest.raises(DownloadError) as info:
        download_weights(NAME, cache_dir=cache, progress=False)
    message = str(info.value)
    assert f"{server.base}/files/tiny.pth" in message and "weights import restormer.tiny_test FILE" in message
    assert list((cache / NAME).iterdir()) == []
    server.cut = None
    assert (download_weights(NAME, cache_dir=cache, progress=False) / "model.safetensors").is_file()


def test_chunked_download_cut_off_is_a_download_error(tmp_path, server, entry_factory, capsys):
    body, _ = _official_bytes(tmp_path)
    server.files["/files/tiny.pth"] = body
    server.chunked, server.cut = True, 5000
    entry_factory(server.base)
    cache = tmp_path / "c"
    with pytest.raises(DownloadError, match=r"tiny.pth \(the connection closed in the middle of the file\)"):
        download_weights(NAME, cache_dir=cache, progress=False)
    assert list((cache / NAME).iterdir()) == []
    assert cli.main(["weights", "download", NAME, "--quiet", "--cache-dir", str(cache)]) == 2
    assert capsys.readouterr().err.startswith("error: cannot download restormer.tiny_test:")


def test_a_file_put_in_the_cache_by_hand_is_checked_against_the_published_sha(tmp_path, entry_factory):
    body, _ = _official_bytes(tmp_path)
    other = _official_bytes(tmp_path, seed=1)[0]  # the same network, other weights (another variant)
    entry_factory("http://127.0.0.1:9", sha256=hashlib.sha256(body).hexdigest())
    placed = tmp_path / "c" / NAME / "tiny.pth"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(other)
    with pytest.raises(
        CheckpointError, match=f"does not match the published {hashlib.sha256(body).hexdigest()}"
    ):
        load_pretrained(NAME, cache_dir=tmp_path / "c")
    assert placed.read_bytes() == other and not (placed.parent / "model.safetensors").exists()
    placed.write_bytes(body)
    assert (download_weights(NAME, cache_dir=tmp_path / "c") / "model.safetensors").is_file()


def test_a_cache_that_cannot_be_written_is_not_called_a_download_failure(tmp_path, server, entry_factory):
    server.files["/files/tiny.pth"] = _official_bytes(tmp_path)[0]
    entry_factory(server.base)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DownloadError, match=f"^cannot write to the weights cache {blocker / NAME} ") as info:
        download_weights(NAME, cache_dir=blocker, progress=False)
    assert "ALLINONE_IR_CACHE" in str(info.value) and "weights import" not in str(info.value)
    assert server.hits == 0


def test_an_html_page_instead_of_the_file_is_named(tmp_path, server, entry_factory, capsys):
    page = b"<!DOCTYPE html><html><title>Google Drive - Virus scan warning</title></html>"
    server.files["/files/tiny.pth"] = page
    entry_factory(server.base)
    with pytest.raises(CheckpointError, match="an HTML page, not a checkpoint"):
        download_weights(NAME, cache_dir=tmp_path / "c", progress=False)
    saved = tmp_path / "model.ckpt"  # wget on a Drive link saves the warning page
    saved.write_bytes(page)
    assert cli.main(["weights", "import", NAME, str(saved), "--cache-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "an HTML page, not a checkpoint" in err and f"{saved} itself is unchanged" in err
    assert saved.read_bytes() == page


def test_http_404_and_unreachable_name_the_urls(tmp_path, server, entry_factory):
    entry_factory(server.base)
    with pytest.raises(
        DownloadError,
        match=r"cannot download restormer.tiny_test: http://127.0.0.1:\d+/files/tiny.pth \(HTTP 404 Not Found\)",
    ):
        download_weights(NAME, cache_dir=tmp_path / "c", progress=False)


def test_drive_only_entry_says_how_to_import(tmp_path, entry_factory):
    entry_factory("", sources=(WeightsSource("gdrive", "abc123"),))
    with pytest.raises(DownloadError) as info:
        download_weights(NAME, cache_dir=tmp_path / "c", progress=False)
    message = str(info.value)
    assert "https://drive.google.com/file/d/abc123/view" in message
    assert str(tmp_path / "c" / NAME / "tiny.pth") in message
    assert "allinone-ir weights import restormer.tiny_test FILE" in message


def test_import_copies_verifies_and_converts(tmp_path, entry_factory):
    body, state = _official_bytes(tmp_path)
    entry_factory("", sources=(WeightsSource("gdrive", "abc123"),), sha256=hashlib.sha256(body).hexdigest())
    mine = tmp_path / "downloaded.pth"
    mine.write_bytes(body)
    folder = import_weights(NAME, mine, cache_dir=tmp_path / "c")
    assert mine.read_bytes() == body  # the user's file is untouched
    net = load_pretrained(NAME, cache_dir=tmp_path / "c")
    assert torch.equal(net.state_dict()["output.weight"], state["output.weight"])
    assert (folder / "model.safetensors").is_file()
    wrong = tmp_path / "other.pth"
    wrong.write_bytes(_official_bytes(tmp_path, seed=1)[0])
    _WEIGHTS.pop(NAME)
    entry_factory("", sources=(WeightsSource("gdrive", "abc123"),), sha256=hashlib.sha256(body).hexdigest())
    with pytest.raises(CheckpointError, match="SHA-256"):
        import_weights(NAME, wrong, cache_dir=tmp_path / "d")
    assert wrong.is_file() and list((tmp_path / "d" / NAME).iterdir()) == []
    with pytest.raises(FileNotFoundError, match=r"is a folder; give the file tiny\.pth in it"):
        import_weights(NAME, tmp_path, cache_dir=tmp_path / "e")  # was "no such file"


def test_create_model_pretrained(tmp_path, server, entry_factory, monkeypatch):
    body, state = _official_bytes(tmp_path)
    server.files["/files/tiny.pth"] = body
    entry_factory(server.base)
    monkeypatch.setenv("ALLINONE_IR_CACHE", str(tmp_path / "c"))
    net = create_model("restormer", pretrained=NAME)
    assert not net.training and torch.equal(net.state_dict()["output.weight"], state["output.weight"])
    with pytest.raises(UnknownNameError, match="are for the model 'promptir', not 'restormer'"):
        create_model("restormer", pretrained="promptir.three_task")
    with pytest.raises(TypeError, match="takes no constructor arguments"):
        create_model("restormer", pretrained=NAME, dim=8)


def test_hf_hub_names(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingDependencyError, match=r"allinone-ir\[hub\]"):
        load_pretrained("hf-hub:someone/tiny")
    from allinone_ir.hub import save_pretrained

    net = create_model("restormer", **TINY)
    save_pretrained(net, tmp_path / "repo")
    calls = []
    fake = types.SimpleNamespace(
        hf_hub_download=lambda repo, file: calls.append((repo, file)) or str(tmp_path / "repo" / file)
    )
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    loaded = load_pretrained("hf-hub:someone/tiny")
    assert calls == [("someone/tiny", "model.safetensors"), ("someone/tiny", "config.json")]
    assert torch.equal(loaded.state_dict()["output.weight"], net.state_dict()["output.weight"])


def test_cli_list_download_and_restore(tmp_path, server, entry_factory, monkeypatch, capsys):
    body, _ = _official_bytes(tmp_path)
    server.files["/files/tiny.pth"] = body
    entry_factory(server.base)
    monkeypatch.setenv("ALLINONE_IR_CACHE", str(tmp_path / "c"))
    assert cli.main(["weights", "restormer.*"]) == 0
    out = capsys.readouterr().out
    assert "restormer.tiny_test" in out and "restormer.deraining" in out and f"cache: {tmp_path / 'c'}" in out
    assert "PIP (pip_restormer, pip_nafnet): the authors released no weights" in out
    assert cli.main(["weights", "download", NAME, "--quiet"]) == 0
    assert "verified and converted" in capsys.readouterr().out
    assert [f for f in (tmp_path / "c").rglob("*") if f.name == "model.safetensors"]
    from PIL import Image

    Image.new("RGB", (20, 16), (120, 60, 30)).save(tmp_path / "in.png")
    assert (
        cli.main(["restore", str(tmp_path / "in.png"), "--out", str(tmp_path / "out"), "--weights", NAME])
        == 0
    )
    assert Image.open(tmp_path / "out" / "in.png").size == (20, 16)
    assert cli.main(["weights", "download", "adair.three_task"]) == 2
    assert "allinone-ir weights import adair.three_task FILE" in capsys.readouterr().err


def test_checkpoint_option_takes_a_weights_name_and_refuses_both(
    tmp_path, server, entry_factory, monkeypatch, capsys
):
    body, _ = _official_bytes(tmp_path)
    server.files["/files/tiny.pth"] = body
    entry_factory(server.base)
    monkeypatch.setenv("ALLINONE_IR_CACHE", str(tmp_path / "c"))
    from PIL import Image

    Image.new("RGB", (9, 13), (1, 2, 3)).save(tmp_path / "in.png")
    monkeypatch.chdir(tmp_path)  # no file called restormer.tiny_test here: the name is the weights'
    assert cli.main(["restore", "in.png", "--out", "out", "--checkpoint", NAME]) == 0
    assert Image.open(tmp_path / "out" / "in.png").size == (9, 13)
    assert cli.main(["restore", "in.png", "--out", "o2", "--checkpoint", "x.pth", "--weights", NAME]) == 2
    assert "give --weights NAME or --checkpoint PATH, not both" in capsys.readouterr().err
    assert cli.main(["restore", "in.png", "--out", "o3", "--weights", NAME, "--model", "promptir"]) == 2
    assert f"--weights {NAME} is a restormer network, not --model promptir" in capsys.readouterr().err
    torch.save({}, tmp_path / "mine.pth")
    assert cli.main(["restore", "in.png", "--out", "o4", "--weights", "mine.pth"]) == 2
    assert "pass the file or folder mine.pth as --checkpoint mine.pth" in capsys.readouterr().err


def test_docs_table_is_generated_from_the_registry(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_weights_table", Path(__file__).parents[1] / "docs/_weights_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = module.write_weights_table(tmp_path / "table.md").read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == list_pretrained()
    promptir = next(r for r in rows if r.startswith("| `promptir.three_task`"))
    assert (
        "35,376,967" in promptir
        and "Rain100L 36.37/0.972" in promptir
        and "(fetched by the library)" in promptir
    )
    assert any(line.startswith("- PIP") and "released no weights" in line for line in lines)
