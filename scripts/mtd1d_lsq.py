"""Rule mtd1d_lsq: one least-squares restart (pymanopt trust regions) from the merged moments."""

from cryomtd.io import log_to
from cryomtd.mtd1d.settings import Mtd1dSettings
from cryomtd.mtd1d.stages import run_lsq_restart

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    settings = Mtd1dSettings.from_config(sm.params.settings, f"experiments.{sm.wildcards.exp}")
    run_lsq_restart(settings, sm.input[0], int(sm.wildcards.r), sm.output[0])
