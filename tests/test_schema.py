"""config.yaml and the presets against workflow/schemas/config.schema.yaml: defaults and errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from latentmech.core.errors import InputError
from latentmech.core.schema import load_schema, validate
from tests.helpers import REPO

SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")


def _config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid_and_gets_defaults() -> None:
    config = validate(_config(), SCHEMA, "config.yaml")
    assert config["dic"]["prep"]["exx"] == {
        "blur_sigma_px": 3.0, "scale": 200.0, "threshold": None, "angle_unit": None, "mask_by": None,
    }  # fmt: skip
    assert config["dic"]["prep"]["intensity"]["threshold"] == 6.74
    assert config["dic"]["prep"]["intensity"]["scale"] == pytest.approx(1 / 25)
    assert config["dic"]["windows"]["split"]["fractions"] == [0.7, 0.2, 0.1]
    assert len(config["dic"]["synthetic"]["materials"]) >= 6


@pytest.mark.parametrize(
    "preset", sorted((REPO / "workflow" / "presets").glob("*.yaml")), ids=lambda p: p.name
)
def test_presets_are_valid(preset: Path) -> None:
    config = _config()
    override = yaml.safe_load(preset.read_text())
    _merge(config, override)
    validate(config, SCHEMA, preset.name)


def _merge(base: dict, override: dict) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def test_misspelt_key_is_named() -> None:
    config = _config()
    config["dic"]["prep"]["exx"]["blur_sgma_px"] = 3
    with pytest.raises(InputError, match=r"config.yaml \(dic.prep.exx\).*blur_sgma_px"):
        validate(config, SCHEMA, "config.yaml")


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("dic", "source"), "database", "dic.source"),
        (("dic", "windows", "size_px"), 2, "dic.windows.size_px"),
        (("dic", "modalities"), ["exx", "stress"], "dic.modalities.1"),
        (("dic", "prep", "intensity", "threshold"), -1, "dic.prep.intensity.threshold"),
    ],
)
def test_bad_values_are_named(path: tuple[str, ...], value: object, named: str) -> None:
    config = copy.deepcopy(_config())
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InputError, match=named.replace(".", r"\.")):
        validate(config, SCHEMA, "config.yaml")


def test_unknown_modality_in_prep_is_named() -> None:
    config = _config()
    config["dic"]["prep"]["stress"] = {"scale": 2}
    with pytest.raises(InputError, match="stress"):
        validate(config, SCHEMA, "config.yaml")


def test_default_materials_are_the_generators() -> None:
    from latentmech.dic.synth import DEFAULT_MATERIALS, MaterialSpec

    configured = [MaterialSpec.from_dict(m) for m in _config()["dic"]["synthetic"]["materials"]]
    assert configured == list(DEFAULT_MATERIALS)


def _alloy_model_schema() -> dict:
    return SCHEMA["$defs"]["alloy"]["properties"]["cvae"]["properties"]["model"]


def test_alloy_model_schema_covers_every_configurable_cvae_width() -> None:
    """The schema lists exactly the CVAEConfig fields a user sets (the data sets the others),
    with the code's choices, so a typo fails when the config is read, not in training."""
    from latentmech.alloy import cvae

    from_data = {"blocks", "conditions", "target_channels"}
    properties = _alloy_model_schema()["properties"]
    assert set(properties) == set(cvae.CVAEConfig.__dataclass_fields__) - from_data
    assert tuple(properties["decoder_conditions"]["enum"]) == cvae.DECODER_CONDITIONS
    assert set(properties["activation"]["enum"]) == set(cvae.ACTIVATIONS)
    assert tuple(properties["condition_activation"]["enum"]) == cvae.CONDITION_ACTIVATIONS
    assert tuple(properties["padding_mode"]["enum"]) == cvae.PADDING_MODES


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [("latent_dimension", 16, r"alloy\.cvae\.model\).*latent_dimension"),
     ("kernel_size", 4, r"alloy\.cvae\.model\.kernel_size\)"),
     ("decoder_widths", [8, 0], r"alloy\.cvae\.model\.decoder_widths\.1\)"),
     ("activation", "gelu", r"alloy\.cvae\.model\.activation\).*gelu")],
)  # fmt: skip
def test_bad_alloy_model_setting_is_named_when_read(key: str, value: object, named: str) -> None:
    config = _config()
    config["alloy"]["cvae"]["model"][key] = value
    with pytest.raises(InputError, match=named):
        validate(config, SCHEMA, "config.yaml")


def test_alloy_model_gets_no_schema_defaults() -> None:
    """A key left out keeps CVAEConfig's (the paper's) value: the schema fills nothing in."""
    config = _config()
    config["alloy"]["cvae"]["model"] = {"latent_dim": 8}
    assert validate(config, SCHEMA, "config.yaml")["alloy"]["cvae"]["model"] == {"latent_dim": 8}


def test_alloy_demo_model_is_cvae_demo_config() -> None:
    """The benchmarks and tests time and check ``cvae.DEMO_CONFIG``: it is the default study's."""
    from latentmech.alloy import cvae

    configured = cvae.CVAEConfig.from_dict(_config()["alloy"]["cvae"]["model"])
    assert configured == cvae.DEMO_CONFIG
