"""`cryomtd moments` / `cryomtd merge-moments`: results equal the library; bad MRC input names the file."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from cryomtd.cli import main
from cryomtd.moments import Moments2D, autocorrelations_2d


def write_raw_mrc(path, data):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))


def test_cli_moments_and_merge(tmp_path, capsys):
    rng = np.random.default_rng(0)
    imgs = [rng.standard_normal((20, 17)).astype(np.float32), rng.standard_normal((9, 30)).astype(np.float32)]
    outs = []
    for i, im in enumerate(imgs):
        write_raw_mrc(tmp_path / f"{i}.mrc", im)
        outs.append(tmp_path / f"{i}.npz")
        assert (
            main(
                [
                    "moments",
                    str(tmp_path / f"{i}.mrc"),
                    "--window",
                    "3",
                    "--out",
                    str(outs[-1]),
                    "--backend",
                    "numpy",
                    "--sigma2",
                    "0.5",
                ]
            )
            == 0
        )
    assert main(["merge-moments", *map(str, outs), "--out", str(tmp_path / "m.npz")]) == 0
    merged = Moments2D.load(tmp_path / "m.npz")
    ref = [autocorrelations_2d(im.astype(np.float64), 3, backend="numpy") for im in imgs]
    pooled = (ref[0].a3 * imgs[0].size + ref[1].a3 * imgs[1].size) / (imgs[0].size + imgs[1].size)
    np.testing.assert_allclose(merged.a3, pooled, rtol=0, atol=1e-12)  # float64 rounding of O(1) sums
    assert merged.sigma2 == pytest.approx(0.5) and merged.n_images == 2
    assert "W=3" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "not found"),
        ("three_d", "2-D"),
        ("nan", "NaN"),
        ("not_mrc", "MRC"),
    ],
)
def test_cli_bad_micrograph_names_the_file(tmp_path, capsys, case, message):
    path = tmp_path / f"{case}.mrc"
    if case == "three_d":
        write_raw_mrc(path, np.zeros((3, 8, 8)))
    elif case == "nan":
        img = np.zeros((8, 8))
        img[1, 2] = np.nan
        write_raw_mrc(path, img)
    elif case == "not_mrc":
        path.write_text("hello")
    code = main(["moments", str(path), "--window", "2", "--out", str(tmp_path / "o.npz"), "--backend", "numpy"])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and message in err
    assert not (tmp_path / "o.npz").exists()


def test_cli_merge_rejects_mixed_windows(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for W in (2, 3):
        autocorrelations_2d(rng.standard_normal((6, 6)), W, backend="numpy").save(tmp_path / f"{W}.npz")
    code = main(["merge-moments", str(tmp_path / "2.npz"), str(tmp_path / "3.npz"), "--out", str(tmp_path / "m.npz")])
    assert code == 2 and "different windows" in capsys.readouterr().err
