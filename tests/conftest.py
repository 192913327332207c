"""Shared fixtures: phantom radiographs as upload bytes, and real bad files, for the serving tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from deepxray.phantoms.phantom import Phantom, render_phantom
from deepxray.phantoms.writers import write_dicom, write_jpeg, write_png

EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}


def pytest_configure(config):
    # Ray Serve's own pydantic models use deprecated Field arguments; not ours to fix, and noisy.
    config.addinivalue_line("filterwarnings", "ignore::pydantic.warnings.PydanticDeprecatedSince20")
    # Starlette's TestClient nudging towards a fork of httpx that the project does not use.
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking 8-bit grey PNG whose header declares width x height pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


class Radiographs:
    """Phantoms written as upload files, rendered once per session."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._phantoms: dict[tuple, Phantom] = {}
        self._files: dict[tuple, bytes] = {}

    def phantom(self, body_part: str, index: int = 0, shape: tuple[int, int] | None = None) -> Phantom:
        """The phantom (seed 7); `shape` None is full size (2560 x 2048)."""
        key = (body_part, index, shape)
        if key not in self._phantoms:
            self._phantoms[key] = render_phantom(7, index, body_part, **({"shape": shape} if shape else {}))
        return self._phantoms[key]

    def file(
        self,
        body_part: str,
        fmt: str = "png",
        index: int = 0,
        shape: tuple[int, int] | None = None,
        photometric: str = "MONOCHROME2",
    ) -> bytes:
        """The phantom as a file's bytes: "png" (16-bit), "jpeg" (8-bit) or "dicom" (uncompressed DX)."""
        key = (body_part, fmt, index, shape, photometric)
        if key not in self._files:
            phantom = self.phantom(body_part, index, shape)
            path = self.folder / f"{len(self._files)}{EXTENSIONS[fmt]}"
            if fmt == "png":
                write_png(path, phantom.image)
            elif fmt == "jpeg":
                write_jpeg(path, phantom.image)
            else:
                write_dicom(path, phantom, f"7-{index}", photometric=photometric)
            self._files[key] = path.read_bytes()
        return self._files[key]


@pytest.fixture(scope="session")
def radiographs(tmp_path_factory) -> Radiographs:
    return Radiographs(tmp_path_factory.mktemp("radiographs"))


@pytest.fixture(scope="session")
def bad_files(radiographs) -> dict[str, bytes]:
    """Real bad uploads: empty, a truncated PNG, a text file, a PNG declaring 100000 x 100000 pixels."""
    png = radiographs.file("left_hand", "png", shape=(320, 256))
    return {
        "empty": b"",
        "truncated_png": png[: len(png) // 2],
        "text": b"Patient notes: not an image at all.\n" * 20,
        "bomb_png": png_declaring(100_000, 100_000),
    }
