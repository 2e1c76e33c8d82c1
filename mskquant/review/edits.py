"""What a reader changed: voxels added and removed per segment and per acquired slice.

Counted against the automatic result when the reader saves (``edits.json``), so two readers'
logs of one case are comparable whatever order they worked in.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Dict, List

import numpy as np


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def slice_changes(current: np.ndarray, baseline: np.ndarray, axis: int) -> List[dict]:
    """``[{"slice": k, "added": a, "removed": r}]`` for every slice (along array ``axis``) that changed."""
    cur = np.moveaxis(np.asarray(current, bool), axis, 0)
    base = np.moveaxis(np.asarray(baseline, bool), axis, 0)
    added = (cur & ~base).reshape(cur.shape[0], -1).sum(axis=1)
    removed = (base & ~cur).reshape(cur.shape[0], -1).sum(axis=1)
    return [{"slice": int(k), "added": int(added[k]), "removed": int(removed[k])}
            for k in np.flatnonzero(added + removed)]


def edit_log(reader: str, started: str, current: Dict[str, np.ndarray], baseline: Dict[str, np.ndarray],
             axis: int, actions: List[dict]) -> dict:
    segments = {}
    for name, mask in current.items():
        changes = slice_changes(mask, baseline[name], axis)
        segments[name] = {"added": sum(c["added"] for c in changes), "removed": sum(c["removed"] for c in changes),
                          "slices": changes}
    return {"reader": reader, "start_time": started, "end_time": now_iso(), "baseline": "automatic result",
            "slice_axis": ["k", "j", "i"][axis], "segments": segments, "actions": actions}
