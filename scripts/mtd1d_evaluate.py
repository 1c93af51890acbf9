"""Rule mtd1d_evaluate: metrics.json, the overlay figure and the EM log-likelihood figure."""

from cryomtd.io import log_to
from cryomtd.mtd1d.stages import run_evaluate

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    i, o = snakemake.input, snakemake.output  # noqa: F821
    cfg = snakemake.params.cfg  # noqa: F821
    run_evaluate(cfg, i.moments, i.lsq, i.em, i.trace, o.metrics, o.overlay, o.loglik,
                 name=snakemake.wildcards.exp)  # noqa: F821
