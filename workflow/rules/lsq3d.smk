# 3-D method of moments (docs/design.md §9): exact model moments for clean-moment
# experiments, one least-squares job per restart, best restart kept. Library:
# cryomtd.mom3d (stage functions in cryomtd.mom3d.stage); guide: docs/mom3d.md.

EXP3D_LSQ = [e for e in EXP3D if exp_config(e).get("lsq", {}).get("enabled", True)]


rule exact_moments:
    input:
        f"{RESULTS}/{{exp}}/truth.npz",
    output:
        f"{RESULTS}/{{exp}}/moments.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/exact_moments/exact_moments.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/exact_moments/exact_moments.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D_EXACT),
    params:
        gamma=lambda wc: exp_config(wc)["micrographs"]["gamma"],
        window=lambda wc: exp_config(wc)["moments"].get("window") or exp_config(wc)["lsq"]["window"],
        fit_ell_max=lambda wc: exp_config(wc)["lsq"]["ell_max"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/optimize.yaml"
    script:
        "../../scripts/exact_moments.py"


rule recover_lsq:
    input:
        f"{RESULTS}/{{exp}}/moments.npz",
    output:
        f"{RESULTS}/{{exp}}/lsq/restart_{{r}}.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/recover_lsq/restart_{{r}}.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/recover_lsq/restart_{{r}}.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D_LSQ),
        r=r"\d+",
    params:
        lsq=lambda wc: {k: v for k, v in exp_config(wc)["lsq"].items() if k not in ("enabled", "restarts")},
        L=lambda wc: exp_config(wc)["volume"]["L"],
        ell_max=lambda wc: exp_config(wc)["basis"]["ell_max"],
        seed=lambda wc: exp_config(wc)["seed"],
        exact=lambda wc: wc.exp in EXP3D_EXACT,
    threads: lambda wc: exp_config(wc)["lsq"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/optimize.yaml"
    script:
        "../../scripts/recover_lsq.py"


rule refine_lsq:
    # the lsq.refine_top lowest-cost restarts, each continued by lsq.refine_iterations
    # Gauss-Newton evaluations (rank k = the k-th lowest cost; docs/mom3d.md)
    input:
        moments=f"{RESULTS}/{{exp}}/moments.npz",
        restarts=lsq3d_restart_files,
    output:
        f"{RESULTS}/{{exp}}/lsq/refine_{{k}}.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/refine_lsq/refine_{{k}}.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/refine_lsq/refine_{{k}}.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D_LSQ),
        k=r"\d+",
    params:
        lsq=lambda wc: {k: v for k, v in exp_config(wc)["lsq"].items() if k not in ("enabled", "restarts")},
        L=lambda wc: exp_config(wc)["volume"]["L"],
        ell_max=lambda wc: exp_config(wc)["basis"]["ell_max"],
        exact=lambda wc: wc.exp in EXP3D_EXACT,
    threads: lambda wc: exp_config(wc)["lsq"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/optimize.yaml"
    script:
        "../../scripts/refine_lsq.py"


rule pick_best_restart:
    input:
        restarts=lambda wc: lsq3d_restart_files(wc) + [f"{RESULTS}/{wc.exp}/lsq/refine_{k}.npz"
                                                      for k in range(exp_config(wc)["lsq"]["refine_top"])],
        truth=f"{RESULTS}/{{exp}}/truth.npz",
    output:
        npz=f"{RESULTS}/{{exp}}/lsq.npz",
        mrc=f"{RESULTS}/{{exp}}/lsq.mrc",
    log:
        f"{RESULTS}/{{exp}}/logs/pick_best_restart/pick_best_restart.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/pick_best_restart/pick_best_restart.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D_LSQ),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/optimize.yaml"
    script:
        "../../scripts/pick_best_restart.py"


ALL_TARGETS.extend(f"{RESULTS}/{e}/lsq.mrc" for e in EXP3D_LSQ)
