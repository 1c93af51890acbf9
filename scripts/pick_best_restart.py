"""Rule `pick_best_restart`: lsq/restart_*.npz → lsq.npz (lowest cost) + lsq.mrc (at the data's voxel size)."""

from cryomtd.io import log_to, read_json
from cryomtd.mom3d.settings import LsqSettings
from cryomtd.mom3d.stage import load_npz, pick_best_file

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    s = LsqSettings.from_config(snakemake.params.lsq, where=f"experiments.{snakemake.wildcards.exp}.lsq")
    src = str(snakemake.input.voxel)  # truth.npz, or a micrograph side file (its pixel size)
    if src.endswith(".json"):
        voxel_size = float(read_json(src)["pixel_size"])
    else:
        voxel_size = float(load_npz(src, ["voxel_size"])["voxel_size"])
    pick_best_file(
        list(snakemake.input.restarts),
        snakemake.output.npz,
        snakemake.output.mrc,
        voxel_size=voxel_size,
        settings=s,
        symmetry_json=snakemake.input.symmetry[0] if snakemake.input.symmetry else None,
    )
