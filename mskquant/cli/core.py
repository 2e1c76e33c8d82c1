"""``mskquant info``, ``mskquant models ...`` and ``mskquant demo``."""

from __future__ import annotations

import importlib
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..errors import ModelError, MSKQuantError
from ..progress import Progress
from .common import TerminalProgress


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, compute device, model cache")
    p.set_defaults(handler=cmd_info)

    m = sub.add_parser("models", help="list, verify, locate, add or clear model weights")
    msub = m.add_subparsers(dest="models_command", metavar="ACTION", parser_class=sub._parser_class)
    msub.required = True
    ml = msub.add_parser("list", help="registered models and their state in the cache")
    ml.set_defaults(handler=cmd_models_list)
    mv = msub.add_parser("verify", help="check cached files against their SHA-256")
    mv.add_argument("ids", nargs="*", help="model ids (default: all)")
    mv.set_defaults(handler=cmd_models_verify)
    mp = msub.add_parser("path", help="print the verified file paths of a model")
    mp.add_argument("id")
    mp.set_defaults(handler=cmd_models_path)
    md = msub.add_parser("download", help="download (and verify) a model's files now")
    md.add_argument("id")
    md.add_argument("-q", "--quiet", action="store_true")
    md.set_defaults(handler=cmd_models_download)
    ma = msub.add_parser("add", help="register your own weights (e.g. trained on real data)")
    ma.add_argument("file", help="weight file (.pt)")
    ma.add_argument("--id", required=True, help="new model id (lower case, digits, . _ -)")
    ma.add_argument("--like", required=True, help="registered model whose architecture and input these share")
    ma.add_argument("--title")
    ma.add_argument("--version", default="user")
    ma.set_defaults(handler=cmd_models_add)
    mc = msub.add_parser("clear", help="delete downloaded files (bundled weights stay)")
    mc.add_argument("ids", nargs="*", help="model ids (default: every downloaded model)")
    mc.set_defaults(handler=cmd_models_clear)

    d = sub.add_parser("demo", help="run every pipeline on data it makes itself (and ../shared data when present)")
    d.add_argument("--out", help="report folder (default: reports/demo-<date-time>)")
    d.add_argument("--no-shared", action="store_true", help="do not use ../shared real data even if present")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(handler=cmd_demo)


# --- info ---------------------------------------------------------------------------------
def _version(dist: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def cmd_info(args) -> int:
    import mskquant
    from ..device import describe_device_without_loading
    from ..models import ModelStore, offline_mode
    from ..paths import shared_data_dir

    print(f"mskquant {mskquant.__version__}  (Python {platform.python_version()}, {platform.system()} {platform.machine()})")
    for dist in ("torch", "numpy", "scipy", "SimpleITK", "vtk", "slicer-core"):
        print(f"  {dist:<11} {_version(dist)}")
    try:
        print(f"device       {describe_device_without_loading('auto')}")
    except MSKQuantError as exc:
        print(f"device       unavailable: {exc}")
    store = ModelStore()
    print(f"model cache  {store.model_dir}{'  (offline: downloads disabled)' if offline_mode() else ''}")
    for spec in store.registry.specs():
        states = {s.state for s in store.status(spec)}
        state = "ready" if states == {"ok"} else ("CORRUPT" if "mismatch" in states else "not downloaded")
        print(f"  {spec.id:<28} {state}")
    shared = shared_data_dir()
    print(f"shared data  {shared if shared else 'not present (tests that need it skip)'}")
    return 0


# --- models -------------------------------------------------------------------------------
def _store():
    from ..models import ModelStore

    return ModelStore()


def cmd_models_list(args) -> int:
    store = _store()
    print(f"# model folder: {store.model_dir}")
    print(f"{'id':<28} {'version':<10} {'module':<15} {'task':<34} {'size':>8}  {'CPU s':>6}  state")
    for spec in store.registry.specs():
        statuses = store.status(spec)
        states = {s.state for s in statuses}
        if states == {"ok"}:
            state = "bundled" if all(s.file.bundled for s in statuses) else "cached"
        elif "mismatch" in states:
            state = "CORRUPT (run models verify)"
        else:
            state = "downloaded on first use"
        t = (spec.get("timing") or {}).get("cpu_s")
        print(f"{spec.id:<28} {spec.version:<10} {spec.module:<15} {spec.task:<34} "
              f"{spec.total_size_bytes / 1e6:>6.1f}MB  {('%.1f' % t) if t else '-':>6}  {state}"
              f"{'  [user]' if spec.user else ''}")
    return 0


def cmd_models_verify(args) -> int:
    store = _store()
    ids = args.ids or store.registry.ids()
    bad = []
    for mid in ids:
        spec = store.registry.get(mid)
        for st in store.status(spec):
            where = st.path or store.cache_path(spec, st.file)
            if st.state == "ok":
                print(f"OK        {spec.id}  {where}")
            elif st.state == "missing":
                print(f"MISSING   {spec.id}  {where}  (downloaded on first use)")
            else:
                print(f"MISMATCH  {spec.id}  {where}  {st.detail}")
                bad.append((spec, st))
    if bad:
        spec, st = bad[0]
        raise ModelError(f"{len(bad)} model file(s) fail the SHA-256 check, e.g. {st.path} ({st.detail}): "
                         f"run 'mskquant models clear {spec.id}' to download it again, or replace it with the published file.")
    return 0


def cmd_models_path(args) -> int:
    store = _store()
    spec = store.registry.get(args.id)
    statuses = store.status(spec)
    for st in statuses:
        if st.state != "ok":
            detail = f" ({st.detail})" if st.detail else ""
            raise ModelError(f"Model '{spec.id}' file {st.file.name} is {st.state}{detail}: "
                             f"run 'mskquant models download {spec.id}' (or 'models clear' first if corrupt).")
    for st in statuses:
        print(st.path)
    return 0


def cmd_models_download(args) -> int:
    store = _store()
    for p in store.ensure(args.id, Progress(TerminalProgress(args.quiet))):
        print(p)
    return 0


def module_registry_extra(like_spec, file: Path) -> dict:
    """Registry fields the model's module reads from the weight file itself, if it has its own format.

    A module opts in with ``<Module>Lib.checkpoint.registry_extra(file, like_spec)`` (e.g. the knee
    cartilage model carries its calibrated thresholds and refuses files without them); for the
    others the entry is copied from ``--like`` as before.
    """
    name = f"{like_spec.module}Lib.checkpoint"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name in (name, name.rsplit(".", 1)[0]):
            return {}
        raise
    hook = getattr(module, "registry_extra", None)
    return dict(hook(Path(file), like_spec)) if hook is not None else {}


def cmd_models_add(args) -> int:
    store = _store()
    if not Path(args.file).expanduser().is_file():
        raise ModelError(f"Model file {args.file} does not exist (or is a folder): give the weight file (.pt).")
    extra = module_registry_extra(store.registry.get(args.like), Path(args.file))
    spec = store.add(Path(args.file), args.id, like=args.like, title=args.title, version=args.version, extra=extra)
    print(f"registered '{spec.id}' ({spec.files[0].sha256[:12]}..., {spec.total_size_bytes} bytes) "
          f"in {store.model_dir}")
    return 0


def cmd_models_clear(args) -> int:
    store = _store()
    removed = store.clear(args.ids or None)
    for p in removed:
        print(f"removed {p}")
    if not removed:
        print("nothing to remove")
    return 0


# --- demo ---------------------------------------------------------------------------------
@dataclass
class DemoContext:
    """What each pipeline's ``demo(ctx)`` receives: where to write and how to report."""

    out: Path
    shared: Optional[Path]
    progress: Progress
    rows: List[dict] = field(default_factory=list)

    def folder(self, name: str) -> Path:
        p = self.out / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def result(self, pipeline: str, dataset: str, quantity: str, value, unit: str = "", note: str = "") -> None:
        self.rows.append({"pipeline": pipeline, "dataset": dataset, "quantity": quantity,
                          "value": value, "unit": unit, "note": note})


def cmd_demo(args) -> int:
    from ..paths import shared_data_dir
    from ..render import write_png  # noqa: F401  (fail early if VTK cannot write PNGs)
    from ..cli import PIPELINE_CLI_MODULES
    from ..csvio import write_rows_csv

    out = Path(args.out) if args.out else Path("reports") / time.strftime("demo-%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        raise MSKQuantError(f"Report folder {out} is not empty: choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    shared = None if args.no_shared else shared_data_dir()
    progress = Progress(TerminalProgress(args.quiet))
    ctx = DemoContext(out.resolve(), shared, progress)
    demos = []
    for name in PIPELINE_CLI_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        if hasattr(module, "demo"):
            demos.append((name.split("Lib")[0], module.demo))
    if not demos:
        raise MSKQuantError("No pipeline provides a demo yet.")
    t0 = time.monotonic()
    for n, (label, demo) in enumerate(demos):
        ctx.progress = progress.sub(n / len(demos), (n + 1) / len(demos))
        ctx.progress(0.0, f"{label} demo")
        demo(ctx)
    write_rows_csv(out / "summary.csv", ["pipeline", "dataset", "quantity", "value", "unit", "note"],
                   ([r["pipeline"], r["dataset"], r["quantity"], r["value"], r["unit"], r["note"]] for r in ctx.rows))
    pngs = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    print(f"demo finished in {time.monotonic() - t0:.0f} s: {len(ctx.rows)} results, {len(pngs)} pictures",
          file=sys.stderr)
    if shared is None and not args.no_shared:
        print("(../shared real data not found: synthetic data only)", file=sys.stderr)
    print(out.resolve())
    return 0
