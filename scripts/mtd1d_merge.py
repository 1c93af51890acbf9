"""Rule mtd1d_merge: exact merge of the segments' moment sums."""

from cryomtd.io import log_to
from cryomtd.mtd1d.stages import run_merge

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    run_merge(list(snakemake.input), snakemake.output[0])  # noqa: F821
