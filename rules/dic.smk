# HR-DIC study (paper 000): raw maps → preprocessed maps → slip events → windows, figures.
# Rule dic_<name> ↔ latentmech.dic.stages.<name> ↔ `latentmech dic <name>`; what the rules
# compute from the config lives in latentmech.dic.plan.
from latentmech.dic.plan import DicPlan

DIC = config["dic"]
DIC_PLAN = DicPlan(DIC, RESULTS, SCHEMAS)
DIC_CODE = [
    "__init__.py",
    "cli.py",
    "core/store.py",
    "core/errors.py",
    "core/jsonconfig.py",
    "dic/stages.py",
]
DIC_VAE_CODE = [
    *DIC_CODE,
    "dic/vae.py",
    "dic/prep.py",
    "core/train.py",
    "core/distributed.py",
    "core/nn.py",
    "core/metrics.py",
]
DIC_LATENT_CODE = [
    *DIC_CODE,
    "dic/latent.py",
    "dic/vae.py",
    "dic/prep.py",
    "core/nn.py",
]
DIC_CNN_CODE = [*DIC_LATENT_CODE, "dic/cnn.py", "core/train.py", "core/distributed.py"]
DIC_EVAL_CODE = [*DIC_CODE, "dic/evaluate.py", "core/plots.py", "core/metrics.py"]


rule dic_materials:
    input:
        unpack(lambda w: {"table": DIC["materials"]} if DIC["materials"] else {}),
    output:
        report(
            DIC_PLAN.path("materials.tsv"),
            caption="../workflow/report/dic_materials.rst",
            category="HR-DIC",
        ),
    log:
        log("dic_materials"),
    conda:
        "../envs/dic.yaml"
    params:
        settings=as_json(DIC_PLAN.materials_settings()),
        table=lambda w, input: cli_option("--table", input.get("table")),
        code=code_digest(*DIC_CODE, "dic/synth.py", "dic/samples.py"),
    shell:
        "latentmech dic materials --output {output:q} {params.table} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


if DIC_PLAN.synthetic:

    rule dic_synthesize:
        output:
            raw=directory(DIC_PLAN.path("raw", "{sample}.zarr")),
        log:
            log("dic_synthesize", "{sample}"),
        benchmark:
            bench("dic_synthesize", "{sample}")
        conda:
            "../envs/dic.yaml"
        params:
            settings=lambda w: as_json(DIC_PLAN.synthesize_settings(w.sample)),
            code=code_digest(*DIC_CODE, "dic/synth.py"),
        shell:
            "latentmech dic synthesize --raw {output.raw:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"

else:

    rule dic_ingest:
        input:
            unpack(lambda w: DIC_PLAN.files(w.sample)),
        output:
            raw=directory(DIC_PLAN.path("raw", "{sample}.zarr")),
        log:
            log("dic_ingest", "{sample}"),
        benchmark:
            bench("dic_ingest", "{sample}")
        conda:
            "../envs/dic.yaml"
        params:
            settings=lambda w: as_json(
                {"sample": DIC_PLAN.row(w.sample), "modalities": DIC["modalities"]}
            ),
            code=code_digest(
                *DIC_CODE, "dic/io.py", "dic/kinematics.py", "dic/samples.py"
            ),
        shell:
            "latentmech dic ingest --raw {output.raw:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule dic_preprocess:
    input:
        raw=DIC_PLAN.path("raw", "{sample}.zarr"),
    output:
        prepped=directory(DIC_PLAN.path("prep", "{sample}.zarr")),
    log:
        log("dic_preprocess", "{sample}"),
    benchmark:
        bench("dic_preprocess", "{sample}")
    conda:
        "../envs/dic.yaml"
    params:
        settings=as_json({"modalities": DIC["modalities"], "prep": DIC["prep"]}),
        code=code_digest(*DIC_CODE, "dic/prep.py"),
    shell:
        "latentmech dic preprocess --raw {input.raw:q} --prepped {output.prepped:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule dic_detect_events:
    input:
        prepped=DIC_PLAN.path("prep", "{sample}.zarr"),
    output:
        labels=directory(DIC_PLAN.path("events", "{sample}.zarr")),
        table=DIC_PLAN.path("events", "{sample}.csv"),
    log:
        log("dic_detect_events", "{sample}"),
    benchmark:
        bench("dic_detect_events", "{sample}")
    conda:
        "../envs/dic.yaml"
    params:
        settings=as_json(DIC_PLAN.detection_settings()),
        code=code_digest(*DIC_CODE, "dic/events.py"),
    shell:
        "latentmech dic detect-events --prepped {input.prepped:q} --labels {output.labels:q} "
        "--table {output.table:q} --settings {params.settings:q} --code {params.code} "
        "> {log:q} 2>&1"


rule dic_event_scores:
    input:
        raw=DIC_PLAN.database("raw", "{sample}.zarr"),
        prepped=DIC_PLAN.database("prep", "{sample}.zarr"),
        labels=DIC_PLAN.database("events", "{sample}.zarr"),
    output:
        report(
            DIC_PLAN.path("events", "scores.csv"),
            caption="../workflow/report/dic_event_scores.rst",
            category="HR-DIC",
        ),
    log:
        log("dic_event_scores"),
    conda:
        "../envs/dic.yaml"
    params:
        settings=as_json(DIC["events"]),
        code=code_digest(*DIC_CODE, "dic/events.py"),
    shell:
        "latentmech dic event-scores --raw {input.raw:q} --prepped {input.prepped:q} "
        "--labels {input.labels:q} --output {output:q} --settings {params.settings:q} "
        "--code {params.code} > {log:q} 2>&1"


rule dic_windows:
    input:
        prepped=DIC_PLAN.database("prep", "{sample}.zarr"),
        labels=DIC_PLAN.database("events", "{sample}.zarr"),
    output:
        windows_zarr=directory(DIC_PLAN.path("windows.zarr")),
        windows_csv=DIC_PLAN.path("windows.csv"),
    log:
        log("dic_windows"),
    benchmark:
        bench("dic_windows")
    conda:
        "../envs/dic.yaml"
    params:
        settings=as_json(DIC["windows"]),
        code=code_digest(*DIC_CODE, "dic/prep.py"),
    shell:
        "latentmech dic windows --prepped {input.prepped:q} --labels {input.labels:q} "
        "--windows-zarr {output.windows_zarr:q} --windows-csv {output.windows_csv:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule dic_figure_modalities:
    input:
        raw=lambda w: DIC_PLAN.figure_raw(w.material),
    output:
        figure=report(
            DIC_PLAN.path("figures", "modalities_{material}.png"),
            caption="../workflow/report/dic_modalities.rst",
            category="HR-DIC",
        ),
    log:
        log("dic_figure_modalities", "{material}"),
    conda:
        "../envs/dic.yaml"
    params:
        settings=as_json(DIC_PLAN.figure_settings()),
        code=code_digest(*DIC_CODE, "core/plots.py", "dic/prep.py"),
    shell:
        "latentmech dic figure-modalities --raw {input.raw:q} --figure {output.figure:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule dic_train_vae:
    input:
        windows_zarr=DIC_PLAN.path("windows.zarr"),
    output:
        model=DIC_PLAN.path("vae", "{modality}_{augment}", "model.pt"),
        sidecar=DIC_PLAN.path("vae", "{modality}_{augment}", "model.json"),
        history=DIC_PLAN.path("vae", "{modality}_{augment}", "history.csv"),
        scores=DIC_PLAN.path("vae", "{modality}_{augment}", "scores.csv"),
    log:
        log("dic_train_vae", "{modality}_{augment}"),
    benchmark:
        bench("dic_train_vae", "{modality}_{augment}")
    wildcard_constraints:
        modality="[a-z_]+?",
        augment="none|reflect|reflect_mask",
    conda:
        "../envs/dic.yaml"
    threads: DIC["vae"]["threads"]
    resources:
        **gpus(DIC["vae"]["gpus"]),
    params:
        launcher=launcher(DIC["vae"]["gpus"]),
        settings=lambda w: as_json(
            DIC_PLAN.vae_settings(w.modality, w.augment, code_digest(*DIC_VAE_CODE))
        ),
        code=code_digest(*DIC_VAE_CODE),
    shell:
        "{params.launcher} dic train-vae --windows-zarr {input.windows_zarr:q} "
        "--model {output.model:q} --sidecar {output.sidecar:q} --history {output.history:q} "
        "--scores {output.scores:q} --settings {params.settings:q} --code {params.code} "
        "> {log:q} 2>&1"


rule dic_reconstruction_table:
    input:
        scores=DIC_PLAN.vae_scores(),
    output:
        table=report(
            DIC_PLAN.path("vae", "reconstruction_table.csv"),
            caption="../workflow/report/dic_reconstruction_table.rst",
            category="HR-DIC",
        ),
    log:
        log("dic_reconstruction_table"),
    conda:
        "../envs/dic.yaml"
    params:
        settings=as_json({"variants": DIC_PLAN.vae_variants()}),
        code=code_digest(*DIC_CODE),
    shell:
        "latentmech dic reconstruction-table --scores {input.scores:q} --table {output.table:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule dic_figure_reconstructions:
    input:
        windows_zarr=DIC_PLAN.path("windows.zarr"),
        models=DIC_PLAN.vae_files("model.pt", DIC_PLAN.compared_variants()),
        sidecars=DIC_PLAN.vae_files("model.json", DIC_PLAN.compared_variants()),
    output:
        figure=report(
            DIC_PLAN.path("figures", "reconstructions.png"),
            caption="../workflow/report/dic_reconstructions.rst",
            category="HR-DIC",
        ),
    log:
        log("dic_figure_reconstructions"),
    conda:
        "../envs/dic.yaml"
    params:
        settings=as_json({"modality": DIC["vae"]["compare_modality"]}),
        code=code_digest(*DIC_CODE, "dic/vae.py", "core/plots.py"),
    shell:
        "latentmech dic figure-reconstructions --windows-zarr {input.windows_zarr:q} "
        "--models {input.models:q} --sidecars {input.sidecars:q} --figure {output.figure:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


# Latent maps: the database samples (train, validation) in jobs of dic.latent.chunk_samples
# samples, each loading the VAEs once (chunks keep planning linear in the number of samples);
# each `predict` sample in its own job, so adding one encodes only it.
for chunk, chunk_samples in enumerate(DIC_PLAN.encode_chunks()):

    rule:
        name:
            f"dic_encode_database_{chunk}"
        input:
            raw=DIC_PLAN.paths("raw", "{sample}.zarr", samples=chunk_samples),
            prepped=DIC_PLAN.paths("prep", "{sample}.zarr", samples=chunk_samples),
            models=DIC_PLAN.vae_files("model.pt", DIC_PLAN.latent_variants()),
            sidecars=DIC_PLAN.vae_files("model.json", DIC_PLAN.latent_variants()),
        output:
            latent=[
                directory(p)
                for p in DIC_PLAN.paths(
                    "latent", "{sample}.zarr", samples=chunk_samples
                )
            ],
        log:
            log("dic_encode_database", str(chunk)),
        benchmark:
            bench("dic_encode_database", str(chunk))
        conda:
            "../envs/dic.yaml"
        threads: DIC["latent"]["threads"]
        params:
            settings=as_json(DIC_PLAN.encode_settings()),
            code=code_digest(*DIC_LATENT_CODE),
        shell:
            "latentmech dic encode --raw {input.raw:q} --prepped {input.prepped:q} "
            "--models {input.models:q} --sidecars {input.sidecars:q} "
            "--latent {output.latent:q} --settings {params.settings:q} "
            "--code {params.code} > {log:q} 2>&1"


rule dic_encode:
    input:
        raw=DIC_PLAN.path("raw", "{sample}.zarr"),
        prepped=DIC_PLAN.path("prep", "{sample}.zarr"),
        models=DIC_PLAN.vae_files("model.pt", DIC_PLAN.latent_variants()),
        sidecars=DIC_PLAN.vae_files("model.json", DIC_PLAN.latent_variants()),
    output:
        latent=directory(DIC_PLAN.path("latent", "{sample}.zarr")),
    log:
        log("dic_encode", "{sample}"),
    wildcard_constraints:
        sample=DIC_PLAN.predict_pattern(),
    conda:
        "../envs/dic.yaml"
    threads: DIC["latent"]["threads"]
    params:
        settings=as_json(DIC_PLAN.encode_settings()),
        code=code_digest(*DIC_LATENT_CODE),
    shell:
        "latentmech dic encode --raw {input.raw:q} --prepped {input.prepped:q} "
        "--models {input.models:q} --sidecars {input.sidecars:q} --latent {output.latent:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule dic_figure_umap:
    input:
        latent=DIC_PLAN.database("latent", "{sample}.zarr"),
    output:
        figure=report(
            DIC_PLAN.path("figures", "umap_{modality}.png"),
            caption="../workflow/report/dic_umap.rst",
            category="HR-DIC",
            subcategory="Latent space",
        ),
    log:
        log("dic_figure_umap", "{modality}"),
    benchmark:
        bench("dic_figure_umap", "{modality}")
    conda:
        "../envs/dic.yaml"
    params:
        settings=lambda w: as_json(DIC_PLAN.umap_settings(w.modality)),
        code=code_digest(*DIC_EVAL_CODE),
    shell:
        "latentmech dic figure-umap --latent {input.latent:q} --figure {output.figure:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


if DIC_PLAN.cnn_enabled:

    rule dic_cnn_dataset:
        input:
            windows_zarr=DIC_PLAN.path("windows.zarr"),
            latent=DIC_PLAN.each("latent", "{sample}.zarr", roles=("train",)),
            model=DIC_PLAN.vae_files("model.pt", [DIC_PLAN.cnn_variant()]),
            sidecar=DIC_PLAN.vae_files("model.json", [DIC_PLAN.cnn_variant()]),
        output:
            dataset=directory(DIC_PLAN.path("cnn", "train_maps.zarr")),
        log:
            log("dic_cnn_dataset"),
        benchmark:
            bench("dic_cnn_dataset")
        conda:
            "../envs/dic.yaml"
        threads: DIC["cnn"]["threads"]
        params:
            settings=as_json(DIC_PLAN.cnn_dataset_settings()),
            code=code_digest(*DIC_LATENT_CODE, "dic/augment.py"),
        shell:
            "latentmech dic cnn-dataset --windows-zarr {input.windows_zarr:q} "
            "--latent {input.latent:q} --model {input.model:q} --sidecar {input.sidecar:q} "
            "--dataset {output.dataset:q} --settings {params.settings:q} --code {params.code} "
            "> {log:q} 2>&1"

    rule dic_train_cnn:
        input:
            dataset=DIC_PLAN.path("cnn", "train_maps.zarr"),
            latent=DIC_PLAN.each("latent", "{sample}.zarr", roles=("validation",)),
            materials=DIC_PLAN.path("materials.tsv"),
        output:
            model=DIC_PLAN.path("cnn", "model.pt"),
            sidecar=DIC_PLAN.path("cnn", "model.json"),
            history=DIC_PLAN.path("cnn", "history.csv"),
        log:
            log("dic_train_cnn"),
        benchmark:
            bench("dic_train_cnn")
        conda:
            "../envs/dic.yaml"
        threads: DIC["cnn"]["threads"]
        resources:
            **gpus(DIC["cnn"]["gpus"]),
        params:
            launcher=launcher(DIC["cnn"]["gpus"]),
            settings=as_json(DIC_PLAN.cnn_settings(code_digest(*DIC_CNN_CODE))),
            code=code_digest(*DIC_CNN_CODE),
        shell:
            "{params.launcher} dic train-cnn --dataset {input.dataset:q} --latent {input.latent:q} "
            "--materials {input.materials:q} --model {output.model:q} "
            "--sidecar {output.sidecar:q} --history {output.history:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"

    rule dic_predict_validation:
        input:
            latent=DIC_PLAN.each("latent", "{sample}.zarr", roles=("validation",)),
            model=DIC_PLAN.path("cnn", "model.pt"),
            sidecar=DIC_PLAN.path("cnn", "model.json"),
            materials=DIC_PLAN.path("materials.tsv"),
        output:
            predictions=DIC_PLAN.path("cnn", "validation_predictions.csv"),
        log:
            log("dic_predict_validation"),
        conda:
            "../envs/dic.yaml"
        params:
            settings=as_json(DIC_PLAN.predict_settings(shuffle_check=True)),
            code=code_digest(*DIC_CNN_CODE),
        shell:
            "latentmech dic predict --latent {input.latent:q} --model {input.model:q} "
            "--sidecar {input.sidecar:q} --materials {input.materials:q} "
            "--predictions {output.predictions:q} --settings {params.settings:q} "
            "--code {params.code} > {log:q} 2>&1"

    rule dic_predict:
        input:
            latent=DIC_PLAN.path("latent", "{sample}.zarr"),
            model=DIC_PLAN.path("cnn", "model.pt"),
            sidecar=DIC_PLAN.path("cnn", "model.json"),
            materials=DIC_PLAN.path("materials.tsv"),
        output:
            predictions=report(
                DIC_PLAN.path("predictions", "{sample}.csv"),
                caption="../workflow/report/dic_predictions.rst",
                category="HR-DIC",
                subcategory="Predictions",
            ),
        log:
            log("dic_predict", "{sample}"),
        wildcard_constraints:
            sample=DIC_PLAN.predict_pattern(),
        conda:
            "../envs/dic.yaml"
        params:
            settings=as_json(DIC_PLAN.predict_settings()),
            code=code_digest(*DIC_CNN_CODE),
        shell:
            "latentmech dic predict --latent {input.latent:q} --model {input.model:q} "
            "--sidecar {input.sidecar:q} --materials {input.materials:q} "
            "--predictions {output.predictions:q} --settings {params.settings:q} "
            "--code {params.code} > {log:q} 2>&1"

    rule dic_evaluate_cnn:
        input:
            predictions=DIC_PLAN.path("cnn", "validation_predictions.csv"),
            sidecar=DIC_PLAN.path("cnn", "model.json"),
            history=DIC_PLAN.path("cnn", "history.csv"),
        output:
            ranges=report(
                DIC_PLAN.path("cnn", "error_ranges.csv"),
                caption="../workflow/report/dic_error_ranges.rst",
                category="HR-DIC",
                subcategory="Property CNN",
            ),
            baseline=report(
                DIC_PLAN.path("cnn", "baseline.csv"),
                caption="../workflow/report/dic_baseline.rst",
                category="HR-DIC",
                subcategory="Property CNN",
            ),
            parity=report(
                DIC_PLAN.path("figures", "cnn_parity.png"),
                caption="../workflow/report/dic_cnn_parity.rst",
                category="HR-DIC",
                subcategory="Property CNN",
            ),
            distributions=report(
                DIC_PLAN.path("figures", "cnn_distributions.png"),
                caption="../workflow/report/dic_cnn_distributions.rst",
                category="HR-DIC",
                subcategory="Property CNN",
            ),
            curves=report(
                DIC_PLAN.path("figures", "cnn_training.png"),
                caption="../workflow/report/dic_cnn_training.rst",
                category="HR-DIC",
                subcategory="Property CNN",
            ),
        log:
            log("dic_evaluate_cnn"),
        conda:
            "../envs/dic.yaml"
        params:
            settings=as_json({}),
            code=code_digest(*DIC_EVAL_CODE),
        shell:
            "latentmech dic evaluate-cnn --predictions {input.predictions:q} "
            "--sidecar {input.sidecar:q} --history {input.history:q} --ranges {output.ranges:q} "
            "--baseline {output.baseline:q} --parity {output.parity:q} "
            "--distributions {output.distributions:q} --curves {output.curves:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


# Extending the database with new materials (paper Fig. 13).
if DIC_PLAN.extension_enabled:

    rule dic_extend_windows:
        input:
            prepped=DIC_PLAN.each("prep", "{sample}.zarr", roles=("extend",)),
            labels=DIC_PLAN.each("events", "{sample}.zarr", roles=("extend",)),
        output:
            windows_zarr=directory(DIC_PLAN.path("extend", "windows.zarr")),
            windows_csv=DIC_PLAN.path("extend", "windows.csv"),
        log:
            log("dic_extend_windows"),
        conda:
            "../envs/dic.yaml"
        params:
            settings=as_json(DIC["windows"]),
            code=code_digest(*DIC_CODE, "dic/prep.py"),
        shell:
            "latentmech dic windows --prepped {input.prepped:q} --labels {input.labels:q} "
            "--windows-zarr {output.windows_zarr:q} --windows-csv {output.windows_csv:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"

    rule dic_extend_vae:
        input:
            windows_zarr=DIC_PLAN.path("windows.zarr"),
            new_windows_zarr=DIC_PLAN.path("extend", "windows.zarr"),
            model=DIC_PLAN.vae_files("model.pt", [DIC_PLAN.extension_variant()]),
            sidecar=DIC_PLAN.vae_files("model.json", [DIC_PLAN.extension_variant()]),
        output:
            model=DIC_PLAN.path("extend", "{method}", "model.pt"),
            sidecar=DIC_PLAN.path("extend", "{method}", "model.json"),
            history=DIC_PLAN.path("extend", "{method}", "history.csv"),
        log:
            log("dic_extend_vae", "{method}"),
        benchmark:
            bench("dic_extend_vae", "{method}")
        wildcard_constraints:
            method="partial|transfer",
        conda:
            "../envs/dic.yaml"
        threads: DIC["extend"]["threads"]
        resources:
            **gpus(DIC["extend"]["gpus"]),
        params:
            launcher=launcher(DIC["extend"]["gpus"]),
            settings=lambda w: as_json(
                DIC_PLAN.extension_settings(
                    w.method, code_digest(*DIC_VAE_CODE, "dic/retrain.py")
                )
            ),
            code=code_digest(*DIC_VAE_CODE, "dic/retrain.py"),
        shell:
            "{params.launcher} dic extend-vae --windows-zarr {input.windows_zarr:q} "
            "--new-windows-zarr {input.new_windows_zarr:q} --model {input.model:q} "
            "--sidecar {input.sidecar:q} --output-model {output.model:q} "
            "--output-sidecar {output.sidecar:q} --history {output.history:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"

    rule dic_figure_extension:
        input:
            histories=[
                DIC_PLAN.path("extend", m, "history.csv")
                for m in ("partial", "transfer")
            ],
            reference=DIC_PLAN.vae_files("history.csv", [DIC_PLAN.extension_variant()]),
        output:
            figure=report(
                DIC_PLAN.path("figures", "extension_losses.png"),
                caption="../workflow/report/dic_extension.rst",
                category="HR-DIC",
                subcategory="Latent space",
            ),
        log:
            log("dic_figure_extension"),
        conda:
            "../envs/dic.yaml"
        params:
            settings=as_json({"methods": ["partial", "transfer"]}),
            code=code_digest(*DIC_EVAL_CODE),
        shell:
            "latentmech dic figure-extension --histories {input.histories:q} "
            "--reference {input.reference:q} --figure {output.figure:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"
