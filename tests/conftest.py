"""Shared fixtures: the service harness (`loadtests.harness`: the serve profile, the application started on a
free port, a port held by someone else), phantom radiographs as upload bytes and real bad files, and a temporary
directory of the session's own for whatever libraries and subprocesses write there."""

from __future__ import annotations

import dataclasses
import multiprocessing.util
import os
import socket
import struct
import tempfile
import zlib
from pathlib import Path

import cv2
import pytest

from deepxray.phantoms.phantom import Phantom, render_phantom
from deepxray.phantoms.writers import write_dicom, write_jpeg, write_png
from loadtests import harness

EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}


def pytest_configure(config):
    # Ray Serve's own pydantic models use deprecated Field arguments; not ours to fix, and noisy.
    config.addinivalue_line("filterwarnings", "ignore::pydantic.warnings.PydanticDeprecatedSince20")
    # Starlette's TestClient nudging towards a fork of httpx that the project does not use.
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture(scope="session", autouse=True)
def session_temp_dir(tmp_path_factory) -> Path:
    """The temporary directory (TMPDIR) of this session and every process it starts: a folder under pytest's
    basetemp, so what TensorFlow (autograph's generated modules, left behind by processes that end without
    running their exit handlers: pool workers, Ray replicas), Ray's workers and the commands under test write
    there goes when pytest removes the basetemp. Ray keeps its session folders where it would have anyway
    (RAY_TMPDIR: socket paths must stay short)."""
    folder = tmp_path_factory.mktemp("tmp", numbered=False)
    # This process's own multiprocessing folder stays where it was: multiprocessing removes it at exit, after
    # pytest removed the basetemp.
    multiprocessing.util.get_temp_dir()
    variables = harness.scratch_env(folder)
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    try:
        yield folder
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        tempfile.tempdir = None


@pytest.fixture(scope="session")
def one_machine_profile():
    """serve_config.yaml as `Settings` (its `args:`, the environment filling the rest) and its deployments."""
    return harness.profile()


@pytest.fixture(scope="module")
def serve_app() -> str:
    """The application as serve_config.yaml runs it (its deployments and `args:`, 2 CPUs) with the models under
    test (DEEPXRAY_MODELS_DIR, else the shipped ones), on a free port of a Ray started for the test module; its
    URL, once `/readyz` answers. Serve and Ray are shut down after the module."""
    folder = harness.models_dir()
    if not harness.models_present(folder):
        pytest.skip(
            f"no model artifacts in {folder}: train them (deepxray train) or point DEEPXRAY_MODELS_DIR at a "
            "directory of artifacts"
        )
    settings, deployments = harness.profile(overrides={"models_dir": str(folder)})
    with harness.served_application(settings, deployments, cpus=2) as url:
        yield url


@pytest.fixture()
def held_port():
    """A port another service holds: a listening socket with SO_REUSEPORT, as a Ray Serve proxy holds its port."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((harness.HOST, harness.free_port()))
        holder.listen()
        yield holder.getsockname()[1]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking 8-bit grey PNG whose header declares width x height pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


def scaled_phantom(phantom: Phantom, shape: tuple[int, int]) -> Phantom:
    """`phantom` with its film resized to `shape` (rows, columns) and its labels moved along."""
    height, width = phantom.image.shape[:2]
    sx, sy = shape[1] / width, shape[0] / height

    def move(centers):
        return {name: ((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5) for name, (x, y) in centers.items()}

    hands = [
        dataclasses.replace(
            hand, centers=move(hand.centers), box=(*_scaled(hand.box[:2], sx, sy), *_scaled(hand.box[2:], sx, sy))
        )
        for hand in phantom.hands or []
    ]
    return dataclasses.replace(
        phantom,
        image=cv2.resize(phantom.image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA),
        pixel_spacing_mm=phantom.pixel_spacing_mm / sx if phantom.pixel_spacing_mm else None,
        centers=move(phantom.centers) if phantom.centers else None,
        hands=hands or None,
    )


def _scaled(xy, sx: float, sy: float) -> tuple[int, int]:
    return round(xy[0] * sx), round(xy[1] * sy)


class Radiographs:
    """Phantoms written as upload files, rendered once per session."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._phantoms: dict[tuple, Phantom] = {}
        self._files: dict[tuple, bytes] = {}

    def phantom(self, body_part: str, index: int = 0, shape: tuple[int, int] | None = None) -> Phantom:
        """The phantom (seed 7); `shape` None is full size (2560 x 2048), else the full film scaled down to
        `shape` (a whole film at a lower resolution, as a small scan of a film looks)."""
        key = (body_part, index, shape)
        if key not in self._phantoms:
            full = self._phantoms.get((body_part, index, None)) or render_phantom(7, index, body_part)
            self._phantoms[key] = full if shape is None else scaled_phantom(full, shape)
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
