"""MESE input: an echo series with its echo times, validated, from files, DICOM or a sequence.

Thomas et al. section 2.2 and Table 1: OAI sagittal multi-echo spin-echo (MESE) images,
7 echoes at TE 10-70 ms. Whatever the source, the series must have one volume per echo
time, echo times strictly increasing, every echo on one grid; voxels holding NaN or zero in
every echo are reported by the fit, not fatal.

Sources:

* a 4D NIfTI/NRRD (echoes as the 4th dimension) plus the echo times: ``--te`` / the
  ``te.json`` beside it (a list of ms, or ``{"echo_times_ms": [...]}``), a sidecar
  ``<name>.json`` (``EchoTime`` / ``echo_times_ms``) or, for Slicer's sequence NRRD, its
  ``axis 0 index values``;
* a DICOM folder whose images carry EchoTime (0018,0081): files are grouped by echo time,
  each group sorted along the slice normal into one volume;
* a Slicer sequence node whose index values are the echo times (``logic.py``).

The knee's laterality (needed to tell medial from lateral, never assumed) comes from DICOM
Laterality (0020,0060) / Image Laterality (0020,0062) / "LEFT"/"RIGHT" in the series
description or protocol (OAI: ``SAG_T2_MAP_RIGHT``), or from the sidecar's ``Laterality``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mskquant.errors import InputError
from mskquant.image import Image
from mskquant.progress import Progress, as_progress

LATERALITIES = ("left", "right")
TE_JSON = "te.json"
_TE_KEYS = ("echo_times_ms", "EchoTimes_ms", "EchoTime_ms", "EchoTime", "EchoTimes", "te_ms", "te")


@dataclass
class MeseSeries:
    """Echo images ``echoes.array[t, k, j, i]`` (float32 magnitudes) and their echo times in ms."""

    echoes: Image
    echo_times_ms: np.ndarray
    laterality: Optional[str] = None
    laterality_source: str = ""
    subject_id: Optional[str] = None
    source: str = ""
    metadata: Dict[str, object] = field(default_factory=dict)

    @property
    def geometry(self):
        return self.echoes.geometry

    @property
    def n_echoes(self) -> int:
        return int(self.echoes.array.shape[0])


# --- validation -------------------------------------------------------------------------------
def _fmt(values) -> str:
    return ", ".join(f"{float(v):g}" for v in values)


def validate_echo_times(values, n_echoes: Optional[int] = None, what: str = "the MESE series") -> np.ndarray:
    """Echo times in ms as float64, checked: finite, positive, strictly increasing, one per echo."""
    try:
        te = np.asarray([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"The echo times of {what} are not numbers ({values!r}): give them in ms, "
                         f"e.g. --te 10,20,30,40,50,60,70.") from None
    if te.size == 0:
        raise InputError(f"No echo times for {what}: give them in ms, e.g. --te 10,20,30,40,50,60,70.")
    if not np.all(np.isfinite(te)) or np.any(te <= 0):
        raise InputError(f"Echo times must be positive numbers of ms (got {_fmt(te)}) for {what}: give them in ms, "
                         f"e.g. --te 10,20,30,40,50,60,70.")
    if te.max() < 1.0:  # no spin-echo series has all its echoes within 1 ms
        raise InputError(f"The echo times of {what} ({_fmt(te)}) look like seconds: give them in ms, "
                         f"e.g. --te 10,20,30,40,50,60,70.")
    diffs = np.diff(te)
    if np.any(diffs == 0):
        dup = te[1:][diffs == 0][0]
        raise InputError(f"Echo time {dup:g} ms appears more than once in {what} ({_fmt(te)}): a MESE series has one "
                         f"volume per echo time; remove the duplicate echo.")
    if np.any(diffs < 0):
        raise InputError(f"The echo times of {what} are not increasing ({_fmt(te)}): order the echoes by echo time.")
    if n_echoes is not None and te.size != n_echoes:
        raise InputError(f"{te.size} echo times ({_fmt(te)}) for {n_echoes} echoes in {what}: give exactly one echo "
                         f"time per echo.")
    return te


def parse_echo_times(text: str) -> List[float]:
    """``"10,20,30"`` (or spaces) -> [10.0, 20.0, 30.0] with a clear error."""
    parts = [p for p in re.split(r"[,\s;]+", str(text).strip()) if p]
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise InputError(f"Cannot read echo times {text!r}: give numbers in ms separated by commas, "
                         f"e.g. --te 10,20,30,40,50,60,70.") from None


def normalize_laterality(value) -> Optional[str]:
    """'left'/'right' from user input or metadata ('L', 'R', 'Left', 'RIGHT', ...); None if unknown."""
    if value is None:
        return None
    v = str(value).strip().lower()
    if v in ("", "auto", "unknown", "none", "b", "both"):
        return None
    if v in ("l", "left", "lt"):
        return "left"
    if v in ("r", "right", "rt"):
        return "right"
    raise InputError(f"Unknown knee laterality {value!r}: use 'left' or 'right'.")


def laterality_from_text(text: str) -> Optional[str]:
    """'LEFT'/'RIGHT' as a separate word in a description (underscores count as separators)."""
    found = {m.lower() for m in re.findall(r"(?<![A-Za-z])(left|right)(?![A-Za-z])", str(text or ""), re.I)}
    return found.pop() if len(found) == 1 else None


def make_series(echoes, echo_times_ms, what: str = "the MESE series", **kwargs) -> MeseSeries:
    """A validated :class:`MeseSeries` from a 4D :class:`Image` or a list of 3D echo images."""
    if isinstance(echoes, Image):
        if not echoes.is_series:
            raise InputError(f"{what[0].upper() + what[1:]} is a 3D volume without echoes: give a 4D image (echoes as "
                             f"the 4th dimension), a DICOM folder of all echoes or a sequence of echo volumes.")
        image = echoes
    else:
        images = list(echoes)
        if len(images) < 2:
            raise InputError(f"{what[0].upper() + what[1:]} has {len(images)} echo volume(s): a MESE series needs one "
                             f"volume per echo (at least 3).")
        first = images[0]
        for n, im in enumerate(images[1:], start=2):
            if im.is_series:
                raise InputError(f"Echo {n} of {what} is itself 4D: give one 3D volume per echo.")
            if not first.geometry.same_grid(im.geometry):
                raise InputError(f"Echo {n} of {what} has a different geometry from echo 1 ({im.geometry.describe()} vs "
                                 f"{first.geometry.describe()}): all echoes must share one grid (same scan).")
        image = Image(np.stack([np.asarray(im.array) for im in images]), first.geometry)
    te = validate_echo_times(echo_times_ms, image.array.shape[0], what)
    arr = image.array
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return MeseSeries(Image(arr, image.geometry), te, **kwargs)


# --- sidecars --------------------------------------------------------------------------------
def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".seq.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _te_from_json(data, where: Path) -> Optional[list]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in _TE_KEYS:
            if key in data:
                return data[key] if isinstance(data[key], list) else [data[key]]
    return None


def read_json_file(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{what} {path} is not valid JSON ({exc}): fix or remove it.") from None


def sidecar_path(path: Path) -> Path:
    return path.with_name(_stem(path) + ".json")


def read_sidecar(path: Path) -> dict:
    """The BIDS-style ``<name>.json`` beside an image file (empty when absent)."""
    p = sidecar_path(path)
    if not p.is_file():
        return {}
    data = read_json_file(p, "Sidecar")
    return data if isinstance(data, dict) else {}


# --- readers ---------------------------------------------------------------------------------
def _nrrd_index_values(path: Path) -> Optional[list]:
    """Index values stored by Slicer in a sequence NRRD header (``axis 0 index values``)."""
    if not str(path).endswith((".nrrd", ".nhdr")):
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
    except OSError:
        return None
    text = head.split(b"\n\n", 1)[0].decode("latin-1", "replace")
    m = re.search(r"^axis 0 index values:=(.*)$", text, re.M)
    if not m:
        m = re.search(r"^MultiVolume\.FrameLabels:=(.*)$", text, re.M)
    if not m:
        return None
    try:
        return [float(v) for v in re.split(r"[,\s]+", m.group(1).strip()) if v]
    except ValueError:
        return None


def read_mese_file(path: "str | os.PathLike", echo_times_ms: Optional[Sequence[float]] = None) -> MeseSeries:
    """A 4D NIfTI/NRRD MESE series; echo times from the argument, the NRRD header, the sidecar or te.json."""
    from mskquant.imageio import read_image

    path = Path(path).expanduser()
    image = read_image(path, "MESE")
    sidecar = read_sidecar(path)
    te, te_source = echo_times_ms, "given"
    if te is None:
        te, te_source = _nrrd_index_values(path), "NRRD header"
    if te is None:
        te, te_source = _te_from_json(sidecar, sidecar_path(path)), f"sidecar {sidecar_path(path).name}"
    if te is None and (path.parent / TE_JSON).is_file():
        te = _te_from_json(read_json_file(path.parent / TE_JSON, "Echo-time file"), path.parent / TE_JSON)
        te_source = str(path.parent / TE_JSON)
    if not image.is_series:
        raise InputError(f"MESE file {path} is a 3D volume without echoes: give a 4D file (echoes as the 4th "
                         f"dimension) or a DICOM folder with every echo.")
    if te is None:
        raise InputError(f"No echo times for {path}: give them with --te (ms, e.g. --te 10,20,30,40,50,60,70) or put "
                         f"a {TE_JSON} (list of ms) beside the file.")
    lat_raw = sidecar.get("Laterality") or sidecar.get("laterality")
    laterality = normalize_laterality(lat_raw) if lat_raw else None
    subject = sidecar.get("SubjectID") or sidecar.get("PatientID")
    return make_series(image, te, f"MESE file {path.name}", laterality=laterality,
                       laterality_source=f"sidecar {sidecar_path(path).name}" if laterality else "",
                       subject_id=str(subject) if subject else None, source=str(path),
                       metadata={"echo_times_source": te_source, **{k: v for k, v in sidecar.items()
                                                                     if k not in ("simulation",)}})


_DICOM_TAGS = {
    "echo_time": "0018|0081", "position": "0020|0032", "orientation": "0020|0037", "laterality": "0020|0060",
    "image_laterality": "0020|0062", "series_description": "0008|103e", "protocol": "0018|1030",
    "patient_id": "0010|0020", "series_uid": "0020|000e", "body_part": "0018|0015",
}


def _dicom_headers(folder: Path, progress: Progress) -> List[dict]:
    import SimpleITK as sitk

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    headers = []
    reader = sitk.ImageFileReader()
    reader.LoadPrivateTagsOff()
    for n, f in enumerate(files):
        if n % 50 == 0:
            progress(0.5 * n / max(len(files), 1), "Reading DICOM headers")
        try:
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileName(str(f))
            reader.ReadImageInformation()
        except RuntimeError:
            continue  # not DICOM (DICOMDIR, notes...)
        h = {"file": str(f)}
        for key, tag in _DICOM_TAGS.items():
            h[key] = reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
        headers.append(h)
    return headers


def read_mese_dicom(folder: "str | os.PathLike", echo_times_ms: Optional[Sequence[float]] = None,
                    progress: "Progress | None" = None) -> MeseSeries:
    """A MESE series from a DICOM folder: images grouped by EchoTime, each group one volume."""
    from mskquant.imageio import preserve_locale

    with preserve_locale():
        return _read_mese_dicom(folder, echo_times_ms, progress)


def _read_mese_dicom(folder: "str | os.PathLike", echo_times_ms: Optional[Sequence[float]] = None,
                     progress: "Progress | None" = None) -> MeseSeries:
    import SimpleITK as sitk

    from mskquant.imageio import image_from_sitk

    progress = as_progress(progress)
    folder = Path(folder).expanduser()
    headers = _dicom_headers(folder, progress)
    if not headers:
        raise InputError(f"{folder} holds no DICOM images: give a DICOM folder of the MESE series or a 4D file.")
    orientations = {h["orientation"] for h in headers}
    if len(orientations) > 1:
        raise InputError(f"{folder} holds DICOM images of {len(orientations)} different orientations (several series?): "
                         f"give a folder with the MESE series only.")
    patients = {h["patient_id"] for h in headers if h["patient_id"]}
    if len(patients) > 1:
        raise InputError(f"{folder} holds images of {len(patients)} patients: give a folder with one MESE series.")
    missing = [h["file"] for h in headers if not h["echo_time"]]
    if missing:
        raise InputError(f"{len(missing)} DICOM image(s) in {folder} have no EchoTime (0018,0081), e.g. {missing[0]}: "
                         f"this is not a MESE series, or give a 4D file with --te.")
    groups: Dict[float, List[dict]] = {}
    for h in headers:
        try:
            te = round(float(h["echo_time"]), 3)
        except ValueError:
            raise InputError(f"DICOM image {h['file']} has an unreadable EchoTime {h['echo_time']!r}.") from None
        groups.setdefault(te, []).append(h)
    tes = sorted(groups)
    if len(tes) < 2:
        raise InputError(f"The DICOM images in {folder} all have one echo time ({tes[0]:g} ms): a 3D volume without "
                         f"echoes; give the folder with every echo of the MESE series.")
    counts = {te: len(groups[te]) for te in tes}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"TE {te:g} ms: {c}" for te, c in counts.items())
        raise InputError(f"The echoes in {folder} have different numbers of slices ({detail}): the series is incomplete "
                         f"or mixes scans; give one complete MESE series (one volume per echo time).")
    if echo_times_ms is not None and not np.allclose(np.asarray(echo_times_ms, float), tes, atol=0.01):
        raise InputError(f"--te ({_fmt(echo_times_ms)}) disagrees with the DICOM echo times ({_fmt(tes)}): "
                         f"leave --te out for DICOM input.")
    orient = np.array([float(v) for v in headers[0]["orientation"].split("\\")]) if headers[0]["orientation"] else None
    normal = np.cross(orient[:3], orient[3:]) if orient is not None and orient.size == 6 else np.array([0, 0, 1.0])
    images = []
    for n, te in enumerate(tes):
        progress(0.5 + 0.5 * n / len(tes), f"Reading echoes ({n + 1}/{len(tes)})")

        def along_normal(h):
            pos = h["position"].split("\\") if h["position"] else ["0", "0", "0"]
            return float(np.dot(normal, [float(v) for v in pos]))

        files = [h["file"] for h in sorted(groups[te], key=along_normal)]
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            img = reader.Execute()
        except RuntimeError as exc:
            raise InputError(f"The DICOM images of echo {te:g} ms in {folder} cannot be read as one volume "
                             f"({str(exc).strip().splitlines()[-1][:120]}).") from None
        images.append(image_from_sitk(img, f"Echo {te:g} ms"))
    h0 = headers[0]
    laterality, lat_source = None, ""
    for key, label in (("laterality", "DICOM Laterality (0020,0060)"),
                       ("image_laterality", "DICOM Image Laterality (0020,0062)")):
        if h0[key]:
            try:
                laterality = normalize_laterality(h0[key])
            except InputError:
                laterality = None
            if laterality:
                lat_source = label
                break
    if laterality is None:
        for key, label in (("series_description", "DICOM series description"), ("protocol", "DICOM protocol name")):
            laterality = laterality_from_text(h0[key])
            if laterality:
                lat_source = f"{label} '{h0[key]}'"
                break
    progress(1.0, "DICOM series read")
    return make_series(images, tes, f"DICOM folder {folder.name}", laterality=laterality, laterality_source=lat_source,
                       subject_id=h0["patient_id"] or None, source=str(folder),
                       metadata={"echo_times_source": "DICOM EchoTime (0018,0081)",
                                 "series_description": h0["series_description"], "n_files": len(headers)})


def _is_series_file(path: Path) -> bool:
    """Whether an image file is 4D (or 3D with vector voxels), from its header only."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    dim = reader.GetDimension()
    return (dim == 4 and reader.GetSize()[3] > 1) or (dim == 3 and reader.GetNumberOfComponents() > 1)


def read_mese(path: "str | os.PathLike", echo_times_ms: Optional[Sequence[float]] = None,
              progress: "Progress | None" = None) -> MeseSeries:
    """A MESE series from a 4D file or a folder (DICOM images, or a folder holding one 4D image)."""
    path = Path(path).expanduser()
    if not path.exists():
        from mskquant.imageio import missing_input

        raise missing_input(path, "MESE input")
    if path.is_dir():
        images = [p for p in sorted(path.iterdir()) if p.is_file() and
                  p.name.endswith((".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"))]
        if images:
            series = [p for p in images if _is_series_file(p)]
            if len(series) == 1:
                return read_mese_file(series[0], echo_times_ms)
            if not series:
                raise InputError(f"Folder {path} holds no 4D image (only 3D volumes): give the MESE series (a 4D file "
                                 f"or a DICOM folder).")
            raise InputError(f"Folder {path} holds {len(series)} 4D images: give the MESE file itself.")
        return read_mese_dicom(path, echo_times_ms, progress)
    return read_mese_file(path, echo_times_ms)
