"""The project's set-up as a new user meets it: CLI, pins, conda envs, lint, formatting, profiles."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from latentmech.cli import STUDIES, main
from tests.helpers import (
    BIN,
    REPO,
    snakemake,
    tiny_study_config,
    tiny_synthetic_config,
    write_config,
)


def _pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        match = re.match(r"^([A-Za-z0-9_.-]+)==([\w.]+)$", requirement)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_cli_help_lists_studies_and_stages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as top:
        main(["--help"])
    assert top.value.code == 0
    assert "dic" in capsys.readouterr().out
    with pytest.raises(SystemExit) as dic:
        main(["dic", "--help"])
    assert dic.value.code == 0
    out = capsys.readouterr().out
    for stage in STUDIES["dic"][1]:
        assert stage in out


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [str(BIN / "latentmech"), "dic", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "preprocess" in result.stdout


def test_cli_bad_settings_json_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["dic", "synthesize", "--raw", str(tmp_path / "x.zarr"), "--settings", "{oops"])
    assert code == 2
    assert "--settings" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()


def test_runtime_dependencies_are_pinned() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        assert "==" in requirement or requirement.startswith("torch"), requirement
    assert "torch>=2.13,<=2.13.0" in project["dependencies"]
    assert project["requires-python"] == ">=3.11"
    assert all("==" in r for r in project["optional-dependencies"]["test"])


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_envs_mirror_the_pins(env_file: Path) -> None:
    pins = _pins() | {"torch": "2.13.0"}
    env = yaml.safe_load(env_file.read_text())
    listed: dict[str, str] = {}
    for dep in env["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            match = re.match(r"^([A-Za-z0-9_.-]+)(?:==?)([\w.]+)$", entry)
            if match:
                listed[match.group(1).lower()] = match.group(2)
    assert listed, f"{env_file} pins nothing"
    for name, version in listed.items():
        if name == "python":
            continue
        assert name in pins, f"{env_file.name}: {name} is not a pinned dependency of pyproject.toml"
        assert pins[name] == version, (
            f"{env_file.name}: {name}={version}, pyproject pins {pins[name]}"
        )
    missing = {n for n in pins if n not in listed and not n.startswith("snakemake")}
    assert not missing, f"{env_file.name} lacks {sorted(missing)}"


def test_snakefmt_is_clean() -> None:
    result = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "Snakefile", "rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakemake_lint_is_clean(tmp_path: Path) -> None:
    write_config(tmp_path / "config.yaml", tiny_study_config())  # every study's rules
    result = snakemake(tmp_path, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [str(BIN / "ruff"), "check", "src", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_top_level_layout() -> None:
    for name in ("Snakefile", "rules", "workflow", "envs", "config.yaml", "src", "tests"):
        assert (REPO / name).exists(), name
    assert "results/" in (REPO / ".gitignore").read_text()
    assert shutil.which("make")


def test_training_rules_request_gpus_and_go_data_parallel_beyond_one(tmp_path: Path) -> None:
    config = tiny_synthetic_config()
    write_config(tmp_path / "config.yaml", config)
    plain = snakemake(tmp_path, "--dry-run", "--printshellcmds").stdout
    assert "latentmech dic train-vae" in plain and "torchrun" not in plain
    config["dic"]["vae"]["gpus"] = 2
    config["dic"]["cnn"]["gpus"] = 1
    write_config(tmp_path / "config.yaml", config)
    text = snakemake(tmp_path, "--dry-run", "--printshellcmds", "--resources", "gpu=2").stdout
    assert "torchrun --standalone --nproc_per_node 2 --signals-to-handle" in text
    assert "-m latentmech.cli dic train-vae" in text
    assert "latentmech dic train-cnn" in text  # one GPU: no torchrun
    vae_jobs = text.split("rule dic_train_vae:")[1:]
    assert vae_jobs and all("gpu=2" in job.split("\n\n")[0] for job in vae_jobs)
