"""Rule `refine_lsq`: lsq/restart_*.npz → lsq/refine_{k}.npz (the k-th best restart, continued)."""

from cryomtd.io import log_to
from cryomtd.mom3d.stage import refine_restart_file

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    p = snakemake.params
    lsq = {**p.lsq, "threads": snakemake.threads}
    refine_restart_file(snakemake.input.moments, list(snakemake.input.restarts), snakemake.output[0],
                        rank=int(snakemake.wildcards.k), L=p.L, ell_max=p.ell_max, lsq=lsq, exact=p.exact)
