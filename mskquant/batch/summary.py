"""The cohort's summary picture (``summary.png``): the distribution of the pipeline's main measure.

Box plots (median, quartiles, whiskers to the extremes, every case as a dot) per group — the
12 femoral subregions for knee-t2 and knee-change, sensitive / conservative for V_HI — or a
histogram (pain-cam: p of the right knee being the painful one). Drawn in numpy with the
project's text and PNG writers (:mod:`mskquant.render`), like the other report pictures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from .. import render
from .pipelines import Pipeline

W, H = 960, 520
LABELS = {"mean_t2_ms": "mean T2 (ms)", "delta_t2_ms": "T2 change (ms)", "volume_ml": "V_HI (mL)",
          "p_painful": "p (right knee painful)"}
LEFT, RIGHT, TOP, BOTTOM = 80, 20, 50, 90
INK = (40, 40, 40)
BOX = (70, 110, 200)


def summary_values(pipe: Pipeline, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Dict[str, List[float]]:
    """Group -> values of the main measure over the cohort table's rows."""
    col = {c: i for i, c in enumerate(header)}
    if pipe.summary_value not in col:
        return {}
    groups: Dict[str, List[float]] = {}
    for r in rows:
        if any(c in col and r[col[c]] == v for c, v in pipe.summary_exclude):
            continue
        if any(c in col and r[col[c]] != v for c, v in pipe.summary_where):
            continue
        try:
            value = float(r[col[pipe.summary_value]])
        except (TypeError, ValueError):
            continue
        if not math.isfinite(value):
            continue
        group = r[col[pipe.summary_group]] if pipe.summary_group else pipe.summary_value
        groups.setdefault(group, []).append(value)
    return groups


def _abbrev(name: str) -> str:
    words = name.split()
    return "".join(w[0].upper() for w in words) if len(words) > 1 else name


def _canvas():
    return np.full((H, W, 3), 255, np.uint8)


def _line(img, r0, c0, r1, c1, color=INK, width=1):
    n = int(max(abs(r1 - r0), abs(c1 - c0))) + 1
    rr = np.linspace(r0, r1, n).round().astype(int)
    cc = np.linspace(c0, c1, n).round().astype(int)
    for d in range(width):
        ok = (rr + d >= 0) & (rr + d < H) & (cc >= 0) & (cc < W)
        img[rr[ok] + d, cc[ok]] = color


def _axes(img, lo: float, hi: float, title: str, y_title: str, integer: bool = False):
    _line(img, TOP, LEFT, H - BOTTOM, LEFT)
    _line(img, H - BOTTOM, LEFT, H - BOTTOM, W - RIGHT)
    ticks = np.arange(0, hi + 1, max(1, int(math.ceil(hi / 5)))) if integer else np.linspace(lo, hi, 5)
    for t in ticks:
        r = _row(t, lo, hi)
        _line(img, r, LEFT - 5, r, LEFT)
        img[:] = render.put_text(img, f"{t:.3g}", r - 7, 8, 12, (0.15, 0.15, 0.15))
    img[:] = render.put_text(img, title, 12, LEFT, 16, (0.1, 0.1, 0.1))
    img[:] = render.put_text(img, y_title, TOP - 22, 8, 12, (0.15, 0.15, 0.15))


def _row(v: float, lo: float, hi: float) -> int:
    return int(round(H - BOTTOM - (v - lo) / max(hi - lo, 1e-12) * (H - BOTTOM - TOP)))


def _range(values: Sequence[float]):
    lo, hi = float(min(values)), float(max(values))
    pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi) * 0.1, 1.0)
    return lo - pad, hi + pad


def box_plot(groups: Dict[str, List[float]], title: str, y_title: str, note: str = ""):
    img = _canvas()
    lo, hi = _range([v for vs in groups.values() for v in vs])
    _axes(img, lo, hi, title, y_title)
    n = len(groups)
    step = (W - LEFT - RIGHT) / max(n, 1)
    half = max(3, int(step * 0.3))
    for k, (name, vs) in enumerate(groups.items()):
        x = int(LEFT + step * (k + 0.5))
        q0, q1, med, q3, q4 = np.percentile(vs, [0, 25, 50, 75, 100])
        _line(img, _row(q4, lo, hi), x, _row(q3, lo, hi), x)
        _line(img, _row(q1, lo, hi), x, _row(q0, lo, hi), x)
        for q in (q0, q4):
            _line(img, _row(q, lo, hi), x - half // 2, _row(q, lo, hi), x + half // 2)
        r3, r1 = _row(q3, lo, hi), _row(q1, lo, hi)
        img[r3:r1 + 1, x - half:x + half + 1] = (215, 225, 245)
        for r in (r3, r1):
            _line(img, r, x - half, r, x + half, BOX)
        _line(img, r3, x - half, r1, x - half, BOX)
        _line(img, r3, x + half, r1, x + half, BOX)
        _line(img, _row(med, lo, hi), x - half, _row(med, lo, hi), x + half, (200, 40, 40), 2)
        for v in vs:
            r = _row(v, lo, hi)
            img[max(r - 1, 0):r + 2, x + half + 3:x + half + 6] = INK
        label = _abbrev(name) if n > 4 else name
        img[:] = render.put_text(img, label, H - BOTTOM + 8, max(x - 4 * len(label), 0), 12, (0.1, 0.1, 0.1))
        img[:] = render.put_text(img, f"n={len(vs)}", H - BOTTOM + 28, max(x - 14, 0), 12, (0.3, 0.3, 0.3))
    if note:
        img[:] = render.put_text(img, note, H - 30, LEFT, 12, (0.25, 0.25, 0.25))
    return img


def histogram(values: Sequence[float], title: str, x_title: str, lo: float = 0.0, hi: float = 1.0, bins: int = 20):
    img = _canvas()
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    top = max(int(counts.max()), 1)
    _axes(img, 0.0, float(top), title, "cases", integer=True)
    width = (W - LEFT - RIGHT) / bins
    for k, c in enumerate(counts):
        if c:
            c0, c1 = int(LEFT + k * width) + 1, int(LEFT + (k + 1) * width) - 1
            img[_row(c, 0.0, float(top)):H - BOTTOM, c0:c1] = BOX
    for k in range(0, bins + 1, max(bins // 5, 1)):
        x = int(LEFT + k * width)
        _line(img, H - BOTTOM, x, H - BOTTOM + 5, x)
        img[:] = render.put_text(img, f"{edges[k]:.2g}", H - BOTTOM + 8, max(x - 8, 0), 12, (0.1, 0.1, 0.1))
    img[:] = render.put_text(img, f"{x_title} (n={len(values)})", H - 40, LEFT, 12, (0.15, 0.15, 0.15))
    return img


def write_summary(pipe: Pipeline, header, rows, path: Path) -> Path:
    groups = summary_values(pipe, header, rows)
    if pipe.summary_kind == "histogram":
        img = histogram([v for vs in groups.values() for v in vs], pipe.summary_title,
                        LABELS.get(pipe.summary_value, pipe.summary_value))
    elif groups:
        note = ("D/S deep/superficial, M/L medial/lateral, A/C/P anterior/central/posterior"
                if len(groups) > 4 else "")
        img = box_plot(groups, pipe.summary_title, LABELS.get(pipe.summary_value, pipe.summary_value), note)
    else:
        img = _canvas()
        img[:] = render.put_text(img, f"{pipe.summary_title}: no case done yet", 12, LEFT, 16, (0.1, 0.1, 0.1))
    return render.write_png(img, path)
