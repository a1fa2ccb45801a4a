# HR-DIC study (paper 000): raw maps → preprocessed maps → slip events → windows, figures.
# Rule dic_<name> ↔ latentmech.dic.stages.<name> ↔ `latentmech dic <name>`.
from latentmech.dic.samples import figure_sample, sample_file_inputs, sample_table

DIC = config["dic"]
DIC_SAMPLES = sample_table(DIC, SCHEMAS)
DIC_SYNTHETIC = DIC["source"] == "synthetic"
DIC_MATERIALS = sorted(DIC_SAMPLES["material"].unique())
DIC_CODE = ["core/store.py", "core/errors.py", "dic/stages.py"]


def dic_path(*parts):
    return results("dic", *parts)


def dic_row(wildcards):
    """The sample's sheet row as plain JSON values (None for empty cells)."""
    row = DIC_SAMPLES.loc[wildcards.sample].to_dict()
    return {k: (None if v != v else v) for k, v in row.items()}


def dic_material_spec(name):
    return next(m for m in DIC["synthetic"]["materials"] if m["name"] == name)


def dic_each(pattern):
    return expand(pattern, sample=DIC_SAMPLES.index)


def dic_targets():
    targets = [
        dic_path("materials.tsv"),
        dic_path("windows.zarr"),
        dic_path("windows.csv"),
        expand(
            dic_path("figures", "modalities_{material}.png"), material=DIC_MATERIALS
        ),
    ]
    if DIC_SYNTHETIC:
        targets.append(dic_path("events", "scores.csv"))
    return targets


rule dic_materials:
    input:
        unpack(lambda w: {"table": DIC["materials"]} if DIC["materials"] else {}),
    output:
        dic_path("materials.tsv"),
    log:
        log("dic_materials"),
    conda:
        "../envs/dic.yaml"
    params:
        settings=as_json(
            {
                "source": DIC["source"],
                "seed": DIC["synthetic"]["seed"],
                "materials": DIC["synthetic"]["materials"],
            }
            if DIC_SYNTHETIC
            else {"source": DIC["source"], "names": DIC_MATERIALS}
        ),
        table=lambda w, input: (
            f"--table {input.table!r}" if "table" in input.keys() else ""
        ),
        code=code_digest(*DIC_CODE, "dic/synth.py", "dic/samples.py"),
    shell:
        "latentmech dic materials --output {output:q} {params.table} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


if DIC_SYNTHETIC:

    rule dic_synthesize:
        output:
            raw=directory(dic_path("raw", "{sample}.zarr")),
        log:
            log("dic_synthesize", "{sample}"),
        benchmark:
            bench("dic_synthesize", "{sample}")
        conda:
            "../envs/dic.yaml"
        params:
            settings=lambda w: as_json(
                {
                    "sample": dic_row(w),
                    "material": dic_material_spec(dic_row(w)["material"]),
                    "map": DIC["synthetic"]["map"],
                    "seed": DIC["synthetic"]["seed"],
                }
            ),
            code=code_digest(*DIC_CODE, "dic/synth.py"),
        shell:
            "latentmech dic synthesize --raw {output.raw:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"

else:

    rule dic_ingest:
        input:
            unpack(lambda w: sample_file_inputs(dic_row(w))),
        output:
            raw=directory(dic_path("raw", "{sample}.zarr")),
        log:
            log("dic_ingest", "{sample}"),
        benchmark:
            bench("dic_ingest", "{sample}")
        conda:
            "../envs/dic.yaml"
        params:
            settings=lambda w: as_json(
                {"sample": dic_row(w), "modalities": DIC["modalities"]}
            ),
            code=code_digest(
                *DIC_CODE, "dic/io.py", "dic/kinematics.py", "dic/samples.py"
            ),
        shell:
            "latentmech dic ingest --raw {output.raw:q} "
            "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"


rule dic_preprocess:
    input:
        raw=dic_path("raw", "{sample}.zarr"),
    output:
        prepped=directory(dic_path("prep", "{sample}.zarr")),
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
        prepped=dic_path("prep", "{sample}.zarr"),
    output:
        labels=directory(dic_path("events", "{sample}.zarr")),
        table=dic_path("events", "{sample}.csv"),
    log:
        log("dic_detect_events", "{sample}"),
    benchmark:
        bench("dic_detect_events", "{sample}")
    conda:
        "../envs/dic.yaml"
    params:
        settings=as_json(DIC["events"]),
        code=code_digest(*DIC_CODE, "dic/events.py"),
    shell:
        "latentmech dic detect-events --prepped {input.prepped:q} --labels {output.labels:q} "
        "--table {output.table:q} --settings {params.settings:q} --code {params.code} "
        "> {log:q} 2>&1"


rule dic_event_scores:
    input:
        raw=dic_each(dic_path("raw", "{sample}.zarr")),
        prepped=dic_each(dic_path("prep", "{sample}.zarr")),
        labels=dic_each(dic_path("events", "{sample}.zarr")),
    output:
        dic_path("events", "scores.csv"),
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
        prepped=dic_each(dic_path("prep", "{sample}.zarr")),
        labels=dic_each(dic_path("events", "{sample}.zarr")),
    output:
        windows_zarr=directory(dic_path("windows.zarr")),
        windows_csv=dic_path("windows.csv"),
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
        raw=lambda w: dic_path("raw", f"{figure_sample(DIC_SAMPLES, w.material)}.zarr"),
    output:
        figure=report(
            dic_path("figures", "modalities_{material}.png"),
            caption="../workflow/report/dic_modalities.rst",
            category="HR-DIC",
        ),
    log:
        log("dic_figure_modalities", "{material}"),
    conda:
        "../envs/dic.yaml"
    params:
        settings=as_json({"modalities": DIC["modalities"], **DIC["windows"]}),
        code=code_digest(*DIC_CODE, "core/plots.py", "dic/prep.py"),
    shell:
        "latentmech dic figure-modalities --raw {input.raw:q} --figure {output.figure:q} "
        "--settings {params.settings:q} --code {params.code} > {log:q} 2>&1"
