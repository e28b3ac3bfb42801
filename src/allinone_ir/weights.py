"""Official pretrained weights by name: download once, verify, convert, load.

Every released file is declared by the family that owns its architecture (see
:class:`~allinone_ir.models.PretrainedWeights`); this module fetches and loads them by name:

- :func:`load_pretrained` ``("promptir.three_task")`` returns the network in ``eval()`` mode. The
  first call downloads the file into the cache, checks its SHA-256 where the authors published
  one and, always, that it loads as the declared network with exactly the expected keys (else
  the file is deleted and :class:`~allinone_ir.errors.CheckpointError` says so), then converts it
  once to ``model.safetensors`` + ``config.json`` beside it: later loads are fast and pickle-free.
- :func:`import_weights` does the same for a file a person fetched (Google Drive, Baidu).
- ``hf-hub:owner/repo`` and ``hf-hub:owner/repo/file`` load from the Hugging Face Hub through
  ``huggingface_hub`` (``pip install 'allinone-ir[hub]'``).

The cache is ``$ALLINONE_IR_CACHE`` when set, else ``<torch.hub.get_dir()>/allinone_ir``
(``~/.cache/torch/hub/allinone_ir``); each entry has a folder there named after it. With
``ALLINONE_IR_MIRROR=BASE_URL`` every file is fetched from ``BASE_URL/<name>/<file name>``
instead of its sources (clusters without internet access). Downloads are written to a
temporary file renamed on success, so an interrupted download never leaves a file that looks
complete. These downloads are the library's only network access.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from .errors import CheckpointError, DownloadError, require
from .models._weights import PretrainedWeights, get_weights, is_pretrained, list_pretrained

__all__ = [
    "cache_dir",
    "create_model",
    "download_weights",
    "import_weights",
    "list_pretrained",
    "load_pretrained",
]

#: Environment variables: the cache folder, and a mirror fetched instead of the sources.
CACHE_ENV = "ALLINONE_IR_CACHE"
MIRROR_ENV = "ALLINONE_IR_MIRROR"
HF_PREFIX = "hf-hub:"
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


def cache_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding downloaded weights.

    Args:
        directory: An explicit folder (returned as a ``Path``).

    Returns:
        ``directory``, else ``$ALLINONE_IR_CACHE``, else ``<torch.hub.get_dir()>/allinone_ir``.
    """
    if directory is not None:
        return Path(directory)
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import torch

    return Path(torch.hub.get_dir()) / "allinone_ir"


def _entry_dir(entry: PretrainedWeights, directory: str | os.PathLike[str] | None) -> Path:
    return cache_dir(directory) / entry.name


def cached_state(name: str, directory: str | os.PathLike[str] | None = None) -> str:
    """``"converted"`` (safetensors ready), ``"file"`` (the released file, not yet converted) or ``"no"``."""
    folder = _entry_dir(get_weights(name), directory)
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        return "converted"
    return "file" if (folder / get_weights(name).file_name).is_file() else "no"


def _urls(entry: PretrainedWeights) -> list[str]:
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return [f"{mirror.rstrip('/')}/{entry.name}/{entry.file_name}"]
    return [s.url for s in entry.sources if s.downloadable]


def _manual_help(entry: PretrainedWeights, target: Path) -> str:
    """Where a person can fetch the file, and how to hand it to the library."""
    links = "; ".join(f"{s.kind}: {s.url}" for s in entry.sources)
    return (
        f"fetch {entry.file_name} from {links}, then run `allinone-ir weights import {entry.name} FILE` "
        f"(or put it at {target})"
    )


class _Bar(Protocol):
    def update(self, n: int) -> Any: ...
    def close(self) -> None: ...


def _progress(total: int | None, desc: str, enabled: bool) -> _Bar | None:
    """A progress callback taking byte counts: a tqdm bar with the size, else plain lines on stderr."""
    if not enabled:
        return None
    from ._runtime import progress_bar

    bar = progress_bar(
        None, total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False
    )
    if bar is not None:
        return bar
    return _PlainProgress(total, desc)


class _PlainProgress:
    """Progress lines on stderr every tenth of the file (or every 10 MiB without a size)."""

    def __init__(self, total: int | None, desc: str) -> None:
        self.total, self.desc, self.done, self.shown = total, desc, 0, 0

    def update(self, n: int) -> None:
        self.done += n
        step = self.total // 10 if self.total else 10 << 20
        if step and self.done - self.shown >= step:
            self.shown = self.done
            size = f" of {self.total / 2**20:.1f} MiB" if self.total else ""
            print(f"{self.desc}: {self.done / 2**20:.1f} MiB{size}", file=sys.stderr)

    def close(self) -> None:
        pass


def _fetch(url: str, target: Path, entry: PretrainedWeights, progress: bool) -> None:
    """Download ``url`` to ``target`` through a temporary file in the same folder, checked before the rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "allinone-ir"})
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else entry.size
            bar = _progress(total, entry.name, progress)
            try:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        if length and length.isdigit() and received != int(length):
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
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _verify_and_convert(entry: PretrainedWeights, path: Path, origin: str, *, delete: bool = True) -> Any:
    """Load ``path`` as the declared network (exact keys), then save the safetensors copy beside it.

    The file (a download or an imported copy, ``delete``) is deleted when it is not the declared network.
    """
    import torch

    from .hub import load_checkpoint, save_pretrained
    from .models import create_model

    with torch.device("meta"):
        create_model(entry.arch, **entry.config)  # an entry that does not build is the registry's bug
    model = create_model(entry.arch, **entry.config)
    try:
        model = load_checkpoint(path, model, strict=True)
    except CheckpointError as exc:
        if delete:
            path.unlink(missing_ok=True)
        fate = "the file was deleted" if delete else f"remove {path} or replace it with the right file"
        raise CheckpointError(
            f"{origin} is not the {entry.arch} network that {entry.name} declares ({fate}): {exc}"
        ) from exc
    model.model_name = entry.arch  # type: ignore[assignment]
    save_pretrained(model, path.parent, overwrite=True)
    return model


def download_weights(
    name: str, *, cache_dir: str | os.PathLike[str] | None = None, progress: bool = True
) -> Path:
    """Make sure the weights called ``name`` are in the cache, verified and converted.

    Args:
        name: A registered name (see :func:`list_pretrained`).
        cache_dir: The cache folder (default: see :func:`cache_dir`).
        progress: Show a progress bar with the size while downloading.

    Returns:
        The entry's cache folder (a :func:`~allinone_ir.hub.save_pretrained` folder).

    Raises:
        UnknownNameError: If ``name`` is not registered.
        DownloadError: If no source could be fetched (the message names the URLs tried, the
            other sources and the ``weights import`` command), or the file is only on Google
            Drive / Baidu.
        CheckpointError: If the file's size, SHA-256 or architecture is wrong (it is deleted).
    """
    entry = get_weights(name)
    folder = _entry_dir(entry, cache_dir)
    if cached_state(name, cache_dir) == "converted":
        return folder
    target = folder / entry.file_name
    if target.is_file():  # placed there by hand, or converted by an older version
        _verify_and_convert(entry, target, str(target), delete=False)
        return folder
    urls = _urls(entry)
    if not urls:
        raise DownloadError(
            f"{entry.name} cannot be downloaded by the library: {_manual_help(entry, target)}"
        )
    problems = []
    for url in urls:
        try:
            _fetch(url, target, entry, progress)
        except (urllib.error.URLError, OSError, DownloadError) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                reason: object = f"HTTP {exc.code} {exc.reason}"
            elif isinstance(exc, urllib.error.URLError):
                reason = exc.reason
            else:
                reason = exc
            problems.append(f"{url} ({reason})")
            continue
        _verify_and_convert(entry, target, url)
        return folder
    raise DownloadError(
        f"cannot download {entry.name}: {'; '.join(problems)}. Otherwise {_manual_help(entry, target)}"
    )


def import_weights(
    name: str, file: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Copy a file fetched by hand into the cache, verified and converted like a download.

    Args:
        name: A registered name.
        file: The released file (it is copied, never moved or changed).
        cache_dir: The cache folder.

    Returns:
        The entry's cache folder.

    Raises:
        FileNotFoundError: If ``file`` does not exist.
        CheckpointError: If its size, SHA-256 or architecture is not the entry's (the copy is deleted).
    """
    entry = get_weights(name)
    src = Path(file)
    if not src.is_file():
        raise FileNotFoundError(f"no such file: {src}")
    folder = _entry_dir(entry, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / entry.file_name
    try:
        _fetch(src.resolve().as_uri(), target, entry, progress=False)
    except urllib.error.URLError as exc:
        raise OSError(f"cannot read {src}: {exc.reason}") from exc
    _verify_and_convert(entry, target, str(src))
    return folder


def _load_hf(spec: str, device: Any) -> Any:
    """``hf-hub:owner/repo`` (a save_pretrained folder) or ``hf-hub:owner/repo/file`` (any checkpoint)."""
    hub = require("huggingface_hub", extra="hub", purpose="hf-hub: weights names")
    from .hub import CONFIG_NAME, WEIGHTS_NAME, from_pretrained, load_checkpoint

    parts = spec[len(HF_PREFIX) :].strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise CheckpointError(f"expected hf-hub:owner/repo or hf-hub:owner/repo/file, got {spec!r}")
    repo = "/".join(parts[:2])
    if len(parts) > 2:
        return load_checkpoint(hub.hf_hub_download(repo, "/".join(parts[2:])), map_location=device)
    weights = hub.hf_hub_download(repo, WEIGHTS_NAME)
    hub.hf_hub_download(repo, CONFIG_NAME)
    return from_pretrained(Path(weights).parent, map_location=device)


def load_pretrained(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: Any = "cpu",
    progress: bool = True,
) -> Any:
    """The network with the official weights called ``name``, in ``eval()`` mode.

    Args:
        name: A registered name (see :func:`list_pretrained`, ``allinone-ir weights``) or
            ``hf-hub:owner/repo[/file]``.
        cache_dir: The cache folder (default: ``$ALLINONE_IR_CACHE`` or under ``torch.hub.get_dir()``).
        device: Where the network goes.
        progress: Show a progress bar while downloading.

    Returns:
        The network, in eval mode, on ``device``.

    Raises:
        UnknownNameError: If ``name`` is not registered.
        DownloadError: If the file cannot be fetched (the message says where to get it and how
            to import it).
        CheckpointError: If the file is not the declared network (it is deleted).
        MissingDependencyError: For ``hf-hub:`` names without ``huggingface_hub``, or without safetensors.

    Examples:
        >>> net = load_pretrained("promptir.three_task")  # doctest: +SKIP
    """
    if name.startswith(HF_PREFIX):
        return _load_hf(name, device).eval()
    from .hub import from_pretrained
    from .models import get_model_class

    entry = get_weights(name)
    folder = download_weights(name, cache_dir=cache_dir, progress=progress)
    model = from_pretrained(folder, map_location=device)
    import torch

    with torch.device("meta"):
        expected = type(_build_meta(entry))
    if type(model) is not expected or get_model_class(type(model).__name__) is not expected:
        raise CheckpointError(f"{folder} does not hold {entry.name}'s {expected.__name__}; delete the folder")
    return model.eval()


def create_model(name: str, *, pretrained: bool | str = False, **overrides: Any) -> Any:
    """Build a registered model, with random weights or its released ones.

    Args:
        name: A name from :func:`~allinone_ir.models.list_models`.
        pretrained: ``True`` loads the model's released weights (its entry of :func:`list_pretrained`,
            downloaded once into the cache) and returns the network in ``eval()`` mode; a weights name
            (``"restormer.real_denoising"``) picks one when the model has several. ``False``: random
            weights, built by :func:`allinone_ir.models.create_model`.
        **overrides: Constructor arguments, e.g. ``dim=24`` for a smaller network (not with ``pretrained``).

    Returns:
        The network.

    Raises:
        UnknownNameError: If the model or weights name is unknown, or the weights are another model's.
        ModelArgumentError: If the network does not take one of ``overrides``, or ``overrides`` are
            given with ``pretrained``.

    Examples:
        >>> net = create_model("promptir", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
        >>> net.training
        True
    """
    from .errors import ModelArgumentError, UnknownNameError
    from .models import create_model as build
    from .models import list_models
    from .models._weights import default_weights

    if not pretrained:
        return build(name, **overrides)
    if name not in list_models():
        build(name)  # the registry's one message for an unknown name
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


def _build_meta(entry: PretrainedWeights) -> Any:
    from .models import create_model

    return create_model(entry.arch, **entry.config)


def _is_weights_name(text: str) -> bool:
    """Whether ``text`` names registered weights or an ``hf-hub:`` repository (and no existing path)."""
    return (is_pretrained(text) or text.startswith(HF_PREFIX)) and not Path(text).exists()
