"""Normal-based vs nearest-point cartilage thickness on real knee label maps, and the morphometry's speed.

For each label map (default: 9002817 of ../shared/data/knee_labelmaps) prints, per plate, the
mean thickness of both definitions (:mod:`KneeT2SegmentLib.morphometry.thickness`) over the
same interface points, their mean difference and the median ratio, and the time of each
step of the measurement chain (thickness, bone surfaces, projections, maps):

    .venv/bin/python scripts/compare_thickness_methods.py
    .venv/bin/python scripts/compare_thickness_methods.py --cases 9002817 9004175 --csv out.csv
    .venv/bin/python scripts/compare_thickness_methods.py --phantoms   # shapes of known thickness only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "KneeT2Segment"):
    sys.path.insert(0, str(p))


def phantoms() -> None:
    """Both definitions on the 2.0 mm spherical shell and the 2.0 mm slab tilted to the grid."""
    import numpy as np

    from KneeT2SegmentLib.morphometry import labels as L
    from KneeT2SegmentLib.morphometry.phantoms import shell_knee, slab_knee
    from KneeT2SegmentLib.morphometry.thickness import interface_thickness

    def measure(image):
        a = L.tissue_labels(image.array)
        return interface_thickness(np.isin(a, (1, 3, 5)), np.isin(a, (2, 4, 6)), image.geometry)

    grids = ((0.3, 0.3, 0.3), (0.7, 0.365, 0.365), (0.365, 0.365, 0.7))
    print("2.0 mm shell on a 10 mm ball (all interface points): mean normal / nearest, mm")
    for sp in grids:
        it = measure(shell_knee(sp, 10.0, 2.0))
        print(f"  voxels {sp}: {np.nanmean(it.thickness_mm):.3f} / {np.nanmean(it.nearest_mm):.3f} "
              f"({len(it.thickness_mm)} points)")
    print("2.0 mm slab disc (radius 10 mm) tilted to the grid, points > 2 mm inside the rim: mean normal / nearest, mm")
    for sp in grids:
        for tilt in ((30.0, 0.0, 0.0), (30.0, 0.0, 20.0)):
            image, normal = slab_knee(sp, 2.0, tilt)
            it = measure(image)
            h = it.points_ras @ normal
            inner = np.linalg.norm(it.points_ras - np.outer(h, normal), axis=1) < 8.0
            print(f"  voxels {sp}, tilt {tilt} deg: {np.nanmean(it.thickness_mm[inner]):.3f} / "
                  f"{np.nanmean(it.nearest_mm[inner]):.3f}")


def main(argv=None) -> int:
    import numpy as np

    from mskquant.imageio import read_image
    from mskquant.paths import shared_data_dir

    from KneeT2SegmentLib.morphometry import labels as L
    from KneeT2SegmentLib.morphometry.maps import bone_maps
    from KneeT2SegmentLib.morphometry.projection import project_thickness, project_voxel_measure
    from KneeT2SegmentLib.morphometry.surface import bone_surfaces
    from KneeT2SegmentLib.morphometry.thickness import measure_thickness

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["9002817"], help="label-map names (without .nii.gz)")
    ap.add_argument("--labelmaps", type=Path, default=None, help="folder of label maps (default ../shared/data/...)")
    ap.add_argument("--csv", type=Path, default=None, help="write the per-plate rows here")
    ap.add_argument("--phantoms", action="store_true", help="only the shapes of known thickness")
    args = ap.parse_args(argv)
    if args.phantoms:
        phantoms()
        return 0
    folder = args.labelmaps
    if folder is None:
        shared = shared_data_dir()
        if shared is None:
            print("No ../shared/data beside the checkout: give --labelmaps.", file=sys.stderr)
            return 2
        folder = shared / "knee_labelmaps"
    rows = []
    for case in args.cases:
        image = read_image(folder / f"{case}.nii.gz", "Knee label map")
        times = {}
        t = time.perf_counter()
        thick = measure_thickness(image)
        times["thickness"] = time.perf_counter() - t
        t = time.perf_counter()
        surfaces = bone_surfaces(image)
        times["surfaces"] = time.perf_counter() - t
        t = time.perf_counter()
        project_thickness(surfaces, thick)
        cart = np.isin(L.tissue_labels(image.array), (2, 4, 6))
        project_voxel_measure(surfaces, image, np.where(cart, 40.0, np.nan).astype(np.float32), "t2_ms")
        times["projections"] = time.perf_counter() - t
        t = time.perf_counter()
        bone_maps(surfaces, "thickness_mm", thick.laterality)
        times["maps"] = time.perf_counter() - t
        print(f"{case} ({thick.laterality} knee): " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
              + f", total {sum(times.values()):.2f} s")
        print(f"  {'plate':16s} {'points':>7s} {'normal mm':>10s} {'nearest mm':>11s} {'diff mm':>8s} {'ratio':>6s}")
        for plate in L.PLATES:
            p = thick.plates[plate]
            ok = np.isfinite(p.thickness_mm) & np.isfinite(p.nearest_mm)
            if not ok.any():
                print(f"  {plate:16s} missing: {p.message}")
                continue
            a, b = p.thickness_mm[ok], p.nearest_mm[ok]
            row = {"case": case, "plate": plate, "n_points": int(ok.sum()), "normal_mean_mm": float(a.mean()),
                   "nearest_mean_mm": float(b.mean()), "diff_mm": float((a - b).mean()),
                   "median_ratio": float(np.median(a / np.maximum(b, 1e-6)))}
            rows.append(row)
            print(f"  {plate:16s} {row['n_points']:7d} {row['normal_mean_mm']:10.3f} {row['nearest_mean_mm']:11.3f} "
                  f"{row['diff_mm']:8.3f} {row['median_ratio']:6.3f}")
    if args.csv and rows:
        import csv

        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
