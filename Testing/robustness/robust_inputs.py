"""Inputs for the robustness suite: real files to start from, and the mutators applied to them.

A mutator turns one good input file into a bad (or oddly shaped but legitimate) one: cut
short, emptied, replaced by a folder or a symbolic-link loop, made 2D/4D/RGB/complex, filled
with NaN, constant, shifted in space, relabelled, moved under a path with spaces and
non-ASCII letters... Each returns the path to give the command instead of the original.
Images are rewritten with SimpleITK so that geometry and pixel type are exactly what the
mutator says and nothing else changes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import SimpleITK as sitk


# --- file-level mutators: (good file, folder for the result) -> path ---------------------------
def missing(src: Path, d: Path) -> Path:
    return d / f"missing_{src.name}"


def empty(src: Path, d: Path) -> Path:
    p = d / f"empty_{src.name}"
    p.write_bytes(b"")
    return p


def truncated_1000(src: Path, d: Path) -> Path:
    p = d / f"cut_{src.name}"
    p.write_bytes(src.read_bytes()[:1000])
    return p


def truncated_half(src: Path, d: Path) -> Path:
    data = src.read_bytes()
    p = d / f"half_{src.name}"
    p.write_bytes(data[: len(data) // 2])
    return p


def text_file(src: Path, d: Path) -> Path:
    p = d / f"text_{src.name}"
    p.write_text("subject,a,b\n1,2,3\n", encoding="utf-8")
    return p


def random_bytes(src: Path, d: Path) -> Path:
    p = d / f"noise_{src.name.split('.')[0]}.nii"
    p.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return p


def directory(src: Path, d: Path) -> Path:
    p = d / f"folder_{src.name}"
    p.mkdir()
    return p


def symlink_loop(src: Path, d: Path) -> Path:
    p = d / f"loop_{src.name}"
    os.symlink(p.name, p)
    return p


def dangling_symlink(src: Path, d: Path) -> Path:
    p = d / f"dangling_{src.name}"
    os.symlink(d / "nowhere.nii.gz", p)
    return p


def unicode_path(src: Path, d: Path) -> Path:
    """The same file under a folder and name with spaces and non-ASCII letters (legitimate)."""
    q = d / "Ordner mit Leerzeichen ü ß 膝"
    q.mkdir(exist_ok=True)
    p = q / f"Bild 1 ü {src.name}"
    shutil.copy(src, p)
    return p


def as_nrrd(src: Path, d: Path) -> Path:
    """The same image as NRRD (legitimate)."""
    p = d / f"{src.name.split('.')[0]}.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(src)), str(p), True)
    return p


# --- image-level mutators ------------------------------------------------------------------------
def _rewrite(src: Path, d: Path, tag: str, fn: Callable[[sitk.Image], sitk.Image], suffix: str = ".nii") -> Path:
    img = sitk.ReadImage(str(src))
    p = d / f"{tag}_{src.name.split('.')[0]}{suffix}"
    sitk.WriteImage(fn(img), str(p), False)
    return p


def _with_array(img: sitk.Image, arr: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(arr, isVector=False)
    out.CopyInformation(img)
    return out


def two_d(src, d):
    return _rewrite(src, d, "2d", lambda img: img[:, :, img.GetSize()[2] // 2])


def four_d(src, d):
    return _rewrite(src, d, "4d", lambda img: sitk.JoinSeries([img, img]))


def rgb(src, d):
    def f(img):
        a = sitk.GetArrayFromImage(img).astype(np.float64)
        a = (255 * (a - a.min()) / max(float(np.ptp(a)), 1e-9)).astype(np.uint8)
        out = sitk.GetImageFromArray(np.stack([a, a, a], axis=-1), isVector=True)
        out.CopyInformation(img)
        return out
    return _rewrite(src, d, "rgb", f)


def complex_valued(src, d):
    def f(img):
        real = img if img.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(img, sitk.sitkFloat32)
        return sitk.RealAndImaginaryToComplex(real, real)
    return _rewrite(src, d, "complex", f)


def pixel_type(kind: int, name: str):
    def mutate(src, d):
        def f(img):
            a = sitk.GetArrayFromImage(img)
            np_type = sitk.GetArrayViewFromImage(sitk.Image(1, 1, kind)).dtype
            if np.issubdtype(np_type, np.integer) and np.issubdtype(a.dtype, np.floating):
                a = np.round(a)
            info = np.iinfo(np_type) if np.issubdtype(np_type, np.integer) else None
            if info is not None and a.max() > info.max:  # rescaled to fit, as a converter would
                a = np.round(a * (info.max / a.max()))
            return _with_array(img, a.astype(np_type))
        return _rewrite(src, d, name, f)
    mutate.__name__ = name
    return mutate


def values(name: str, fn: Callable[[np.ndarray], np.ndarray], dtype=np.float32):
    """Replace the voxel values (float32 unless said), geometry kept."""
    def mutate(src, d):
        return _rewrite(src, d, name, lambda img: _with_array(img, fn(sitk.GetArrayFromImage(img).astype(dtype))),
                        suffix=".nrrd" if name in ("nan", "inf") else ".nii")
    mutate.__name__ = name
    return mutate


def _set_some(value):
    def fn(a):
        a = a.copy()
        flat = a.reshape(-1)
        flat[np.flatnonzero(flat)[:: max(1, np.count_nonzero(flat) // 50)]] = value
        return a
    return fn


NAN = values("nan", _set_some(np.nan))
INF = values("inf", _set_some(np.inf))
CONSTANT = values("constant", lambda a: np.full_like(a, 100.0))
ZEROS = values("zeros", np.zeros_like)


def geometry(name: str, fn: Callable[[sitk.Image], None]):
    def mutate(src, d):
        def f(img):
            img = sitk.Image(img)
            fn(img)
            return img
        return _rewrite(src, d, name, f)
    mutate.__name__ = name
    return mutate


def _shift_far(img):
    img.SetOrigin(tuple(o + 900.0 for o in img.GetOrigin()))


def _double_spacing(img):
    img.SetSpacing(tuple(2 * s for s in img.GetSpacing()))


def _oblique(img):
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    img.SetDirection(tuple((rot @ np.asarray(img.GetDirection()).reshape(3, 3)).ravel()))


def _shift_half_voxel(img):
    sp = np.asarray(img.GetSpacing())
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    img.SetOrigin(tuple(np.asarray(img.GetOrigin()) + d @ (0.5 * sp)))


SHIFTED_FAR = geometry("far", _shift_far)
DOUBLE_SPACING = geometry("spacing", _double_spacing)
OBLIQUE = geometry("oblique", _oblique)
HALF_VOXEL = geometry("halfvoxel", _shift_half_voxel)


def cropped(src, d):
    return _rewrite(src, d, "crop", lambda img: img[:, : img.GetSize()[1] - 1, :])


def flipped_voxel_order(src, d):
    """The same physical image stored with its first two voxel axes reversed (legitimate)."""
    return _rewrite(src, d, "flip", lambda img: sitk.Flip(img, [True, True, False]))


# --- mask mutators ---------------------------------------------------------------------------------
def mask_values(name: str, fn: Callable[[np.ndarray], np.ndarray]):
    def mutate(src, d):
        return _rewrite(src, d, name, lambda img: _with_array(img, fn(sitk.GetArrayFromImage(img))))
    mutate.__name__ = name
    return mutate


LABEL_255 = mask_values("label255", lambda a: ((a != 0) * 255).astype(np.uint8))
LABEL_MIXED = mask_values("labelmixed", lambda a: ((a != 0) * (2 + (np.indices(a.shape).sum(0) % 3))).astype(np.int16))
FLOAT_MASK = mask_values("floatmask", lambda a: ((a != 0) * 0.7).astype(np.float32))
NEGATIVE_LABEL = mask_values("neglabel", lambda a: ((a != 0) * -1).astype(np.int16))
EMPTY_MASK = mask_values("emptymask", lambda a: np.zeros_like(a))


# Mutators that make an input unusable, every input slot; the keyword the one-line error must hold.
FILE_REFUSALS: Dict[str, tuple] = {
    "missing": (missing, "does not exist"),
    "empty": (empty, "less than a nifti header|truncated|cannot be read|empty"),
    "truncated_1000": (truncated_1000, "truncated"),
    "truncated_half": (truncated_half, "truncated"),
    "text": (text_file, "cannot be read"),
    "random_bytes": (random_bytes, "cannot be read|less than a nifti header|truncated"),
    "directory": (directory, "is a folder"),
    "symlink_loop": (symlink_loop, "symbolic link"),
    "dangling_symlink": (dangling_symlink, "symbolic link"),
}
SHAPE_REFUSALS: Dict[str, tuple] = {
    "2d": (two_d, "2d"),
    "rgb": (rgb, "colour|components per voxel"),
    "complex": (complex_valued, "complex"),
}
PIXEL_TYPES = {
    "int8": sitk.sitkInt8, "uint8": sitk.sitkUInt8, "int16": sitk.sitkInt16, "uint16": sitk.sitkUInt16,
    "int32": sitk.sitkInt32, "uint32": sitk.sitkUInt32, "int64": sitk.sitkInt64, "uint64": sitk.sitkUInt64,
    "float32": sitk.sitkFloat32, "float64": sitk.sitkFloat64,
}
