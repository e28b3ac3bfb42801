"""Small clean photographs shipped with the package (sources and licences in ``LICENSES.md`` next to them)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import UnknownNameError

__all__ = ["sample_image", "sample_images"]


def sample_images() -> list[Path]:
    """Paths of the bundled sample photographs (RGB PNG, long side 256 px), sorted by name.

    Raises:
        FileNotFoundError: If the package was installed without its image files.

    Examples:
        >>> [p.name for p in sample_images()]
        ['astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.png']
    """
    folder = resources.files(__name__)
    paths = sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".png"))
    if not paths:
        raise FileNotFoundError(f"no sample images in {folder}: the package was installed without them")
    return paths


def sample_image(name: str) -> Path:
    """Path of one bundled sample photograph by stem (``"coffee"``; a ``.png`` suffix is accepted).

    Raises:
        UnknownNameError: If there is none of that name; the message lists the available ones.

    Examples:
        >>> sample_image("coffee").name
        'coffee.png'
    """
    stem = name.removesuffix(".png")
    by_stem = {p.stem: p for p in sample_images()}
    if stem not in by_stem:
        raise UnknownNameError(f"no sample image {name!r}; available: {sorted(by_stem)}")
    return by_stem[stem]
