"""``mskquant review`` in a real browser (headless Chromium driven by Playwright): a radiologist's
cleaning of a real SIJ case, saved as reader A and found again after a restart, and the access
rules of the server. The whole group runs in well under five minutes on two cores."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlparse

import numpy as np
import pytest

from review_browser import (browser_page, colour_centre, colour_fraction, number, require_review_stack, review_server,
                            stroke, view_box, view_pixels, wait_number_change)


SUBJECT = "1007"
DISEASE_BLUE = (0.35, 0.55, 0.85)
CONSERVATIVE_RED = (0.9, 0.1, 0.1)


@pytest.fixture(scope="module")
def stack():
    from review_browser import chromium_path

    require_review_stack()
    chromium_path()


@pytest.fixture(scope="module")
def sij_case(sij_dir, tmp_path_factory, stack):
    """A 'mskquant vhi' output folder of a real SIJ subject (expert disease region and normal-bone ROI)."""
    from mskquant.cli import main

    s = sij_dir / SUBJECT
    out = tmp_path_factory.mktemp("review") / f"sij{SUBJECT}"
    rc = main(["vhi", "--stir", str(s / "STIR.nii.gz"), "--normal-roi", str(s / "normal_marrow.nii.gz"),
               "--disease-region", str(s / "disease_region.nii.gz"), "--out", str(out), "-q"])
    assert rc == 0
    return out


def _figures(page) -> dict:
    keys = ("sensitive-voxels", "conservative-voxels", "q1", "q3", "n", "lower", "upper", "roi-voxels")
    return {k: number(page, f"vhi-{k}") for k in keys}


def _press(page, key: str, times: int = 1) -> None:
    page.focus("#views")
    for _ in range(times):
        page.keyboard.press(key)


def test_vhi_cleaning_roi_erase_undo_save_restart(sij_case, tmp_path):
    from mskquant.imageio import read_image

    automatic = read_image(sij_case / "inflammation.nii.gz").array
    with review_server(sij_case, reader="A") as (url, _), browser_page() as page:
        page.goto(url)
        page.wait_for_selector("#vhi-sensitive-voxels")
        box = view_box(page)
        page.wait_for_timeout(1500)  # first frames of the view
        rgb = view_pixels(page, box)
        page.screenshot(path=str(tmp_path / "vhi_open.png"))
        grey = rgb.mean(axis=2)
        assert grey.std() > 20 and (grey > 40).mean() > 0.1, "the slice view is blank"
        assert colour_fraction(rgb, DISEASE_BLUE) > 0.02, "no disease-region overlay in the view"
        assert colour_centre(rgb, CONSERVATIVE_RED) is not None, "no inflammation overlay on the most inflamed slice"
        start = _figures(page)
        assert start["sensitive-voxels"] == int((automatic >= 1).sum())

        # Draw more normal-bone ROI: the thresholds are recomputed from it.
        page.click("#segment-1")
        page.click("#tool-paint")
        _press(page, "]", 10)  # brush 15 mm
        stroke(page, box, box["width"] * 0.45, box["height"] * 0.62, dx=40)  # below the expert's ROI
        wait_number_change(page, "vhi-roi-voxels", start["roi-voxels"])
        page.wait_for_timeout(500)
        drawn = _figures(page)
        assert drawn["roi-voxels"] > start["roi-voxels"]
        assert any(drawn[k] != start[k] for k in ("q1", "q3", "lower", "upper")), f"{start} -> {drawn}"

        # Undo: the ROI and its thresholds come back.
        page.click("#undo")
        wait_number_change(page, "vhi-roi-voxels", drawn["roi-voxels"])
        page.wait_for_timeout(500)
        undone = _figures(page)
        assert undone == start, f"{start} -> {undone}"

        # Erase a lesion the reader sees: V_HI drops.
        rgb = view_pixels(page, box)
        x, y = colour_centre(rgb, CONSERVATIVE_RED)
        page.click("#segment-2")
        page.click("#tool-erase")
        stroke(page, box, x - 8, y, dx=16)
        erased_to = wait_number_change(page, "vhi-sensitive-voxels", start["sensitive-voxels"])
        assert erased_to < start["sensitive-voxels"]
        erased_slice = int(page.inner_text("#slice-index").split()[-1])
        after = rgb_after = view_pixels(page, box)
        page.screenshot(path=str(tmp_path / "vhi_erased.png"))
        assert np.abs(after - rgb).sum() > 0 and rgb_after.shape == rgb.shape

        # Slices: the mouse wheel over the view and the keys move through them.
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, 120)
        page.wait_for_function(f"() => !document.getElementById('slice-index').innerText.endsWith(' {erased_slice}')")
        wheeled = int(page.inner_text("#slice-index").split()[-1])
        assert abs(wheeled - erased_slice) == 1
        _press(page, "ArrowDown" if wheeled > erased_slice else "ArrowUp")
        page.wait_for_function(f"() => document.getElementById('slice-index').innerText.endsWith(' {erased_slice}')")

        time.sleep(2.5)  # the autosave of the unsaved edit
        assert (sij_case / "readers" / "A" / "autosave" / "vhi.json").is_file()
        page.click("#save")
        page.wait_for_function("() => document.getElementById('status').innerText.includes('saved as reader A')")
        shown = _figures(page)

    saved = sij_case / "readers" / "A"
    assert not (saved / "autosave").exists()
    mask = read_image(saved / "inflammation.nii.gz").array
    assert int((mask >= 1).sum()) == shown["sensitive-voxels"]
    assert int((mask == 2).sum()) == shown["conservative-voxels"]
    assert not np.any((mask >= 1) & (automatic == 0)), "erasing may only remove voxels"
    edits = json.loads((saved / "edits.json").read_text())
    sens = edits["segments"]["Inflammation (sensitive)"]
    assert edits["reader"] == "A" and sens["added"] == 0
    assert [c["slice"] for c in sens["slices"]] == [erased_slice], "the slice shown is the slice edited"
    assert sens["removed"] == start["sensitive-voxels"] - shown["sensitive-voxels"]
    summary = json.loads((saved / "vhi.json").read_text())
    assert summary["voxels"]["sensitive"] == shown["sensitive-voxels"] and summary["review"]["reviewed"]
    # The case's own result is untouched.
    assert np.array_equal(read_image(sij_case / "inflammation.nii.gz").array, automatic)

    # Restart: reader A finds the saved state.
    with review_server(sij_case, reader="A") as (url, _), browser_page() as page:
        page.goto(url)
        page.wait_for_selector("#vhi-sensitive-voxels")
        page.wait_for_function("() => document.getElementById('vhi-sensitive-voxels').innerText.trim() !== ''")
        assert number(page, "vhi-sensitive-voxels") == shown["sensitive-voxels"]
        assert page.locator("#restore-autosave").count() == 0


def _get(url: str, path: str, headers=None) -> int:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", path, headers=headers or {})  # sent as written: no client-side path clean-up
    status = conn.getresponse().status
    conn.close()
    return status


def test_security_files_confined_and_token_required(synthetic_batch, tmp_path):
    sij_case = synthetic_batch / "case_a"  # any case folder: the synthetic one needs no ../shared
    secret = tmp_path / "outside.txt"
    secret.write_text("not part of the review folder")
    with review_server(sij_case, reader="B") as (url, _):
        assert _get(url, "/files/vhi.json") == 200
        for path in ("/files/../../../../etc/passwd", "/files/%2e%2e/%2e%2e/etc/passwd", "/files//etc/passwd",
                     f"/files/{secret}", "/files/" + "../" * 8 + str(secret).lstrip("/")):
            assert _get(url, path) in (403, 404), path
    with review_server(sij_case, reader="B", host="0.0.0.0") as (url, line):
        token = line.split("?token=")[1].split()[0] if "?token=" in line else None
        assert token, f"no access token printed for a non-loopback host: {line}"
        assert _get(url, "/") == 403 and _get(url, "/index.html") == 403
        assert _get(url, "/files/vhi.json") == 403
        assert _get(url, f"/?token=wrong{token}") == 403
        assert _get(url, f"/index.html?token={token}") == 200
        assert _get(url, "/index.html", {"Cookie": f"mskquant_review_token={token}"}) == 200


@pytest.fixture(scope="module")
def cam_case(tmp_path_factory, stack):
    """A 'mskquant pain-cam' output folder of a simulated left/right pair (analytic knee, bundled demo model)."""
    from mskquant.cli import main

    work = tmp_path_factory.mktemp("review_cam")
    assert main(["pain-phantom", "--analytic", "--pairs", "1", "--out", str(work / "pairs"), "-q"]) == 0
    out = work / "case"
    assert main(["pain-cam", "--left", str(work / "pairs" / "pain_000_left.nii.gz"), "--right",
                 str(work / "pairs" / "pain_000_right.nii.gz"), "--out", str(out), "-q"]) == 0
    return out


def _red_hue_fraction(rgb: np.ndarray) -> float:
    """Pixels clearly redder than grey (the heat colours of a CAM over the knee)."""
    return float(((rgb[..., 0] - rgb[..., 1:].max(axis=2)) > 40).mean())


def test_cam_review_opacity_jump_verdict(cam_case, tmp_path):
    summary = json.loads((cam_case / "pain.json").read_text())
    with review_server(cam_case, reader="A") as (url, _), browser_page() as page:
        page.goto(url)
        page.wait_for_selector("#cam-result")
        box = view_box(page)
        page.wait_for_timeout(1500)
        assert f"p = {round(summary['p_right_painful'], 3)}" in page.inner_text("#cam-result")
        assert summary["painful_side"] in page.inner_text("#cam-result")
        rgb = view_pixels(page, box)
        page.screenshot(path=str(tmp_path / "cam_open.png"))
        assert rgb.mean(axis=2).std() > 15, "the knee view is blank"
        heat = _red_hue_fraction(rgb)
        # a grey knee has none; a CAM covers a few per cent of the view (focal CAMs less than broad ones)
        assert heat > 0.01, "no CAM heat colours over the knee"

        # Opacity slider to its low end: the heat colours fade.
        track = page.locator("#cam-opacity").locator("xpath=ancestor::div[contains(@class,'v-slider')][1]")
        tb = track.locator(".v-slider-track").bounding_box()
        page.mouse.click(tb["x"] + 2, tb["y"] + tb["height"] / 2)
        page.wait_for_function("() => parseFloat(document.getElementById('cam-opacity-value').innerText"
                               ".split(' ')[1]) < 0.2")
        page.wait_for_timeout(1500)
        faded = _red_hue_fraction(view_pixels(page, box))
        assert faded < heat / 2, (heat, faded)

        page.click("#cam-max")  # both views on their knee's max-CAM slice, read back from the views
        want = f"shown: left {summary['max_cam_slice']['left']}, right {summary['max_cam_slice']['right']}"
        page.wait_for_function(f"() => document.getElementById('cam-shown').innerText.trim() === '{want}'")
        page.click("#cam-verdict-1")
        page.wait_for_function("() => document.getElementById('cam-verdict').innerText.includes('CAM elsewhere')")
    rows = (cam_case / "review.csv").read_text().splitlines()
    assert rows[0].startswith("reader,verdict") and rows[1].startswith("A,CAM elsewhere,")


@pytest.fixture(scope="module")
def knee_case(tmp_path_factory, stack):
    from conftest import write_knee_t2_case

    return write_knee_t2_case(tmp_path_factory.mktemp("review_knee"))


def _t2_pixels(rgb: np.ndarray) -> np.ndarray:
    """Where the T2 colour map (cartilage T2 40-50 ms: blue-cyan) shows over the grey echo."""
    return (rgb[..., 2] - rgb[..., 0]) > 60


def test_knee_review_edit_cartilage_recompute_save(knee_case, tmp_path):
    from mskquant.imageio import read_image

    summary = json.loads((knee_case / "knee_t2.json").read_text())
    with review_server(knee_case, reader="A") as (url, _), browser_page() as page:
        page.goto(url)
        page.wait_for_selector("#knee-cartilage")
        box = view_box(page)
        page.wait_for_timeout(1500)
        start = int(page.inner_text("#knee-cartilage").split(":")[1].split()[0])
        assert start == summary["counts"]["mask_voxels"]
        assert number(page, "knee-t2-0") == round(summary["regions"][0]["mean_t2_ms"], 2)
        rgb = view_pixels(page, box)
        page.screenshot(path=str(tmp_path / "knee_open.png"))
        assert rgb.mean(axis=2).std() > 15, "the echo view is blank"
        t2 = _t2_pixels(rgb)
        assert t2.mean() > 0.001, "no T2 colours on the cartilage"
        ys, xs = np.nonzero(t2)
        y = float(np.median(ys))
        page.click("#knee-tool-erase")
        stroke(page, box, float(xs.min()) - 15, y, dx=float(xs.max() - xs.min()) + 30, steps=8)
        page.wait_for_function(f"() => !document.getElementById('knee-cartilage').innerText.includes('{start} ')")
        edited = int(page.inner_text("#knee-cartilage").split(":")[1].split()[0])
        assert edited < start
        page.click("#knee-recompute")
        page.wait_for_function("() => document.getElementById('status').innerText.includes('T2 recomputed')",
                               timeout=60000)
        all_n = int(page.locator("#knee-table tr").first.locator("td").nth(2).inner_text())
        assert all_n <= edited < start
        page.click("#knee-save")
        page.wait_for_function("() => document.getElementById('status').innerText.includes('saved as reader A')",
                               timeout=60000)
    saved = knee_case / "readers" / "A"
    cart = read_image(saved / "cartilage.nii.gz").array
    assert int(cart.sum()) == edited
    review = json.loads((saved / "knee_t2.json").read_text())
    assert review["review"]["reader"] == "A" and review["regions"][0]["n_voxels"] == all_n
    edits = json.loads((saved / "edits.json").read_text())
    assert edits["segments"]["Femoral cartilage"]["removed"] == start - edited
    assert json.loads((knee_case / "knee_t2.json").read_text()) == summary  # the case's own result untouched


@pytest.fixture(scope="module")
def synthetic_batch(tmp_path_factory, stack):
    """A folder of two synthetic V_HI cases (STIR + T1W): the case list, next / previous."""
    import shutil

    from conftest import write_vhi_case_files
    from mskquant.cli import main

    work = tmp_path_factory.mktemp("review_batch")
    write_vhi_case_files(work / "in")
    first = work / "batch" / "case_a"
    assert main(["vhi", "-q", "--stir", str(work / "in" / "STIR.nii.gz"), "--t1", str(work / "in" / "T1W.nii.gz"),
                 "--normal-roi", str(work / "in" / "ROI.nii.gz"), "--disease-region", str(work / "in" / "DR.nii.gz"),
                 "--out", str(first)]) == 0
    shutil.copytree(first, work / "batch" / "case_b")
    return work / "batch"


def test_vhi_t1_view_linked_and_batch_navigation(synthetic_batch):
    from mskquant.headless import create_headless_runtime
    from mskquant.review.cases import find_cases
    from mskquant.review.vhi_session import VHIReviewSession

    # Reader B has saved case_a as the workflow left it: after A's save the app shows their agreement.
    VHIReviewSession(create_headless_runtime(), find_cases(synthetic_batch / "case_a")[0], "B").save()
    with review_server(synthetic_batch, reader="A") as (url, _), browser_page(1280, 760) as page:
        page.goto(url)
        page.wait_for_selector("#vhi-sensitive-voxels")
        view_box(page)
        page.wait_for_timeout(1000)
        boxes = page.evaluate("() => Array.from(document.querySelectorAll('img.image-display-area'))"
                              ".map(e => JSON.parse(JSON.stringify(e.getBoundingClientRect())))")
        assert len(boxes) == 2, "STIR and T1W views"
        assert "case_a" in page.inner_text("#case-title") and page.locator("#case-list .v-list-item").count() == 2
        start = number(page, "vhi-sensitive-voxels")
        # Each segment can be hidden; window / level change the STIR's grey levels.
        stir_view = boxes[0]
        shown = colour_fraction(view_pixels(page, stir_view), DISEASE_BLUE)
        page.locator("#visible-0").uncheck()
        page.wait_for_timeout(1500)
        assert colour_fraction(view_pixels(page, stir_view), DISEASE_BLUE) < shown / 4
        page.locator("#visible-0").check()
        grey = view_pixels(page, stir_view).mean()
        tb = page.locator("#level").locator("xpath=ancestor::div[contains(@class,'v-slider')][1]") \
            .locator(".v-slider-track").bounding_box()
        page.mouse.click(tb["x"] + 2, tb["y"] + tb["height"] / 2)  # level at its minimum: brighter image
        page.wait_for_timeout(1500)
        assert view_pixels(page, stir_view).mean() > grey + 10
        t1_view = boxes[1]
        centre = colour_centre(view_pixels(page, t1_view), (1.0, 0.85, 0.1))
        assert centre is not None, "the inflammation overlay shows on the T1W view too"
        page.click("#segment-2")
        page.click("#tool-erase")
        stroke(page, t1_view, centre[0] - 5, centre[1], dx=10)
        assert wait_number_change(page, "vhi-sensitive-voxels", start) < start
        page.click("#save")
        page.wait_for_function("() => document.getElementById('status').innerText.includes('saved as reader A')")
        page.wait_for_selector("#reader-comparison")
        comparison = page.inner_text("#reader-comparison")
        assert "Readers A / B" in comparison
        assert 0 < float(comparison.split("Dice ")[1].split(",")[0]) < 1
        page.click("#tool-scissors")
        page.wait_for_function("() => document.querySelector('#tool-scissors').className.includes('flat')")
        assert page.inner_text("#message").strip() == ""
        page.click("#next-case")
        page.wait_for_function("() => document.getElementById('case-title').innerText.includes('case_b')")
        page.wait_for_function(f"() => document.getElementById('vhi-sensitive-voxels').innerText.trim() === '{int(start)}'")
        page.click("#prev-case")
        page.wait_for_function("() => document.getElementById('case-title').innerText.includes('case_a')")
        page.wait_for_function(f"() => parseFloat(document.getElementById('vhi-sensitive-voxels').innerText) < {start}")
        assert "reviewed" in page.locator("#case-list .v-list-item").first.inner_text()
    assert (synthetic_batch / "case_a" / "readers" / "A" / "vhi.json").is_file()
    assert not (synthetic_batch / "case_b" / "readers" / "A").exists()


def test_unsaved_edit_survives_a_closed_tab_and_server(synthetic_batch, tmp_path):
    """Reader B erases without saving, the tab and the server go away; the next start offers the autosave
    and restores it."""
    import shutil

    case = tmp_path / "case"
    shutil.copytree(synthetic_batch / "case_b", case, ignore=shutil.ignore_patterns("readers"))
    with review_server(case, reader="B") as (url, _), browser_page(1280, 760) as page:
        page.goto(url)
        page.wait_for_selector("#vhi-sensitive-voxels")
        box = view_box(page)
        page.wait_for_timeout(1000)
        start = number(page, "vhi-sensitive-voxels")
        centre = colour_centre(view_pixels(page, box), (1.0, 0.85, 0.1))
        page.click("#segment-2")
        page.click("#tool-erase")
        stroke(page, box, centre[0] - 5, centre[1], dx=10)
        edited = wait_number_change(page, "vhi-sensitive-voxels", start)
        time.sleep(3)  # the autosave, two seconds after the last stroke
    assert (case / "readers" / "B" / "autosave" / "vhi.json").is_file()
    assert not (case / "readers" / "B" / "vhi.json").exists(), "nothing saved without Save"
    with review_server(case, reader="B") as (url, _), browser_page(1280, 760) as page:
        page.goto(url)
        page.wait_for_selector("#restore-autosave")
        assert number(page, "vhi-sensitive-voxels") == start  # the saved (here: automatic) state first
        page.click("#restore-autosave")
        page.wait_for_function(f"() => parseFloat(document.getElementById('vhi-sensitive-voxels').innerText)"
                               f" === {edited}")
