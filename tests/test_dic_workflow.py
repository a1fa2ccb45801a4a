"""The HR-DIC workflow end to end on tiny configs: outputs, incremental reruns, real DaVis maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tests.helpers import (
    REPO,
    planned_after_editing,
    planned_jobs,
    snakemake,
    tiny_synthetic_config,
    write_config,
)

pytestmark = pytest.mark.slow

#: Everything downstream of the windows: four modalities' VAEs, two comparison trainings, the table,
#: the latent maps and UMAP, the property CNN and its evaluation, the extension of the intensity VAE.
VAE_JOBS = {
    "dic_train_vae": 6,
    "dic_reconstruction_table": 1,
    "dic_figure_reconstructions": 1,
    "dic_encode_database": 1,
    "dic_figure_umap": 1,
    "dic_cnn_dataset": 1,
    "dic_train_cnn": 1,
    "dic_predict_validation": 1,
    "dic_evaluate_cnn": 1,
    "dic_extend_vae": 2,
    "dic_figure_extension": 1,
}
#: The samples of the tiny study: 2 materials × 2 specimens × 2 steps, and the new material's 2.
DATABASE_SAMPLES, EXTENSION_SAMPLES = 8, 2


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic study run once; tests below read its outputs or dry-run on top of it."""
    workdir = tmp_path_factory.mktemp("synthetic")
    write_config(workdir / "config.yaml", tiny_synthetic_config())
    snakemake(workdir)
    return workdir


def test_outputs_of_the_synthetic_study(synthetic_run: Path) -> None:
    dic = synthetic_run / "results" / "dic"
    windows = xr.open_zarr(dic / "windows.zarr")
    assert dict(windows.sizes) == {"window": 8 * 36, "wy": 16, "wx": 16}
    for name in (
        "exx",
        "intensity",
        "direction_cos",
        "direction_sin",
        "rotation",
        "valid",
        "events",
    ):
        assert windows[name].dims == ("window", "wy", "wx"), name
    assert float(windows["wx"][1] - windows["wx"][0]) == 0.5  # µm
    table = pd.read_csv(dic / "windows.csv")
    assert set(table.loc[table["role"] == "validation", "split"]) == {"none"}
    train = table[table["role"] == "train"]
    for _material, group in train.groupby("material"):
        counts = group["split"].value_counts()
        # 72 windows → 50.4 / 14.4 / 7.2: largest remainders, the tie going to the first split
        assert (counts["train"], counts["val"], counts["test"]) == (51, 14, 7)
    np.testing.assert_array_equal(windows["split"].values, table["split"].values)
    assert (dic / "figures" / "modalities_W_Nickel600.png").stat().st_size > 10_000
    assert (dic / "figures" / "reconstructions.png").stat().st_size > 10_000
    table = pd.read_csv(dic / "vae" / "reconstruction_table.csv")
    assert len(table) == 6 * 2  # six trained variants × two materials
    assert set(table["augment"]) == {"none", "reflect", "reflect_mask"}
    assert table["ssim_first_step"].between(-1, 1).all()
    meta = json.loads((dic / "vae" / "intensity_reflect_mask" / "model.json").read_text())
    assert meta["config"]["latent_dim"] == 128 and meta["channels"] == ["intensity"]
    direction = json.loads((dic / "vae" / "direction_reflect_mask" / "model.json").read_text())
    assert direction["config"]["output"] == "tanh" and direction["config"]["in_channels"] == 2
    materials = pd.read_csv(dic / "materials.tsv", sep="\t")
    assert list(materials.columns) == ["material", "YS", "Q", "b", "UTS", "El", "FS"]


def test_events_recover_the_generated_bands(synthetic_run: Path) -> None:
    scores = pd.read_csv(synthetic_run / "results" / "dic" / "events" / "scores.csv")
    totals = scores[["n_visible_bands", "n_recovered", "n_events", "n_correct_events"]].sum()
    assert totals["n_visible_bands"] > 50
    # Floors under the figures reached on the default study (README): recall ≈ 0.68, precision ≈ 0.55.
    assert totals["n_recovered"] / totals["n_visible_bands"] >= 0.5
    assert totals["n_correct_events"] / totals["n_events"] >= 0.4


def test_second_dry_run_has_nothing_to_do(synthetic_run: Path) -> None:
    assert planned_jobs(synthetic_run) == {}


def test_editing_code_reruns_its_rules_and_touching_it_nothing(synthetic_run: Path) -> None:
    edited = planned_after_editing(synthetic_run, "dic/prep.py")
    assert edited == {
        "dic_preprocess": DATABASE_SAMPLES + EXTENSION_SAMPLES,
        "dic_detect_events": DATABASE_SAMPLES + EXTENSION_SAMPLES,
        "dic_windows": 1,
        "dic_extend_windows": 1,
        "dic_event_scores": 1,
        "dic_figure_modalities": 3,
        **VAE_JOBS,
    }
    assert planned_jobs(synthetic_run) == {}


def test_changing_the_scoring_tolerance_reruns_only_the_scores(synthetic_run: Path) -> None:
    config = tiny_synthetic_config()
    config["dic"]["events"]["match"] = {"min_overlap": 0.5, "tolerance_px": 2}
    jobs = _planned_with(synthetic_run, config)
    assert jobs == {"dic_event_scores": 1}


def _planned_with(workdir: Path, config: dict) -> dict[str, int]:
    path = workdir / "config.yaml"
    original = path.read_text()
    write_config(path, config)
    try:
        return planned_jobs(workdir)
    finally:
        path.write_text(original)


def test_changing_the_blur_reruns_preprocessing_and_what_follows_only(synthetic_run: Path) -> None:
    config = tiny_synthetic_config()
    config["dic"]["prep"]["exx"]["blur_sigma_px"] = 2.0
    jobs = _planned_with(synthetic_run, config)
    assert jobs == {
        "dic_preprocess": DATABASE_SAMPLES + EXTENSION_SAMPLES,
        "dic_detect_events": DATABASE_SAMPLES + EXTENSION_SAMPLES,
        "dic_windows": 1,
        "dic_extend_windows": 1,
        "dic_event_scores": 1,
        **VAE_JOBS,
    }


def test_latent_maps_are_proper_zarr_datasets(synthetic_run: Path) -> None:
    import torch

    from latentmech.dic.vae import load_vae

    dic = synthetic_run / "results" / "dic"
    sample = "W_Nickel600_s2_t2"  # a validation specimen: encoded without training on it
    latent = xr.open_zarr(dic / "latent" / f"{sample}.zarr")
    for modality in ("exx", "intensity", "direction", "rotation"):
        assert latent[f"mu_{modality}"].dims == ("y", "x", "latent")
        assert latent[f"sigma_{modality}"].attrs["modality"] == modality
    assert dict(latent.sizes) == {"y": 6, "x": 6, "latent": 128}
    np.testing.assert_allclose(latent["y"].values, 4.0 + 8.0 * np.arange(6))  # window centres, µm
    assert latent["x"].attrs["units"] == "µm"
    assert latent.attrs["material"] == "W_Nickel600" and latent.attrs["role"] == "validation"
    assert latent["mu_intensity"].attrs["model"].endswith("intensity_reflect_mask/model.pt")
    assert (latent["sigma_intensity"].values > 0).all()
    # cell (2, 3) is the window at pixels [32:48, 48:64]: its μ and its mean raw ε_xx
    prepped = xr.open_zarr(dic / "prep" / f"{sample}.zarr")
    raw = xr.open_zarr(dic / "raw" / f"{sample}.zarr")
    model, _ = load_vae(dic / "vae" / "intensity_reflect_mask" / "model.pt",
                        dic / "vae" / "intensity_reflect_mask" / "model.json")  # fmt: skip
    window = prepped["intensity"].values[32:48, 48:64][None, None].astype(np.float32)
    with torch.no_grad():
        mu = model.encoder(torch.from_numpy(window))[0][0].numpy()
    np.testing.assert_allclose(latent["mu_intensity"].values[2, 3], mu, rtol=1e-4, atol=1e-5)
    expected = np.nanmean(raw["exx"].values[32:48, 48:64])
    assert float(latent["exx_mean"][2, 3]) == pytest.approx(expected, rel=1e-5)


def test_property_cnn_outputs_and_baseline(synthetic_run: Path) -> None:
    dic = synthetic_run / "results" / "dic"
    every = pd.read_csv(dic / "cnn" / "validation_predictions.csv")
    assert sorted(set(every["input"])) == ["latent", "shuffled_latent"]
    predictions = every[every["input"] == "latent"]
    assert len(predictions) == 4 * 4  # 4 validation maps × 4 crops of 5 × 5 windows
    assert set(predictions["sample"].str.contains("_s2_")) == {True}
    materials = pd.read_csv(dic / "materials.tsv", sep="\t").set_index("material")
    truth = materials.loc[predictions["material"], "YS"].to_numpy()
    np.testing.assert_allclose(predictions["YS_true"], truth)
    assert np.isfinite(predictions[[f"{p}_pred" for p in materials.columns]].to_numpy()).all()
    meta = json.loads((dic / "cnn" / "model.json").read_text())
    # both training specimens give the same number of crops, so the training mean is the mean
    np.testing.assert_allclose(meta["training_means"]["UTS"], materials["UTS"].mean())
    assert (
        meta["n_train_crops"] == 4 * 4 * 2 * 4
    )  # maps × reflections × (original + 1 copy) × crops
    baseline = pd.read_csv(dic / "cnn" / "baseline.csv")
    assert list(baseline["property"]) == list(materials.columns)
    assert np.isfinite(baseline["shuffled_latent_median_abs_rel_error"]).all()
    ranges = pd.read_csv(dic / "cnn" / "error_ranges.csv")
    assert list(ranges["material"]) == ["W_Nickel600", "W_Steel330", "all"]
    history = pd.read_csv(dic / "cnn" / "history.csv")
    assert {"train_loss", "val_loss", "val_rel_error"} <= set(history.columns)
    for name in ("cnn_parity", "cnn_distributions", "cnn_training", "umap_intensity"):
        assert (dic / "figures" / f"{name}.png").stat().st_size > 10_000, name


def test_extension_by_partial_retraining_and_transfer(synthetic_run: Path) -> None:
    import torch

    from latentmech.dic.vae import load_vae

    dic = synthetic_run / "results" / "dic"
    base, _ = load_vae(dic / "vae" / "intensity_reflect_mask" / "model.pt",
                       dic / "vae" / "intensity_reflect_mask" / "model.json")  # fmt: skip
    changed = {}
    for method in ("partial", "transfer"):
        model, meta = load_vae(dic / "extend" / method / "model.pt",
                               dic / "extend" / method / "model.json")  # fmt: skip
        assert meta["method"] == method
        history = pd.read_csv(dic / "extend" / method / "history.csv")
        assert np.isfinite(history[["val_old_loss", "val_new_loss"]].to_numpy()).all()
        new, old = model.state_dict(), base.state_dict()
        changed[method] = {k for k in old if not torch.equal(new[k], old[k])}
    assert any(k.startswith("decoder") for k in changed["partial"])  # every layer may retrain
    assert not any(k.startswith("decoder") for k in changed["transfer"])  # decoder frozen
    assert "encoder.mu.weight" in changed["transfer"]
    assert (dic / "figures" / "extension_losses.png").stat().st_size > 10_000


def test_changing_a_cnn_hyperparameter_reruns_only_the_cnn(synthetic_run: Path) -> None:
    config = tiny_synthetic_config()
    config["dic"]["cnn"]["train"]["lr"] = 5.0e-4
    assert _planned_with(synthetic_run, config) == {
        "dic_train_cnn": 1, "dic_predict_validation": 1, "dic_evaluate_cnn": 1,
    }  # fmt: skip


def test_adding_a_predict_specimen_encodes_and_predicts_only_it(synthetic_run: Path) -> None:
    config = tiny_synthetic_config()
    config["dic"]["synthetic"]["predict_specimens"] = 1  # 2 materials × 2 steps
    path = synthetic_run / "config.yaml"
    original = path.read_text()
    write_config(path, config)
    try:
        new_samples = {"dic_synthesize": 4, "dic_preprocess": 4, "dic_encode": 4, "dic_predict": 4}
        assert planned_jobs(synthetic_run) == new_samples
        snakemake(synthetic_run)
    finally:
        path.write_text(original)
    table = pd.read_csv(synthetic_run / "results" / "dic" / "predictions" / "W_Steel330_s3_t1.csv")
    assert len(table) == 4 and set(table["sample"]) == {"W_Steel330_s3_t1"}
    assert np.isfinite(table["FS_pred"]).all()


def test_report_bundles_every_figure_and_table(synthetic_run: Path) -> None:
    import zipfile

    snakemake(synthetic_run, "--report", "results/report.zip")
    with zipfile.ZipFile(synthetic_run / "results" / "report.zip") as bundle:
        names = "\n".join(bundle.namelist())
    for output in ("cnn_parity.png", "cnn_distributions.png", "cnn_training.png",
                   "umap_intensity.png", "extension_losses.png", "reconstructions.png",
                   "modalities_W_Nickel600.png", "reconstruction_table.csv",
                   "error_ranges.csv", "baseline.csv", "materials.tsv", "scores.csv"):  # fmt: skip
        assert output in names, output


# ---------------------------------------------------------------------------------------------
# sample sheets


def _write_sample(folder: Path, name: str, seed: int, specimen: str = "A") -> str:
    rng = np.random.default_rng(seed)
    exx = rng.normal(0.005, 0.001, (64, 96))
    exx[:3, :3] = np.nan
    intensity = np.zeros((64, 96))
    intensity[20:22, 10:60] = 40.0
    np.save(folder / f"{name}_exx.npy", exx)
    np.save(folder / f"{name}_int.npy", intensity)
    return f"{name}\tM1\t{specimen}\t{seed}\t{0.2 * seed}\t{300 + seed}\ttrain\t0.25\t{name}_exx.npy\t{name}_int.npy\n"


def _sheet_config(workdir: Path) -> dict:
    config = tiny_synthetic_config()
    config["dic"].update(
        source="sheet", samples=str(workdir / "samples.tsv"), modalities=["exx", "intensity"]
    )
    config["dic"]["extend"]["materials"] = []
    return config


def test_adding_a_sample_runs_only_its_jobs_and_the_aggregates(tmp_path: Path) -> None:
    header = "sample\tmaterial\tspecimen\tstep\tstrain_pct\tstress_mpa\trole\tpixel_size_um\texx\tintensity\n"
    rows = [_write_sample(tmp_path, f"S{i}", i) for i in (1, 2)]
    (tmp_path / "samples.tsv").write_text(header + "".join(rows))
    write_config(tmp_path / "config.yaml", _sheet_config(tmp_path))
    snakemake(tmp_path)
    raw = xr.open_zarr(tmp_path / "results" / "dic" / "raw" / "S1.zarr")
    assert raw.attrs["stress_mpa"] == 301 and raw.attrs["pixel_size_um"] == 0.25
    assert bool(np.isnan(raw["exx"].values[0, 0]))
    rows.append(_write_sample(tmp_path, "S3", 3, specimen="B"))  # not the figure's specimen
    (tmp_path / "samples.tsv").write_text(header + "".join(rows))
    jobs = planned_jobs(tmp_path)
    # exx and intensity with the paper's augmentations, intensity also without and with reflections
    # a training sample changes the database: VAEs, latent maps and UMAP follow (no CNN: the sheet
    # has no validation specimen and no materials table)
    vae_jobs = {"dic_train_vae": 4, "dic_reconstruction_table": 1, "dic_figure_reconstructions": 1,
                "dic_encode_database": 1, "dic_figure_umap": 1}  # fmt: skip
    per_sample = {"dic_ingest": 1, "dic_preprocess": 1, "dic_detect_events": 1, "dic_windows": 1}
    assert jobs == per_sample | vae_jobs


def test_bad_sample_sheet_stops_before_any_job(tmp_path: Path) -> None:
    header = "sample\tmaterial\tspecimen\tstep\tstrain_pct\tstress_mpa\trole\tpixel_size_um\texx\tintensity\n"
    row = _write_sample(tmp_path, "S1", 1)
    (tmp_path / "samples.tsv").write_text(header + row + row)
    write_config(tmp_path / "config.yaml", _sheet_config(tmp_path))
    result = snakemake(tmp_path, check=False)
    assert result.returncode != 0
    assert "duplicate sample id 'S1'" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_bad_config_key_stops_with_its_name(tmp_path: Path) -> None:
    config = tiny_synthetic_config()
    config["dic"]["windows"]["sise_px"] = 3
    write_config(tmp_path / "config.yaml", config)
    result = snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    assert "sise_px" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# real data


def test_real_davis_series_through_the_workflow(tmp_path: Path, real_data: Path) -> None:
    config = tiny_synthetic_config()
    preset = REPO / "workflow" / "presets" / "real_hrdic.yaml"
    shutil.copy(REPO / "workflow" / "presets" / "real_hrdic_samples.tsv", tmp_path / "samples.tsv")
    import yaml

    override = yaml.safe_load(preset.read_text())["dic"]
    config["dic"].update(override)
    config["dic"]["samples"] = str(tmp_path / "samples.tsv")
    write_config(tmp_path / "config.yaml", config)
    snakemake(tmp_path, env={"LATENTMECH_REAL_DATA": str(real_data)})
    dic = tmp_path / "results" / "dic"
    means = []
    for step in (1, 2, 3):
        raw = xr.open_zarr(dic / "raw" / f"p3-{step}.zarr")
        assert dict(raw.sizes) == {"y": 238, "x": 319}
        assert float(raw["x"][1] - raw["x"][0]) == pytest.approx(0.8)  # 8 px × 0.1 µm
        means.append(float(raw["exx"].mean()))
    assert means[0] < means[1] < means[2]  # the tile was imaged at increasing strain
    windows = xr.open_zarr(dic / "windows.zarr")
    assert windows.sizes["window"] == 3 * (238 // 32) * (319 // 32)
    events = pd.read_csv(dic / "events" / "p3-3.csv")
    assert len(events) > 5
    assert (dic / "figures" / "modalities_Ni_superalloy.png").exists()
    latent = xr.open_zarr(dic / "latent" / "p3-2.zarr")
    assert latent["mu_max_shear"].dims == ("y", "x", "latent")
    assert dict(latent.sizes) == {"y": 238 // 32, "x": 319 // 32, "latent": 128}
    assert (dic / "figures" / "umap_max_shear.png").exists()
    assert not (dic / "cnn").exists()  # no validation specimen, no known properties: no CNN
