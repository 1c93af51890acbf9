"""The autocorrelate and merge_moments rules through Snakemake in a temporary directory.

A tiny cryo3d experiment (BPTI from the in-repo model, L = 5, two 48² micrographs,
W = 3) is run up to ``moments.npz``; the files are compared with the library called
in-process on the same micrographs, and a second run must have nothing to do.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from cryomtd.io import read_json

EXP = "mom3d_wf"
N = 2
CONFIG = {
    "experiments": {
        EXP: {
            "kind": "cryo3d",
            "seed": 11,
            "volume": {"source": "data/structures/5PTI.pdb", "L": 5},
            "micrographs": {"n_micrographs": N, "size": 48, "gamma": 0.1, "snr": 4.0, "spacing": "separated"},
            "moments": {"window": 3, "advanced": {"backend": "numpy"}, "noise": {"cutoff": 0.8}},
        }
    }
}


@pytest.mark.slow
def test_autocorrelate_and_merge(tmp_path, run_workflow):
    from cryomtd.moments import Moments2D, autocorrelations_2d, merge
    from cryomtd.volume import read_image_mrc

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    target = f"results/{EXP}/moments.npz"
    run_workflow(tmp_path, target)
    merged = Moments2D.load(tmp_path / target)
    parts = []
    for k in range(N):
        img, _ = read_image_mrc(tmp_path / f"results/{EXP}/micrographs/{k}.mrc")
        # the noise variance recorded with the moments is the side file's σ² (the one EM uses too)
        sigma = read_json(tmp_path / f"results/{EXP}/micrographs/{k}.json")["sigma"]
        ref = autocorrelations_2d(img, 3, backend="numpy", sigma2=sigma**2)
        got = Moments2D.load(tmp_path / f"results/{EXP}/moments/{k}.npz")
        # same engine; BLAS may split sums differently with another thread count: 1e-12 on O(1e3) sums
        np.testing.assert_allclose(got.s3, ref.s3, rtol=0, atol=1e-12)
        assert got.sigma2 == pytest.approx(sigma**2, rel=1e-12)
        parts.append(ref)
    np.testing.assert_allclose(merged.s3, merge(parts).s3, rtol=0, atol=1e-12)
    assert merged.n_images == N and merged.count == N * 48 * 48 and merged.window == 3
    assert (tmp_path / f"results/{EXP}/logs/autocorrelate/0.log").is_file()
    assert (tmp_path / f"results/{EXP}/benchmarks/merge_moments/merge.tsv").is_file()
    out = run_workflow(tmp_path, target)
    assert "Nothing to be done" in out


@pytest.mark.parametrize("backend, gpu", [("auto", 0), ("numpy", 0), ("torch-cuda", 1), ("cupy", 1)])
def test_window_default_and_resources(backend, gpu):
    """W defaults to (L−1)//2+1 of the box L; a GPU is requested only for CUDA backends; memory grows with W⁴."""
    from cryomtd.moments.settings import MomentsSettings
    from cryomtd.moments.stage import workflow_resources

    exp = {"volume": {"L": 9}, "micrographs": {"size": 256}, "moments": {"advanced": {"backend": backend}}}
    assert MomentsSettings.from_config(exp["moments"]).window_for(9) == 5
    exp["moments"]["window"] = 4
    assert MomentsSettings.from_config(exp["moments"]).window_for(9) == 4
    res = workflow_resources(exp)
    assert res["gpu"] == gpu
    exp["moments"]["window"] = 20
    assert workflow_resources(exp)["mem_mb"] > res["mem_mb"] + 200
