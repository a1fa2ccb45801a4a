# Shared by every study: config validation, result paths, JSON params, code digests.
from pathlib import Path

from latentmech.core.digest import code_digest
from latentmech.core.schema import load_schema, validate
from latentmech.core.workflow import (
    as_json,
    cli_option,
    ensure_cli_on_path,
    gpu_resources,
    launcher,
)

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
validate(config, load_schema(SCHEMAS / "config.schema.yaml"), source="config")
RESULTS = config["results"]
ensure_cli_on_path()


wildcard_constraints:
    sample="[A-Za-z0-9][A-Za-z0-9_.-]*",
    material="[A-Za-z0-9][A-Za-z0-9_.-]*",


def gpus(n):
    """Resources of a rule training on n GPUs (portable gpu or gres, and LSF's -gpu)."""
    return gpu_resources(n, config["cluster"]["gpu_request"])


def log(rule, name="log"):
    return str(Path(RESULTS, "logs", rule, f"{name}.log"))


def bench(rule, name="bench"):
    return str(Path(RESULTS, "benchmarks", rule, f"{name}.tsv"))
