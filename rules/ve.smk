# Volume-element study (paper 001): VEs → fundamental zone → 3D VAE fingerprints → crystal
# plasticity → surrogate. Rule ve_<name> ↔ latentmech.ve.stages.<name> ↔ `latentmech ve <name>`;
# what the rules compute from the config lives in latentmech.ve.plan.
from latentmech.ve.plan import VePlan

VE = config["ve"]
VE_PLAN = VePlan(VE, RESULTS, SCHEMAS)
VE_CODE = [
    "__init__.py",
    "cli.py",
    "core/store.py",
    "core/errors.py",
    "core/jsonconfig.py",
    "ve/stages.py",
]
VE_ORIENTATION_CODE = [*VE_CODE, "ve/orientation.py"]
VE_VAE_CODE = [
    *VE_CODE,
    "ve/vae3d.py",
    "core/train.py",
    "core/distributed.py",
    "core/workflow.py",
]
VE_PLOT_CODE = [*VE_CODE, "ve/vae3d.py", "core/plots.py"]
VE_SURROGATE_CODE = [
    *VE_CODE,
    "ve/surrogate.py",
    "core/train.py",
    "core/distributed.py",
    "core/workflow.py",
]


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    collection="[A-Za-z0-9][A-Za-z0-9_-]*",
    shard="[0-9]+",


rule ve_generate:
    output:
        shard=directory(
            VE_PLAN.path("generated", "{dataset}", "{collection}", "{shard}.zarr")
        ),
    log:
        log("ve_generate", "{dataset}_{collection}_{shard}"),
    benchmark:
        bench("ve_generate", "{dataset}_{collection}_{shard}")
    conda:
        "../envs/ve.yaml"
    params:
        settings=lambda w: as_json(
            VE_PLAN.generate_settings(w.dataset, w.collection, int(w.shard))
        ),
        code=code_digest(*VE_CODE, "ve/generate.py"),
    shell:
        "latentmech ve generate --shard {output.shard:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule ve_ingest:
    input:
        files=lambda w: VE_PLAN.ingest_files(w.dataset, w.collection, int(w.shard)),
    output:
        shard=directory(
            VE_PLAN.path("ingested", "{dataset}", "{collection}", "{shard}.zarr")
        ),
    log:
        log("ve_ingest", "{dataset}_{collection}_{shard}"),
    conda:
        "../envs/ve.yaml"
    params:
        settings=lambda w: as_json(
            VE_PLAN.ingest_settings(w.dataset, w.collection, int(w.shard))
        ),
        code=code_digest(*VE_ORIENTATION_CODE, "ve/io.py"),
    shell:
        "latentmech ve ingest --shard {output.shard:q} --files {input.files:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule ve_dataset:
    input:
        shards=lambda w: VE_PLAN.shard_paths(w.dataset, w.part),
    output:
        ves=directory(VE_PLAN.path("{dataset}", "{part}.zarr")),
    log:
        log("ve_dataset", "{dataset}_{part}"),
    benchmark:
        bench("ve_dataset", "{dataset}_{part}")
    wildcard_constraints:
        part="ves|edges",
    conda:
        "../envs/ve.yaml"
    params:
        settings=lambda w: as_json(VE_PLAN.dataset_settings(w.dataset)),
        code=code_digest(*VE_ORIENTATION_CODE),
    shell:
        "latentmech ve dataset --shards {input.shards:q} --ves {output.ves:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule ve_train_vae:
    input:
        ves=VE_PLAN.path("{dataset}", "ves.zarr"),
    output:
        model=VE_PLAN.path("{dataset}", "vae3d", "model.pt"),
        sidecar=VE_PLAN.path("{dataset}", "vae3d", "model.json"),
        history=VE_PLAN.path("{dataset}", "vae3d", "history.csv"),
    log:
        log("ve_train_vae", "{dataset}"),
    benchmark:
        bench("ve_train_vae", "{dataset}")
    conda:
        "../envs/ve.yaml"
    threads: VE["vae"]["threads"]
    resources:
        **gpus(VE["vae"]["gpus"]),
    params:
        launcher=launcher(VE["vae"]["gpus"]),
        settings=lambda w: as_json(
            VE_PLAN.vae_settings(w.dataset, code_digest(*VE_VAE_CODE))
        ),
        code=code_digest(*VE_VAE_CODE),
    shell:
        "{params.launcher} ve train-vae --ves {input.ves:q} --model {output.model:q} "
        "--sidecar {output.sidecar:q} --history {output.history:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule ve_encode:
    input:
        ves=lambda w: VE_PLAN.stores(w.dataset),
        model=VE_PLAN.path("{dataset}", "vae3d", "model.pt"),
        sidecar=VE_PLAN.path("{dataset}", "vae3d", "model.json"),
    output:
        fingerprints=directory(VE_PLAN.path("{dataset}", "fingerprints.zarr")),
        scores=VE_PLAN.path("{dataset}", "vae3d", "scores.csv"),
    log:
        log("ve_encode", "{dataset}"),
    benchmark:
        bench("ve_encode", "{dataset}")
    conda:
        "../envs/ve.yaml"
    threads: VE["vae"]["threads"]
    params:
        settings=lambda w: as_json(VE_PLAN.encode_settings(w.dataset)),
        code=code_digest(*VE_ORIENTATION_CODE, "ve/vae3d.py"),
    shell:
        "latentmech ve encode --ves {input.ves:q} --model {input.model:q} "
        "--sidecar {input.sidecar:q} --fingerprints {output.fingerprints:q} "
        "--scores {output.scores:q} --settings {params.settings:q} --code {params.code} "
        "> {log:q} 2>&1"


rule ve_reconstruction_table:
    input:
        scores=[VE_PLAN.path(d, "vae3d", "scores.csv") for d in VE_PLAN.datasets],
    output:
        table=report(
            VE_PLAN.path("tables", "reconstruction.csv"),
            caption="../workflow/report/ve_reconstruction_table.rst",
            category="Volume elements",
        ),
    log:
        log("ve_reconstruction_table"),
    conda:
        "../envs/ve.yaml"
    params:
        settings=as_json({}),
        code=code_digest(*VE_CODE),
    shell:
        "latentmech ve reconstruction-table --scores {input.scores:q} --table {output.table:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule ve_figure_reconstructions:
    input:
        ves=lambda w: VE_PLAN.stores(w.dataset),
        model=VE_PLAN.path("{dataset}", "vae3d", "model.pt"),
        sidecar=VE_PLAN.path("{dataset}", "vae3d", "model.json"),
    output:
        figure=report(
            VE_PLAN.path("figures", "reconstructions_{dataset}.png"),
            caption="../workflow/report/ve_reconstructions.rst",
            category="Volume elements",
        ),
    log:
        log("ve_figure_reconstructions", "{dataset}"),
    conda:
        "../envs/ve.yaml"
    params:
        settings=lambda w: as_json({"dataset": w.dataset}),
        code=code_digest(*VE_PLOT_CODE),
    shell:
        "latentmech ve figure-reconstructions --ves {input.ves:q} --model {input.model:q} "
        "--sidecar {input.sidecar:q} --figure {output.figure:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule ve_latent:
    input:
        ves=VE_PLAN.stores(VE_PLAN.latent_dataset),
        model=VE_PLAN.path(VE_PLAN.latent_dataset, "vae3d", "model.pt"),
        sidecar=VE_PLAN.path(VE_PLAN.latent_dataset, "vae3d", "model.json"),
        fingerprints=VE_PLAN.path(VE_PLAN.latent_dataset, "fingerprints.zarr"),
    output:
        path_figure=report(
            VE_PLAN.path("figures", "latent_path.png"),
            caption="../workflow/report/ve_latent_path.rst",
            category="Volume elements",
        ),
        pca_figure=report(
            VE_PLAN.path("figures", "latent_pca.png"),
            caption="../workflow/report/ve_latent_pca.rst",
            category="Volume elements",
        ),
        clustering=report(
            VE_PLAN.path("tables", "clustering.csv"),
            caption="../workflow/report/ve_clustering.rst",
            category="Volume elements",
        ),
    log:
        log("ve_latent"),
    conda:
        "../envs/ve.yaml"
    params:
        settings=as_json(VE_PLAN.latent_settings()),
        code=code_digest(*VE_PLOT_CODE, "ve/latent.py"),
    shell:
        "latentmech ve latent --ves {input.ves:q} --model {input.model:q} "
        "--sidecar {input.sidecar:q} --fingerprints {input.fingerprints:q} "
        "--path-figure {output.path_figure:q} --pca-figure {output.pca_figure:q} "
        "--clustering {output.clustering:q} --settings {params.settings:q} "
        "--code {params.code} > {log:q} 2>&1"


if VE_PLAN.cp_dataset:
    VE_CP = VE_PLAN.path(VE_PLAN.cp_dataset, "cp", VE["cp"]["backend"], "responses.csv")
    VE_SURROGATE = VE_PLAN.path(VE_PLAN.cp_dataset, "surrogate")
    VE_FINGERPRINTS = VE_PLAN.path(VE_PLAN.cp_dataset, "fingerprints.zarr")

    rule ve_responses:
        input:
            ves=VE_PLAN.path(VE_PLAN.cp_dataset, "ves.zarr"),
        output:
            table=VE_CP,
        log:
            log("ve_responses"),
        benchmark:
            bench("ve_responses")
        conda:
            "../envs/ve.yaml"
        threads: VE["cp"]["threads"]
        params:
            settings=as_json(VE_PLAN.cp_settings()),
            code=code_digest(*VE_ORIENTATION_CODE, "ve/cp.py", "ve/io.py"),
        shell:
            "latentmech ve responses --ves {input.ves:q} --table {output.table:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"

    rule ve_train_surrogate:
        input:
            fingerprints=VE_FINGERPRINTS,
            responses=VE_CP,
        output:
            model=f"{VE_SURROGATE}/model.pt",
            sidecar=f"{VE_SURROGATE}/model.json",
            history=f"{VE_SURROGATE}/history.csv",
        log:
            log("ve_train_surrogate"),
        benchmark:
            bench("ve_train_surrogate")
        conda:
            "../envs/ve.yaml"
        threads: VE["surrogate"]["threads"]
        resources:
            **gpus(VE["surrogate"]["gpus"]),
        params:
            launcher=launcher(VE["surrogate"]["gpus"]),
            settings=as_json(
                VE_PLAN.surrogate_settings(code_digest(*VE_SURROGATE_CODE))
            ),
            code=code_digest(*VE_SURROGATE_CODE),
        shell:
            "{params.launcher} ve train-surrogate --fingerprints {input.fingerprints:q} "
            "--responses {input.responses:q} --model {output.model:q} "
            "--sidecar {output.sidecar:q} --history {output.history:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"

    rule ve_evaluate_surrogate:
        input:
            fingerprints=VE_FINGERPRINTS,
            responses=VE_CP,
            model=f"{VE_SURROGATE}/model.pt",
            sidecar=f"{VE_SURROGATE}/model.json",
        output:
            table=report(
                VE_PLAN.path("tables", "surrogate.csv"),
                caption="../workflow/report/ve_surrogate_table.rst",
                category="Volume elements",
            ),
            increments=VE_PLAN.path("tables", "surrogate_increments.csv"),
            figure=report(
                VE_PLAN.path("figures", "surrogate.png"),
                caption="../workflow/report/ve_surrogate.rst",
                category="Volume elements",
            ),
        log:
            log("ve_evaluate_surrogate"),
        conda:
            "../envs/ve.yaml"
        params:
            settings=as_json(
                {
                    "load": VE["cp"]["load"],
                    "examples": VE["surrogate"]["examples"],
                }
            ),
            code=code_digest(*VE_SURROGATE_CODE, "core/plots.py"),
        shell:
            "latentmech ve evaluate-surrogate --fingerprints {input.fingerprints:q} "
            "--responses {input.responses:q} --model {input.model:q} "
            "--sidecar {input.sidecar:q} --table {output.table:q} "
            "--increments {output.increments:q} --figure {output.figure:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"
