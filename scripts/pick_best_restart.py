"""Rule `pick_best_restart`: lsq/restart_*.npz → lsq.npz (lowest cost) + lsq.mrc (its volume)."""

from cryomtd.io import log_to
from cryomtd.mom3d.settings import LsqSettings
from cryomtd.mom3d.stage import load_npz, pick_best_file

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    s = LsqSettings.from_config(snakemake.params.lsq, where=f"experiments.{snakemake.wildcards.exp}.lsq")
    voxel_size = float(load_npz(snakemake.input.truth, ["voxel_size"])["voxel_size"])
    pick_best_file(
        list(snakemake.input.restarts), snakemake.output.npz, snakemake.output.mrc, voxel_size=voxel_size, settings=s
    )
