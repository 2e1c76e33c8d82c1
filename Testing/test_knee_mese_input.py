"""KneeT2Segment MESE input: echo-time validation, 4D files with their echo times, DICOM folders."""

import json

import numpy as np
import pytest

from mskquant.errors import InputError
from mskquant.image import Geometry, Image
from mskquant.imageio import write_image

from KneeT2SegmentLib.mese import (laterality_from_text, make_series, normalize_laterality, parse_echo_times,
                                   read_mese, read_mese_dicom, read_mese_file, validate_echo_times)

TE = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]


def sagittal_geometry(shape_ijk=(24, 20, 6), spacing=(0.3125, 0.446, 3.5)):
    """OAI-like sagittal grid: i -> posterior, j -> inferior, k -> patient right (right-handed)."""
    d = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]).T
    return Geometry.from_spacing(shape_ijk, spacing, (-8.0, 12.0, 20.0), d)


def echo_array(geometry, rng, n=len(TE)):
    base = rng.uniform(200, 1000, geometry.shape_kji)
    return np.stack([base * np.exp(-t / 40.0) for t in TE[:n]]).astype(np.float32)


def test_echo_time_validation_messages():
    np.testing.assert_array_equal(validate_echo_times(TE, 7), TE)
    with pytest.raises(InputError, match="appears more than once"):
        validate_echo_times([10, 20, 20, 30])
    with pytest.raises(InputError, match="not increasing"):
        validate_echo_times([10, 30, 20, 40])
    with pytest.raises(InputError, match="4 echo times .* for 7 echoes"):
        validate_echo_times([10, 20, 30, 40], 7)
    with pytest.raises(InputError, match="positive"):
        validate_echo_times([0, 10, 20])
    assert parse_echo_times("10, 20 30;40") == [10, 20, 30, 40]
    with pytest.raises(InputError, match="--te"):
        parse_echo_times("10,twenty")


def test_laterality_parsing():
    assert normalize_laterality("R") == "right" and normalize_laterality("Left") == "left"
    assert normalize_laterality("auto") is None and normalize_laterality(None) is None
    assert laterality_from_text("SAG_T2_MAP_RIGHT") == "right"
    assert laterality_from_text("T2 map left knee") == "left"
    assert laterality_from_text("SAG_T2_MAP") is None and laterality_from_text("LEFT and RIGHT") is None
    with pytest.raises(InputError):
        normalize_laterality("middle")


def test_series_needs_echoes_on_one_grid():
    rng = np.random.default_rng(0)
    g = sagittal_geometry()
    arr = echo_array(g, rng)
    with pytest.raises(InputError, match="3D volume without echoes"):
        make_series(Image(arr[0], g), [10.0])
    other = Geometry.from_spacing(g.shape_ijk, (0.3, 0.446, 3.5), g.origin, g.directions)
    images = [Image(a, g) for a in arr]
    images[3] = Image(arr[3], other)
    with pytest.raises(InputError, match="Echo 4 .* different geometry"):
        make_series(images, TE)
    s = make_series([Image(a, g) for a in arr], TE)
    assert s.n_echoes == 7 and s.echoes.array.dtype == np.float32 and s.geometry.same_grid(g)


def test_4d_file_with_echo_times_from_argument_te_json_or_sidecar(tmp_path):
    rng = np.random.default_rng(1)
    g = sagittal_geometry()
    arr = echo_array(g, rng)
    path = tmp_path / "mese.nii.gz"
    write_image(Image(arr, g), path)
    with pytest.raises(InputError, match="No echo times"):
        read_mese_file(path)
    s = read_mese_file(path, TE)
    np.testing.assert_allclose(s.echoes.array, arr, rtol=1e-6)
    assert s.geometry.same_grid(g) and s.laterality is None
    (tmp_path / "te.json").write_text(json.dumps(TE))
    s = read_mese_file(path)
    np.testing.assert_array_equal(s.echo_times_ms, TE)
    (tmp_path / "te.json").write_text(json.dumps({"echo_times_ms": TE[::-1]}))
    with pytest.raises(InputError, match="not increasing"):
        read_mese_file(path)
    (tmp_path / "mese.json").write_text(json.dumps({"EchoTime_ms": TE, "Laterality": "L", "SubjectID": "9000001"}))
    s = read_mese(tmp_path)  # a folder holding one 4D image (plus 3D ones) reads that image
    assert s.laterality == "left" and s.subject_id == "9000001" and "sidecar" in s.laterality_source
    with pytest.raises(InputError, match="7 echo times .* for 6 echoes"):
        make_series(Image(arr[:6], g), TE)
    with pytest.raises(InputError, match="6 echo times .* for 7 echoes"):
        read_mese_file(path, TE[:6])
    write_image(Image(arr[0], g), tmp_path / "single.nii.gz")
    with pytest.raises(InputError, match="3D volume without echoes"):
        read_mese_file(tmp_path / "single.nii.gz", TE)


def test_slicer_sequence_nrrd_index_values(tmp_path):
    """A Slicer sequence NRRD (list axis first) carries the echo times as 'axis 0 index values'."""
    rng = np.random.default_rng(2)
    arr = rng.uniform(1, 100, (7, 3, 4, 5)).astype(np.float32)  # [t, k, j, i]
    header = ("NRRD0004\ntype: float\ndimension: 4\nspace: left-posterior-superior\nsizes: 7 5 4 3\n"
              "space directions: none (0,0.5,0) (0,0,-0.5) (3,0,0)\nkinds: list domain domain domain\n"
              "endian: little\nencoding: raw\nspace origin: (1,2,3)\n"
              "axis 0 index type:=numeric\naxis 0 index values:=10 20 30 40 50 60 70\n\n")
    path = tmp_path / "echoes.seq.nrrd"
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(np.ascontiguousarray(np.moveaxis(arr, 0, -1)).astype("<f4").tobytes())
    s = read_mese_file(path)
    np.testing.assert_array_equal(s.echo_times_ms, TE)
    np.testing.assert_allclose(s.echoes.array, arr)


def write_dicom_series(folder, image: Image, echo_times, description="SAG_T2_MAP_RIGHT", patient="9000001",
                       skip=(), omit_te=False, spacing_override=None):
    """One file per slice and echo, as a scanner writes a MESE series (LPS tags, uint16 pixels)."""
    from mskquant.imageio import preserve_locale

    with preserve_locale():  # GDCM's writer leaves the process in the "C" locale
        _write_dicom_series(folder, image, echo_times, description, patient, skip, omit_te, spacing_override)


def _write_dicom_series(folder, image, echo_times, description, patient, skip, omit_te, spacing_override):
    import SimpleITK as sitk

    from mskquant.image import LPS_TO_RAS

    folder.mkdir(parents=True, exist_ok=True)
    g = image.geometry
    lps = LPS_TO_RAS @ g.ijk_to_ras
    d = lps[:3, :3] / g.spacing[None, :]
    orientation = "\\".join(f"{v:.6f}" for v in list(d[:, 0]) + list(d[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.1"
    n = 0
    for e, te in enumerate(echo_times):
        for k in range(image.array.shape[1]):
            if (e, k) in skip:
                continue
            sl = sitk.GetImageFromArray(np.round(image.array[e, k]).astype(np.uint16))
            sp = spacing_override.get(e, g.spacing) if spacing_override else g.spacing
            sl.SetSpacing((float(sp[0]), float(sp[1])))
            pos = lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3]
            tags = {"0008|0060": "MR", "0010|0020": patient, "0020|000d": uid + ".1", "0020|000e": uid + ".2",
                    "0008|103e": description, "0020|0037": orientation,
                    "0020|0032": "\\".join(f"{v:.6f}" for v in pos), "0020|0013": str(n + 1),
                    "0018|0050": "3.0", "0008|0018": f"{uid}.3.{n + 1}"}
            if not omit_te:
                tags["0018|0081"] = f"{te:g}"
            for tag, value in tags.items():
                sl.SetMetaData(tag, value)
            writer.SetFileName(str(folder / f"IM{(n * 7919) % 1000:04d}_{n}.dcm"))  # names not in slice order
            writer.Execute(sl)
            n += 1


def test_dicom_folder_grouped_by_echo_time(tmp_path):
    rng = np.random.default_rng(3)
    g = sagittal_geometry()
    arr = np.round(echo_array(g, rng))
    write_dicom_series(tmp_path / "dcm", Image(arr, g), TE)
    s = read_mese(tmp_path / "dcm")
    np.testing.assert_array_equal(s.echo_times_ms, TE)
    assert s.geometry.same_grid(g, tol_mm=1e-3), (s.geometry.describe(), g.describe())
    np.testing.assert_array_equal(s.echoes.array, arr)
    assert s.laterality == "right" and "series description" in s.laterality_source and s.subject_id == "9000001"
    with pytest.raises(InputError, match="disagrees"):
        read_mese_dicom(tmp_path / "dcm", [1, 2, 3, 4, 5, 6, 7])


def test_dicom_bad_series_give_one_clear_error(tmp_path):
    rng = np.random.default_rng(4)
    g = sagittal_geometry()
    arr = np.round(echo_array(g, rng))
    write_dicom_series(tmp_path / "incomplete", Image(arr, g), TE, skip={(2, 3)})
    with pytest.raises(InputError, match="different numbers of slices"):
        read_mese(tmp_path / "incomplete")
    write_dicom_series(tmp_path / "single", Image(arr[:1], g), TE[:1])
    with pytest.raises(InputError, match="one echo time"):
        read_mese(tmp_path / "single")
    write_dicom_series(tmp_path / "note", Image(arr[:2], g), TE[:2], omit_te=True)
    with pytest.raises(InputError, match="EchoTime"):
        read_mese(tmp_path / "note")
    write_dicom_series(tmp_path / "geometry", Image(arr, g), TE, spacing_override={4: (0.35, 0.446, 3.5)})
    with pytest.raises(InputError, match="different geometry"):
        read_mese(tmp_path / "geometry")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="no DICOM"):
        read_mese(tmp_path / "empty")
