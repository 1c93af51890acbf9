"""Rule `prepare_volume`: volume source → truth_raw.mrc, truth.mrc (in the basis), truth.npz."""

from cryomtd.basis import BasisSettings
from cryomtd.io import log_to
from cryomtd.volume import VolumeSettings

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    inp, out, par = snakemake.input, snakemake.output, snakemake.params
    exp = f"experiments.{snakemake.wildcards.exp}"
    volume = VolumeSettings.from_config(par.volume, where=f"{exp}.volume")
    basis = BasisSettings.from_config(par.basis, where=f"{exp}.basis")
    source = inp.source[0] if len(inp.source) else None  # a file source, resolved by the rule
    prepared = volume.prepare(source=source, ell_max=basis.ell_max, seed=par.seed)
    prepared.save(out.raw, out.truth, out.npz)
