"""A small JSON-Schema validator for the keywords MSKQuant's own schemas use.

Supported: type, enum, const, required, properties, additionalProperties, items, minItems,
minLength, pattern, minimum, exclusiveMinimum, maximum, anyOf and local ``$ref`` to
``#/$defs/...``. Unsupported keywords raise, so a schema can never silently pass.
"""

from __future__ import annotations

import re
from typing import Any, List

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}
_KNOWN = {"$schema", "$id", "$defs", "title", "description", "type", "enum", "const", "required",
          "properties", "additionalProperties", "items", "minItems", "minLength", "pattern", "minimum",
          "exclusiveMinimum", "maximum", "anyOf", "$ref", "default", "examples"}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def validate(instance: Any, schema: dict) -> List[str]:
    """Return a list of error messages (empty when ``instance`` is valid)."""
    errors: List[str] = []
    _validate(instance, schema, schema, "$", errors)
    return errors


def _validate(inst: Any, sch: dict, root: dict, where: str, errors: List[str]) -> None:
    unknown = set(sch) - _KNOWN
    if unknown:
        raise ValueError(f"schema keyword(s) not supported: {sorted(unknown)} at {where}")
    if "$ref" in sch:
        ref = sch["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"only local $ref supported, got {ref}")
        _validate(inst, root["$defs"][ref.split("/")[-1]], root, where, errors)
        return
    t = sch.get("type")
    if t is not None:
        names = t if isinstance(t, list) else [t]
        if not any(_is_type(inst, n) for n in names):
            errors.append(f"{where}: expected {t}, got {type(inst).__name__}")
            return
    if "enum" in sch and inst not in sch["enum"]:
        errors.append(f"{where}: {inst!r} is not one of {sch['enum']}")
    if "const" in sch and inst != sch["const"]:
        errors.append(f"{where}: must be {sch['const']!r}")
    if isinstance(inst, dict):
        for key in sch.get("required", []):
            if key not in inst:
                errors.append(f"{where}: missing required '{key}'")
        props = sch.get("properties", {})
        for key, value in inst.items():
            if key in props:
                _validate(value, props[key], root, f"{where}.{key}", errors)
            else:
                extra = sch.get("additionalProperties", True)
                if extra is False:
                    errors.append(f"{where}: unexpected property '{key}'")
                elif isinstance(extra, dict):
                    _validate(value, extra, root, f"{where}.{key}", errors)
    if isinstance(inst, list):
        if len(inst) < sch.get("minItems", 0):
            errors.append(f"{where}: needs at least {sch['minItems']} item(s)")
        if "items" in sch:
            for n, item in enumerate(inst):
                _validate(item, sch["items"], root, f"{where}[{n}]", errors)
    if isinstance(inst, str):
        if len(inst) < sch.get("minLength", 0):
            errors.append(f"{where}: shorter than {sch['minLength']} character(s)")
        if "pattern" in sch and not re.search(sch["pattern"], inst):
            errors.append(f"{where}: {inst!r} does not match {sch['pattern']}")
    if _is_type(inst, "number"):
        if "minimum" in sch and inst < sch["minimum"]:
            errors.append(f"{where}: {inst} < minimum {sch['minimum']}")
        if "exclusiveMinimum" in sch and inst <= sch["exclusiveMinimum"]:
            errors.append(f"{where}: {inst} <= {sch['exclusiveMinimum']}")
        if "maximum" in sch and inst > sch["maximum"]:
            errors.append(f"{where}: {inst} > maximum {sch['maximum']}")
    if "anyOf" in sch:
        if not any(not validate_sub(inst, s, root) for s in sch["anyOf"]):
            errors.append(f"{where}: matches none of the allowed forms")


def validate_sub(inst: Any, sch: dict, root: dict) -> List[str]:
    errs: List[str] = []
    _validate(inst, sch, root, "$", errs)
    return errs
