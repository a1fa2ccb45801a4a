"""Benchmark: Snakemake planning time (``snakemake -n``) against the number of HR-DIC samples.

For each N, writes in a temporary directory a sample sheet of N measured maps (two modalities,
``exx`` and ``intensity``; every row points at the same two tiny ``.npy`` files, which must
exist), specimens of four steps spread over six materials, one specimen in five held out as
``validation`` and the rest ``train``, plus a materials table with the six properties, so the
whole study is planned: per-sample ingest, preprocessing and event detection, the aggregates
(windows, VAEs, latent maps, UMAP) and the property CNN. The config is ``config.yaml`` with
``source: sheet``, the two modalities and no extension material.

It then times ``snakemake -n --cores 2`` as a subprocess (what a user waits for: interpreter
start-up and imports included, reported separately as ``snakemake --version``) in two forms:

* ``-n --quiet rules``: the per-job blocks are not printed, only the "Job stats" summary (used to
  check the plan); this is the planning cost itself;
* ``-n``: the normal dry run, which prints every planned job (output written to a file).

N below ``--single-above`` are the best of ``--repeats`` runs after a warm-up run; larger N are
timed once. Reported per N: wall time, time per sample, jobs planned; the ratio of the largest to
the smallest N (criterion: at most 60 for 5000/100, i.e. no worse than linear), the marginal cost
per added sample and a fit t = a + b·N + c·N². With ``--profile``, the quiet dry run at the largest
N is run again under ``cProfile`` and summarised: Snakemake's parts (parsing, DAG building and its
known hot spots, the dry-run scheduler) against ours (``DicPlan``, the sample sheet, schema
validation, code digests, the input functions), and the top functions.

Run: ``.venv/bin/python benchmarks/bench_plan.py [--sizes 100 1000 5000] [--repeats 3]
[--profile]`` (about 6 minutes on 2 cores with ``--profile``). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import pstats
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import snakemake
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
STEPS = 4
MATERIALS = 6
VALIDATION_EVERY = 5  # every fifth specimen is held out
HEADER = ("sample", "material", "specimen", "step", "strain_pct", "stress_mpa", "role",
          "pixel_size_um", "exx", "intensity")  # fmt: skip
PROPERTIES = {"YS": 300.0, "Q": 200.0, "b": 10.0, "UTS": 600.0, "El": 30.0, "FS": 250.0}


def write_study(folder: Path, n: int) -> dict[str, int]:
    """Sample sheet of ``n`` maps, materials table and config in ``folder``; counts per role."""
    rng = np.random.default_rng(0)
    np.save(folder / "exx.npy", rng.normal(0.005, 0.001, (64, 96)))
    np.save(folder / "intensity.npy", np.abs(rng.normal(0.0, 10.0, (64, 96))))
    lines, roles = ["\t".join(HEADER)], {"train": 0, "validation": 0}
    for i in range(n):
        specimen, step = divmod(i, STEPS)
        material = f"M{specimen % MATERIALS}"
        role = "validation" if specimen % VALIDATION_EVERY == VALIDATION_EVERY - 1 else "train"
        roles[role] += 1
        row = (f"S{i:05d}", material, str(specimen), str(step + 1), f"{0.3 * (step + 1):.2f}",
               f"{300 + 50 * step}", role, "0.25", "exx.npy", "intensity.npy")  # fmt: skip
        lines.append("\t".join(row))
    (folder / "samples.tsv").write_text("\n".join(lines) + "\n")
    table = ["\t".join(["material", *PROPERTIES])]
    for k in range(MATERIALS):
        table.append("\t".join([f"M{k}", *(f"{v * (1 + 0.1 * k):g}" for v in PROPERTIES.values())]))
    (folder / "materials.tsv").write_text("\n".join(table) + "\n")
    (folder / "config.yaml").write_text(yaml.safe_dump(study_config(folder), sort_keys=False))
    return roles


def study_config(folder: Path) -> dict:
    """``config.yaml`` switched to the sample sheet, ``exx`` and ``intensity`` only."""
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    dic = config["dic"]
    dic.update(
        source="sheet",
        samples=str(folder / "samples.tsv"),
        materials=str(folder / "materials.tsv"),
        modalities=["exx", "intensity"],
    )
    dic["prep"] = {k: v for k, v in dic["prep"].items() if k in dic["modalities"]}
    dic["latent"]["modalities"] = None  # all of dic.modalities
    dic["vae"]["compare_modality"] = "intensity"
    dic["cnn"]["modality"] = "intensity"
    dic["umap"]["modalities"] = ["intensity"]
    dic["events"]["modality"] = "intensity"
    dic["extend"]["materials"] = []
    config["results"] = "results"
    return config


#: ``--quiet rules`` drops the block printed per job but keeps the "Job stats" summary; plain
#: ``--quiet`` would drop that too.
QUIET = ("--quiet", "rules")


def command(folder: Path, *args: str) -> list[str]:
    return [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(folder),
            "--configfile", str(folder / "config.yaml"), "--cores", "2", "-n", *args]  # fmt: skip


def run(cmd: list[str], folder: Path) -> tuple[float, str]:
    """Wall time of one run; stdout and stderr go to a file (read back afterwards)."""
    log = folder / "dryrun.log"
    with open(log, "w") as handle:
        start = time.perf_counter()
        result = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=folder)
        elapsed = time.perf_counter() - start
    text = log.read_text()
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    return elapsed, text


def best_of(cmd: list[str], folder: Path, repeats: int) -> tuple[float, str]:
    """Fastest of ``repeats`` runs; with several, after a warm-up run (OS and ``.snakemake``)."""
    if repeats > 1:
        run(cmd, folder)
    best, text = float("inf"), ""
    for _ in range(repeats):
        elapsed, out = run(cmd, folder)
        if elapsed < best:
            best, text = elapsed, out
    return best, text


def job_counts(text: str) -> dict[str, int]:
    """Rule → jobs from the dry run's "Job stats" table."""
    table = re.search(r"Job stats:\n(.*?)\n\n", text, flags=re.S)
    if table is None:
        raise RuntimeError(f"no job stats in the dry-run output:\n{text[-3000:]}")
    counts = {}
    for line in table.group(1).splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match and match.group(1) not in ("job", "total"):
            rule = re.sub(r"_\d+$", "", match.group(1))  # chunked rules: dic_encode_database_0 …
            counts[rule] = counts.get(rule, 0) + int(match.group(2))
    return counts


def startup_seconds(repeats: int) -> float:
    """``snakemake --version``: interpreter start and imports, no workflow."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([str(SNAKEMAKE), "--version"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


@dataclass
class Row:
    n: int
    roles: dict[str, int]
    repeats: int
    quiet: float
    full: float | None
    full_mb: float | None
    jobs: dict[str, int]


def measure(folder: Path, n: int, repeats: int, full: bool) -> Row:
    roles = write_study(folder, n)
    quiet, text = best_of(command(folder, *QUIET), folder, repeats)
    jobs = job_counts(text)
    missing = {"dic_ingest", "dic_encode_database", "dic_train_cnn", "dic_figure_umap"} - set(jobs)
    if missing or jobs["dic_ingest"] != n:
        raise RuntimeError(f"unexpected plan for N={n}: {jobs}")
    full_time = full_mb = None
    if full:
        full_time, out = best_of(command(folder), folder, repeats)
        full_mb = len(out.encode()) / 1e6
    return Row(n, roles, repeats, quiet, full_time, full_mb, jobs)


def print_tables(rows: list[Row], startup: float) -> None:
    print(f"Snakemake {snakemake.__version__}, Python {platform.python_version()}, "
          f"`--cores 2`, {platform.processor() or platform.machine()}; "
          f"`snakemake --version` (start-up and imports only): {startup:.2f} s\n")  # fmt: skip
    print("| N samples | train / validation | jobs planned | runs | `-n --quiet rules` (s) "
          "| per sample (ms) | `-n` (s) | per sample (ms) | `-n` output (MB) |")  # fmt: skip
    print("|---:|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        runs = f"best of {r.repeats}" if r.repeats > 1 else "1"
        full = (f"{r.full:.2f} | {r.full / r.n * 1e3:.2f} | {r.full_mb:.1f}"
                if r.full is not None and r.full_mb is not None else "– | – | –")  # fmt: skip
        print(f"| {r.n} | {r.roles['train']} / {r.roles['validation']} | "
              f"{sum(r.jobs.values())} | {runs} | {r.quiet:.2f} | {r.quiet / r.n * 1e3:.2f} | "
              f"{full} |")  # fmt: skip
    first, last = rows[0], rows[-1]
    ratio = f"\nRatio N={last.n} / N={first.n} (samples ×{last.n / first.n:g}): quiet "
    ratio += f"{last.quiet / first.quiet:.1f}"
    if first.full and last.full:
        ratio += f", normal {last.full / first.full:.1f}"
    print(ratio + " (criterion: ≤ 60).")
    print("\nMarginal cost per added sample (quiet):")
    for a, b in itertools.pairwise(rows):
        print(f"* N {a.n} → {b.n}: {(b.quiet - a.quiet) / (b.n - a.n) * 1e3:.2f} ms")
    if len(rows) >= 3:
        n = np.array([r.n for r in rows], dtype=float)
        c, b, a = np.polyfit(n, [r.quiet for r in rows], 2)
        big = n[-1]
        print(f"\nFit t = a + b·N + c·N² through the quiet times: a = {a:.2f} s, "
              f"b = {b * 1e3:.2f} ms, c = {c * 1e6:.3f} µs; at N={big:.0f} the N² term is "
              f"{c * big**2:.1f} s ({c * big**2 / (a + b * big + c * big**2):.0%}) and "
              f"b·N {b * big:.1f} s" + (f"; they are equal at N ≈ {b / c:.0f}." if c > 0 else "."))  # fmt: skip
    print(f"\nJobs at N={last.n}: " + ", ".join(f"{k} {v}" for k, v in last.jobs.items()))


#: Parts of the run: (file fragment, function, label); cumulative time of each.
PARTS = (
    ("snakemake/workflow.py", "include", "Snakefile parsed and run (includes `DicPlan`)"),
    ("snakemake/workflow.py", "_build_dag", "`Workflow._build_dag` (DAG of jobs)"),
    ("snakemake/rules.py", "is_producer", "↳ `Rule.is_producer` (linear scan of a rule's outputs)"),
    ("snakemake/dag.py", "update", "↳ `DAG.update` own time + the `_IOFile.__eq__` calls it makes"),
    ("snakemake/rules.py", "apply_input_function", "↳ input functions (our lambdas included)"),
    ("snakemake/dag.py", "update_needrun", "↳ `DAG.update_needrun`"),
    ("snakemake/dag.py", "check_directory_outputs", "↳ `DAG.check_directory_outputs`"),
    ("snakemake/scheduling/job_scheduler.py", "schedule", "`JobScheduler.schedule` (dry-run)"),
    ("snakemake/executors/dryrun.py", "printjob", "↳ `printjob` (formats every job)"),
    ("latentmech/dic/plan.py", "__init__", "our `DicPlan.__init__`"),
    ("latentmech/dic/samples.py", "read_sample_sheet", "↳ `read_sample_sheet`"),
    ("latentmech/core/schema.py", "validate", "↳ `schema.validate` (every sheet row)"),
    ("latentmech/dic/samples.py", "_resolve_file", "↳ `_resolve_file`"),
    ("latentmech/dic/samples.py", "read_materials", "↳ `read_materials`"),
    ("latentmech/dic/plan.py", "row", "our `DicPlan.row` (`dic_ingest` input and params)"),
    ("latentmech/core/digest.py", "code_digest", "our `code_digest`"),
    ("latentmech/dic/plan.py", "targets", "our `DicPlan.targets`"),
)


def _where(filename: str) -> str:
    return re.split(r"site-packages/|lib/python3\.\d+/", filename)[-1].split(f"{REPO}/")[-1]


#: Frames that only wrap the whole run (entry point, asyncio loop), left out of the top lists.
WRAPPERS = ("asyncio/", "builtins.exec", "_contextvars", "snakemake/cli.py", "bin/snakemake")


def _find(stats: dict, fragment: str, name: str) -> list[tuple]:
    return [(key, value) for key, value in stats.items()
            if key[2] == name and key[0].endswith(fragment)]  # fmt: skip


def profile(folder: Path, top: int) -> None:
    """Run the quiet dry run under cProfile and print where the time goes."""
    out = folder / "plan.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(out), *command(folder, *QUIET)]
    elapsed, _ = run(cmd, folder)
    profile_stats = pstats.Stats(str(out))
    stats: dict = profile_stats.stats  # type: ignore[attr-defined]
    total: float = profile_stats.total_tt  # type: ignore[attr-defined]
    print(f"\nProfile of the quiet dry run at N={folder.name} (cProfile: {elapsed:.1f} s wall, "
          f"{total:.1f} s profiled; cProfile inflates many small calls most):\n")  # fmt: skip
    print("| part | cumulative (s) | share | calls |")
    print("|---|---:|---:|---:|")
    for fragment, name, label in PARTS:
        found = _find(stats, fragment, name)
        seconds, calls = sum(v[3] for _, v in found), sum(v[0] for _, v in found)
        if (fragment, name) == ("snakemake/dag.py", "update"):
            # its cycle check `file in job.input` scans the candidate producer's input list
            eq = [v for _, v in _find(stats, "snakemake/io/__init__.py", "__eq__")]
            callers = [v[4].get(key, (0, 0, 0, 0)) for key, _ in found for v in eq]
            seconds = sum(v[2] for _, v in found) + sum(c[3] for c in callers)
            calls = sum(c[0] for c in callers)
        if calls:
            print(f"| {label} | {seconds:.2f} | {seconds / total:.0%} | {calls} |")
    ours = sum(v[2] for k, v in stats.items()
               if "latentmech" in k[0] or k[0].endswith((".smk", "Snakefile")))  # fmt: skip
    print(f"\nOwn time in our files (src/latentmech, Snakefile, rules/*.smk): {ours:.2f} s "
          f"({ours / total:.1%}); with what they call, see the `our …` rows above.")  # fmt: skip
    for title, index in (("cumulative", 3), ("own", 2)):
        print(f"\nTop {top} functions by {title} time:\n")
        print("| function | own (s) | cumulative (s) | calls |")
        print("|---|---:|---:|---:|")
        ranked = sorted(
            ((k, v) for k, v in stats.items() if not any(w in f"{k[0]}{k[2]}" for w in WRAPPERS)),
            key=lambda item: -item[1][index],
        )
        for (filename, line, function), (calls, _, own, cum, _) in ranked[:top]:
            print(f"| `{_where(filename)}:{line}({function})` | {own:.2f} | {cum:.2f} | {calls} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--repeats", type=int, default=3, help="runs per N below --single-above")
    parser.add_argument("--single-above", type=int, default=2000, help="time larger N once")
    parser.add_argument("--no-full", action="store_true", help="skip the normal (printing) dry run")
    parser.add_argument("--profile", action="store_true", help="cProfile the largest N")
    parser.add_argument("--top", type=int, default=15, help="rows of the profile tables")
    args = parser.parse_args()

    startup = startup_seconds(args.repeats)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_plan_") as tmp:
        for n in sorted(args.sizes):
            folder = Path(tmp, str(n))
            folder.mkdir()
            repeats = 1 if n >= args.single_above else args.repeats
            rows.append(measure(folder, n, repeats, full=not args.no_full))
            print(f"N={n}: {rows[-1].quiet:.2f} s quiet, {rows[-1].full} s normal", file=sys.stderr)
        print_tables(rows, startup)
        if args.profile:
            profile(Path(tmp, str(rows[-1].n)), args.top)


if __name__ == "__main__":
    main()
