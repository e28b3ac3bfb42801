"""Small clean photographs shipped with the package (public domain / CC0).

Used by ``allinone-ir demo``, the examples and the tests, so that the library can be tried with no
downloads. Sources and licences are listed in ``LICENSES.md`` next to the images.

Examples:
    >>> from allinone_ir.assets import sample_images
    >>> [p.name for p in sample_images()]
    ['astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.png']
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import UnknownNameError

__all__ = ["sample_image", "sample_images"]


def sample_images() -> list[Path]:
    """Paths of the bundled sample photographs, sorted by name.

    Returns:
        Paths of the PNG files (RGB, 8-bit, long side 256 px).

    Raises:
        FileNotFoundError: If the package was installed without its image files.

    Examples:
        >>> from allinone_ir.io import read_image
        >>> read_image(sample_images()[0]).shape
        torch.Size([3, 256, 256])
    """
    folder = resources.files(__name__)
    paths = sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".png"))
    if not paths:
        raise FileNotFoundError(
            f"no sample images found in {folder}; the package was installed without its data files"
        )
    return paths


def sample_image(name: str) -> Path:
    """Path of one bundled sample photograph.

    Args:
        name: File stem such as ``"coffee"`` (a ``.png`` suffix is accepted too).

    Returns:
        Path of the PNG file.

    Raises:
        ValueError: If there is no sample image of that name; the message lists the available ones.

    Examples:
        >>> sample_image("coffee").name
        'coffee.png'
    """
    stem = name[:-4] if name.endswith(".png") else name
    by_stem = {p.stem: p for p in sample_images()}
    if stem not in by_stem:
        raise UnknownNameError(f"no sample image {name!r}; available: {sorted(by_stem)}")
    return by_stem[stem]
