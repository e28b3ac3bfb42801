"""Official pretrained weights by name: downloaded once into the cache, verified, converted, loaded.

``ALLINONE_IR_MIRROR=BASE_URL`` fetches ``BASE_URL/<name>/<file name>`` instead of the sources.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch

from ._runtime import progress_bar
from .errors import CheckpointError, DownloadError, ModelArgumentError, UnknownNameError, require
from .hub import CONFIG_NAME, WEIGHTS_NAME, from_pretrained, load_checkpoint, save_pretrained
from .io import atomic_write
from .models import _registry
from .models._weights import PretrainedWeights, default_weights, get_weights, list_pretrained

__all__ = [
    "cache_dir",
    "create_model",
    "download_weights",
    "import_weights",
    "list_pretrained",
    "load_pretrained",
]

CACHE_ENV = "ALLINONE_IR_CACHE"
MIRROR_ENV = "ALLINONE_IR_MIRROR"
HF_PREFIX = "hf-hub:"


def cache_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The weights cache: ``directory``, else ``$ALLINONE_IR_CACHE``, else under ``torch.hub.get_dir()``."""
    if directory is not None:
        return Path(directory)
    return Path(os.environ.get(CACHE_ENV) or Path(torch.hub.get_dir()) / "allinone_ir")


def _entry_dir(name: str, directory: str | os.PathLike[str] | None) -> Path:
    return cache_dir(directory) / name


def cached_state(name: str, directory: str | os.PathLike[str] | None = None) -> str:
    """``"converted"`` (safetensors ready), ``"file"`` (the released file, not yet converted) or ``"no"``."""
    folder = _entry_dir(name, directory)
    if (folder / WEIGHTS_NAME).is_file() and (folder / CONFIG_NAME).is_file():
        return "converted"
    return "file" if (folder / get_weights(name).file_name).is_file() else "no"


def _fetch(url: str, target: Path, entry: PretrainedWeights, progress: bool) -> None:
    """Download ``url`` to ``target`` atomically, its size and SHA-256 checked before the rename."""

    def download(tmp: str) -> None:
        request = urllib.request.Request(url, headers={"User-Agent": "allinone-ir"})
        digest, received = hashlib.sha256(), 0
        with open(tmp, "wb") as out, urllib.request.urlopen(request, timeout=60) as response:
            header = response.headers.get("Content-Length")
            length = int(header) if header and header.isdigit() else None
            total = length or entry.size
            bar = progress_bar(
                total=total, desc=entry.name, unit="B", unit_scale=True, leave=False, disable=not progress
            )
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
        if length is not None and received != length:
            raise DownloadError(f"download of {url} was cut off: {received} of {length} bytes received")
        if entry.size is not None and received != entry.size:
            raise CheckpointError(
                f"{url} sent {received} bytes, but {entry.name} is {entry.size} bytes: the file was not kept"
            )
        if entry.sha256 is not None and digest.hexdigest() != entry.sha256.lower():
            raise CheckpointError(
                f"{url}: SHA-256 {digest.hexdigest()} does not match the published {entry.sha256} of "
                f"{entry.name}: the file was deleted"
            )

    atomic_write(target, download)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_and_convert(entry: PretrainedWeights, path: Path, origin: str, *, delete: bool = True) -> None:
    """Load ``path`` as the declared network (exact keys; else deleted if ``delete``); save it as safetensors."""
    model = _registry.create_model(entry.arch, **entry.config)
    try:
        model = load_checkpoint(path, model, strict=True)
    except CheckpointError as exc:
        if delete:
            path.unlink(missing_ok=True)
        fate = "the file was deleted" if delete else f"remove {path} or replace it with the right file"
        raise CheckpointError(
            f"{origin} is not the {entry.arch} network that {entry.name} declares ({fate}): {exc}"
        ) from exc
    save_pretrained(model, path.parent, overwrite=True)


def download_weights(
    name: str, *, cache_dir: str | os.PathLike[str] | None = None, progress: bool = True
) -> Path:
    """Make sure the weights called ``name`` are in the cache, verified and converted; return their folder.

    Raises:
        DownloadError: If no source could be fetched, or the file is only on Google Drive / Baidu.
        CheckpointError: If the file's size, SHA-256 or architecture is wrong (it is deleted).
    """
    entry, folder = get_weights(name), _entry_dir(name, cache_dir)
    target = folder / entry.file_name
    if cached_state(name, cache_dir) == "converted":
        return folder
    if target.is_file():  # placed there by hand
        if entry.sha256 is not None and (digest := _sha256(target)) != entry.sha256.lower():
            raise CheckpointError(
                f"{target}: SHA-256 {digest} does not match the published {entry.sha256} of "
                f"{entry.name}: remove it or replace it with the right file"
            )
        _verify_and_convert(entry, target, str(target), delete=False)
        return folder
    urls = [s.url for s in entry.sources if s.downloadable]
    if mirror := os.environ.get(MIRROR_ENV):
        urls = [f"{mirror.rstrip('/')}/{name}/{entry.file_name}"]
    links = "; ".join(f"{s.kind}: {s.url}" for s in entry.sources)
    manual = (
        f"fetch {entry.file_name} from {links}, then run `allinone-ir weights import {name} FILE` "
        f"(or put it at {target})"
    )
    if not urls:
        raise DownloadError(f"{name} cannot be downloaded by the library: {manual}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:  # not a download problem: another source or a file fetched by hand fails alike
        raise DownloadError(
            f"cannot write to the weights cache {folder} ({exc.strerror or exc}); set {CACHE_ENV} "
            "(or cache_dir=, --cache-dir) to a writable folder"
        ) from exc
    problems = []
    for url in urls:
        try:
            _fetch(url, target, entry, progress)
        except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError; IncompleteRead (chunked)
            reason = getattr(exc, "reason", exc)  # URLError: why the connection failed
            if isinstance(exc, urllib.error.HTTPError):
                reason = f"HTTP {exc.code} {exc.reason}"
            elif isinstance(exc, http.client.IncompleteRead):
                reason = "the connection closed in the middle of the file"
            problems.append(f"{url} ({reason})")
            continue
        _verify_and_convert(entry, target, url)
        return folder
    raise DownloadError(f"cannot download {name}: {'; '.join(problems)}. Otherwise {manual}")


def import_weights(
    name: str, file: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Copy a file fetched by hand (left unchanged) into the cache, verified and converted like a download.

    Raises:
        FileNotFoundError: If ``file`` does not exist.
        CheckpointError: If its size, SHA-256 or architecture is not the entry's (the copy is deleted).
    """
    entry, src = get_weights(name), Path(file)
    if not src.is_file():
        what = (
            f"{src} is a folder; give the file {entry.file_name} in it"
            if src.is_dir()
            else f"no such file: {src}"
        )
        raise FileNotFoundError(what)
    target = _entry_dir(name, cache_dir) / entry.file_name
    try:
        _fetch(src.resolve().as_uri(), target, entry, progress=False)
        _verify_and_convert(entry, target, str(src))
    except urllib.error.URLError as exc:
        raise OSError(f"cannot read {src}: {exc.reason}") from exc
    except CheckpointError as exc:  # "the file was deleted": the copy
        raise CheckpointError(f"{exc}; {src} itself is unchanged") from exc
    return target.parent


def load_pretrained(
    name: str, *, cache_dir: str | os.PathLike[str] | None = None, device: Any = "cpu", progress: bool = True
) -> Any:
    """The network with the official weights called ``name``, in ``eval()`` mode on ``device``.

    Args:
        name: A registered name (see :func:`list_pretrained`) or ``hf-hub:owner/repo[/file]`` (a
            :func:`~allinone_ir.hub.save_pretrained` folder, or any checkpoint file, on the Hugging Face Hub).

    Raises:
        DownloadError: If the file cannot be fetched.
        CheckpointError: If the file is not the declared network (it is deleted).
        MissingDependencyError: For ``hf-hub:`` names without ``huggingface_hub``, or without safetensors.
    """
    if name.startswith(HF_PREFIX):
        hub = require("huggingface_hub", extra="hub", purpose="hf-hub: weights names")
        parts = name[len(HF_PREFIX) :].strip("/").split("/")
        if len(parts) < 2 or not all(parts):
            raise CheckpointError(f"expected hf-hub:owner/repo or hf-hub:owner/repo/file, got {name!r}")
        repo = "/".join(parts[:2])
        if len(parts) > 2:
            return load_checkpoint(hub.hf_hub_download(repo, "/".join(parts[2:])), map_location=device)
        weights = hub.hf_hub_download(repo, WEIGHTS_NAME)
        hub.hf_hub_download(repo, CONFIG_NAME)
        return from_pretrained(Path(weights).parent, map_location=device)
    entry = get_weights(name)
    folder = download_weights(name, cache_dir=cache_dir, progress=progress)
    try:
        model = from_pretrained(folder, map_location=device)
    except CheckpointError as exc:  # edited or damaged on disk: the cache is written atomically
        raise CheckpointError(f"{exc}; delete {folder} to fetch {name} again") from exc
    if getattr(model, "model_name", None) != entry.arch:  # set by _verify_and_convert
        raise CheckpointError(f"{folder} does not hold the {entry.name} weights; delete the folder")
    return model


def create_model(name: str, *, pretrained: bool | str = False, **overrides: Any) -> Any:
    """Build a registered model, with random weights or its released ones.

    Args:
        name: A name from :func:`~allinone_ir.models.list_models`.
        pretrained: ``True``: the released weights, in ``eval()`` mode; a weights name (such as
            ``"restormer.real_denoising"``) picks one of several; ``False``: random weights.
        **overrides: Constructor arguments, e.g. ``dim=24`` (not with ``pretrained``).

    Raises:
        UnknownNameError: If the model or weights name is unknown, or the weights are another model's.
        ModelArgumentError: If the network does not take one of ``overrides``, or they come with ``pretrained``.
    """
    if not pretrained or not _registry.is_model(name):  # the registry's one message for an unknown name
        return _registry.create_model(name, **overrides)
    entry = default_weights(name) if pretrained is True else get_weights(str(pretrained))
    if entry.arch != name:
        raise UnknownNameError(
            f"pretrained weights {entry.name!r} are for the model {entry.arch!r}, not {name!r}"
        )
    if overrides:
        raise ModelArgumentError(
            f"create_model({name!r}, pretrained=...) builds the released network; it takes no constructor "
            f"arguments (got {', '.join(sorted(overrides))})"
        )
    return load_pretrained(entry.name)


def _is_weights_name(text: str) -> bool:
    """Whether ``text`` names registered weights or an ``hf-hub:`` repository (and no existing path)."""
    return (text in list_pretrained() or text.startswith(HF_PREFIX)) and not Path(text).exists()
