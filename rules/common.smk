# Shared by every study: config validation, result paths, code digests, JSON params.
import json
from pathlib import Path

from latentmech.core.digest import code_digest
from latentmech.core.schema import load_schema, validate

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
validate(config, load_schema(SCHEMAS / "config.schema.yaml"), source="config")
RESULTS = config["results"]
ID = "[A-Za-z0-9][A-Za-z0-9_.-]*"


wildcard_constraints:
    sample=ID,
    material=ID,


def as_json(settings):
    """Params are JSON strings: Snakemake compares them to rerun jobs, the CLI parses them."""
    return json.dumps(settings, sort_keys=True)


def results(*parts):
    return str(Path(RESULTS, *parts))


def log(rule, name="log"):
    return results("logs", rule, f"{name}.log")


def bench(rule, name="bench"):
    return results("benchmarks", rule, f"{name}.tsv")
