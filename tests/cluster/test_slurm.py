"""The Slurm profile on a real single-node Slurm: the tiny study through sbatch, and preemption.

Needs the daemons of ``tests/cluster/start_slurm.sh`` (``make test-slurm`` starts them and runs
these tests; ``.ci/run`` does so after the main suite, so no other test pays for Slurm's tools
being installed). Marked ``slurm``; ``make test`` leaves them out. Without a reachable Slurm they
skip, and under CI (``LATENTMECH_REQUIRE_SLURM=1``) they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from tests.helpers import (
    REPO,
    snakemake,
    snakemake_command,
    snakemake_env,
    tiny_synthetic_config,
    write_config,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REQUIRE_SLURM = os.environ.get("LATENTMECH_REQUIRE_SLURM") == "1"
GPU_RULES = {"dic_train_vae", "dic_train_cnn", "dic_extend_vae"}
#: The one column of the outputs that measures the machine, not the computation (the training
#: histories' epoch times; Snakemake's own benchmarks are left out by path).
TIMING_COLUMN = "seconds"


@pytest.fixture(scope="module")
def slurm() -> None:
    """A Slurm controller that answers and an idle node, else skip (fail under CI)."""
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                               timeout=30)  # fmt: skip
        up = state.returncode == 0 and re.search(r"idle|mix|alloc", state.stdout)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        up = False
    if not up:
        message = "no Slurm controller answers: run tests/cluster/start_slurm.sh (root) first"
        if REQUIRE_SLURM:
            pytest.fail(message)
        pytest.skip(message)
    # The submitting shell has no GPUs of its own: only Slurm may set CUDA_VISIBLE_DEVICES.
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)


def site_profile(folder: Path) -> Path:
    """The repository's slurm profile, adapted to this one-node site as README tells a user to.

    No accounting daemon here: no account, job states from squeue. The node has a few GB of
    memory, so the profile's requests are scaled down. Everything else is the profile as shipped.
    """
    folder.mkdir()
    source = REPO / "workflow" / "profiles" / "slurm"
    shutil.copy(source / "partitions.yaml", folder / "partitions.yaml")
    profile = yaml.safe_load((source / "config.yaml").read_text())
    del profile["default-resources"]["slurm_account"]
    profile["slurm-status-command"] = "squeue"
    profile["slurm-init-seconds-before-status-checks"] = 5
    profile["seconds-between-status-checks"] = 3
    profile["default-resources"]["mem_mb"] = "500 * attempt"
    for resources in profile["set-resources"].values():
        resources["mem_mb"] = "1000 * attempt"
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def gpu_config() -> dict:
    """The tiny study with one GPU for every training."""
    config = tiny_synthetic_config()
    for model in ("vae", "cnn", "extend"):
        config["dic"][model]["gpus"] = 1
    return config


def submitted_jobs(workdir: Path) -> list[dict[str, str]]:
    """``scontrol show job`` of every job submitted from ``workdir`` (MinJobAge keeps them)."""
    ids = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i"], capture_output=True,
                         text=True, check=True).stdout.split()  # fmt: skip
    jobs = [job_fields(job_id) for job_id in ids]
    mine = [job for job in jobs if job.get("WorkDir") == str(workdir)]
    return sorted(mine, key=lambda job: int(job["JobId"]))


def job_fields(job_id: str) -> dict[str, str]:
    """``scontrol show job`` of one job as a dict; empty once Slurm has purged the job."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                           text=True)  # fmt: skip
    return dict(re.findall(r"(\w+)=(\S*)", shown.stdout)) if shown.returncode == 0 else {}


def rule_of(job: dict[str, str]) -> str:
    """The rule a job ran: the plugin's comment is ``rule_<name>[_wildcards_…]``."""
    return re.sub(r"_wildcards_.*", "", job["Comment"]).removeprefix("rule_")


def comparable_tables(results: Path) -> dict[str, pd.DataFrame]:
    """Every CSV/TSV output, less the columns that time the machine."""
    tables = {}
    for path in sorted(results.rglob("*.[ct]sv")):
        if "benchmarks" in path.parts:
            continue
        frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        tables[str(path.relative_to(results))] = frame.drop(columns=TIMING_COLUMN, errors="ignore")
    return tables


@pytest.fixture(scope="module")
def runs(slurm: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny study run twice from scratch: locally, and through sbatch with the profile."""
    local = tmp_path_factory.mktemp("local")
    cluster = tmp_path_factory.mktemp("cluster")
    for workdir in (local, cluster):
        write_config(workdir / "config.yaml", gpu_config())
    snakemake(local, "--resources", "gpu=1")
    profile = site_profile(cluster / "profile")
    snakemake(cluster, "--profile", str(profile))
    return local, cluster


def test_every_job_finishes_through_sbatch(runs: tuple[Path, Path]) -> None:
    _, cluster = runs
    jobs = submitted_jobs(cluster)
    assert jobs and all(job["JobState"] == "COMPLETED" for job in jobs), jobs
    again = snakemake(cluster, "--dry-run", "--profile", str(cluster / "profile"))
    assert "Nothing to be done" in again.stdout + again.stderr


def test_outputs_equal_those_of_a_local_run(runs: tuple[Path, Path]) -> None:
    local, cluster = runs
    expected = comparable_tables(local / "results")
    got = comparable_tables(cluster / "results")
    assert set(got) == set(expected) and len(expected) > 10
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(got[name], frame, obj=name)
    stores = sorted(p.relative_to(local) for p in (local / "results").rglob("*.zarr"))
    assert stores
    for store in stores:
        a, b = xr.open_zarr(local / store), xr.open_zarr(cluster / store)
        for name in a.data_vars:
            np.testing.assert_array_equal(b[name].values, a[name].values, err_msg=f"{store}:{name}")


def test_gpu_rules_got_gpus_and_cpu_rules_none(runs: tuple[Path, Path]) -> None:
    _, cluster = runs
    jobs = submitted_jobs(cluster)
    gpu_jobs = [j for j in jobs if rule_of(j) in GPU_RULES]
    cpu_jobs = [j for j in jobs if rule_of(j) not in GPU_RULES]
    assert {rule_of(j) for j in gpu_jobs} == GPU_RULES and cpu_jobs
    for job in gpu_jobs:  # sbatch --gpus=1, routed by partitions.yaml to the GPU partition
        assert job["TresPerJob"] == "gres:gpu:1" and job["Partition"] == "gpu", job
    for job in cpu_jobs:
        assert "TresPerJob" not in job or "gpu" not in job["TresPerJob"], job
        assert job["Partition"] == "cpu", job
    logs = cluster / "results" / "logs"
    seen = {}
    for log in logs.rglob("*.log"):
        for match in re.finditer(r"dic (\w+) on .*, scheduler job (\d+), CUDA_VISIBLE_DEVICES="
                                 r"(\S+)", log.read_text()):  # fmt: skip
            seen.setdefault(match.group(1), set()).add(match.group(3))
    stage_of_rule = {"dic_train_vae": "train_vae", "dic_train_cnn": "train_cnn",
                     "dic_extend_vae": "extend_vae"}  # fmt: skip
    for stage in stage_of_rule.values():  # one GPU each: 0, or 1 while another job holds 0
        devices = seen.pop(stage)
        assert devices and devices <= {"0", "1"}, (stage, devices)
    assert seen and all(values == {"<none>"} for values in seen.values()), seen


def test_the_gres_variant_submits_gres(runs: tuple[Path, Path], tmp_path: Path) -> None:
    _, cluster = runs
    workdir = tmp_path / "gres"
    shutil.copytree(cluster / "results", workdir / "results")
    config = gpu_config() | {"cluster": {"gpu_request": "gres"}}
    write_config(workdir / "config.yaml", config)
    profile = site_profile(workdir / "profile")
    target = workdir / "results/dic/vae/intensity_none/model.pt"
    target.unlink()  # that one training runs again, nothing else
    snakemake(workdir, "--profile", str(profile), str(target.relative_to(workdir)))
    (job,) = [j for j in submitted_jobs(workdir) if rule_of(j) == "dic_train_vae"]
    assert job["JobState"] == "COMPLETED" and job["Partition"] == "gpu", job
    assert job["TresPerNode"] == "gres:gpu:1" and "TresPerJob" not in job, job  # --gres=gpu:1
    log = (workdir / "results/logs/dic_train_vae/intensity_none.log").read_text()
    assert re.search(r"CUDA_VISIBLE_DEVICES=[01]\n", log), log


def wait_for(condition, timeout: float, what: str, poll: float = 0.5):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


PREEMPT_TARGET = "results/dic/vae/intensity_reflect_mask"
PREEMPT_EPOCHS = 60


def preempt_config() -> dict:
    """One GPU VAE trained long enough to be signalled between its first and last epoch."""
    config = gpu_config()
    config["dic"]["vae"]["train"]["epochs"] = PREEMPT_EPOCHS
    return config


def test_a_signalled_training_job_is_retried_and_resumes(slurm: None, tmp_path: Path) -> None:
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    for workdir in (local, cluster):
        workdir.mkdir()
        write_config(workdir / "config.yaml", preempt_config())
    profile = site_profile(cluster / "profile")
    run = subprocess.Popen(
        [*snakemake_command(cluster), "--profile", str(profile), f"{PREEMPT_TARGET}/model.pt"],
        cwd=cluster, env=snakemake_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        checkpoints = cluster / PREEMPT_TARGET / "checkpoints"

        def training_job() -> str | None:
            """The running training job."""
            jobs = [j for j in submitted_jobs(cluster) if rule_of(j) == "dic_train_vae"]
            running = [j["JobId"] for j in jobs if j["JobState"] == "RUNNING"]
            return running[0] if running else None

        first = wait_for(training_job, 900, "the training job to start", poll=1.0)
        wait_for(lambda: list(checkpoints.glob("*/last.pt")), 300, "its first epoch's checkpoint",
                 poll=0.05)  # fmt: skip
        subprocess.run(["scancel", "--signal=TERM", first], check=True)
        output, _ = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output
    first_job = job_fields(first)
    assert first_job["JobState"] == "FAILED", first_job  # the stage exited non-zero …
    trainings = [j for j in submitted_jobs(cluster) if rule_of(j) == "dic_train_vae"]
    assert len(trainings) == 2 and trainings[-1]["JobState"] == "COMPLETED", trainings  # … retried
    log = (cluster / "results/logs/dic_train_vae/intensity_reflect_mask.log").read_text()
    resumed = re.search(r"resuming from \S+ \(epoch (\d+), step (\d+)\)", log)
    assert resumed and int(resumed.group(1)) + int(resumed.group(2)) > 0, log
    assert int(resumed.group(1)) < PREEMPT_EPOCHS
    # Where it stopped: the same epochs as one uninterrupted run (every RNG state is restored).
    snakemake(local, f"{PREEMPT_TARGET}/model.pt")
    histories = [pd.read_csv(w / PREEMPT_TARGET / "history.csv").drop(columns=TIMING_COLUMN)
                 for w in (cluster, local)]  # fmt: skip
    assert len(histories[0]) == PREEMPT_EPOCHS
    pd.testing.assert_frame_equal(histories[0], histories[1])
