"""DicPlan: config checks the schema cannot express, and what each rule is given."""

from __future__ import annotations

import copy

import pytest
import yaml

from latentmech.core.errors import InputError
from latentmech.core.schema import load_schema, validate
from latentmech.dic.plan import DicPlan
from tests.helpers import REPO

SCHEMAS = REPO / "workflow" / "schemas"


def _dic() -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    return validate(config, load_schema(SCHEMAS / "config.schema.yaml"), "config.yaml")["dic"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.update(modalities=["exx", "max_shear"]), "dic.modalities"),
        (
            lambda d: d["windows"]["split"].update(fractions=[0.5, 0.5, 0.5]),
            "dic.windows.split.fractions",
        ),
        (lambda d: d.pop("synthetic"), "dic.synthetic"),
        (lambda d: d["events"].update(modality="rotation"), None),
        (lambda d: d.update(modalities=["exx"]), "dic.events.modality"),
    ],
)
def test_inconsistent_configs_fail_before_any_job(change, named: str | None) -> None:
    dic = copy.deepcopy(_dic())
    change(dic)
    if named is None:
        DicPlan(dic, "results", SCHEMAS)  # events in another configured modality is fine
        return
    with pytest.raises(InputError, match=named.replace(".", r"\.")):
        DicPlan(dic, "results", SCHEMAS)


def test_rules_get_only_the_settings_they_use() -> None:
    plan = DicPlan(_dic(), "results", SCHEMAS)
    assert "match" not in plan.detection_settings()
    assert plan.detection_settings()["min_length_px"] == 6.0
    assert plan.figure_settings() == {
        "modalities": ["exx", "intensity", "direction", "rotation"],
        "size_px": 32,
        "stride_px": None,
    }
    assert len(plan.samples) == 6 * 3 * 4
    assert plan.each("raw", "{sample}.zarr")[0] == "results/dic/raw/W_Nickel600_s1_t1.zarr"
    settings = plan.synthesize_settings("AM_AB_In718_s3_t2")
    assert settings["sample"]["role"] == "validation" and settings["sample"]["strain_pct"] == 0.74
    assert settings["material"]["name"] == "AM_AB_In718"
    assert plan.figure_raw("W_In718") == "results/dic/raw/W_In718_s1_t4.zarr"
