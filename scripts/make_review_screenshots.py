"""The README's screenshots of ``mskquant review`` (Resources/Screenshots/Review*.png), taken in headless
Chromium from the running app, on synthetic cases only (never ``../shared`` data: real scans may not be
redistributed):

* Review_VHI.png: the SIJ phantom (VHIWorkflowLib.sij_phantom; STIR and T1W linked) while a lesion is
  being cleaned;
* Review_CAM.png: a simulated left/right pair (analytic knee) with its CAMs;
* Review_Knee.png: a MESE phantom of the analytic knee with its T2 map and subregion table.

Run from the repository root: ``.venv/bin/python scripts/make_review_screenshots.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "VHIWorkflow", ROOT / "KneeT2Segment", ROOT / "SiamesePainCAM", ROOT / "Testing"):
    sys.path.insert(0, str(p))

OUT = ROOT / "Resources" / "Screenshots"
VIEWPORT = (1280, 760)


def vhi_case(work: Path) -> Path:
    import numpy as np

    from mskquant.cli import main
    from mskquant.imageio import write_image
    from VHIWorkflowLib.sij_phantom import make_sij_phantom

    case = make_sij_phantom()
    (work / "in").mkdir(parents=True)
    write_image(case.stir, work / "in" / "STIR.nii.gz")
    write_image(case.t1, work / "in" / "T1W.nii.gz")
    for name, mask in (("ROI", case.normal_roi), ("DR", case.disease_region)):
        write_image(mask.with_array(mask.array.astype(np.uint8)), work / "in" / f"{name}.nii.gz")
    out = work / "vhi"
    assert main(["vhi", "-q", "--stir", str(work / "in" / "STIR.nii.gz"), "--t1", str(work / "in" / "T1W.nii.gz"),
                 "--normal-roi", str(work / "in" / "ROI.nii.gz"), "--disease-region", str(work / "in" / "DR.nii.gz"),
                 "--out", str(out)]) == 0
    return out


def cam_case(work: Path) -> Path:
    from mskquant.cli import main

    assert main(["pain-phantom", "--analytic", "--pairs", "1", "--out", str(work / "pairs"), "-q"]) == 0
    out = work / "cam"
    assert main(["pain-cam", "--left", str(work / "pairs" / "pain_000_left.nii.gz"), "--right",
                 str(work / "pairs" / "pain_000_right.nii.gz"), "--out", str(out), "-q"]) == 0
    return out


def knee_case(work: Path) -> Path:
    from conftest import write_knee_t2_case

    return write_knee_t2_case(work / "knee")


def shoot(case: Path, ready_selector: str, name: str, action=None) -> None:
    from review_browser import browser_page, review_server, view_box

    with review_server(case, reader="demo") as (url, _), browser_page(*VIEWPORT) as page:
        page.goto(url)
        page.wait_for_selector(ready_selector)
        box = view_box(page)
        if action is not None:
            action(page, box)
        page.wait_for_timeout(2500)
        page.screenshot(path=str(OUT / name))
    from PIL import Image

    Image.open(OUT / name).convert("RGB").quantize(colors=256).save(OUT / name, optimize=True)  # small in git
    print(f"wrote {OUT / name}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="review-shots-") as tmp:
        work = Path(tmp)

        def choose_erase(page, box):
            page.click("#segment-2")
            page.click("#tool-erase")

        shoot(vhi_case(work), "#vhi-sensitive-voxels", "Review_VHI.png", choose_erase)
        shoot(cam_case(work), "#cam-result", "Review_CAM.png")
        shoot(knee_case(work), "#knee-cartilage", "Review_Knee.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
