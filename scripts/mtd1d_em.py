"""Rule mtd1d_em: approximate EM from the best least-squares estimate."""

from cryomtd.io import log_to
from cryomtd.mtd1d.stages import run_em

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    cfg = snakemake.params.cfg  # noqa: F821
    run_em(cfg, snakemake.input.lsq, snakemake.input.moments, snakemake.output.em,  # noqa: F821
           snakemake.output.trace)  # noqa: F821
