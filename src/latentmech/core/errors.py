"""Errors for bad input, phrased so a user can fix the file without reading the code."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Raised when an input file or setting is not what the workflow expects.

    The message always names the file (or config key), the place in it and what was expected,
    because the user reading it is usually looking at a Snakemake log, not at our source.
    """

    def __init__(self, source: str | Path, where: str, problem: str) -> None:
        self.source = str(source)
        self.where = where
        self.problem = problem
        place = f" ({where})" if where else ""
        super().__init__(f"{self.source}{place}: {problem}")


class ExternalToolError(RuntimeError):
    """An external program the workflow drives (LAMMPS, DAMASK_grid …) failed on its input.

    The message carries the program's own error and the end of its log, so the user can fix
    the input (a potential file, a setting) from the Snakemake log alone.
    """
