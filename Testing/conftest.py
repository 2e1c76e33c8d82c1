"""Shared fixtures: a fresh headless Slicer runtime per test, the real data in ../shared
(tests that need it skip with the reason when it is absent), an isolated model cache, and
a way to run the ``mskquant`` command in-process or as the installed console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Import the working tree's code even when .venv's editable install points elsewhere.
for p in (ROOT, ROOT / "VHIWorkflow", ROOT / "KneeT2Segment", ROOT / "SiamesePainCAM"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

os.environ.setdefault("MSKQUANT_DEVICE", "cpu")
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

SHARED = Path(os.environ.get("MSKQUANT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def write_vhi_case_files(folder: Path):
    """The synthetic V_HI case (VHIWorkflowLib.synthetic) as STIR/T1W/ROI/DR NIfTI files in ``folder``."""
    import numpy as np

    from mskquant.imageio import write_image
    from VHIWorkflowLib.synthetic import make_case

    case = make_case()
    folder.mkdir(parents=True, exist_ok=True)
    write_image(case.stir, folder / "STIR.nii.gz")
    write_image(case.t1, folder / "T1W.nii.gz")
    write_image(case.normal_roi.with_array(case.normal_roi.array.astype(np.uint8)), folder / "ROI.nii.gz")
    write_image(case.disease_region.with_array(case.disease_region.array.astype(np.uint8)), folder / "DR.nii.gz")
    return case


def write_knee_t2_case(work: Path) -> Path:
    """A 'mskquant knee-t2' output folder (``work/case``) of a MESE phantom of the analytic knee, quantified
    with its true cartilage."""
    from KneeT2SegmentLib.anatomy import analytic_knee
    from mskquant.cli import main
    from mskquant.imageio import write_image

    work.mkdir(parents=True, exist_ok=True)
    write_image(analytic_knee(), work / "knee.nii.gz")
    assert main(["knee-phantom", "--labelmap", str(work / "knee.nii.gz"), "--out", str(work / "ph"), "-q"]) == 0
    out = work / "case"
    assert main(["knee-t2", "--mese", str(work / "ph" / "mese.nii.gz"), "--mask",
                 str(work / "ph" / "truth_cartilage.nii.gz"), "--out", str(out), "-q"]) == 0
    return out


@pytest.fixture
def runtime():
    from mskquant.headless import create_headless_runtime

    rt = create_headless_runtime()
    yield rt
    rt.scene.Clear(True)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real validation data not found at {SHARED} (../shared/data): test needs it")
    return SHARED


@pytest.fixture(scope="session")
def sij_dir(shared_dir) -> Path:
    d = shared_dir / "sij"
    if not d.is_dir():
        pytest.skip(f"{d} not found: real SIJ data needed")
    return d


@pytest.fixture(scope="session")
def sij_model_dir(shared_dir) -> Path:
    d = shared_dir / "sij_models"
    if not (d / "model_1.pt").is_file():
        pytest.skip(f"{d} has no published disease-region weights: test needs them")
    return d


@pytest.fixture(scope="session")
def knee_labelmap_dir(shared_dir) -> Path:
    d = shared_dir / "knee_labelmaps"
    if not d.is_dir():
        pytest.skip(f"{d} not found: real knee label maps needed")
    return d


@pytest.fixture
def model_dir(tmp_path, monkeypatch) -> Path:
    """An empty per-test model cache (MSKQUANT_MODEL_DIR), offline."""
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("MSKQUANT_MODEL_DIR", str(d))
    monkeypatch.setenv("MSKQUANT_OFFLINE", "1")
    return d


@pytest.fixture
def cli(capsys):
    """Run ``mskquant`` in-process: returns (exit code, stdout, stderr)."""
    from mskquant.cli import main

    def run(*args):
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def run_console(*args, env=None, timeout=600):
    """Run the installed console script (``.venv/bin/mskquant``) as a user would."""
    exe = Path(sys.executable).with_name("mskquant")
    if not exe.exists():
        pytest.skip(f"console script {exe} not installed (run scripts/setup_env.sh)")
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, env=e, timeout=timeout)


def assert_same_geometry(path, reference_path, origin_atol=1e-4):
    """Size, spacing, origin and direction of an image file equal those of a reference file."""
    import numpy as np
    import SimpleITK as sitk

    img, ref = sitk.ReadImage(str(path)), sitk.ReadImage(str(reference_path))
    assert img.GetSize() == ref.GetSize(), path
    np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=origin_atol)
    np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
