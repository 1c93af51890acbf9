# Micrograph autocorrelations (issue 3; DESIGN §4): one autocorrelate job per micrograph,
# then an exact merge. Library: cryomtd.moments; guide: docs/moments.md.


def moments_block(wc):
    return exp_config(wc)["moments"]


def moments_window(wc):
    """W: the moments.window of the experiment, else the volume box L."""
    w = moments_block(wc).get("window")
    return int(w if w is not None else exp_config(wc)["volume"]["L"])


def moments_uses_gpu(wc):
    return moments_block(wc).get("backend", "auto") in ("torch-cuda", "cupy", "cuda")


def autocorrelate_options(wc):
    m, noise = moments_block(wc), moments_block(wc).get("noise", {})
    return dict(window=moments_window(wc), backend=m.get("backend", "auto"), dtype=m.get("dtype", "float64"),
                band_pixels=m.get("band_pixels"), tile_pixels=m.get("tile_pixels", 16777216),
                sigma2=noise.get("sigma2"), cutoff=noise.get("cutoff", 0.8), debias=noise.get("debias", False))


def micrograph_count(wc):
    return int(exp_config(wc).get("micrographs", {}).get("n_micrographs", 4))


def autocorrelate_mem_mb(wc):
    size = int(exp_config(wc).get("micrographs", {}).get("size", 512))
    D2 = (2 * moments_window(wc) - 1) ** 2
    # image + halo tile (float64), three (4096 × D²) band matrices, the D²×D² Gram, index maps (~12 × D⁴ int64)
    return 1000 + (3 * size * size * 8 + 3 * 4096 * D2 * 8 + 13 * D2 * D2 * 8) // 2**20


def autocorrelate_runtime(wc):
    size = int(exp_config(wc).get("micrographs", {}).get("size", 512))
    D2 = (2 * moments_window(wc) - 1) ** 2
    # ≈ 0.6·D⁴ multiply-adds per pixel at ≥ 1 GFLOP/s on one core (minutes)
    return 10 + int(size * size * 1.2 * D2 * D2 / 1e9 / 60)


rule autocorrelate:
    input:
        mrc=f"{RESULTS}/{{exp}}/micrographs/{{k}}.mrc",
    output:
        f"{RESULTS}/{{exp}}/moments/{{k}}.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/autocorrelate/{{k}}.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/autocorrelate/{{k}}.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D_MICRO),
        k=r"\d+",
    params:
        opts=autocorrelate_options,
    threads: 1
    resources:
        mem_mb=autocorrelate_mem_mb,
        runtime=autocorrelate_runtime,
        gpu=lambda wc: 1 if moments_uses_gpu(wc) else 0,
    conda:
        "../../envs/moments.yaml"
    script:
        "../../scripts/autocorrelate.py"


rule merge_moments:
    input:
        lambda wc: [f"{RESULTS}/{wc.exp}/moments/{k}.npz" for k in range(micrograph_count(wc))],
    output:
        f"{RESULTS}/{{exp}}/moments.npz",
    log:
        f"{RESULTS}/{{exp}}/logs/merge_moments/merge.log",
    benchmark:
        f"{RESULTS}/{{exp}}/benchmarks/merge_moments/merge.tsv"
    wildcard_constraints:
        exp=name_regex(EXP3D_MICRO),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/moments.yaml"
    script:
        "../../scripts/merge_moments.py"


for _exp in EXP3D_MICRO:
    ALL_TARGETS.append(f"{RESULTS}/{_exp}/moments.npz")
