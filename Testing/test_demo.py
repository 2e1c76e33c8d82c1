"""The README's main job: ``mskquant demo`` runs every pipeline on data it makes itself and
writes a report folder (CSV + PNG) whose path it prints. Run here without ../shared (the
fresh-machine case); with ../shared the same command adds the real data."""

from __future__ import annotations

import csv
from pathlib import Path

from conftest import run_console
from mskquant.render import read_png


def test_demo_without_shared_data_reports_every_pipeline(tmp_path):
    out = tmp_path / "report"
    r = run_console("demo", "--no-shared", "--out", out, "-q", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert Path(r.stdout.strip().splitlines()[-1]) == out.resolve()
    with open(out / "summary.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {row["pipeline"] for row in rows} == {"VHIWorkflow", "KneeT2Segment", "SiamesePainCAM"}
    by = {(row["pipeline"], row["quantity"]): row for row in rows}
    # the synthetic SIJ case is built so that its V_HI is known: 32 sensitive, 6 conservative voxels
    assert float(by[("VHIWorkflow", "V_HI sensitive (voxels)")]["value"]) == 32
    assert float(by[("VHIWorkflow", "V_HI conservative (voxels)")]["value"]) == 6
    assert 0.5 < float(by[("KneeT2Segment", "automatic segmentation Dice vs truth")]["value"]) <= 1.0
    pngs = sorted(out.rglob("*.png"))
    assert {p.relative_to(out).parts[0] for p in pngs} == {"vhi", "knee_t2", "knee_morph", "pain_cam"}
    assert float(by[("KneeT2Segment", "surface vs volumetric subregion T2, largest difference")]["value"]) < 1.0
    assert (out / "knee_morph" / "morph.json").is_file() and (out / "knee_morph" / "bone_surface_femur.vtp").is_file()
    for p in pngs:
        assert read_png(p).size > 0
    assert not list(out.rglob("*.stage")) and not list(out.rglob("*.tmp*"))
