"""Rule mtd1d_evaluate: metrics.json, the overlay figure and the EM log-likelihood figure."""

from cryomtd.io import log_to
from cryomtd.mtd1d.settings import Mtd1dSettings
from cryomtd.mtd1d.stages import run_evaluate

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    settings = Mtd1dSettings.from_config(sm.params.settings, f"experiments.{sm.wildcards.exp}")
    i, o = sm.input, sm.output
    run_evaluate(settings, i.moments, i.lsq, i.em, o.metrics, o.overlay, o.loglik, name=sm.wildcards.exp)
