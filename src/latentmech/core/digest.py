"""Digests of the source a rule depends on, so editing code reruns exactly the affected jobs.

Snakemake reruns a job when a ``params:`` value changes. Giving each rule a ``code`` param that
hashes the *contents* of the modules it runs makes an edit rerun those jobs, while touching a file
(mtime only) or editing an unrelated module does not.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@cache
def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_digest(*modules: str) -> str:
    """SHA-256 (16 hex chars) over the named package modules, e.g. ``"dic/prep.py"``.

    A name may also be a sub-package folder (``"core"``), meaning every ``.py`` file in it.
    """
    digest = hashlib.sha256()
    for name in sorted(modules):
        target = PACKAGE_ROOT / name
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"code_digest: no module {name!r} under {PACKAGE_ROOT}")
        for file in files:
            digest.update(str(file.relative_to(PACKAGE_ROOT)).encode())
            digest.update(_file_digest(file).encode())
    return digest.hexdigest()[:16]
