# Micrograph simulation (docs/design.md §6): one job per micrograph k, seeded by
# rng(seed, "micrograph", k). Library: cryomtd.simulate; guide: docs/simulation.md.


rule simulate_micrograph:
    input:
        truth=f"{RESULTS}/{{exp}}/truth.npz",
    output:
        mrc=f"{RESULTS}/{{exp}}/micrographs/{{k}}.mrc",
        star=f"{RESULTS}/{{exp}}/particles/{{k}}.star",
        info=f"{RESULTS}/{{exp}}/micrographs/{{k}}.json",
    log:
        f"{RESULTS}/{{exp}}/logs/simulate_micrograph/{{k}}.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/simulate_micrograph/{{k}}.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D_MICRO),
        k=r"\d+",
    params:
        micrographs=lambda wc: exp_config(wc)["micrographs"],
        seed=lambda wc: exp_config(wc)["seed"],
        name=lambda wc: f"{RESULTS}/{wc.exp}/micrographs/{wc.k}.mrc",
    threads: 1
    resources:
        mem_mb=lambda wc: 1000 + exp_config(wc)["micrographs"]["size"] ** 2 * 8 * 6 // 2**20,
        runtime=15,
    conda:
        "../../envs/simulate.yaml"
    script:
        "../../scripts/simulate_micrograph.py"


ALL_TARGETS.extend(
    f"{RESULTS}/{e}/{sub}/{k}.{ext}"
    for e in EXP3D_MICRO
    for k in range(exp_config(e)["micrographs"]["n_micrographs"])
    for sub, ext in (("micrographs", "mrc"), ("particles", "star"), ("micrographs", "json"))
)
