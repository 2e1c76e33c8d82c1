"""Helpers of the browser tests of ``mskquant review``: the server in a subprocess on a free
loopback port, headless Chromium through Playwright (the system browser, never a download),
and checks on screenshots of the slice view."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
SERVER_START_S = 90


def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on PATH: the browser tests need Debian's 'chromium' (bash scripts/setup_env.sh "
                "installs it)")


def require_review_stack() -> None:
    for module, what in (("playwright", "Playwright"), ("trame_slicer", "trame-slicer")):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{what} is not installed: bash scripts/setup_env.sh installs the 'review' extra")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(str(p) for p in (ROOT, ROOT / "VHIWorkflow", ROOT / "KneeT2Segment",
                                                       ROOT / "SiamesePainCAM"))
    e.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    return e


@contextlib.contextmanager
def review_server(path: Path, reader: str = "A", host: str = "127.0.0.1", log: "Path | None" = None):
    """``mskquant review`` running; yields ``(url, first line printed)``."""
    port = free_port()
    log = log or path / f".review-server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mskquant.cli", "review", str(path), "--port", str(port),
                                 "--host", host, "--reader", reader], stdout=out, stderr=subprocess.STDOUT,
                                env=env(), cwd=ROOT)
    try:
        deadline = time.monotonic() + SERVER_START_S
        line = ""
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            line = next((x for x in text.splitlines() if x.startswith("MSKQuant Review of")), "")
            if line:
                break
            if proc.poll() is not None:
                raise AssertionError(f"the review server exited with {proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.2)
        else:
            raise AssertionError(f"the review server did not start in {SERVER_START_S} s:\n{log.read_text()[-3000:]}")
        yield f"http://127.0.0.1:{port}/", line
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 900):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def number(page, element_id: str) -> float:
    return float(page.inner_text(f"#{element_id}"))


def wait_number_change(page, element_id: str, old: float, timeout_ms: int = 15000) -> float:
    page.wait_for_function(f"""() => {{ const e = document.getElementById('{element_id}');
        return e && e.innerText.trim() !== '' && parseFloat(e.innerText) !== {old}; }}""", timeout=timeout_ms)
    return number(page, element_id)


def view_box(page) -> dict:
    """The slice view on the page (the remote-rendered image of the first view)."""
    page.wait_for_function("() => { const e = document.querySelector('img.image-display-area');"
                           " return e && e.getBoundingClientRect().width > 100 && e.naturalWidth > 0; }",
                           timeout=30000)
    return page.evaluate("() => JSON.parse(JSON.stringify("
                         "document.querySelector('img.image-display-area').getBoundingClientRect()))")


def view_pixels(page, box: dict) -> np.ndarray:
    """The slice view's pixels (RGB, height x width) from a screenshot."""
    from PIL import Image

    png = page.screenshot(clip={k: box[k] for k in ("x", "y", "width", "height")})
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def colour_fraction(rgb: np.ndarray, colour, tol: int = 60) -> float:
    """Fraction of pixels within ``tol`` (per channel) of an overlay colour blended at any opacity
    over grey: the pixel minus its grey level points the same way as the colour minus grey."""
    c = np.asarray(colour, float) * 255
    chroma = rgb - rgb.mean(axis=2, keepdims=True)
    target = c - c.mean()
    norm = np.linalg.norm(chroma, axis=2) * np.linalg.norm(target) + 1e-9
    cos = (chroma * target).sum(axis=2) / norm
    return float(((cos > 0.95) & (np.linalg.norm(chroma, axis=2) > tol / 2)).mean())


def colour_centre(rgb: np.ndarray, colour) -> "tuple[float, float] | None":
    """Pixel (x, y) at the centre of the densest patch of an overlay colour, or None."""
    from scipy import ndimage

    c = np.asarray(colour, float) * 255
    chroma = rgb - rgb.mean(axis=2, keepdims=True)
    target = c - c.mean()
    cos = (chroma * target).sum(axis=2) / (np.linalg.norm(chroma, axis=2) * np.linalg.norm(target) + 1e-9)
    mask = (cos > 0.95) & (np.linalg.norm(chroma, axis=2) > 30)
    if not mask.any():
        return None
    density = ndimage.uniform_filter(mask.astype(float), size=15)
    y, x = np.unravel_index(int(np.argmax(density)), density.shape)
    return float(x), float(y)


def stroke(page, box: dict, x: float, y: float, dx: float = 12, dy: float = 0, steps: int = 6) -> None:
    """A mouse stroke in the view, from view pixel (x, y) by (dx, dy)."""
    x0, y0 = box["x"] + x, box["y"] + y
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + dx, y0 + dy, steps=steps)
    page.mouse.up()
