# 1-D multi-target detection (docs/design.md §7, docs/mtd1d.md): segments → merge → LS restarts →
# pick → EM → evaluate. Every parameter a rule's output depends on is a `params:` entry, so
# changing one experiment's config reruns only that experiment's affected jobs.


include: "mtd1d_helpers.smk"


rule mtd1d_segment:
    output:
        f"{RESULTS}/{{exp}}/segments/{{k}}.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/mtd1d_segment/{{k}}.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/mtd1d_segment/{{k}}.tsv"
    params:
        sim=_sim_params,
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
        _segment_inputs,
    output:
        f"{RESULTS}/{{exp}}/moments.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/mtd1d_merge.log",
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
        f"{RESULTS}/{{exp}}/moments.npz",
    output:
        f"{RESULTS}/{{exp}}/lsq/restart_{{r}}.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/mtd1d_lsq/restart_{{r}}.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/mtd1d_lsq/restart_{{r}}.tsv"
    params:
        L=lambda wc: _mtd1d(wc)["L"],
        seed=lambda wc: _mtd1d(wc)["seed"],
        sigma=lambda wc: _mtd1d(wc)["sigma"],
        lsq=lambda wc: {k: v for k, v in _mtd1d(wc)["lsq"].items() if k != "restarts"},
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
        _restart_inputs,
    output:
        f"{RESULTS}/{{exp}}/lsq.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/mtd1d_pick.log",
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
        lsq=f"{RESULTS}/{{exp}}/lsq.npz",
        moments=f"{RESULTS}/{{exp}}/moments.npz",
    output:
        em=f"{RESULTS}/{{exp}}/em.npz",
        trace=f"{RESULTS}/{{exp}}/em_trace.json",
    log:
        f"{RESULTS}/{{exp}}/logs/mtd1d_em.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/mtd1d_em.tsv"
    params:
        cfg=lambda wc: {**_sim_params(wc), "em": _mtd1d(wc)["em"],
                        "lsq": {"sigma_known": _mtd1d(wc)["lsq"]["sigma_known"]}},
    wildcard_constraints:
        exp=name_regex(EXP1D),
    threads: 2
    resources:
        # EM holds the samples it uses as float32 data + float64 patches (12 bytes/sample) + blocks
        mem_mb=lambda wc: 1000 + int(16 * _em_samples(wc) / 1e6),
        runtime=120,
    conda:
        "../../envs/em.yaml"
    script:
        "../../scripts/mtd1d_em.py"


rule mtd1d_evaluate:
    input:
        moments=f"{RESULTS}/{{exp}}/moments.npz",
        lsq=f"{RESULTS}/{{exp}}/lsq.npz",
        em=f"{RESULTS}/{{exp}}/em.npz",
        trace=f"{RESULTS}/{{exp}}/em_trace.json",
    output:
        metrics=f"{RESULTS}/{{exp}}/metrics.json",
        overlay=report(f"{RESULTS}/{{exp}}/figures/overlay.png", caption="../report/mtd1d_overlay.rst",
                       category="1-D MTD", subcategory="{exp}"),
        loglik=report(f"{RESULTS}/{{exp}}/figures/loglik.png", caption="../report/mtd1d_loglik.rst",
                      category="1-D MTD", subcategory="{exp}"),
    log:
        f"{RESULTS}/{{exp}}/logs/mtd1d_evaluate.log",
    params:
        cfg=_sim_params,
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


ALL_TARGETS.extend(expand(f"{RESULTS}/{{exp}}/metrics.json", exp=EXP1D))
