"""The LSF profile drives the workflow through snakemake-executor-plugin-lsf and a fake LSF.

No open LSF exists to install, so ``fake_lsf.py`` stands in for ``bsub``, ``bjobs`` and the admin
commands the plugin reads its configuration from; its ``bsub`` runs each job on this machine. The
test checks the exact ``bsub`` options of a CPU rule and of a GPU rule, for both of the plugin's
memory conventions, and that the GPU job saw the GPU LSF gave it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cluster import fake_lsf
from tests.helpers import REPO, snakemake, tiny_synthetic_config, write_config

pytestmark = pytest.mark.slow

PROFILE = REPO / "workflow" / "profiles" / "lsf"
TARGET = "results/dic/vae/intensity_reflect_mask/model.pt"


def submissions(state: Path) -> list[dict]:
    """Every bsub call the plugin made, in order."""
    lines = (state / "bsub.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def rule_of(record: dict) -> str:
    """The rule (or group) name the plugin puts into the job name."""
    return record["options"]["-J"][0].split("_", 1)[1].split(":")[0].split("___")[0]


def run_with_fake_lsf(workdir: Path, memfmt: str) -> list[dict]:
    """The tiny study up to one VAE, one GPU per training, 2 threads for the VAE."""
    config = tiny_synthetic_config()
    config["dic"]["vae"]["gpus"] = 1
    config["dic"]["vae"]["threads"] = 2
    write_config(workdir / "config.yaml", config)
    state = workdir / "lsf"
    env = fake_lsf.install(workdir / "fakebin", state)
    env["SNAKEMAKE_LSF_MEMFMT"] = memfmt
    snakemake(workdir, "--profile", str(PROFILE), "--seconds-between-status-checks", "2", TARGET,
              env=env)  # fmt: skip
    assert (workdir / TARGET).stat().st_size > 0
    return submissions(state)


@pytest.mark.parametrize(("memfmt", "vae_mem"), [("percpu", "16000.0"), ("perjob", "32000.0")])
def test_bsub_lines_of_a_cpu_and_a_gpu_rule(tmp_path: Path, memfmt: str, vae_mem: str) -> None:
    records = run_with_fake_lsf(tmp_path, memfmt)
    by_rule = {rule_of(r): r for r in records}
    assert set(by_rule) == {"group_dic_per_sample", "rule_dic_windows", "rule_dic_train_vae"}
    windows = by_rule["rule_dic_windows"]["options"]
    assert windows["-q"] == ["normal"] and windows["-P"] == ["your_project"]
    assert windows["-W"] == ["30"] and windows["-n"] == ["1"]
    assert windows["-R"] == ["rusage[mem=4000.0]", "span[hosts=1]"]
    assert "-gpu" not in windows
    vae = by_rule["rule_dic_train_vae"]["options"]
    assert vae["-q"] == ["gpu"] and vae["-W"] == ["720"] and vae["-n"] == ["2"]
    # 32 000 MB for the job: per slot (÷ 2) by default, whole with SNAKEMAKE_LSF_MEMFMT=perjob
    assert vae["-R"] == [f"rusage[mem={vae_mem}]", "span[hosts=1]"]
    assert vae["-gpu"] == ["num=1"]
    log = (tmp_path / "results/logs/dic_train_vae/intensity_reflect_mask.log").read_text()
    assert "CUDA_VISIBLE_DEVICES=0" in log
    assert "training on cpu" in log  # a CPU build of torch trains on the CPU regardless
    assert "-gpu" not in by_rule["group_dic_per_sample"]["options"]
