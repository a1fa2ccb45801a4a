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


def _only_exx(dic: dict, events: bool) -> None:
    """Every modality setting on exx, except the event detection's unless ``events``."""
    dic["modalities"] = ["exx"]
    dic["cnn"]["modality"] = dic["extend"]["modality"] = "exx"
    dic["umap"]["modalities"] = ["exx"]
    if events:
        dic["events"]["modality"] = "exx"


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
        (lambda d: _only_exx(d, events=False), "dic.events.modality"),
        (lambda d: _only_exx(d, events=True), None),
        (lambda d: d["cnn"].update(modality="max_shear"), "dic.cnn.modality"),
        (lambda d: d["latent"].update(modalities=["exx"]), "dic.cnn.modality"),
        (lambda d: d["umap"].update(modalities=["exx", "eyy"]), "dic.umap.modalities"),
        (lambda d: d["cnn"].update(modality="direction"), "dic.cnn.augment.intensity_copies"),
        (
            lambda d: d["extend"]["materials"].append(d["synthetic"]["materials"][0]),
            "dic.extend.materials",
        ),
        (lambda d: d["extend"].update(modality="eyy"), "dic.extend.modality"),
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
    assert len(plan.samples) == 6 * 3 * 4 + 1 * 4  # database + the extension material's maps
    assert len(plan.database("latent", "{sample}.zarr")) == 6 * 3 * 4
    assert plan.names(("extend",))[0] == "W_Invar_HT_s1_t1"
    assert plan.synthesize_settings("W_Invar_HT_s1_t2")["material"]["wavy"] == 0.9
    assert plan.each("raw", "{sample}.zarr")[0] == "results/dic/raw/W_Nickel600_s1_t1.zarr"
    settings = plan.synthesize_settings("AM_AB_In718_s3_t2")
    assert settings["sample"]["role"] == "validation"
    assert settings["sample"]["strain_pct"] == pytest.approx(0.74 * 1.1)  # held-out strains
    assert settings["material"]["strain_pct"][1] == pytest.approx(0.74 * 1.1)
    assert settings["material"]["name"] == "AM_AB_In718"
    assert plan.figure_raw("W_In718") == "results/dic/raw/W_In718_s1_t4.zarr"


def test_predict_samples_and_the_cnn_settings() -> None:
    dic = _dic()
    dic["synthetic"]["predict_specimens"] = 1
    plan = DicPlan(dic, "results", SCHEMAS)
    predict = plan.names(("predict",))
    assert len(predict) == 6 * 4 and all("_s4_" in n for n in predict)
    import re

    pattern = re.compile(f"^(?:{plan.predict_pattern()})$")
    assert all(pattern.match(n) for n in predict)
    assert not any(pattern.match(n) for n in plan.names(("train", "validation", "extend")))
    assert not re.match(plan.predict_pattern(), DicPlan(_dic(), "r", SCHEMAS).names()[0])
    assert plan.database("x", "{sample}") == DicPlan(_dic(), "results", SCHEMAS).database(
        "x", "{sample}"
    )  # predict samples never enter the database
    settings = plan.cnn_settings("code")
    assert settings["train"]["lr"] == 1.0e-4 and "augment" not in settings
    other = copy.deepcopy(dic)
    other["cnn"]["train"]["lr"] = 1.0e-3
    assert DicPlan(other, "results", SCHEMAS).cnn_settings("code")["workdir"] != settings["workdir"]
    assert plan.cnn_settings("other code")["workdir"] != settings["workdir"]
