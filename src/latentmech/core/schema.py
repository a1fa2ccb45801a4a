"""Validation of config files and sample sheets against the JSON schemas in ``workflow/schemas``.

Errors name the file, the key path or row, and what was expected, and defaults declared in the
schema are filled in, so the rest of the code can rely on every key being present.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import Draft202012Validator, validators

from latentmech.core.errors import InputError


def _extend_with_defaults(validator_class: type) -> type:
    """A validator that fills ``default`` values of object properties while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Mapping, instance: Any, schema: Mapping):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if "default" in subschema and prop not in instance:
                    instance[prop] = _copy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


_DefaultFillingValidator = _extend_with_defaults(Draft202012Validator)


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read a YAML schema (always ``safe_load``)."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def validate(instance: Any, schema: Mapping[str, Any], source: str | Path, where: str = "") -> Any:
    """Validate ``instance`` in place (filling defaults); raise :class:`InputError` on the first error.

    ``where`` prefixes the key path, e.g. ``"row 3"`` for a sample sheet.
    """
    validator = _DefaultFillingValidator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        key = _key_path(error)
        place = f"{where}, {key}" if where else key
        raise InputError(source, place, error.message)
    return instance
