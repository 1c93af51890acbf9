"""Rule `ctf_groups`: the micrographs' side files (or, for clean-moment experiments, the
simulator's CTF draws) → ctf_groups.json, the CTF groups both estimators model."""

from cryomtd.ctf import ctf_group_table
from cryomtd.io import log_to, read_json
from cryomtd.simulate import simulated_side_infos
from cryomtd.volume import load_truth

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    inp, par = snakemake.input, snakemake.params
    if par.exact:
        pixel = load_truth(inp.truth)["voxel_size"] or 1.0
        infos = simulated_side_infos(par.micrographs, par.seed, par.names, pixel)
    else:
        infos = [read_json(p) for p in inp.infos]
    table = ctf_group_table(infos, [str(k) for k in par.names], mode=par.mode)
    table.save(snakemake.output[0])
