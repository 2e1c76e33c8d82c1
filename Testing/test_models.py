"""Model registry and cache: lookup, SHA-256 verification, offline use, download, add, clear."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from conftest import ROOT, run_console
from mskquant.errors import ModelError
from mskquant.models import ModelRegistry, ModelStore

SIJ_ID = "sij-disease-region"


def test_registry_lists_the_published_sij_ensemble():
    reg = ModelRegistry()
    spec = reg.get(SIJ_ID)
    assert [f.name for f in spec.files] == ["model_1.pt", "model_2.pt", "model_3.pt"]
    for f in spec.files:
        assert f.urls[0].startswith("https://raw.githubusercontent.com/c-hepburn/Bone_MRI/"
                                    "3338c88fb441cdeb6c1d6acb3ef61e7af3e7f99d/scripts_notebooks/"
                                    "segmentation_disease_region/")
        assert len(f.sha256) == 64 and f.size_bytes == 1830573
    with pytest.raises(ModelError, match="models list"):
        reg.get("no-such-model")


def test_bundled_models_are_small_verified_documented_and_installed():
    """Weights the project trained ship in Resources/Models: under 20 MB, SHA-256 as registered,
    a model card that says they were trained on simulated data, and both files listed for the
    extension build."""
    reg = ModelRegistry()
    cmake = (ROOT / "Resources" / "CMakeLists.txt").read_text(encoding="utf-8")
    bundled = [(spec, f) for spec in reg.specs() if not spec.user for f in spec.files if f.bundled]
    assert {spec.id for spec, _ in bundled} >= {"knee-femoral-cartilage-mese", "siamese-pain-demo"}
    for spec, f in bundled:
        path = ROOT / "Resources" / "Models" / f.bundled
        data = path.read_bytes()
        assert len(data) == f.size_bytes < 20e6, spec.id
        assert hashlib.sha256(data).hexdigest() == f.sha256, f"{spec.id}: update Models.json after re-bundling"
        card = ROOT / "Resources" / "Models" / spec.get("model_card")
        text = " ".join(card.read_text(encoding="utf-8").lower().split())
        assert "not validated on real scans" in text and "simulated" in text, card
        assert f"Models/{f.bundled}" in cmake and f"Models/{card.name}" in cmake, spec.id


def test_registry_sha256_matches_the_published_sums(sij_model_dir):
    sums = dict(reversed(line.split()) for line in (sij_model_dir / "SHA256SUMS").read_text().splitlines())
    spec = ModelRegistry().get(SIJ_ID)
    assert {f.name: f.sha256 for f in spec.files} == sums


def test_cache_layout_and_verification(sij_model_dir, model_dir):
    store = ModelStore()
    assert store.model_dir == model_dir
    assert {s.state for s in store.status(store.registry.get(SIJ_ID))} == {"missing"}
    with pytest.raises(ModelError, match="downloads are off"):
        store.ensure(SIJ_ID)
    (model_dir / SIJ_ID).mkdir()
    for n in (1, 2, 3):
        shutil.copy(sij_model_dir / f"model_{n}.pt", model_dir / SIJ_ID / f"model_{n}.pt")
    paths = store.ensure(SIJ_ID)
    assert [p.name for p in paths] == ["model_1.pt", "model_2.pt", "model_3.pt"]
    # a flat folder that simply holds the published files also works (MSKQUANT_MODEL_DIR override)
    flat = ModelStore(model_dir=sij_model_dir)
    assert [p.parent for p in flat.ensure(SIJ_ID)] == [sij_model_dir] * 3


def test_models_verify_fails_clearly_on_a_corrupt_file(sij_model_dir, model_dir):
    (model_dir / SIJ_ID).mkdir()
    for n in (1, 2, 3):
        shutil.copy(sij_model_dir / f"model_{n}.pt", model_dir / SIJ_ID / f"model_{n}.pt")
    r = run_console("models", "verify", env={"MSKQUANT_MODEL_DIR": str(model_dir)})
    sij_lines = [line for line in r.stdout.splitlines() if SIJ_ID in line]
    assert r.returncode == 0 and len(sij_lines) == 3 and all(line.startswith("OK") for line in sij_lines)
    bad = model_dir / SIJ_ID / "model_2.pt"
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    r = run_console("models", "verify", env={"MSKQUANT_MODEL_DIR": str(model_dir)})
    assert r.returncode == 2
    assert "MISMATCH" in r.stdout and "model_2.pt" in r.stdout
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "SHA-256" in err[0] and "models clear" in err[0] and "Traceback" not in r.stderr
    with pytest.raises(ModelError, match="corrupt"):
        ModelStore().ensure(SIJ_ID)


def _serve(folder: Path):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _local_registry(tmp_path: Path, url: str, payload: bytes, sha: str) -> Path:
    reg_dir = tmp_path / "Resources"
    reg_dir.mkdir()
    schema = json.loads((ROOT / "Resources" / "Models.schema.json").read_text())
    schema["$defs"]["file"]["properties"]["urls"]["items"]["pattern"] = "^http://127\\.0\\.0\\.1"
    (reg_dir / "Models.schema.json").write_text(json.dumps(schema))
    entry = json.loads((ROOT / "Resources" / "Models.json").read_text())["models"][0]
    entry.update({"id": "toy", "files": [{"name": "w.pt", "sha256": sha, "size_bytes": len(payload), "urls": [url]}]})
    (reg_dir / "Models.json").write_text(json.dumps({"schema_version": 1, "models": [entry]}))
    return reg_dir / "Models.json"


def test_download_on_first_use_is_verified(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    payload = b"weights" * 1000
    (served / "w.pt").write_bytes(payload)
    httpd = _serve(served)
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/w.pt"
        reg_file = _local_registry(tmp_path, url, payload, hashlib.sha256(payload).hexdigest())
        cache = tmp_path / "cache"
        store = ModelStore(ModelRegistry(reg_file, cache), cache, offline=False)
        calls = []
        from mskquant.progress import Progress
        (path,) = store.ensure("toy", Progress(lambda f, m: calls.append(f)))
        assert path == cache / "toy" / "w.pt" and path.read_bytes() == payload
        assert calls and max(calls) <= 1.0
        # the publisher's file changes: the download is refused and nothing is left in the cache
        (served / "w.pt").write_bytes(payload + b"tampered")
        path.unlink()
        with pytest.raises(ModelError, match="SHA-256"):
            store.ensure("toy")
        assert not any(p.is_file() for p in (cache / "toy").iterdir())
    finally:
        httpd.shutdown()


def test_add_and_clear_user_weights(sij_model_dir, model_dir, cli):
    rc, out, err = cli("models", "add", sij_model_dir / "model_1.pt", "--id", "my-sij", "--like", SIJ_ID)
    assert rc == 0, err
    reg = ModelRegistry()
    spec = reg.get("my-sij")
    assert spec.user and spec.architecture == reg.get(SIJ_ID).architecture
    assert spec.files[0].sha256 == hashlib.sha256((sij_model_dir / "model_1.pt").read_bytes()).hexdigest()
    rc, out, _ = cli("models", "path", "my-sij")
    assert rc == 0 and out.strip() == str(model_dir / "my-sij" / "model_1.pt")
    rc, out, err = cli("models", "add", sij_model_dir / "model_1.pt", "--id", SIJ_ID, "--like", SIJ_ID)
    assert rc == 2 and "built-in" in err
    rc, out, _ = cli("models", "clear", "my-sij")
    assert rc == 0 and "removed" in out
    assert "my-sij" not in ModelRegistry().ids()


def test_info_and_list_run_from_the_console_script():
    r = run_console("info")
    assert r.returncode == 0, r.stderr
    assert "torch" in r.stdout and "model cache" in r.stdout and "device" in r.stdout
    r = run_console("models", "list")
    assert r.returncode == 0 and SIJ_ID in r.stdout
