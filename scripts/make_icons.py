"""Draw the module and extension icons (128x128 PNG) from simple shapes.

Run once after changing a design: ``.venv/bin/python scripts/make_icons.py``; the PNGs are
committed. Drawn with numpy and written with mskquant.render (no external graphics).
"""

from pathlib import Path

import numpy as np

from mskquant import render

N = 128
ROOT = Path(__file__).resolve().parents[1]
yy, xx = np.mgrid[0:N, 0:N].astype(float)


def disc(cx, cy, r):
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2


def ring(cx, cy, r0, r1, a0=0, a1=360):
    d = np.hypot(xx - cx, yy - cy)
    ang = (np.degrees(np.arctan2(yy - cy, xx - cx)) + 360) % 360
    return (d >= r0) & (d <= r1) & (ang >= a0) & (ang <= a1)


def canvas():
    img = np.zeros((N, N, 3), np.uint8)
    img[...] = (24, 32, 48)
    return img


def paint(img, mask, rgb, alpha=1.0):
    col = np.zeros_like(img)
    col[...] = rgb
    return render.overlay(img, col, mask * alpha)


def vhi():
    img = canvas()
    sacrum = (np.abs(xx - 64) < 22 - (yy - 20) * 0.12) & (yy > 20) & (yy < 108)
    ilium_l = disc(24, 62, 30) & (xx < 44)
    ilium_r = disc(104, 62, 30) & (xx > 84)
    img = paint(img, sacrum | ilium_l | ilium_r, (170, 170, 180))
    img = paint(img, disc(44, 58, 9), (255, 215, 30), 0.95)
    img = paint(img, disc(44, 58, 5), (230, 25, 25))
    img = paint(img, disc(86, 74, 6), (255, 215, 30), 0.95)
    return img


def knee():
    img = canvas()
    img = paint(img, disc(64, 52, 40), (150, 150, 160))
    band = ring(64, 52, 40, 50, 20, 200)
    t = (np.degrees(np.arctan2(yy - 52, xx - 64)) + 360) % 360
    colors = render.colorize((t - 20) / 180 * 100, "t2", 0, 100)
    img[band] = colors[band]
    img = paint(img, (yy > 104) & (np.abs(xx - 64) < 44), (150, 150, 160))
    return img


def pain():
    img = canvas()
    for cx in (36, 92):
        img = paint(img, disc(cx, 48, 22), (150, 150, 160))
        img = paint(img, (yy > 76) & (yy < 120) & (np.abs(xx - cx) < 18), (150, 150, 160))
    heat = np.exp(-((xx - 92) ** 2 + (yy - 70) ** 2) / (2 * 12.0 ** 2))
    img = render.overlay(img, render.colorize(heat, "heat", 0, 1), heat * 0.85)
    return img


def extension():
    img = canvas()
    img = paint(img, disc(40, 44, 26), (150, 150, 160))
    band = ring(40, 44, 26, 33, 20, 200)
    img = paint(img, band, (240, 120, 40))
    img = paint(img, disc(92, 84, 22), (170, 170, 180))
    img = paint(img, disc(92, 84, 8), (230, 25, 25))
    return render.put_text(img, "MSKQuant", 104, 24, 15, (1, 1, 1))


if __name__ == "__main__":
    render.write_png(vhi(), ROOT / "VHIWorkflow/Resources/Icons/VHIWorkflow.png")
    render.write_png(knee(), ROOT / "KneeT2Segment/Resources/Icons/KneeT2Segment.png")
    render.write_png(pain(), ROOT / "SiamesePainCAM/Resources/Icons/SiamesePainCAM.png")
    render.write_png(extension(), ROOT / "Resources/Icons/MSKQuant.png")
