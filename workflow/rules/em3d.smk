# Approximate EM from micrographs (issue 7, DESIGN §7). Library: cryomtd.em3d; guide: docs/em3d.md.


def em_enabled(name):
    return exp_config(name).get("em", {}).get("enabled", True)


EXP3D_EM = [e for e in EXP3D_MICRO if em_enabled(e)]


def em_inputs(wc):
    cfg = exp_config(wc)
    n = cfg["micrographs"]["n_micrographs"]
    d = {
        "micrographs": [f"{RESULTS}/{wc.exp}/micrographs/{k}.mrc" for k in range(n)],
        "infos": [f"{RESULTS}/{wc.exp}/micrographs/{k}.json" for k in range(n)],
    }
    init = cfg.get("em", {}).get("init", "auto")
    lsq_on = cfg.get("lsq", {}).get("enabled", True)
    if init == "lsq" or (init == "auto" and lsq_on):
        d["lsq_npz"] = f"{RESULTS}/{wc.exp}/lsq.npz"
    return d


def em_backend_is_cuda(wc):
    return exp_config(wc).get("em", {}).get("backend", "auto") == "cuda"


rule approx_em:
    input:
        unpack(em_inputs),
    output:
        npz=f"{RESULTS}/{{exp}}/em.npz",
        mrc=f"{RESULTS}/{{exp}}/em.mrc",
        trace=f"{RESULTS}/{{exp}}/em_trace.json",
    log:
        f"{RESULTS}/{{exp}}/logs/approx_em/approx_em.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/approx_em/approx_em.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D_EM),
    params:
        em=lambda wc: exp_config(wc)["em"],
        basis=lambda wc: exp_config(wc).get("basis", {}),
        seed=lambda wc: exp_config(wc)["seed"],
        checkpoint=lambda wc: f"{RESULTS}/{wc.exp}/em_checkpoint/state.npz",
    threads: lambda wc: exp_config(wc)["em"]["threads"]
    resources:
        mem_mb=lambda wc: exp_config(wc)["em"]["memory_mb"] + 1500,
        runtime=lambda wc: exp_config(wc)["em"]["runtime"],
        gpu=lambda wc: 1 if em_backend_is_cuda(wc) else 0,
    conda:
        "../../envs/em.yaml"
    script:
        "../../scripts/approx_em.py"


ALL_TARGETS.extend(expand(f"{RESULTS}/{{exp}}/em_trace.json", exp=EXP3D_EM))
