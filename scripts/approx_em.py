"""Rule `approx_em`: approximate EM from the micrographs → em.npz, em.mrc, em_trace.json."""

from cryomtd.em3d.stage import reconstruct, write_outputs
from cryomtd.io import log_to

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    res, basis, pixel = reconstruct(
        list(inp.micrographs), list(inp.infos), em=par.em, basis=par.basis, seed=par.seed,
        lsq_npz=inp.get("lsq_npz"), checkpoint=par.checkpoint,
    )
    write_outputs(res, basis, pixel, npz=out.npz, mrc=out.mrc, trace=out.trace)
