# 1-D multi-target detection (docs/mtd1d.md): segments → merge → LS restarts → pick → EM →
# evaluate. Each rule's `params: settings` is the part of the experiment's settings its
# output depends on, so changing one experiment's config reruns only that experiment's
# affected jobs; the scripts build the Mtd1dSettings object from it.


include: "mtd1d_helpers.smk"


rule mtd1d_segment:
    output:
        LAYOUT_1D.segment("{k}"),
    log:
        LAYOUT_1D.log("mtd1d_segment", "{k}"),
    benchmark:
        LAYOUT_1D.benchmark("mtd1d_segment", "{k}")
    params:
        settings=mtd1d_stage_settings("segment"),
    wildcard_constraints:
        exp=name_regex(EXP1D),
        k=r"\d+",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../../scripts/mtd1d_segment.py"


rule mtd1d_merge:
    input:
        mtd1d_segment_files,
    output:
        LAYOUT_1D.moments,
    log:
        LAYOUT_1D.log("mtd1d_merge"),
    wildcard_constraints:
        exp=name_regex(EXP1D),
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../../scripts/mtd1d_merge.py"


rule mtd1d_lsq:
    input:
        LAYOUT_1D.moments,
    output:
        LAYOUT_1D.lsq_restart("{r}"),
    log:
        LAYOUT_1D.log("mtd1d_lsq", "restart_{r}"),
    benchmark:
        LAYOUT_1D.benchmark("mtd1d_lsq", "restart_{r}")
    params:
        settings=mtd1d_stage_settings("lsq"),
    wildcard_constraints:
        exp=name_regex(EXP1D),
        r=r"\d+",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    conda:
        "../../envs/optimize.yaml"
    script:
        "../../scripts/mtd1d_lsq.py"


rule mtd1d_pick:
    input:
        mtd1d_restart_files,
    output:
        LAYOUT_1D.estimate("lsq"),
    log:
        LAYOUT_1D.log("mtd1d_pick"),
    wildcard_constraints:
        exp=name_regex(EXP1D),
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/optimize.yaml"
    script:
        "../../scripts/mtd1d_pick.py"


rule mtd1d_em:
    input:
        lsq=LAYOUT_1D.estimate("lsq"),
        moments=LAYOUT_1D.moments,
    output:
        em=LAYOUT_1D.estimate("em"),
        trace=LAYOUT_1D.em_trace,
    log:
        LAYOUT_1D.log("mtd1d_em"),
    benchmark:
        LAYOUT_1D.benchmark("mtd1d_em")
    params:
        settings=mtd1d_stage_settings("em"),
    wildcard_constraints:
        exp=name_regex(EXP1D),
    threads: 2
    resources:
        mem_mb=mtd1d_em_mem_mb,
        runtime=120,
    conda:
        "../../envs/em.yaml"
    script:
        "../../scripts/mtd1d_em.py"


rule mtd1d_evaluate:
    input:
        moments=LAYOUT_1D.moments,
        lsq=LAYOUT_1D.estimate("lsq"),
        em=LAYOUT_1D.estimate("em"),
    output:
        metrics=LAYOUT_1D.metrics,
        overlay=report(LAYOUT_1D.figure("overlay"), caption="../report/mtd1d_overlay.rst",
                       category="1-D MTD", subcategory="{exp}"),
        loglik=report(LAYOUT_1D.figure("loglik"), caption="../report/mtd1d_loglik.rst",
                      category="1-D MTD", subcategory="{exp}"),
    log:
        LAYOUT_1D.log("mtd1d_evaluate"),
    params:
        settings=mtd1d_stage_settings("evaluate"),
    wildcard_constraints:
        exp=name_regex(EXP1D),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/evaluate.yaml"
    script:
        "../../scripts/mtd1d_evaluate.py"


ALL_TARGETS.extend(expand(LAYOUT_1D.metrics, exp=EXP1D))
