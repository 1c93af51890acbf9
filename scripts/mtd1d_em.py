"""Rule mtd1d_em: approximate EM from the best least-squares estimate."""

from cryomtd.io import log_to
from cryomtd.mtd1d.settings import Mtd1dSettings
from cryomtd.mtd1d.stages import run_em

sm = snakemake  # noqa: F821 (injected by Snakemake)
with log_to(sm.log[0]):
    settings = Mtd1dSettings.from_config(sm.params.settings, f"experiments.{sm.wildcards.exp}")
    run_em(settings, sm.input.lsq, sm.input.moments, sm.output.em, sm.output.trace)
