"""Rule mtd1d_lsq: one least-squares restart (pymanopt trust regions) from the merged moments."""

from cryomtd.io import log_to
from cryomtd.mtd1d.stages import run_lsq_restart

p = snakemake.params  # noqa: F821 (injected by Snakemake)
with log_to(snakemake.log[0]):  # noqa: F821
    cfg = {"L": p.L, "seed": p.seed, "sigma": p.sigma, "lsq": p.lsq}
    run_lsq_restart(cfg, snakemake.input[0], int(snakemake.wildcards.r), snakemake.output[0])  # noqa: F821
