"""Errors a user can act on.

Every exception of this family carries one sentence that names the problem and the fix.
The CLI prints it on one line and exits with code 2; the Slicer panels show it in a dialog.
Anything else escaping a pipeline is a bug and keeps its traceback.
"""


class MSKQuantError(Exception):
    """A problem with the user's input, files, models or environment (not a bug)."""

    exit_code = 2


class InputError(MSKQuantError):
    """An input image, mask, ROI or parameter cannot be used as given."""


class ModelError(MSKQuantError):
    """A model is missing, corrupt, of the wrong architecture or cannot be downloaded."""


class OutputError(MSKQuantError):
    """Results cannot be written where asked (unwritable folder, existing results...)."""
