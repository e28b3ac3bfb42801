"""Image file I/O."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

PIL = pytest.importorskip("PIL.Image")

from allinone_ir.io import (  # noqa: E402
    ImageReadError,
    list_images,
    read_image,
    read_image_array,
    tensor_to_array,
    write_image,
)


def test_round_trip_8bit(tmp_path: Path) -> None:
    x = torch.rand(3, 9, 13)
    p = write_image(tmp_path / "a.png", x)
    y = read_image(p)
    assert y.shape == (3, 9, 13) and y.dtype == torch.float32
    assert (y - x).abs().max() <= 0.5 / 255 + 1e-6


def test_16bit_grayscale_promoted(tmp_path: Path) -> None:
    arr = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000).astype(np.uint16)
    PIL.fromarray(arr).save(tmp_path / "g16.png")
    raw = read_image_array(tmp_path / "g16.png")
    assert raw.dtype == np.uint16 and raw.shape == (4, 5, 3)
    assert raw[3, 4, 2] == 19 * 3000
    t = read_image(tmp_path / "g16.png")
    assert abs(float(t[0, 3, 4]) - 57000 / 65535) < 1e-6


def test_alpha_dropped_with_warning(tmp_path: Path) -> None:
    PIL.new("RGBA", (4, 3), (10, 20, 30, 40)).save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="alpha"):
        arr = read_image_array(tmp_path / "a.png")
    assert arr.shape == (3, 4, 3) and arr[0, 0].tolist() == [10, 20, 30]


def test_corrupt_file_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        read_image(bad)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")


def test_image_first_is_refused_with_the_order(tmp_path: Path) -> None:
    from allinone_ir.errors import UsageTypeError

    for image in (torch.zeros(3, 2, 2), np.zeros((2, 2, 3), np.uint8)):
        with pytest.raises(UsageTypeError, match=r"takes the path first, got a (Tensor|ndarray) as the path"):
            write_image(image, tmp_path / "x.png")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_what_cannot_be_written_faithfully_is_refused(tmp_path: Path) -> None:
    from allinone_ir.errors import UsageError

    nan = torch.zeros(3, 2, 2)
    nan[0, 0, 0] = float("nan")
    cases = [
        (nan, "x.png", r"the image contains NaN values; expected finite values in \[0, 1\]"),
        (torch.full((3, 2, 2), 200.0), "x.png", r"the image holds values from 200 to 200; expected \[0, 1\]"),
        (
            np.full((2, 2, 3), -1.0),
            "x.png",
            r"from -1 to -1; expected \[0, 1\] \(x / 255 for 8-bit, \(x \+ 1\) / 2",
        ),
        (torch.rand(5, 2, 2), "x.png", r"1 to 4 channels .* got shape \(5, 2, 2\) and dtype torch.float32"),
        (
            torch.zeros(3, 2, 2, dtype=torch.uint8),
            "x.png",
            r"expected a float \(C, H, W\) tensor in \[0, 1\]",
        ),
        (torch.zeros(3, 2, 2), "x.xyz", r"x.xyz: unknown image file extension '.xyz'; use .png, .jpg"),
    ]
    for image, name, message in cases:
        with pytest.raises(UsageError, match=message):
            write_image(tmp_path / name, image)
    assert list(tmp_path.iterdir()) == []
    # a small overshoot (a network's unclamped output) is clamped, as before
    p = write_image(tmp_path / "over.png", torch.full((3, 2, 2), 1.1))
    assert read_image_array(p).min() == 255


def test_never_overwrites(tmp_path: Path) -> None:
    p = write_image(tmp_path / "x.png", torch.zeros(3, 2, 2))
    with pytest.raises(FileExistsError, match="refusing"):
        write_image(p, torch.ones(3, 2, 2))
    assert read_image(p).max() == 0
    write_image(p, torch.ones(3, 2, 2), overwrite=True)
    assert read_image(p).min() == 1
    assert [q.name for q in list_images(tmp_path)] == ["x.png"]


# --- channels and bit depth as stored --------------------------------------------------------------


def test_keep_channels_gives_stored_channels_and_depth(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    PIL.fromarray(gray).save(tmp_path / "g.png")
    la = rng.integers(0, 256, (5, 6, 2), dtype=np.uint8)
    PIL.fromarray(la).save(tmp_path / "la.png")
    rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    PIL.fromarray(rgba).save(tmp_path / "rgba.png")
    pal = PIL.fromarray(rgba[:, :, :3]).convert("P", palette=PIL.Palette.ADAPTIVE, colors=8)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)

    g = read_image_array(tmp_path / "g.png", keep_channels=True)
    assert g.dtype == np.uint8 and g.shape == (5, 6, 1)
    np.testing.assert_array_equal(g[:, :, 0], gray)
    np.testing.assert_array_equal(read_image_array(tmp_path / "la.png", keep_channels=True), la)
    np.testing.assert_array_equal(read_image_array(tmp_path / "rgba.png", keep_channels=True), rgba)
    p = read_image_array(tmp_path / "p.png", keep_channels=True)
    assert p.shape == (5, 6, 4)
    np.testing.assert_array_equal(p, np.asarray(PIL.open(tmp_path / "p.png").convert("RGBA")))
    with pytest.warns(UserWarning, match=r"la\.png: alpha channel dropped"):
        rgb = read_image_array(tmp_path / "la.png")
    np.testing.assert_array_equal(rgb, np.repeat(la[:, :, :1], 3, axis=2))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_round_trip_every_colour_type(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    arr = rng.integers(0, 65536, (9, 7, channels), dtype=np.uint16)
    arr[0, 0] = 0x12FF  # low and high bytes differ: an 8-bit shortcut would fail
    p = write_image(tmp_path / "x.png", arr)
    back = read_image_array(p, keep_channels=True)
    assert back.dtype == np.uint16 and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    # an independent decoder agrees: Pillow keeps 16 bits of grayscale, the high byte of colour
    pil = np.asarray(PIL.open(p))
    if channels == 1:
        np.testing.assert_array_equal(pil, arr[:, :, 0])
    else:
        pil = pil[:, :, [0, 3]] if channels == 2 else pil  # Pillow opens 16-bit LA as RGBA
        np.testing.assert_array_equal(pil, (arr >> 8).astype(np.uint8))


def test_16bit_rgb_tensor_written_at_16_bits(tmp_path: Path) -> None:
    x = torch.rand(3, 6, 5, dtype=torch.float64).float()
    p = write_image(tmp_path / "t.png", x, bits=16)
    back = read_image(p)
    assert (back - x).abs().max() <= 0.5 / 65535 + 1e-7  # 8 bits would be off by up to 1/510
    assert read_image_array(p).dtype == np.uint16


def test_16bit_colour_other_formats_warn(tmp_path: Path) -> None:
    arr = np.full((2, 2, 3), 0x8000, dtype=np.uint16)
    with pytest.warns(UserWarning, match=r"16-bit colour can only be written as PNG; writing 8-bit"):
        p = write_image(tmp_path / "x.tif", arr)
    back = read_image_array(p)
    assert back.dtype == np.uint8 and int(back[0, 0, 0]) == 128


@pytest.mark.parametrize("planar", [False, True])
def test_16bit_colour_tiff_read_at_full_precision(tmp_path: Path, planar: bool) -> None:
    tifffile = pytest.importorskip("tifffile")
    arr = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 1000 + 7).astype(np.uint16)  # low bytes differ
    data = np.moveaxis(arr, -1, 0) if planar else arr
    tifffile.imwrite(
        tmp_path / "c16.tif", data, photometric="rgb", planarconfig="separate" if planar else None
    )
    got = read_image_array(tmp_path / "c16.tif")
    assert got.dtype == np.uint16 and np.array_equal(got, arr)
    assert torch.equal(
        read_image(tmp_path / "c16.tif"), torch.from_numpy(arr / 65535).float().permute(2, 0, 1)
    )
    # with alpha, kept on request, dropped with a warning by default
    rgba = np.dstack([arr, np.full((4, 5), 65535, np.uint16)])
    tifffile.imwrite(tmp_path / "c16a.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    assert np.array_equal(read_image_array(tmp_path / "c16a.tif", keep_channels=True), rgba)


def test_16bit_colour_tiff_orientation_applied(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    arr = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 1000 + 7).astype(np.uint16)
    tifffile.imwrite(tmp_path / "o.tif", arr, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    assert np.array_equal(read_image_array(tmp_path / "o.tif"), np.rot90(arr, -1))


def test_16bit_colour_tiff_without_tifffile_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "c16.tif", np.full((2, 2, 3), 40000, np.uint16), photometric="rgb")
    monkeypatch.setitem(sys.modules, "tifffile", None)  # import fails
    with pytest.raises(ImageReadError, match=r"c16\.tif: 16-bit colour TIFF.*pip install tifffile"):
        read_image_array(tmp_path / "c16.tif")


# --- 16-bit colour PNG through pypng ---------------------------------------------------------------


def _pypng_write(path: Path, arr: np.ndarray, **kwargs) -> None:
    """Write a 16-bit PNG with pypng directly, not through the library."""
    png = pytest.importorskip("png")
    h, w, c = arr.shape
    writer = png.Writer(w, h, greyscale=c <= 2, alpha=c in (2, 4), bitdepth=16, **kwargs)
    with open(path, "wb") as f:
        writer.write_array(f, arr.reshape(-1).tolist())


@pytest.mark.parametrize("interlace", [False, True])
def test_16bit_rgb_written_by_pypng_read_exactly(tmp_path: Path, interlace: bool) -> None:
    arr = np.random.default_rng(1).integers(0, 65536, (11, 10, 3), dtype=np.uint16)
    arr[0, 0] = 0x12FF
    _pypng_write(tmp_path / "c.png", arr, interlace=interlace)
    pil = np.asarray(PIL.open(tmp_path / "c.png"))  # the file is right: Pillow agrees on the high bytes
    np.testing.assert_array_equal(pil, (arr >> 8).astype(np.uint8))
    back = read_image_array(tmp_path / "c.png", keep_channels=True)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_array_equal(read_image_array(tmp_path / "c.png"), arr)


def test_16bit_rgba_read_without_keep_channels_drops_alpha(tmp_path: Path) -> None:
    arr = np.random.default_rng(2).integers(0, 65536, (4, 5, 4), dtype=np.uint16)
    _pypng_write(tmp_path / "a.png", arr)
    with pytest.warns(UserWarning, match=r"a\.png: alpha channel dropped"):
        rgb = read_image_array(tmp_path / "a.png")
    assert rgb.dtype == np.uint16
    np.testing.assert_array_equal(rgb, arr[:, :, :3])


def test_16bit_colour_png_without_pypng_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    import sys

    from allinone_ir.errors import MissingDependencyError

    arr = np.full((2, 2, 3), 40000, dtype=np.uint16)
    _pypng_write(tmp_path / "c.png", arr)
    monkeypatch.setitem(sys.modules, "png", None)  # `import png` now fails
    for call in (lambda: read_image_array(tmp_path / "c.png"), lambda: write_image(tmp_path / "d.png", arr)):
        with pytest.raises(MissingDependencyError, match=r"needs pypng: pip install 'allinone-ir\[data\]'"):
            call()
    assert not (tmp_path / "d.png").exists()
    # 16-bit grayscale and 8-bit colour still need only Pillow
    np.testing.assert_array_equal(read_image_array(write_image(tmp_path / "g.png", arr[:, :, 0])), arr)
    assert read_image_array(write_image(tmp_path / "e.png", (arr >> 8).astype(np.uint8))).dtype == np.uint8


# --- files that cannot be read ------------------------------------------------------------------------


def _reason(path: Path) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image_array(path)
    assert str(path) in str(info.value) and info.value.path == path
    return info.value.reason


def test_unreadable_files_say_why(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.png", torch.rand(3, 40, 40))
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, I am not a picture\n")
    assert "truncated" in _reason(tmp_path / "trunc.png")
    assert _reason(tmp_path / "empty.png") == "empty file (0 bytes)"
    assert _reason(tmp_path / "text.png") == "not an image file (or a format Pillow cannot read)"


def test_unreadable_16bit_colour_png_says_why(tmp_path: Path) -> None:
    p = write_image(
        tmp_path / "c16.png", np.random.default_rng(0).integers(0, 65536, (30, 30, 3), dtype=np.uint16)
    )
    data = bytearray(p.read_bytes())
    (tmp_path / "trunc.png").write_bytes(bytes(data[: len(data) - 40]))
    reason = _reason(tmp_path / "trunc.png")
    assert reason.startswith("corrupt or truncated PNG file") and "IDAT" in reason and "short" in reason
    data[60] ^= 0xFF  # inside the image data: its checksum no longer matches
    (tmp_path / "crc.png").write_bytes(bytes(data))
    reason = _reason(tmp_path / "crc.png")
    assert reason.startswith("corrupt or truncated PNG file") and "Checksum error in IDAT chunk" in reason


def test_16bit_colour_png_with_too_few_rows_says_why(tmp_path: Path) -> None:
    """Every chunk is whole, but the image data holds only half the rows."""
    import struct
    import zlib

    png = pytest.importorskip("png")
    arr = np.random.default_rng(3).integers(0, 65536, (8, 5, 3), dtype=np.uint16)
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in arr[:4])
    with open(tmp_path / "short.png", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        png.write_chunk(f, b"IHDR", struct.pack(">IIBBBBB", 5, 8, 16, 2, 0, 0, 0))
        png.write_chunk(f, b"IDAT", zlib.compress(rows))
        png.write_chunk(f, b"IEND")
    assert _reason(tmp_path / "short.png") == "truncated PNG file (too little image data)"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_permission(tmp_path: Path) -> None:
    p = write_image(tmp_path / "locked.png", torch.rand(3, 4, 4))
    p.chmod(0)
    try:
        assert _reason(p) == "permission denied"
    finally:
        p.chmod(0o644)


# --- permissions of written files -----------------------------------------------------------------------


@pytest.fixture
def umask():
    def set_umask(value: int) -> None:
        os.umask(value)

    old = os.umask(0o022)
    yield set_umask
    os.umask(old)


def test_written_files_get_ordinary_permissions(tmp_path: Path, umask, monkeypatch) -> None:
    from allinone_ir import io as io_module
    from allinone_ir.io import atomic_write, file_mode_for

    umask(0o022)
    assert io_module._current_umask() == 0o022
    p = write_image(tmp_path / "a.png", torch.rand(3, 4, 4))
    assert stat.S_IMODE(p.stat().st_mode) == 0o644  # mkstemp alone gives 0600
    q = atomic_write(tmp_path / "sub" / "b.txt", lambda tmp: Path(tmp).write_text("x"))
    assert stat.S_IMODE(q.stat().st_mode) == 0o644
    umask(0o077)
    assert file_mode_for(tmp_path / "new.bin") == 0o600
    assert stat.S_IMODE(write_image(tmp_path / "c.png", torch.rand(3, 4, 4)).stat().st_mode) == 0o600
    # a replaced file keeps its permissions, as open(path, "w") would
    p.chmod(0o640)
    write_image(p, torch.rand(3, 4, 4), overwrite=True)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    # without /proc the umask is read by setting and restoring it
    umask(0o027)

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(io_module, "open", no_proc, raising=False)
    assert io_module._current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # and it is left as it was


def test_permission_denied_reason_without_chmod(tmp_path: Path, monkeypatch) -> None:
    """The same message where the tests run as root (which reads a chmod 000 file)."""
    p = write_image(tmp_path / "locked.png", torch.rand(3, 4, 4))

    def denied(fp, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(fp))

    monkeypatch.setattr(PIL, "open", denied)
    assert _reason(p) == "permission denied"


# --- EXIF orientation, every Pillow mode, full disk, symbolic-link loops (issue 20) ---------------------

_ORIENTATIONS = range(1, 9)


def _exif(orientation: int) -> object:
    exif = PIL.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("orientation", _ORIENTATIONS)
def test_exif_orientation_applied_as_viewers_show(tmp_path: Path, orientation: int) -> None:
    from PIL import ImageOps

    rng = np.random.default_rng(orientation)
    # a lossless file with the tag: the pixels must be exactly exif_transpose's
    stored = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    PIL.fromarray(stored).save(tmp_path / "o.png", exif=_exif(orientation))
    with PIL.open(tmp_path / "o.png") as im:
        want = np.asarray(ImageOps.exif_transpose(im))
    got = read_image_array(tmp_path / "o.png")
    assert got.shape == want.shape == ((7, 5, 3) if orientation >= 5 else (5, 7, 3))
    assert np.array_equal(got, want)
    assert read_image(tmp_path / "o.png").shape == (3, *want.shape[:2])
    # Pillow itself turns TIFF pixels on load (and drops the tag): turned once, not twice
    PIL.fromarray(stored).save(tmp_path / "o.tif", exif=_exif(orientation))
    assert np.array_equal(read_image_array(tmp_path / "o.tif"), want)


def test_exif_orientation_of_a_jpeg_and_of_a_16bit_colour_png(tmp_path: Path) -> None:
    # a phone photograph: landscape sensor, Orientation 6 (viewers rotate it 90 degrees clockwise)
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[:8, :, 0] = 255  # a red band along the stored top edge: the right edge once rotated
    PIL.fromarray(stored).save(tmp_path / "phone.jpg", exif=_exif(6), quality=95)
    got = read_image_array(tmp_path / "phone.jpg")
    assert got.shape == (64, 40, 3)
    assert got[:, -8:, 0].mean() > 200 and got[:, :8, 0].mean() < 50

    # 16-bit colour PNG (read by pypng, not Pillow) with an eXIf chunk
    rgb16 = np.arange(2 * 3 * 3, dtype=np.uint16).reshape(2, 3, 3) * 3000
    p = write_image(tmp_path / "c16.png", rgb16)
    with PIL.open(p) as im:
        assert im.mode == "RGB"  # Pillow alone would keep 8 of the 16 bits
    PIL.open(p).save(tmp_path / "c8.png", exif=_exif(8))  # borrow the eXIf chunk layout
    data = (tmp_path / "c8.png").read_bytes()
    exif_chunk = data[data.index(b"eXIf") - 4 :]
    exif_chunk = exif_chunk[: 12 + int.from_bytes(exif_chunk[:4], "big")]
    raw = p.read_bytes()
    at = raw.index(b"IDAT") - 4
    (tmp_path / "c16x.png").write_bytes(raw[:at] + exif_chunk + raw[at:])
    got16 = read_image_array(tmp_path / "c16x.png", keep_channels=True)
    assert got16.dtype == np.uint16
    assert np.array_equal(got16, np.rot90(rgb16, 1))  # Orientation 8: 90 degrees counter-clockwise


def _save_mode(path: Path, im: object) -> Path:
    im.save(path)
    return path


def test_float_tiff_read_in_zero_one_range(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    p = _save_mode(tmp_path / "f.tif", PIL.fromarray(values))
    with PIL.open(p) as im:
        assert im.mode == "F"
    arr = read_image_array(p, keep_channels=True)
    assert arr.dtype == np.float32 and arr.shape == (3, 4, 1)
    assert np.array_equal(arr[:, :, 0], values)  # not a black image
    t = read_image(p)
    assert t.shape == (3, 3, 4) and torch.equal(t[1], torch.from_numpy(values))


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (np.linspace(0, 4000, 12, dtype=np.float32), r"mode F.* 0 to 4000.*\[0, 1\]"),
        (np.linspace(-1, 1, 12, dtype=np.float32), r"mode F.* -1 to 1.*\[0, 1\]"),
        (np.array([0.5] * 11 + [np.nan], np.float32), r"mode F.*NaN"),
    ],
)
def test_float_tiff_outside_zero_one_refused_by_name(tmp_path: Path, values: np.ndarray, why: str) -> None:
    p = _save_mode(tmp_path / "f.tif", PIL.fromarray(values.reshape(3, 4)))
    with pytest.raises(ImageReadError, match=r"f\.tif.*" + why) as info:
        read_image_array(p)
    assert "mode F" in info.value.reason and "f.tif" not in info.value.reason


def test_16bit_integer_modes_exact(tmp_path: Path) -> None:
    values = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000 + 7).astype(np.uint16)
    little = _save_mode(tmp_path / "le.tif", PIL.fromarray(values))  # I;16
    big = _save_mode(tmp_path / "be.tif", PIL.frombytes("I;16B", (4, 3), values.astype(">u2").tobytes()))
    as_i = _save_mode(tmp_path / "i.tif", PIL.fromarray(values.astype(np.int32)))  # 32-bit signed
    for p, mode in ((little, "I;16"), (big, "I;16B"), (as_i, "I")):
        with PIL.open(p) as im:
            assert im.mode == mode
        arr = read_image_array(p, keep_channels=True)
        assert arr.dtype == np.uint16 and np.array_equal(arr[:, :, 0], values), mode


@pytest.mark.parametrize("bad", [70000, -3])
def test_32bit_integer_outside_16bit_range_refused_by_name(tmp_path: Path, bad: int) -> None:
    values = np.zeros((3, 4), np.int32)
    values[1, 2] = bad
    p = _save_mode(tmp_path / "i32.tif", PIL.fromarray(values))
    with pytest.raises(ImageReadError, match=rf"i32\.tif: .*mode I.*{bad}.*0\.\.65535"):
        read_image_array(p)


@pytest.mark.parametrize(
    ("mode", "fmt", "want"),
    [
        ("1", "png", (255, 255, 255)),
        ("L", "png", (7, 7, 7)),
        ("LA", "png", (7, 7, 7)),
        ("P", "png", (10, 20, 30)),
        ("PA", "tif", (10, 20, 30)),
        ("RGB", "png", (10, 20, 30)),
        ("RGBA", "png", (10, 20, 30)),
        ("CMYK", "tif", (245, 235, 225)),
        ("YCbCr", "tif", None),
        ("LAB", "tif", None),
    ],
)
def test_every_pillow_mode_read_as_its_colours(tmp_path: Path, mode: str, fmt: str, want) -> None:
    src = PIL.new("RGB", (4, 3), (10, 20, 30))
    if mode in ("L", "LA"):
        im = PIL.new(mode, (4, 3), 7 if mode == "L" else (7, 99))
    elif mode == "1":
        im = PIL.new("1", (4, 3), 1)
    elif mode == "P":
        im = src.quantize(4)
    elif mode == "PA":
        im = src.quantize(4).convert("PA")
    elif mode == "CMYK":
        im = PIL.new("CMYK", (4, 3), (10, 20, 30, 0))
    else:
        im = src.convert(mode)
    p = _save_mode(tmp_path / f"m.{fmt}", im)
    with PIL.open(p) as back:
        assert back.mode == mode
    arr = read_image_array(p) if "A" not in mode else read_image_array(p, keep_channels=True)[:, :, :-1]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    assert arr.dtype == np.uint8 and arr.shape == (3, 4, 3)
    if want is None:  # colour spaces converted by Pillow: close to the colour they encode
        assert np.abs(arr.astype(int) - [10, 20, 30]).max() <= 3, arr[0, 0]
    else:
        assert arr[0, 0].tolist() == list(want)


def test_colour_float_tiff_pillow_cannot_read_is_named(tmp_path: Path) -> None:
    import struct

    h, w = 2, 3
    data = np.random.default_rng(0).random((h, w, 3)).astype("<f4").tobytes()
    n = 10
    ifd = 8
    extra = ifd + 2 + n * 12 + 4
    tags = [
        (256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, extra), (259, 3, 1, 1), (262, 3, 1, 2),
        (273, 4, 1, extra + 12), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(data)), (339, 3, 3, extra + 6),
    ]  # fmt: skip
    out = b"II*\x00" + struct.pack("<IH", ifd, n)
    for tag, typ, count, value in tags:
        out += struct.pack("<HHIHH" if typ == 3 and count == 1 else "<HHII", tag, typ, count, value, *(
            (0,) if typ == 3 and count == 1 else ()))  # fmt: skip
    out += struct.pack("<I", 0) + struct.pack("<3H", 32, 32, 32) + struct.pack("<3H", 3, 3, 3) + data
    (tmp_path / "rgbf.tif").write_bytes(out)
    with pytest.raises(ImageReadError, match=r"rgbf\.tif: a TIFF layout Pillow cannot read"):
        read_image_array(tmp_path / "rgbf.tif")


def test_symlink_loop_is_an_unreadable_file(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    (tmp_path / "loop.png").symlink_to("loop.png")
    (tmp_path / "gone.png").symlink_to("nowhere.png")
    # listed, so that a reader reports them instead of the files silently missing
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "gone.png", "loop.png"]
    with pytest.raises(ImageReadError, match=r"loop\.png: symbolic link loop") as info:
        read_image_array(tmp_path / "loop.png")
    assert info.value.reason == "symbolic link loop"
    with pytest.raises(FileNotFoundError, match=r"gone\.png.*nowhere\.png"):
        read_image_array(tmp_path / "gone.png")


def test_full_disk_removes_the_temporary_and_says_so(tmp_path: Path, monkeypatch) -> None:
    import errno

    from allinone_ir import io as aio

    def full(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"^no space left on device while writing .*out\.bin$") as info:
        aio.atomic_write(tmp_path / "out.bin", full)
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []

    def denied(tmp: str) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):  # other failures pass through as they are
        aio.atomic_write(tmp_path / "out.bin", denied)
    assert list(tmp_path.iterdir()) == []


# --- files users have: macOS leftovers, formats that cannot hold what is written -------------------------


def test_hidden_files_and_folders_are_not_listed(tmp_path: Path) -> None:
    """macOS leaves ``._x.png`` (AppleDouble, not an image) and ``.DS_Store`` beside copied pictures."""
    for name in (
        "b.png",
        "a.PNG",
        "c d é.jpeg",
        ".hidden.png",
        "sub/z.png",
        ".thumbs/t.png",
        "__MACOSX/._b.png",
    ):
        write_image(tmp_path / name, torch.rand(3, 4, 4))
    (tmp_path / "._b.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(60))
    (tmp_path / ".DS_Store").write_bytes(bytes(64))
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.png", "c d é.jpeg"]
    listed = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)]
    assert listed == ["a.PNG", "b.png", "c d é.jpeg", "sub/z.png"]
    assert list_images(tmp_path / ".thumbs") == [tmp_path / ".thumbs" / "t.png"]  # asked for by name


def test_16bit_grayscale_in_formats_without_16_bits_written_as_8bit(tmp_path: Path) -> None:
    gray = np.array([[0, 1000, 30000, 65535]], np.uint16)
    want = np.array([[0, 4, 117, 255]], np.uint8)  # rounded, not clipped at 255
    for ext in ("webp", "bmp", "jpg"):
        with pytest.warns(
            UserWarning, match=rf"g\.{ext}: 16-bit grayscale can only be written as PNG or TIFF"
        ):
            p = write_image(tmp_path / f"g.{ext}", gray)
        back = read_image_array(p)[:, :, 0]
        assert back.dtype == np.uint8
        assert np.abs(back.astype(int) - want).max() <= (0 if ext != "jpg" else 10), ext  # JPEG: lossy
    for ext in ("png", "tif"):  # kept at 16 bits
        np.testing.assert_array_equal(
            read_image_array(write_image(tmp_path / f"g.{ext}", gray))[:, :, 0], gray
        )


@pytest.mark.parametrize(("channels", "ext"), [(4, "jpg"), (2, "jpeg"), (4, "bmp"), (2, "bmp")])
def test_alpha_in_formats_without_alpha_refused_by_name(tmp_path: Path, channels: int, ext: str) -> None:
    from allinone_ir.errors import UsageError

    old = write_image(tmp_path / f"x.{ext}", torch.zeros(3, 4, 4))
    before = old.read_bytes()
    with pytest.raises(UsageError, match=rf"x\.{ext}: (JPEG|BMP) files cannot hold an alpha channel; write"):
        write_image(old, torch.rand(channels, 4, 4), overwrite=True)
    assert old.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [old.name]
    for ok in ("png", "tif", "webp"):
        assert (
            read_image_array(
                write_image(tmp_path / f"a.{ok}", torch.rand(4, 4, 4)), keep_channels=True
            ).shape[2]
            == 4
        )


def test_webp_written_losslessly(tmp_path: Path) -> None:
    x = torch.rand(3, 16, 16)
    np.testing.assert_array_equal(read_image_array(write_image(tmp_path / "x.webp", x)), tensor_to_array(x))
    rgba = np.random.default_rng(0).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    np.testing.assert_array_equal(
        read_image_array(write_image(tmp_path / "a.webp", rgba), keep_channels=True), rgba
    )


def test_jpeg_written_at_high_quality_without_chroma_subsampling(tmp_path: Path) -> None:
    stripes = np.zeros((16, 16, 3), np.uint8)
    stripes[:, ::2, 0], stripes[:, 1::2, 2] = 255, 255  # one-pixel red and blue columns
    back = read_image_array(write_image(tmp_path / "s.jpg", stripes)).astype(int)
    assert np.abs(back - stripes).max() <= 2  # Pillow's defaults (75, 4:2:0): mean error 89, max 152


def test_rounding_to_8_and_16_bits_is_to_the_nearest_level(tmp_path: Path) -> None:
    levels = torch.tensor([0.0, 0.49, 0.51, 127.5, 254.49, 254.51, 255.0]) / 255
    x = levels.view(1, 1, -1).expand(3, 2, -1).contiguous()
    want = [0, 0, 1, 128, 254, 255, 255]
    for ext in ("png", "tif", "bmp", "webp"):
        assert read_image_array(write_image(tmp_path / f"r.{ext}", x))[0, :, 0].tolist() == want, ext
    assert tensor_to_array(x)[0, :, 0].tolist() == want
    x16 = torch.tensor([0.49, 0.51, 65534.49, 65534.51], dtype=torch.float64).div(65535).float()
    x16 = x16.view(1, 1, -1).expand(3, 1, -1).contiguous()
    assert read_image_array(write_image(tmp_path / "r16.png", x16, bits=16))[0, :, 0].tolist() == [
        0,
        1,
        65534,
        65535,
    ]


def test_empty_image_refused_in_words(tmp_path: Path) -> None:
    from allinone_ir.errors import UsageError

    for image in (torch.rand(3, 0, 5), np.zeros((4, 0, 3), np.float32)):
        with pytest.raises(UsageError, match=r"the image is empty: shape \("):
            write_image(tmp_path / "e.png", image)
    assert list(tmp_path.iterdir()) == []


def test_writing_over_a_folder_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "out.png").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        write_image(tmp_path / "out.png", torch.rand(3, 4, 4), overwrite=True)
    assert info.value.filename == str(tmp_path / "out.png")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"] and (tmp_path / "out.png").is_dir()
