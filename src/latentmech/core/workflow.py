"""Helpers the Snakemake rules call while building the job graph (no study knowledge here)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any


def ensure_cli_on_path() -> None:
    """Make jobs run the ``latentmech`` script of the Python running Snakemake.

    That install is the one the rules' code digests describe; putting its ``bin`` first on
    ``PATH`` also covers a venv that is not activated (``.venv/bin/snakemake``).
    """
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "latentmech").exists():
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def as_json(settings: Any) -> str:
    """Params are JSON strings: Snakemake compares them to rerun jobs, the CLI parses them."""
    return json.dumps(settings, sort_keys=True)


def cli_option(flag: str, value: str | None) -> str:
    """``--flag 'value'`` shell-quoted, or nothing when the optional value is absent."""
    return f"{flag} {shlex.quote(str(value))}" if value else ""
