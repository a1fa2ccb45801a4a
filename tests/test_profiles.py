"""Dry runs with each profile: every job's resources as the profile and the config say.

The expected values are computed here from the profile's YAML (its expressions evaluated at
attempt 1, as Snakemake does) and from the config (GPUs and threads of the trainings), so a
profile or rule edit that changes what a cluster is asked for shows up as a failing test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import fake_lsf
from tests.helpers import REPO, job_counts, snakemake, tiny_study_config, write_config

PROFILES = REPO / "workflow" / "profiles"
#: Training rule → its study and config section (GPUs and threads).
TRAININGS = {
    "dic_train_vae": ("dic", "vae"),
    "dic_train_cnn": ("dic", "cnn"),
    "dic_extend_vae": ("dic", "extend"),
    "ve_train_vae": ("ve", "vae"),
    "ve_train_surrogate": ("ve", "surrogate"),
    "alloy_train_cvae": ("alloy", "cvae"),
}
#: Resources Snakemake adds on its own (not the profile's or the rule's).
SNAKEMAKE_OWN = {"tmpdir", "mem", "mem_mib", "disk_mb", "disk", "disk_mib", "_cores", "_nodes"}


def dry_run_jobs(text: str) -> list[dict[str, Any]]:
    """Every job a dry run prints: its rule, threads and resources (``key=value`` strings)."""
    jobs = []
    for block in re.split(r"\n(?=\s*(?:local)?rule \w+:)", text):  # group members are indented
        rule = re.match(r"\s*(?:local)?rule (\w+):", block)
        if not rule or rule.group(1) == "all":  # the target rule runs nothing
            continue
        threads = re.search(r"^\s+threads: (\d+)$", block, flags=re.M)
        listed = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        pairs = [item.split("=", 1) for item in listed.group(1).split(", ")] if listed else []
        jobs.append({"rule": rule.group(1), "threads": int(threads.group(1)) if threads else 1,
                     "resources": {k: v for k, v in pairs if k not in SNAKEMAKE_OWN}})  # fmt: skip
    return jobs


def evaluated(value: Any) -> str:
    """A profile value as Snakemake evaluates it (attempt 1), printed as in a dry run."""
    try:
        return str(eval(str(value), {"attempt": 1}))
    except (NameError, SyntaxError):  # a plain string such as a queue name
        return str(value)


def expected_resources(profile: dict, rule: str, config: dict) -> dict[str, str]:
    """Default resources, the rule's set-resources over them, and the rule's GPU request."""
    expected = {k: evaluated(v) for k, v in profile.get("default-resources", {}).items()}
    expected.update({k: evaluated(v) for k, v in profile.get("set-resources", {}).get(rule, {})
                     .items()})  # fmt: skip
    if rule in TRAININGS:
        study, section = TRAININGS[rule]
        gpus = config[study][section]["gpus"]
        if config.get("cluster", {}).get("gpu_request", "gpus") == "gres":
            expected["gres"] = f"gpu:{gpus}"
        else:
            expected["gpu"] = str(gpus)
        expected["lsf_extra"] = f"-gpu num={gpus}"
    return expected


def profile_dry_run(tmp_path: Path, name: str, config: dict) -> str:
    """The dry run's text with profile ``name`` (a fake LSF on PATH for the LSF plugin)."""
    write_config(tmp_path / "config.yaml", config)
    env = fake_lsf.install(tmp_path / "fakebin", tmp_path / "lsf") if name == "lsf" else {}
    args = ["--slurm-status-command", "squeue"] if name == "slurm" else []
    result = snakemake(tmp_path, "--dry-run", "--profile", str(PROFILES / name), *args, env=env)
    assert not (tmp_path / "results").exists()
    return result.stdout + result.stderr


def training_config(gpus: int, request: str = "gpus") -> dict:
    """The tiny studies with ``gpus`` GPUs and 2 threads per training."""
    config = tiny_study_config()
    config["cluster"] = {"gpu_request": request}
    for study, section in TRAININGS.values():
        config[study][section]["gpus"] = gpus
        config[study][section]["threads"] = 2
    return config


@pytest.mark.parametrize("name", ["local", "slurm", "lsf"])
def test_every_jobs_resources_are_the_profiles_and_the_configs(tmp_path: Path, name: str) -> None:
    config = training_config(gpus=1)
    text = profile_dry_run(tmp_path, name, config)
    counts = job_counts(text)
    assert counts["dic_synthesize"] == 8 + 2  # 2 materials × 2 specimens × 2 steps + extension
    assert counts["dic_windows"] == 1
    assert counts["ve_generate"] == 6 + 3  # cu: 3 splits + 3 edge cases; mg: 3 splits
    assert counts["alloy_md"] == 5 and counts["alloy_fields"] == 5
    profile = yaml.safe_load((PROFILES / name / "config.yaml").read_text())
    jobs = dry_run_jobs(text)
    assert len(jobs) == sum(counts.values()) and {j["rule"] for j in jobs} >= set(TRAININGS)
    for job in jobs:
        expected = expected_resources(profile, job["rule"], config)
        assert job["resources"] == expected, job
        if job["rule"] in TRAININGS:
            assert job["threads"] == 2, job
    if name != "local":  # cluster profiles send per-sample jobs 20 samples to a job
        assert "Group job dic_per_sample" in text
        assert "Group job ve_shards" in text
        assert "Group job alloy_per_sample" in text


def test_cpu_trainings_ask_for_no_gpu(tmp_path: Path) -> None:
    jobs = dry_run_jobs(profile_dry_run(tmp_path, "lsf", training_config(gpus=0)))
    for job in jobs:
        if job["rule"] in TRAININGS:
            assert job["resources"]["gpu"] == "0" and "lsf_extra" not in job["resources"], job


def test_the_gres_variant_asks_for_gres_instead_of_gpus(tmp_path: Path) -> None:
    config = training_config(gpus=2, request="gres")
    text = profile_dry_run(tmp_path, "slurm", config)
    profile = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    trainings = [job for job in dry_run_jobs(text) if job["rule"] in TRAININGS]
    assert trainings
    for job in trainings:
        assert job["resources"] == expected_resources(profile, job["rule"], config), job
        assert job["resources"]["gres"] == "gpu:2" and "gpu" not in job["resources"], job
