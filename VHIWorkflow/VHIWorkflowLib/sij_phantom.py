"""A sacroiliac-joint (SIJ) phantom that looks like a semi-coronal STIR / T1W pair.

For pictures and for tests that need an SIJ image with anatomy (the tiny exact case in
:mod:`.synthetic` checks the arithmetic; real scans in ``../shared`` may not be redistributed).
The anatomy is a label map on a fine grid (0.6 x 0.6 x 0.66 mm): body outline with
subcutaneous fat and muscle, the sacrum narrowing caudally with its foramina, both ilia, the
synovial joint space (fluid) along the auricular surfaces, the interosseous ligament above it,
a cortical shell on every bone, and bone-marrow oedema lesions in the subchondral marrow on
both sides of the joint. It is turned into the acquisition grid (0.6 x 0.6 mm pixels, 3.3 mm
slices, as in Hepburn et al.'s STIR) by the project's one synthetic-image generator
(:mod:`mskquant.synth`: tissue fractions through the slice, per-class intensity and texture,
bias), with Rician noise. Intensities per tissue follow STIR (fat suppressed: fat and normal
marrow dark, fluid and oedema bright) and T1W (fat and marrow bright, oedema dark).

The normal-bone ROI is a disc in the interforaminal sacrum (the paper's reference region),
the disease region is bone within 20 mm of the joint space (what the disease-region network
marks), and the true lesion volume is known from the label map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mskquant.image import Geometry, Image

# tissue codes of the fine label map and their intensities (STIR, T1W; 0..1 before scaling)
TISSUES = ("air", "fat", "muscle", "cortex", "marrow", "fluid", "ligament", "oedema", "foramen")
STIR = np.array([0.0, 0.06, 0.20, 0.03, 0.15, 1.0, 0.10, 0.72, 0.22])
T1W = np.array([0.0, 1.0, 0.35, 0.05, 0.80, 0.20, 0.12, 0.38, 0.70])
TEXTURE_SD = np.array([0.0, 0.06, 0.08, 0.0, 0.10, 0.03, 0.05, 0.10, 0.05])  # heterogeneous marrow
SPACING = (0.6, 0.6, 3.3)
FINE_SPACING = (0.6, 0.6, 0.66)
SHAPE_IJK = (400, 334, 12)  # 240 x 200 mm, 12 slices
SCALE = 1000.0
NOISE_SD = 0.02  # of the 0..1 scale: marrow SNR ~7, oedema ~35
# oedema lesions: centre (x from the joint line, +: into the ilium, y, z) and semi-axes (mm)
LESIONS = (((+1, 7.0, -10.0, 0.0), (6.0, 11.0, 8.0)),
           ((-1, -6.0, 15.0, 4.0), (5.0, 8.0, 6.0)),
           ((-1, 7.0, -28.0, -7.0), (4.0, 6.0, 5.0)))  # on the other joint (x < 0)


@dataclass
class SIJPhantom:
    stir: Image
    t1: Image
    normal_roi: Image  # bool
    disease_region: Image  # bool
    oedema_fraction: np.ndarray  # float32 [k, j, i]: the oedema share of each voxel
    labels_fine: Image  # uint8 tissue codes (TISSUES) on the fine grid

    @property
    def oedema_ml(self) -> float:
        """True oedema volume inside the disease region (partial volume counted)."""
        inside = self.oedema_fraction * self.disease_region.array
        return float(inside.sum()) * self.stir.geometry.voxel_volume_mm3 / 1000.0


def _directions() -> np.ndarray:
    # i: towards the patient's left, j: superior, k: anterior (semi-coronal slices)
    return np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]).T


def _sacrum_half_width(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Half-width of the sacrum at height y (mm): wide at S1, narrowing caudally and with |z|."""
    return (44.0 + 0.16 * y) * (1.0 - 0.12 * (z / 20.0) ** 2)


def fine_labels(geometry: Geometry) -> np.ndarray:
    """Tissue codes ``uint8 [k, j, i]`` of the anatomy on a fine grid."""
    from scipy import ndimage as ndi

    nk, nj, ni = geometry.shape_kji
    ijk = np.stack(np.meshgrid(np.arange(ni), np.arange(nj), np.arange(nk), indexing="ij"), -1).reshape(-1, 3)
    ras = (geometry.ijk_to_ras[:3, :3] @ ijk.T.astype(np.float64) + geometry.ijk_to_ras[:3, 3:4])
    shape = (ni, nj, nk)
    r, a, s = (ras[n].reshape(shape).transpose(2, 1, 0) for n in range(3))
    x, y, z = -r, s, a  # mm from the centre: x towards the patient's left, y superior, z anterior
    lab = np.zeros((nk, nj, ni), np.uint8)
    body = (x / 118.0) ** 2 + (y / 98.0) ** 2 <= 1.0
    lab[body] = 1
    lab[(x / 104.0) ** 2 + (y / 85.0) ** 2 <= 1.0] = 2
    w = _sacrum_half_width(y, z)
    ax = np.abs(x)
    sacrum = (ax <= w) & (y >= -75.0) & (y <= 58.0 - 0.02 * x ** 2)
    joint_rows = (y >= -48.0) & (y <= 40.0)
    joint = (ax > w) & (ax <= w + 1.6) & joint_rows & (y <= 58.0)
    ligament = (ax > w) & (ax <= w + 9.0) & (y > 40.0) & (y <= 66.0)
    gap = np.where(joint_rows, 1.6, 9.0)
    ilium = (ax > w + gap) & (((ax - 78.0) / 40.0) ** 2 + ((y - 12.0) / 68.0) ** 2 <= 1.0) & (y >= -62.0)
    bone = sacrum | ilium
    # a cortical shell (1.8 mm) on each bone: erosion in plane, slice by slice
    inner = np.zeros_like(bone)
    st = ndi.generate_binary_structure(2, 1)
    for k in range(nk):
        inner[k] = ndi.binary_erosion(sacrum[k], st, iterations=3) | ndi.binary_erosion(ilium[k], st, iterations=3)
    lab[bone] = 3
    lab[inner] = 4
    lab[joint] = 5
    lab[ligament] = 6
    for fx, fy in ((22.0, -38.0), (22.0, -10.0), (23.0, 18.0), (24.0, 44.0)):  # sacral foramina
        for side in (-1.0, 1.0):
            lab[((x - side * fx) ** 2 + (y - fy) ** 2 <= 4.5 ** 2) & inner] = 8
    for (side, dx, cy, cz), (ax_, ay, az) in LESIONS:
        cx = side * (_sacrum_half_width(np.float64(cy), np.float64(cz)) + 0.8) + dx * (1 if side > 0 else -1)
        blob = ((x - cx) / ax_) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1.0
        lab[blob & (lab == 4)] = 7
    return lab


def make_sij_phantom(seed: int = 0) -> SIJPhantom:
    """The phantom (about 2-4 s)."""
    from scipy import ndimage as ndi

    from mskquant.synth.appearance import Appearance, render
    from mskquant.synth.sampling import slab_offsets, subsamples_for, tissue_counts

    rng = np.random.default_rng(seed)
    d = _directions()
    ni, nj, nk = SHAPE_IJK
    centre = -d @ (np.array([ni - 1, nj - 1, nk - 1]) * np.asarray(SPACING) / 2.0)
    target = Geometry.from_spacing(SHAPE_IJK, SPACING, centre, d)
    n_fine = int(round(nk * SPACING[2] / FINE_SPACING[2]))
    fine_origin = centre + d[:, 2] * (-SPACING[2] / 2.0 + FINE_SPACING[2] / 2.0)
    fine = Geometry.from_spacing((ni, nj, n_fine), FINE_SPACING, fine_origin, d)
    labels = fine_labels(fine)
    sub = subsamples_for(SPACING, FINE_SPACING[0], SPACING[2])
    offsets = slab_offsets(sub, SPACING[2], SPACING[2])
    counts = tissue_counts(labels, fine, target, len(TISSUES), offsets)
    n_points = offsets.shape[0]
    spacing_kji = SPACING[::-1]
    images = []
    for intensity in (STIR, T1W):
        look = Appearance(pd=intensity, t2_ms=np.full(len(TISSUES), 1e9),
                          texture=TEXTURE_SD[:, None] * np.array([[1.0, 0.6]]), texture_wavelength_mm=6.0,
                          bias_sd=0.03, bias_wavelength_mm=300.0, blur_sigma_px=0.4, gamma=1.0, prior="sij",
                          seed=int(rng.integers(2 ** 31)))
        clean = render(counts, n_points, look, [0.0], spacing_kji)[0]
        noisy = np.sqrt((clean + rng.normal(0.0, NOISE_SD, clean.shape)) ** 2 + rng.normal(0.0, NOISE_SD, clean.shape) ** 2)
        images.append(Image((SCALE * noisy).astype(np.float32), target))
    frac = counts.astype(np.float32) / n_points
    bone = frac[..., [3, 4, 7]].sum(-1) >= 0.5
    joint = frac[..., 5] > 0
    near = np.zeros_like(bone)
    for k in range(nk):  # within 20 mm of the joint space, in plane
        near[k] = ndi.distance_transform_edt(~joint[k], sampling=SPACING[1::-1]) <= 20.0
    region = bone & near
    # normal-bone ROI: a disc of 7 mm radius in the interforaminal sacrum, middle slices, normal marrow only
    g = target
    jj, ii = np.meshgrid(np.arange(nj), np.arange(ni), indexing="ij")
    ci, cj = (ni - 1) / 2.0, (nj - 1) / 2.0 + 5.0 / SPACING[1]
    disc = ((ii - ci) * SPACING[0]) ** 2 + ((jj - cj) * SPACING[1]) ** 2 <= 7.0 ** 2
    roi = np.zeros((nk, nj, ni), bool)
    roi[nk // 2 - 1:nk // 2 + 1] = disc & (frac[nk // 2 - 1:nk // 2 + 1, ..., 4] >= 0.99)
    return SIJPhantom(images[0], images[1], Image(roi, g), Image(region, g), frac[..., 7].copy(), Image(labels, fine))
