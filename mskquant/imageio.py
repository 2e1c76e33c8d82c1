"""The one NIfTI/NRRD path: files <-> :class:`~mskquant.image.Image` with geometry kept.

SimpleITK reads and writes the files (LPS on disk); geometry is converted to Slicer's
RAS IJK->RAS matrix on the way in and back on the way out. 4D files (echo series) become
``array[t, k, j, i]``. Writes are atomic: a failure never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_path, native_stderr_captured, write_failure
from .errors import InputError, OutputError
from .image import LPS_TO_RAS, Geometry, Image

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@contextlib.contextmanager
def preserve_locale():
    """Restore the process locale after ITK/GDCM calls.

    GDCM's DICOM writer switches the C locale to "C" and leaves it there; Python then
    decodes text files as ASCII for the rest of the process (and Slicer's GUI would format
    numbers differently). Every DICOM call goes through this guard.
    """
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        try:
            locale.setlocale(locale.LC_ALL, saved)
        except locale.Error:
            pass


# What ITK's readers say (in the exception or on the C++ stderr) about a file cut short.
_TRUNCATION_MESSAGES = ("expected", "hit end of header", "fread got only", "not read completely", "unexpected end", "ended before")


def missing_input(path: Path, what: str) -> InputError:
    """The error for an input path that is not there (a broken or looping symbolic link said as such)."""
    if path.is_symlink():
        return InputError(f"{what} {path} is a symbolic link that leads nowhere (its target is missing, or the link "
                          f"points back to itself): give the file itself.")
    return InputError(f"{what} {path} does not exist: check the path.")


def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise missing_input(path, f"{what} file")
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder: give an image file (.nii.gz or .nrrd).")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} file {path} is not readable: check its permissions.")


def _geometry_from_sitk(img, spatial_dims: int = 3) -> Geometry:
    dim = img.GetDimension()
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(dim, dim)[:spatial_dims, :spatial_dims]
    spacing = np.asarray(img.GetSpacing(), dtype=float)[:spatial_dims]
    origin = np.asarray(img.GetOrigin(), dtype=float)[:spatial_dims]
    m = np.eye(4)
    m[:3, :3] = direction * spacing[None, :]
    m[:3, 3] = origin
    size = img.GetSize()[:spatial_dims]
    return Geometry(tuple(size), LPS_TO_RAS @ m)


class _NiftiHeader:
    """The few fields of a NIfTI-1/2 header needed to check a file is whole and to find NaN/Inf."""

    def __init__(self, raw: bytes) -> None:
        import struct

        self.valid = False
        if len(raw) < 348:
            return
        for endian in ("<", ">"):
            sizeof_hdr = struct.unpack(endian + "i", raw[:4])[0]
            if sizeof_hdr in (348, 540):
                break
        else:
            return
        if sizeof_hdr == 540 and len(raw) < 540:
            return
        self.endian = endian
        if sizeof_hdr == 348:  # NIfTI-1
            dims = struct.unpack(endian + "8h", raw[40:56])
            self.datatype, bitpix = struct.unpack(endian + "2h", raw[70:74])
            self.vox_offset = int(struct.unpack(endian + "f", raw[108:112])[0])
        else:  # NIfTI-2
            self.datatype, bitpix = struct.unpack(endian + "2h", raw[12:16])
            dims = struct.unpack(endian + "8q", raw[16:80])
            self.vox_offset = int(struct.unpack(endian + "q", raw[168:176])[0])
        ndim = dims[0]
        if not 1 <= ndim <= 7 or bitpix <= 0 or min(dims[1:ndim + 1]) < 1:
            return  # ITK judges such headers itself
        self.data_bytes = int(np.prod([int(d) for d in dims[1:ndim + 1]], dtype=object)) * bitpix // 8
        self.valid = True


def _read_nifti_raw(path: Path, what: str) -> "tuple[bytes, _NiftiHeader]":
    """A NIfTI file's (decompressed) bytes, refused when the file is truncated or its gzip stream corrupt.

    ITK's reader fills what a truncated file lacks with zeros and reports nothing, so the
    completeness of the file is checked here before ITK sees it.
    """
    import gzip
    import zlib

    fix = "copy or export the file again (it is incomplete or damaged)."
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except EOFError:
        raise InputError(f"{what} file {path} is truncated (its compressed data ends early): {fix}") from None
    except gzip.BadGzipFile:
        raise InputError(f"{what} file {path} cannot be read as an image (not gzip data, although its name ends in "
                         f".gz): give a NIfTI (.nii/.nii.gz) or NRRD file.") from None
    except (OSError, zlib.error) as exc:
        raise InputError(f"{what} file {path} cannot be decompressed ({exc}): {fix}") from None
    if len(raw) < 348:
        raise InputError(f"{what} file {path} holds {len(raw)} bytes, less than a NIfTI header: {fix[:-1]}, "
                         f"or not a NIfTI file).")
    header = _NiftiHeader(raw)
    if header.valid and len(raw) < header.vox_offset + header.data_bytes:
        raise InputError(f"{what} file {path} is truncated ({len(raw)} of {header.vox_offset + header.data_bytes} "
                         f"bytes): {fix}")
    return raw, header


def _check_nrrd_gzip(path: Path, what: str) -> None:
    """Refuse a gzip-encoded NRRD whose compressed stream is cut short.

    Teem's reader stops once it has the voxels it expects, so a file that lost only its
    gzip trailer (CRC and length) reads without complaint; Python's zlib checks the stream.
    """
    import zlib

    with open(path, "rb") as fh:
        data = fh.read()
    end = data.find(b"\n\n")
    if not data.startswith(b"NRRD") or end < 0:
        return  # ITK's reader judges it
    fields = {}
    for line in data[:end].decode("latin-1").splitlines()[1:]:
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.lstrip("=").strip().lower()
    if fields.get("encoding") not in ("gzip", "gz") or "data file" in fields or "datafile" in fields:
        return
    stream = zlib.decompressobj(wbits=31)
    try:
        stream.decompress(data[end + 2:])
    except zlib.error as exc:
        raise InputError(f"{what} file {path} cannot be decompressed ({exc}): copy or export the file again "
                         f"(it is incomplete or damaged).") from None
    if not stream.eof:
        raise InputError(f"{what} file {path} is truncated (its compressed data ends early): copy or export the "
                         f"file again (it is incomplete or damaged).")


def _nifti_nonfinite(raw: bytes, header: _NiftiHeader, shape) -> "tuple[np.ndarray, np.ndarray] | None":
    """Where a float NIfTI file holds NaN/Inf on disk (mask ``[t,]k, j, i``, values), or None.

    The NIfTI library inside ITK (and Slicer) silently turns NaN/Inf into 0 on reading; a
    threshold computed over such voxels would be wrong without a word, so the raw voxels are
    checked here and the non-finite ones restored for the pipelines to report.
    """
    dtypes = {16: "f4", 64: "f8"}
    if not header.valid or header.datatype not in dtypes:
        return None  # integer voxels cannot hold NaN
    count = int(np.prod(shape))
    data = np.frombuffer(raw, dtype=header.endian + dtypes[header.datatype], count=count, offset=header.vox_offset)
    bad = ~np.isfinite(data)
    return (bad.reshape(shape), data[bad]) if bad.any() else None


def read_image(path: "str | os.PathLike", what: str = "Image", dtype=None) -> Image:
    """Read a 3D or 4D NIfTI/NRRD/MetaImage file into an :class:`Image`."""
    import SimpleITK as sitk

    path = Path(path).expanduser()
    _check_readable(path, what)
    nifti = _read_nifti_raw(path, what) if str(path).endswith((".nii", ".nii.gz")) else None
    if str(path).endswith(".nrrd"):
        _check_nrrd_gzip(path, what)
    with native_stderr_captured() as native:
        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            img, error = None, str(exc)
    if img is None:
        said = f"{error}\n{native.text()}"
        if any(m in said for m in _TRUNCATION_MESSAGES):
            raise InputError(f"{what} file {path} is truncated (it holds less voxel data than its header "
                             f"describes): copy or export the file again (it is incomplete or damaged).")
        first = error.strip().splitlines()[-1] if error.strip() else "unknown reason"
        raise InputError(f"{what} file {path} cannot be read as an image ({first[:160]}): "
                         f"give a NIfTI (.nii/.nii.gz) or NRRD file.")
    dim = img.GetDimension()
    ncomp = img.GetNumberOfComponentsPerPixel()
    if "complex" in img.GetPixelIDTypeAsString():
        raise InputError(f"{what} file {path} holds complex values: give the magnitude image (a real-valued volume).")
    if ncomp > 1 and not str(path).endswith((".nrrd", ".nhdr")):
        raise InputError(f"{what} file {path} has {ncomp} values per voxel (a colour or vector image): give a "
                         f"greyscale volume (one value per voxel).")
    arr = sitk.GetArrayFromImage(img)
    if dim == 3 and ncomp > 1:  # NRRD 'list' axis read as vector pixels: make it a leading series axis
        arr = np.moveaxis(arr, -1, 0)
    elif dim == 4:
        if arr.shape[0] == 1:
            arr = arr[0]
    elif dim != 3:
        raise InputError(f"{what} file {path} is {dim}D: a 3D volume (or a 4D echo series) is needed.")
    geometry = _geometry_from_sitk(img, 3)
    if nifti is not None and np.issubdtype(arr.dtype, np.floating):
        found = _nifti_nonfinite(*nifti, arr.shape)
        if found is not None:
            arr = arr.copy()
            arr[found[0]] = found[1]
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return Image(np.ascontiguousarray(arr), geometry)


def _sitk_from_array(array: np.ndarray, geometry: Geometry):
    import SimpleITK as sitk

    lps = LPS_TO_RAS @ geometry.ijk_to_ras  # LPS_TO_RAS is its own inverse
    spacing = geometry.spacing
    direction = lps[:3, :3] / spacing[None, :]
    origin = lps[:3, 3]
    if array.ndim == 3:
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(tuple(float(s) for s in spacing))
        img.SetOrigin(tuple(float(o) for o in origin))
        img.SetDirection(tuple(float(d) for d in direction.ravel()))
        return img
    vols = [_sitk_from_array(np.ascontiguousarray(a), geometry) for a in array]
    return sitk.JoinSeries(vols)


def write_image(image: Image, path: "str | os.PathLike", compress: bool = True) -> Path:
    """Write an :class:`Image` (3D, or 4D with the series as 4th file dimension) atomically."""
    import SimpleITK as sitk

    path = Path(path).expanduser()
    if not any(str(path).endswith(s) for s in SUPPORTED_SUFFIXES):
        raise OutputError(f"Cannot write {path}: use one of {', '.join(SUPPORTED_SUFFIXES)}.")
    arr = image.array
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    img = _sitk_from_array(arr, image.geometry)
    with atomic_path(path) as tmp, native_stderr_captured() as native:
        try:
            sitk.WriteImage(img, str(tmp), compress)
        except RuntimeError as exc:  # disk full, quota, read-only folder...
            raise write_failure(path, f"{exc}\n{native.text()}") from None
    return path


def write_array_like(array: np.ndarray, like: Image, path: "str | os.PathLike") -> Path:
    """Write ``array`` on the grid of ``like`` (a mask or map computed from it)."""
    return write_image(Image(array, like.geometry), path)


def read_mask(path: "str | os.PathLike", what: str = "Mask") -> Image:
    """Read a label/mask file; any non-zero voxel is inside."""
    img = read_image(path, what)
    if img.is_series:
        raise InputError(f"{what} file {path} is 4D: a mask must be a 3D volume.")
    return img.with_array(img.array != 0)


def stack_series(images: Sequence[Image]) -> Image:
    """Stack 3D images of one grid into a series ``[t, k, j, i]``."""
    first = images[0]
    for n, im in enumerate(images[1:], start=2):
        if not first.geometry.same_grid(im.geometry):
            raise InputError(f"Volume {n} of the series has a different geometry from volume 1 "
                             f"({im.geometry.describe()} vs {first.geometry.describe()}): all must share one grid.")
    return Image(np.stack([im.array for im in images]), first.geometry)


def image_from_sitk(img, what: str = "Image") -> Image:
    """A 3D SimpleITK image already in memory (e.g. read from a DICOM series) as an :class:`Image`.

    Same conversion as :func:`read_image` (LPS on disk -> RAS matrix, ``[k, j, i]`` array).
    """
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what} is not a 3D scalar volume ({img.GetDimension()}D, "
                         f"{img.GetNumberOfComponentsPerPixel()} components per voxel).")
    import SimpleITK as sitk

    return Image(np.ascontiguousarray(sitk.GetArrayFromImage(img)), _geometry_from_sitk(img, 3))
