"""Rule `exact_moments`: truth.npz → moments.npz (exact noise-free model moments, clean-moment experiments)."""

from cryomtd.io import log_to
from cryomtd.mom3d.stage import exact_moments_file

snakemake = globals()["snakemake"]  # injected by Snakemake

with log_to(snakemake.log[0]):
    p = snakemake.params
    exact_moments_file(
        snakemake.input.truth,
        snakemake.output[0],
        gamma=p.gamma,
        window=p.window,
        fit_ell_max=p.fit_ell_max,
        threads=snakemake.threads,
        ctf_groups=snakemake.input.get("ctf_groups"),
    )
