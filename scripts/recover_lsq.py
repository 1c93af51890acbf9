"""Rule `recover_lsq`: moments.npz → lsq/restart_{r}.npz (one seeded least-squares restart)."""

from cryomtd.io import log_to
from cryomtd.mom3d.stage import recover_restart_file

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    p = snakemake.params
    lsq = {**p.lsq, "threads": snakemake.threads}
    recover_restart_file(snakemake.input[0], snakemake.output[0], L=p.L, ell_max=p.ell_max, lsq=lsq, seed=p.seed,
                         restart=int(snakemake.wildcards.r), exact=p.exact)
