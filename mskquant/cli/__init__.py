"""The ``mskquant`` command: every pipeline on files, on the same MRML logic the panels use.

Sub-commands: ``info``, ``models``, ``demo``, one per pipeline, registered by each
module's ``<Module>Lib.cli``, ``batch`` (cohort mode, :mod:`mskquant.batch.cli`) and ``review``
(:mod:`mskquant.review`). Expected user errors (bad input, missing model, existing
results...) print one line on stderr and exit with code 2; Ctrl-C cancels cleanly (exit
130) without leaving partial outputs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from ..errors import MSKQuantError
from ..outputlock import release_all
from ..progress import Cancelled

# Each module's Lib provides register(subparsers) (argparse only; heavy imports are lazy).
PIPELINE_CLI_MODULES = ("VHIWorkflowLib.cli", "KneeT2SegmentLib.cli", "KneeT2SegmentLib.morphometry.cli",
                        "SiamesePainCAMLib.cli", "KneeT2SegmentLib.superres.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one line, exit 2
        self.exit(2, f"mskquant: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from . import core

    parser = _Parser(prog="mskquant", description="Quantitative musculoskeletal MRI biomarkers (MSKQuant).")
    parser.add_argument("--version", action="version", version=f"mskquant {__import__('mskquant').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    core.register(sub)
    for name in PIPELINE_CLI_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name in (name, name.rsplit(".", 1)[0]):
                continue  # that module has no command-line pipeline yet
            raise
        module.register(sub)
    from ..batch import cli as batch_cli  # argparse only: Dask is imported when a batch runs

    batch_cli.register(sub)
    from ..review.cli import register as register_review

    register_review(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.handler(args)
        return int(rc or 0)
    except MSKQuantError as exc:
        print(f"mskquant: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (Cancelled, KeyboardInterrupt):
        print("mskquant: cancelled; no results were written", file=sys.stderr)
        return 130
    finally:
        release_all()  # output folders locked by a run that failed before writing


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
