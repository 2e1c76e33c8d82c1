"""``mskquant review PATH [--port 8080] [--host 127.0.0.1] [--reader NAME]``.

Only argparse here: trame, trame-slicer and the Slicer libraries are imported when the command
runs, so ``mskquant --help`` stays fast.
"""

from __future__ import annotations

import getpass
import os
import re


def default_reader() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name or os.environ.get("USER", "reader"))[:40] or "reader"


def register(sub) -> None:
    p = sub.add_parser("review", help="review and clean results in a web browser (Slicer views; vhi cases)")
    p.add_argument("path", metavar="PATH", help="a case output folder of vhi (knee-t2, pain-cam: not yet), or a "
                                                "folder of case folders (batch output)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (8080; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1: this machine only; any other address requires the "
                        "access token printed at start)")
    p.add_argument("--reader", default=None, help="reader name: edits are saved in readers/NAME/ (default: login)")
    p.set_defaults(handler=cmd_review)


def cmd_review(args) -> int:
    from pathlib import Path

    from mskquant.errors import InputError
    from mskquant.headless import import_slicer

    from .cases import check_reader, find_cases

    reader = check_reader(args.reader or default_reader())
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port} is not a port number (0-65535).")
    path = Path(args.path).expanduser().resolve()
    cases = find_cases(path)
    import_slicer()
    try:
        import trame_slicer  # noqa: F401
    except ImportError as exc:
        raise InputError("The review app needs trame-slicer: run 'bash scripts/setup_env.sh' (installs the "
                         "'review' extra into .venv).") from exc
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # off-screen views, no display needed
    from .app import serve

    return serve(path, cases, reader, args.host, args.port)
