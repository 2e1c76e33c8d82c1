"""MSKQuant Review: the interactive cleaning and review of results in a web browser.

``mskquant review PATH`` serves real Slicer slice views (trame-slicer) of one case output folder
of ``vhi``, ``knee-t2`` or ``pain-cam`` (or a folder of such cases) and the tools a reader needs
to clean or judge it. Everything numeric goes through the modules' own MRML logic
(``VHILogic`` and :mod:`VHIWorkflowLib.results`, ...): this package only loads, shows, records
and saves. Saving is per reader (``readers/<NAME>/``) through the project's atomic writers.

Import order is one-way: this package imports the module Libs, never the reverse; trame is
imported only when the ``review`` command runs.
"""
