# 3-D method of moments (docs/design.md §9): exact model moments for clean-moment
# experiments, one least-squares job per restart, best restart kept. Library:
# cryomtd.mom3d (stage functions in cryomtd.mom3d.stage); guide: docs/mom3d.md.

from cryomtd.plan import box_size

# every 3-D run with the lsq stage: the experiments and the half-data runs of data experiments
EXP3D_LSQ = PLAN.runs([e for e in EXP3D if exp_config(e).get("lsq", {}).get("enabled", True)])


rule exact_moments:
    # with a CTF (micrographs.ctf and ctf: model) the moments of the CTF-filtered projections,
    # mixed over the groups of ctf_groups.json (cryomtd.mom3d.ctfmodel)
    input:
        truth=PATHS.truth_npz,
        ctf_groups=PATHS.ctf_groups,
    output:
        PATHS.moments,
    log:
        PATHS.log("exact_moments"),
    benchmark:
        PATHS.benchmark("exact_moments")
    wildcard_constraints:
        exp=name_regex(EXP3D_EXACT),
    params:
        gamma=lambda wc: exp_config(wc)["micrographs"]["gamma"],
        window=lambda wc: exp_config(wc)["moments"]["window"],
        fit_ell_max=lambda wc: exp_config(wc)["lsq"]["ell_max"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/optimize.yaml"
    script:
        "../../scripts/exact_moments.py"


rule detect_symmetry:
    # lsq.symmetry: auto — the point group from the moments alone (cryomtd.mom3d.detect): screened
    # fits per candidate group, the most symmetric one the data do not reject; the restarts then
    # run in that group
    input:
        moments=PATHS.moments,
        ctf_groups=PATHS.ctf_groups,
    output:
        json=PATHS.path("lsq", "symmetry.json"),
        npz=PATHS.path("lsq", "detected.npz"),
    log:
        PATHS.log("detect_symmetry"),
    benchmark:
        PATHS.benchmark("detect_symmetry")
    wildcard_constraints:
        exp=name_regex(EXP3D_LSQ),
    params:
        lsq=lambda wc: exp_config(wc)["lsq"],
        L=lambda wc: box_size(exp_config(wc)),
        ell_max=lambda wc: exp_config(wc)["basis"]["ell_max"],
        seed=lambda wc: exp_config(wc)["seed"],
        exact=lambda wc: wc.exp in EXP3D_EXACT,
    threads: lambda wc: exp_config(wc)["lsq"]["advanced"]["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        "../../envs/optimize.yaml"
    script:
        "../../scripts/detect_symmetry.py"


rule recover_lsq:
    # the model includes the CTF groups of ctf_groups.json (none: no CTF, or ctf: ignore)
    input:
        moments=PATHS.moments,
        ctf_groups=PATHS.ctf_groups,
        symmetry=lsq3d_symmetry_input,
    output:
        PATHS.lsq_restart("{r}"),
    log:
        PATHS.log("recover_lsq", "restart_{r}"),
    benchmark:
        PATHS.benchmark("recover_lsq", "restart_{r}")
    wildcard_constraints:
        exp=name_regex(EXP3D_LSQ),
        r=r"\d+",
    params:
        lsq=lambda wc: exp_config(wc)["lsq"],
        L=lambda wc: box_size(exp_config(wc)),
        ell_max=lambda wc: exp_config(wc)["basis"]["ell_max"],
        seed=lambda wc: exp_config(wc)["seed"],
        exact=lambda wc: wc.exp in EXP3D_EXACT,
    threads: lambda wc: exp_config(wc)["lsq"]["advanced"]["threads"]
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
        moments=PATHS.moments,
        restarts=lsq3d_fit_files,
        ctf_groups=PATHS.ctf_groups,
        symmetry=lsq3d_symmetry_input,
    output:
        PATHS.lsq_refine("{k}"),
    log:
        PATHS.log("refine_lsq", "refine_{k}"),
    benchmark:
        PATHS.benchmark("refine_lsq", "refine_{k}")
    wildcard_constraints:
        exp=name_regex(EXP3D_LSQ),
        k=r"\d+",
    params:
        lsq=lambda wc: exp_config(wc)["lsq"],
        L=lambda wc: box_size(exp_config(wc)),
        ell_max=lambda wc: exp_config(wc)["basis"]["ell_max"],
        exact=lambda wc: wc.exp in EXP3D_EXACT,
    threads: lambda wc: exp_config(wc)["lsq"]["advanced"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/optimize.yaml"
    script:
        "../../scripts/refine_lsq.py"


rule pick_best_restart:
    input:
        restarts=lambda wc: lsq3d_fit_files(wc) + [Layout(RESULTS, wc.exp).lsq_refine(k)
                                                  for k in range(exp_config(wc)["lsq"]["refine_top"])],
        voxel=voxel_size_source,
        symmetry=lsq3d_symmetry_input,
    output:
        npz=PATHS.estimate("lsq"),
        mrc=PATHS.estimate_mrc("lsq"),
    log:
        PATHS.log("pick_best_restart"),
    benchmark:
        PATHS.benchmark("pick_best_restart")
    wildcard_constraints:
        exp=name_regex(EXP3D_LSQ),
    params:
        lsq=lambda wc: exp_config(wc)["lsq"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/optimize.yaml"
    script:
        "../../scripts/pick_best_restart.py"


ALL_TARGETS.extend(Layout(RESULTS, e).estimate_mrc("lsq") for e in EXP3D_LSQ if e in EXP3D)
