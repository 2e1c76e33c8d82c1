"""Issue 9 finding 1: a truncated image file is one clear line and exit code 2, for every reader.

ITK fills what a truncated NIfTI lacks with zeros without a word, and the gzip layer raised
``EOFError`` with a traceback; the shared reader (:func:`mskquant.imageio.read_image`) now
checks every file is whole before using it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT
from mskquant.errors import InputError
from mskquant.imageio import read_image


def _volume():
    rng = np.random.default_rng(0)
    img = sitk.GetImageFromArray(rng.normal(100, 10, (12, 40, 40)).astype(np.float32))
    img.SetSpacing((0.7, 0.7, 3.0))
    return img


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_every_cut_of_a_file_is_refused_as_truncated(tmp_path, suffix):
    full = tmp_path / f"full{suffix}"
    sitk.WriteImage(_volume(), str(full), suffix in (".nii.gz", ".nrrd", ".mha"))
    data = full.read_bytes()
    assert read_image(full).array.shape == (12, 40, 40)
    cuts = sorted({len(data) // 2, len(data) - 1, len(data) - 64} | ({400, 1000} if suffix.startswith(".nii") else set()))
    for n in cuts:
        cut = tmp_path / f"cut{n}{suffix}"
        cut.write_bytes(data[:n])
        with pytest.raises(InputError) as exc:
            read_image(cut, "STIR")
        msg = str(exc.value)
        assert "truncated" in msg and "copy or export the file again" in msg and "\n" not in msg, (n, msg)


def test_vhi_on_the_first_1000_bytes_of_a_real_stir(tmp_path, sij_dir):
    """The issue's reproduction, as a user runs it: one line, exit 2, no traceback, nothing written."""
    case = sij_dir / "1007"
    cut = tmp_path / "truncated.nii.gz"
    cut.write_bytes((case / "STIR.nii.gz").read_bytes()[:1000])
    out = tmp_path / "out"
    env = {"PYTHONPATH": ":".join(str(ROOT / p) for p in ("", "VHIWorkflow", "KneeT2Segment", "SiamesePainCAM"))}
    r = subprocess.run([sys.executable, "-m", "mskquant.cli", "vhi", "--stir", str(cut), "--normal-roi",
                        str(case / "normal_marrow.nii.gz"), "--disease-region", str(case / "disease_region.nii.gz"),
                        "--out", str(out)], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, **env})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("mskquant: error: STIR file") and "truncated" in lines[0], lines
    assert "Traceback" not in r.stderr and not out.exists()
