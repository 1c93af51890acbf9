"""Rule mtd1d_segment: simulate one segment in chunks and write its moment sums."""

from cryomtd.io import log_to
from cryomtd.mtd1d.stages import run_segment

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    run_segment(snakemake.params.sim, int(snakemake.wildcards.k), snakemake.output[0])  # noqa: F821
