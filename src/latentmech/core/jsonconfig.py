"""Frozen dataclass configs that travel as JSON (sidecars, params, provenance attributes)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Self


class JsonConfig:
    """Mixin for frozen dataclasses stored as JSON: tuple fields ↔ lists.

    A config read back from its JSON equals (and hashes like) the one that was written. Kept free
    of heavy imports: the synthetic generator's jobs use it too.
    """

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
