"""Alloy study: LAMMPS dumps → block fields → AlloyVAE, self-checked sampling, inverse design."""
