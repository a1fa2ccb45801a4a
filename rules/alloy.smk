# Alloy study (paper 003): LAMMPS dumps → block fields → AlloyVAE → self-checked predictions and
# inverse design. Rule alloy_<name> ↔ latentmech.alloy.stages.<name> ↔ `latentmech alloy <name>`;
# what the rules compute from the config lives in latentmech.alloy.plan.
from latentmech.alloy.plan import AlloyPlan

ALLOY = config["alloy"]
ALLOY_PLAN = AlloyPlan(ALLOY, RESULTS, SCHEMAS)
# What each rule's code digest covers: the LAMMPS and fields jobs not alloy/stages.py (an edit
# there must not rerun the MD), the training and Algorithm 2 not alloy/figures.py.
ALLOY_CODE = [
    "__init__.py",
    "cli.py",
    "core/store.py",
    "core/errors.py",
    "core/jsonconfig.py",
    "alloy/atomistic.py",
]
ALLOY_MODEL_CODE = [*ALLOY_CODE, "alloy/stages.py", "alloy/cvae.py"]
ALLOY_TRAIN_CODE = [
    *ALLOY_MODEL_CODE,
    "core/train.py",
    "core/distributed.py",
    "core/workflow.py",
    "core/nn.py",
]
ALLOY_PLOT_CODE = [*ALLOY_MODEL_CODE, "alloy/figures.py", "core/plots.py"]
ALLOY_DATASET = ALLOY_PLAN.path("fields.zarr")
ALLOY_MODEL = ALLOY_PLAN.path("cvae", "model.pt")
ALLOY_SIDECAR = ALLOY_PLAN.path("cvae", "model.json")


wildcard_constraints:
    method="random|fixed",


if ALLOY["source"] == "lammps":

    rule alloy_md:
        output:
            dump=ALLOY_PLAN.path("dumps", "{sample}.dump"),
            lammps_log=ALLOY_PLAN.path("dumps", "{sample}.lammps.log"),
        log:
            log("alloy_md", "{sample}"),
        benchmark:
            bench("alloy_md", "{sample}")
        conda:
            "../envs/alloy.yaml"
        threads: ALLOY["md"].get("ranks", 1)
        params:
            settings=lambda w: as_json(ALLOY_PLAN.md_settings(w.sample)),
            code=code_digest(*ALLOY_CODE, "alloy/md.py"),
        shell:
            "latentmech alloy md --dump {output.dump:q} --lammps-log {output.lammps_log:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule alloy_fields:
    input:
        dump=lambda w: ALLOY_PLAN.dump(w.sample),
    output:
        fields=directory(ALLOY_PLAN.path("fields", "{sample}.zarr")),
    log:
        log("alloy_fields", "{sample}"),
    benchmark:
        bench("alloy_fields", "{sample}")
    conda:
        "../envs/alloy.yaml"
    threads: 1
    params:
        settings=lambda w: as_json(ALLOY_PLAN.fields_settings(w.sample)),
        code=code_digest(
            *ALLOY_CODE,
            "alloy/dump.py",
            "alloy/blocks.py",
            *(["alloy/md.py"] if ALLOY["eigenstrain"] else []),
        ),
    shell:
        "latentmech alloy fields --dump {input.dump:q} --fields {output.fields:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule alloy_dataset:
    input:
        fields=ALLOY_PLAN.field_paths(),
    output:
        dataset=directory(ALLOY_DATASET),
        scalers=ALLOY_PLAN.path("scalers.json"),
    log:
        log("alloy_dataset"),
    conda:
        "../envs/alloy.yaml"
    params:
        settings=as_json(ALLOY_PLAN.dataset_settings()),
        code=code_digest(*ALLOY_MODEL_CODE),
    shell:
        "latentmech alloy dataset --fields {input.fields:q} --dataset {output.dataset:q} "
        "--scalers {output.scalers:q} --settings {params.settings:q} --code {params.code} "
        "> {log:q} 2>&1"


rule alloy_train_cvae:
    input:
        dataset=ALLOY_DATASET,
    output:
        model=ALLOY_MODEL,
        sidecar=ALLOY_SIDECAR,
        history=ALLOY_PLAN.path("cvae", "history.csv"),
    log:
        log("alloy_train_cvae"),
    benchmark:
        bench("alloy_train_cvae")
    conda:
        "../envs/alloy.yaml"
    threads: ALLOY["cvae"]["threads"]
    resources:
        **gpus(ALLOY["cvae"]["gpus"]),
    params:
        launcher=launcher(ALLOY["cvae"]["gpus"]),
        settings=as_json(ALLOY_PLAN.cvae_settings(code_digest(*ALLOY_TRAIN_CODE))),
        code=code_digest(*ALLOY_TRAIN_CODE),
    shell:
        "{params.launcher} alloy train-cvae --dataset {input.dataset:q} "
        "--model {output.model:q} --sidecar {output.sidecar:q} --history {output.history:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule alloy_evaluate:
    input:
        dataset=ALLOY_DATASET,
        model=ALLOY_MODEL,
        sidecar=ALLOY_SIDECAR,
    output:
        table=report(
            ALLOY_PLAN.path("tables", "reconstruction.csv"),
            caption="../workflow/report/alloy_reconstruction_table.rst",
            category="Alloy",
        ),
        reconstruction=report(
            ALLOY_PLAN.path("figures", "reconstruction.png"),
            caption="../workflow/report/alloy_reconstruction.rst",
            category="Alloy",
        ),
        conditions=report(
            ALLOY_PLAN.path("figures", "conditions.png"),
            caption="../workflow/report/alloy_conditions.rst",
            category="Alloy",
        ),
    log:
        log("alloy_evaluate"),
    conda:
        "../envs/alloy.yaml"
    threads: ALLOY["cvae"]["threads"]
    params:
        settings=as_json(ALLOY_PLAN.evaluate_settings()),
        code=code_digest(*ALLOY_PLOT_CODE),
    shell:
        "latentmech alloy evaluate --dataset {input.dataset:q} --model {input.model:q} "
        "--sidecar {input.sidecar:q} --table {output.table:q} "
        "--reconstruction {output.reconstruction:q} --conditions {output.conditions:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule alloy_sample:
    input:
        dataset=ALLOY_DATASET,
        model=ALLOY_MODEL,
        sidecar=ALLOY_SIDECAR,
    output:
        predictions=directory(ALLOY_PLAN.path("predictions.zarr")),
        table=report(
            ALLOY_PLAN.path("tables", "sampling.csv"),
            caption="../workflow/report/alloy_sampling.rst",
            category="Alloy",
        ),
        figure=report(
            ALLOY_PLAN.path("figures", "predictions.png"),
            caption="../workflow/report/alloy_predictions.rst",
            category="Alloy",
        ),
    log:
        log("alloy_sample"),
    benchmark:
        bench("alloy_sample")
    conda:
        "../envs/alloy.yaml"
    threads: ALLOY["cvae"]["threads"]
    params:
        settings=as_json(ALLOY_PLAN.sampling_settings()),
        code=code_digest(*ALLOY_PLOT_CODE, "alloy/sampling.py"),
    shell:
        "latentmech alloy sample --dataset {input.dataset:q} --model {input.model:q} "
        "--sidecar {input.sidecar:q} --predictions {output.predictions:q} "
        "--table {output.table:q} --figure {output.figure:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule alloy_design:
    input:
        dataset=ALLOY_DATASET,
        model=ALLOY_MODEL,
        sidecar=ALLOY_SIDECAR,
    output:
        design=directory(ALLOY_PLAN.path("design", "{method}.zarr")),
    log:
        log("alloy_design", "{method}"),
    benchmark:
        bench("alloy_design", "{method}")
    conda:
        "../envs/alloy.yaml"
    threads: ALLOY["cvae"]["threads"]
    params:
        settings=lambda w: as_json(ALLOY_PLAN.design_settings(w.method)),
        code=code_digest(*ALLOY_MODEL_CODE, "alloy/design.py", "alloy/sampling.py"),
    shell:
        "latentmech alloy design --dataset {input.dataset:q} --model {input.model:q} "
        "--sidecar {input.sidecar:q} --design {output.design:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule alloy_design_summary:
    input:
        dataset=ALLOY_DATASET,
        designs=[ALLOY_PLAN.path("design", f"{m}.zarr") for m in ALLOY_PLAN.methods],
    output:
        table=report(
            ALLOY_PLAN.path("tables", "design.csv"),
            caption="../workflow/report/alloy_design_table.rst",
            category="Alloy",
        ),
        clusters=report(
            ALLOY_PLAN.path("tables", "design_clusters.csv"),
            caption="../workflow/report/alloy_design_clusters.rst",
            category="Alloy",
        ),
        figure=report(
            ALLOY_PLAN.path("figures", "design.png"),
            caption="../workflow/report/alloy_design.rst",
            category="Alloy",
        ),
    log:
        log("alloy_design_summary"),
    conda:
        "../envs/alloy.yaml"
    params:
        settings=as_json(ALLOY_PLAN.design_summary_settings()),
        code=code_digest(*ALLOY_PLOT_CODE, "alloy/design.py"),
    shell:
        "latentmech alloy design-summary --dataset {input.dataset:q} "
        "--designs {input.designs:q} --table {output.table:q} --clusters {output.clusters:q} "
        "--figure {output.figure:q} --settings {params.settings:q} --code {params.code} "
        "> {log:q} 2>&1"
