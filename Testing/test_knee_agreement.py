"""Agreement of two femoral cartilage segmentations (Thomas et al. 2.6): one scan (Dice, Jaccard,
per-region mean T2 from each) and a set of scans (Spearman, MAE, bias, Bland-Altman); MRML table
and plot nodes; ``mskquant knee-compare`` files and its bad inputs.

Analytic-knee phantoms (no ../shared needed); B is the reference mask changed in a known way.
"""

import csv
import json

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import stats

from mskquant import mrml, render
from mskquant.image import Geometry, Image
from mskquant.imageio import read_image, write_image
from mskquant.metrics import dice, jaccard

from KneeT2SegmentLib import anatomy as an
from KneeT2SegmentLib import simulator as sm
from KneeT2SegmentLib.agreement import (REGIONS, SCAN_COLUMNS, SET_COLUMNS, ScanAgreement, agreement_over_scans,
                                        compare_scan)
from KneeT2SegmentLib.cli import write_phantom
from KneeT2SegmentLib.logic import KneeT2Logic
from KneeT2SegmentLib.parameters import KneeT2Parameters
from KneeT2SegmentLib.quantify import quantify
from KneeT2SegmentLib.subregions import SUBREGION_NAMES

PARAMS = dict(matrix=(192, 134), n_slices=21)


@pytest.fixture(scope="module")
def phantoms():
    anat = an.prepare_anatomy(an.analytic_knee(), None, "analytic", "analytic knee")
    return [sm.simulate(anat, sm.PhantomParameters(snr=40.0, seed=s, texture_seed=s, **PARAMS)) for s in (1, 2, 3)]


def other_reader(mask: np.ndarray, seed: int) -> np.ndarray:
    """A second 'reader': the mask grown by one pixel in plane on some slices, shrunk on others."""
    rng = np.random.default_rng(seed)
    out = mask.copy()
    for k in range(mask.shape[0]):
        if mask[k].any():
            op = ndi.binary_dilation if rng.random() < 0.5 else ndi.binary_erosion
            out[k] = op(mask[k])
    return out


def test_one_scan_equals_two_separate_quantifications(phantoms):
    ph = phantoms[0]
    a = ph.cartilage_mask.array
    b = other_reader(a, 0)
    params = KneeT2Parameters()
    scan = compare_scan(ph.series, a, b, params, "scan 1")
    qa, qb = quantify(ph.series, a, params), quantify(ph.series, b, params)  # each on its own
    assert scan.dice == pytest.approx(dice(qa.refined, qb.refined)) and scan.dice < 0.95
    assert scan.jaccard == pytest.approx(jaccard(qa.refined, qb.refined))
    assert scan.jaccard == pytest.approx(scan.dice / (2 - scan.dice))
    for r in qa.rows:
        assert scan.mean_t2_a[r.region] == pytest.approx(r.mean_t2_ms, abs=1e-9, nan_ok=True)
        assert scan.n_a[r.region] == r.n_voxels
    for r in qb.rows:
        assert scan.mean_t2_b[r.region] == pytest.approx(r.mean_t2_ms, abs=1e-9, nan_ok=True)
    assert [row[0] for row in scan.rows()] == list(REGIONS) and len(REGIONS) == 36
    assert scan.volume_a_ml == pytest.approx(qa.refined.sum() * ph.series.geometry.voxel_volume_mm3 / 1000)


def fake_scan(name, a_all, b_all):
    a = {r: a_all for r in REGIONS}
    b = {r: b_all for r in REGIONS}
    n = {r: 100 for r in REGIONS}
    return ScanAgreement(name, 0.8, 0.8 / 1.2, 1000, 1000, 1.0, 1.0, a, b, n, n)


def test_statistics_over_scans():
    a = np.array([50.0, 52.0, 47.0, 55.0, 49.0])
    b = a + np.array([1.0, -0.5, 2.0, 0.5, 1.5])
    res = agreement_over_scans([fake_scan(f"s{n}", x, y) for n, (x, y) in enumerate(zip(a, b))])
    r = res.region("Deep medial central")
    d = b - a
    assert r.n_scans == 5
    assert r.spearman == pytest.approx(stats.spearmanr(a, b).statistic)
    assert r.mae_ms == pytest.approx(np.abs(d).mean()) and r.bias_ms == pytest.approx(d.mean())
    assert r.bias_p_value == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert r.lower_limit_ms == pytest.approx(d.mean() - 1.96 * d.std(ddof=1))
    assert r.upper_limit_ms == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
    assert res.subregion_mae_ms() == pytest.approx(np.abs(d).mean())
    assert res.warnings == []
    with pytest.raises(Exception, match="at least 2 scans"):
        agreement_over_scans([fake_scan("s", 50.0, 51.0)])


def test_a_scan_without_a_region_value_leaves_only_that_region(runtime):
    """A subregion empty in one scan (NaN) drops that scan from the region's statistics, and the
    Bland-Altman table names the scans that remain, each with its own values."""
    from KneeT2SegmentLib.logic import KneeT2Logic

    scans = [fake_scan(f"s{n}", 50.0 + n, 51.0 + 2 * n) for n in range(4)]
    scans[1].mean_t2_a["Deep medial central"] = float("nan")
    res = agreement_over_scans(scans)
    r = res.region("Deep medial central")
    assert r.n_scans == 3 and r.scan_names == ["s0", "s2", "s3"]
    assert list(r.a) == [50.0, 52.0, 53.0] and res.region("All").scan_names == ["s0", "s1", "s2", "s3"]
    _, _, chart = KneeT2Logic(runtime).agreement_table(scans, "set", region="Deep medial central")
    ba = runtime.scene.GetFirstNodeByName("set Bland-Altman Deep medial central")
    cols = mrml.columns_from_table(ba)
    assert cols["scan"] == ["s0", "s2", "s3"]
    assert [float(v) for v in cols["difference_ms"]] == [1.0, 3.0, 4.0]


def test_logic_makes_table_and_plot_nodes(runtime, phantoms):
    logic = KneeT2Logic(runtime)
    scans = []
    for n, ph in enumerate(phantoms):
        seq, _ = logic.add_mese(ph.series, f"MESE {n}")
        a = mrml.volume_from_image(runtime, ph.cartilage_mask, f"reader 1 #{n}", labelmap=True)
        b = mrml.segmentation_from_masks(runtime, f"reader 2 #{n}", [
            mrml.SegmentSpec("Femoral cartilage", other_reader(ph.cartilage_mask.array, n), (1, 0.5, 0))],
            ph.series.geometry)
        res = logic.compare_segmentations(seq, a, b, name=f"agreement {n}")
        cols = mrml.columns_from_table(res.table)
        assert tuple(cols) == SCAN_COLUMNS and cols["region"] == list(REGIONS)
        assert float(res.table.GetAttribute("MSKQuant.Agreement.dice")) == pytest.approx(res.scan.dice)
        assert res.plot.GetNumberOfPlotSeriesNodes() == 2
        scans.append(res.scan)
    stats_, table, chart = logic.agreement_table(scans)
    cols = mrml.columns_from_table(table)
    assert tuple(cols) == SET_COLUMNS and len(cols["region"]) == 36
    all_row = cols["region"].index("All")
    assert cols["mae_ms"][all_row] == pytest.approx(stats_.region("All").mae_ms)
    assert chart.GetNumberOfPlotSeriesNodes() == 4  # the scans, the bias and both limits
    assert stats_.warnings  # 3 scans: says the statistics are uncertain


@pytest.fixture(scope="module")
def files(phantoms, tmp_path_factory):
    d = tmp_path_factory.mktemp("knee_compare")
    rows = []
    for n, ph in enumerate(phantoms):
        folder = d / f"scan{n}"
        folder.mkdir()
        write_phantom(ph, folder)
        write_image(Image(other_reader(ph.cartilage_mask.array, n).astype(np.uint8), ph.series.geometry),
                    folder / "reader2.nii.gz")
        rows.append([f"scan{n}", f"scan{n}/mese.nii.gz", f"scan{n}/truth_cartilage.nii.gz", f"scan{n}/reader2.nii.gz"])
    with open(d / "pairs.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["scan", "mese", "a", "b"]] + rows)
    return d


def test_knee_compare_one_scan(files, phantoms, tmp_path, cli):
    rc, out, err = cli("knee-compare", "--mese", files / "scan0" / "mese.nii.gz", "--a",
                       files / "scan0" / "truth_cartilage.nii.gz", "--b", files / "scan0" / "reader2.nii.gz",
                       "--out", tmp_path / "one", "-q")
    assert rc == 0, err
    result = json.loads((tmp_path / "one" / "agreement.json").read_text())
    ph = phantoms[0]
    direct = compare_scan(ph.series, ph.cartilage_mask.array, other_reader(ph.cartilage_mask.array, 0))
    assert result["dice"] == pytest.approx(direct.dice) and result["jaccard"] == pytest.approx(direct.jaccard)
    with open(tmp_path / "one" / "agreement.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == SCAN_COLUMNS and len(rows) == 36
    name = SUBREGION_NAMES[8]
    row = next(r for r in rows if r["region"] == name)
    assert float(row["mean_t2_b_ms"]) == pytest.approx(direct.mean_t2_b[name], abs=1e-3)
    for png in ("agreement.png", "overlay.png"):
        assert render.read_png(tmp_path / "one" / png).shape[1] > 300
    assert "Dice" in out


def test_knee_compare_over_scans(files, tmp_path, cli):
    rc, out, err = cli("knee-compare", "--pairs", files / "pairs.csv", "--out", tmp_path / "set", "-q")
    assert rc == 0, err
    summary = json.loads((tmp_path / "set" / "agreement.json").read_text())
    assert summary["n_scans"] == 3 and 0.7 < summary["mean_dice"] < 0.99
    with open(tmp_path / "set" / "agreement.csv", newline="") as fh:
        rows = {r["region"]: r for r in csv.DictReader(fh)}
    assert len(rows) == 36 and tuple(next(iter(rows.values()))) == SET_COLUMNS
    with open(tmp_path / "set" / "scans.csv", newline="") as fh:
        scans = list(csv.DictReader(fh))
    a = np.array([float(s[f"{SUBREGION_NAMES[2]} a_ms"]) for s in scans])
    b = np.array([float(s[f"{SUBREGION_NAMES[2]} b_ms"]) for s in scans])
    assert float(rows[SUBREGION_NAMES[2]]["mae_ms"]) == pytest.approx(np.abs(b - a).mean(), abs=1e-4)
    for region in ("all", "deep", "superficial"):
        assert render.read_png(tmp_path / "set" / f"bland_altman_{region}.png").shape[0] > 200
    assert "warning: Only 3 scans" in err and "3 scans: Dice" in out


def one_line_error(cli, out, *args, match):
    rc, _, err = cli(*args, "-q")
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("mskquant: error:") and match in lines[0], err
    assert not out.exists()


def test_knee_compare_bad_inputs(files, tmp_path, cli):
    out = tmp_path / "out"
    s0 = files / "scan0"
    mask = read_image(s0 / "reader2.nii.gz")
    g = mask.geometry
    shifted = Geometry.from_spacing(g.shape_ijk, g.spacing, g.origin + 5.0, g.directions)
    write_image(Image(mask.array, shifted), tmp_path / "elsewhere.nii.gz")
    one_line_error(cli, out, "knee-compare", "--mese", s0 / "mese.nii.gz", "--a", s0 / "truth_cartilage.nii.gz",
                   "--b", tmp_path / "elsewhere.nii.gz", "--out", out, match="differs from the MESE grid")
    one_line_error(cli, out, "knee-compare", "--mese", s0 / "mese.nii.gz", "--a", tmp_path / "missing.nii.gz",
                   "--out", out, match="does not exist")
    one_line_error(cli, out, "knee-compare", "--pairs", files / "pairs.csv", "--mese", s0 / "mese.nii.gz",
                   "--out", out, match="not both")
    (tmp_path / "bad.csv").write_text("scan,mese\nx,y\n")
    one_line_error(cli, out, "knee-compare", "--pairs", tmp_path / "bad.csv", "--out", out, match="needs the columns")

