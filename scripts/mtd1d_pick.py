"""Rule mtd1d_pick: keep the least-squares restart with the lowest cost."""

from cryomtd.io import log_to
from cryomtd.mtd1d.stages import run_pick

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    run_pick(list(snakemake.input), snakemake.output[0])  # noqa: F821
