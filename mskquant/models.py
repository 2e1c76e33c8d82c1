"""Model registry and per-user model cache with SHA-256 verification.

The registry is ``Resources/Models.json`` (validated by ``Resources/Models.schema.json``)
plus the user's own entries in ``<model dir>/user_models.json`` (``mskquant models add``).
Each model lists its files with SHA-256 and size; a file is either *bundled* with the
extension (``Resources/Models/...``, small weights the project trained) or *downloaded*
on first use from its URL into the per-user cache and verified before use.

Cache folder: ``$MSKQUANT_MODEL_DIR`` if set, else ``~/.mskquant/models``. A file is
looked up as ``<dir>/<model id>/<file>`` and then ``<dir>/<file>``, so the override can
point at a folder that simply holds the published files. ``MSKQUANT_OFFLINE=1`` forbids
downloads: a missing file is then an error that says where to put it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .atomic import atomic_path
from .errors import ModelError
from .jsonschema_lite import validate
from .paths import resources_dir
from .progress import Progress, as_progress

ENV_MODEL_DIR = "MSKQUANT_MODEL_DIR"
ENV_OFFLINE = "MSKQUANT_OFFLINE"
USER_REGISTRY = "user_models.json"
_CHUNK = 1 << 20


def default_model_dir() -> Path:
    env = os.environ.get(ENV_MODEL_DIR)
    return Path(env).expanduser() if env else Path.home() / ".mskquant" / "models"


def offline_mode() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ModelFile:
    name: str
    sha256: str
    size_bytes: int
    urls: List[str] = field(default_factory=list)
    bundled: Optional[str] = None  # path relative to Resources/Models


@dataclass
class ModelSpec:
    id: str
    title: str
    version: str
    module: str
    task: str
    architecture: dict
    input: dict
    files: List[ModelFile]
    license: str
    raw: dict = field(repr=False)
    user: bool = False

    @property
    def total_size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    def get(self, key: str, default=None):
        return self.raw.get(key, default)


def _spec_from_dict(d: dict, user: bool = False) -> ModelSpec:
    files = [ModelFile(f["name"], f["sha256"].lower(), int(f["size_bytes"]), list(f.get("urls", [])),
                       f.get("bundled")) for f in d["files"]]
    return ModelSpec(d["id"], d["title"], d["version"], d["module"], d["task"], d["architecture"], d["input"],
                     files, d["license"], d, user)


class ModelRegistry:
    """The models known to this installation (built-in and user-added)."""

    def __init__(self, registry_file: Optional[Path] = None, model_dir: Optional[Path] = None) -> None:
        self.registry_file = registry_file or resources_dir() / "Models.json"
        self.schema_file = self.registry_file.with_name("Models.schema.json")
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        self._specs: Dict[str, ModelSpec] = {}
        self._load()

    @staticmethod
    def read_json(path: Path) -> dict:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"Model registry {path} cannot be read ({exc}): repair or delete it.") from exc

    def schema(self) -> dict:
        return self.read_json(self.schema_file)

    def _load(self) -> None:
        schema = self.schema()
        builtin = self.read_json(self.registry_file)
        errors = validate(builtin, schema)
        if errors:
            raise ModelError(f"{self.registry_file} does not match its schema: {errors[0]}")
        for d in builtin["models"]:
            self._specs[d["id"]] = _spec_from_dict(d)
        user_file = self.model_dir / USER_REGISTRY
        if user_file.is_file():
            user = self.read_json(user_file)
            errors = validate(user, schema)
            if errors:
                raise ModelError(f"{user_file} does not match the registry schema ({errors[0]}): "
                                 f"fix it or remove the entry with 'mskquant models clear'.")
            for d in user["models"]:
                if d["id"] in self._specs and not self._specs[d["id"]].user:
                    continue  # a user entry never shadows a built-in model
                self._specs[d["id"]] = _spec_from_dict(d, user=True)

    def ids(self) -> List[str]:
        return list(self._specs)

    def specs(self) -> List[ModelSpec]:
        return list(self._specs.values())

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._specs[model_id]
        except KeyError:
            raise ModelError(f"Unknown model '{model_id}': 'mskquant models list' shows the registered ones.") from None


@dataclass
class FileStatus:
    file: ModelFile
    path: Optional[Path]
    state: str  # "ok", "missing", "mismatch"
    detail: str = ""


class ModelStore:
    """Finds, downloads, verifies, adds and clears model files."""

    def __init__(self, registry: Optional[ModelRegistry] = None, model_dir: Optional[Path] = None,
                 offline: Optional[bool] = None) -> None:
        self.model_dir = Path(model_dir) if model_dir else (registry.model_dir if registry else default_model_dir())
        self.registry = registry or ModelRegistry(model_dir=self.model_dir)
        self.offline = offline_mode() if offline is None else offline
        self.bundle_dir = self.registry.registry_file.parent / "Models"

    # --- locating -------------------------------------------------------------------------
    def candidates(self, spec: ModelSpec, f: ModelFile) -> List[Path]:
        if f.bundled:
            return [self.bundle_dir / f.bundled]
        return [self.model_dir / spec.id / f.name, self.model_dir / f.name]

    def cache_path(self, spec: ModelSpec, f: ModelFile) -> Path:
        return self.candidates(spec, f)[0]

    def status(self, spec: ModelSpec) -> List[FileStatus]:
        out = []
        for f in spec.files:
            found = [p for p in self.candidates(spec, f) if p.is_file()]
            if not found:
                out.append(FileStatus(f, None, "missing"))
                continue
            mismatch = None
            for p in found:
                digest = sha256_of(p)
                if digest == f.sha256:
                    out.append(FileStatus(f, p, "ok"))
                    break
                mismatch = FileStatus(f, p, "mismatch", f"SHA-256 {digest[:12]}... expected {f.sha256[:12]}...")
            else:
                out.append(mismatch)  # type: ignore[arg-type]
        return out

    # --- getting the files ----------------------------------------------------------------
    def ensure(self, model_id: str, progress: "Progress | None" = None) -> List[Path]:
        """Paths of the model's verified files, downloading missing ones unless offline."""
        spec = self.registry.get(model_id)
        progress = as_progress(progress)
        paths = []
        statuses = self.status(spec)
        for n, st in enumerate(statuses):
            sub = progress.sub(n / len(statuses), (n + 1) / len(statuses))
            if st.state == "ok":
                paths.append(st.path)
                continue
            if st.state == "mismatch":
                raise ModelError(
                    f"Model file {st.path} of '{spec.id}' is corrupt or a different file ({st.detail}): "
                    f"run 'mskquant models clear {spec.id}' to download it again, or replace it with the published file."
                )
            if st.file.bundled:
                raise ModelError(f"Bundled model file {self.candidates(spec, st.file)[0]} is missing: reinstall MSKQuant.")
            if self.offline or not st.file.urls:
                where = self.cache_path(spec, st.file)
                url = st.file.urls[0] if st.file.urls else "its publisher"
                raise ModelError(
                    f"Model file {st.file.name} of '{spec.id}' is not in the model folder and downloads are off: "
                    f"get it from {url} and put it at {where} (or set {ENV_MODEL_DIR} to a folder that holds it)."
                )
            paths.append(self._download(spec, st.file, sub))
        return paths

    def _download(self, spec: ModelSpec, f: ModelFile, progress: Progress) -> Path:
        target = self.cache_path(spec, f)
        target.parent.mkdir(parents=True, exist_ok=True)
        last_error = None
        for url in f.urls:
            try:
                with atomic_path(target) as tmp:
                    h = hashlib.sha256()
                    with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
                        total = int(resp.headers.get("Content-Length") or f.size_bytes or 0)
                        done = 0
                        for chunk in iter(lambda: resp.read(_CHUNK), b""):
                            out.write(chunk)
                            h.update(chunk)
                            done += len(chunk)
                            progress(done / total if total else 0.0, f"Downloading {f.name} ({done >> 20} MB)")
                    if h.hexdigest() != f.sha256:
                        raise ModelError(f"Downloaded {f.name} from {url} has SHA-256 {h.hexdigest()[:12]}..., "
                                         f"expected {f.sha256[:12]}...: the published file changed; report this.")
                return target
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                last_error = exc
        raise ModelError(
            f"Could not download {f.name} of '{spec.id}' ({last_error}): check the network, or download "
            f"{f.urls[0]} yourself and put it at {target}."
        )

    # --- maintenance ----------------------------------------------------------------------
    def clear(self, model_ids: Optional[List[str]] = None) -> List[Path]:
        """Delete cached (not bundled) files; with no ids, the whole cache except user models' registry."""
        removed: List[Path] = []
        specs = [self.registry.get(i) for i in model_ids] if model_ids else self.registry.specs()
        for spec in specs:
            for f in spec.files:
                if f.bundled:
                    continue
                for p in self.candidates(spec, f):
                    if p.is_file() and (p.parent == self.model_dir / spec.id or not spec.user):
                        p.unlink()
                        removed.append(p)
            d = self.model_dir / spec.id
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
            if spec.user:
                self._remove_user_entry(spec.id)
        return removed

    def _user_registry(self) -> dict:
        path = self.model_dir / USER_REGISTRY
        return self.registry.read_json(path) if path.is_file() else {"schema_version": 1, "models": []}

    def _write_user_registry(self, data: dict) -> None:
        self.model_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.model_dir / USER_REGISTRY) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def _remove_user_entry(self, model_id: str) -> None:
        data = self._user_registry()
        data["models"] = [m for m in data["models"] if m["id"] != model_id]
        self._write_user_registry(data)

    def add(self, file: Path, model_id: str, like: Optional[str] = None, title: Optional[str] = None,
            version: str = "user", extra: Optional[dict] = None) -> ModelSpec:
        """Register a weight file under ``model_id``; copy it into the cache with its SHA-256.

        ``like`` names a registered model whose architecture, input spec, module and task the
        new weights share (e.g. weights re-trained on real data with the project's recipe).
        """
        file = Path(file).expanduser()
        if not file.is_file():
            raise ModelError(f"Model file {file} does not exist: check the path.")
        if model_id in self.registry.ids() and not self.registry.get(model_id).user:
            raise ModelError(f"'{model_id}' is a built-in model: choose another id for your weights.")
        if like is None:
            raise ModelError("Say which registered model these weights are compatible with: --like MODEL_ID.")
        base = copy.deepcopy(self.registry.get(like).raw)
        entry = {k: base[k] for k in ("module", "task", "architecture", "input", "output") if k in base}
        for k, v in (extra or {}).items():
            entry[k] = v
        target = self.model_dir / model_id / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(file, tmp)
        entry.update({
            "id": model_id,
            "title": title or f"User model {model_id} (like {like})",
            "version": version,
            "license": "user-provided",
            "description": f"Registered with 'mskquant models add' from {file}.",
            "files": [{"name": file.name, "sha256": sha256_of(target), "size_bytes": target.stat().st_size}],
        })
        data = self._user_registry()
        data["models"] = [m for m in data["models"] if m["id"] != model_id] + [entry]
        errors = validate(data, self.registry.schema())
        if errors:
            target.unlink()
            raise ModelError(f"The new registry entry is invalid ({errors[0]}): check the options given.")
        self._write_user_registry(data)
        self.registry = ModelRegistry(self.registry.registry_file, self.model_dir)
        return self.registry.get(model_id)
