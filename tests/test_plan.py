"""cryomtd.plan: the 3-D runs of a config, the half-data runs of a data experiment, start-up errors."""

from __future__ import annotations

import numpy as np
import pytest

from cryomtd.io import InputError
from cryomtd.plan import plan_3d
from cryomtd.volume import write_image_mrc


def _data(tmp_path, n, **data):
    for k in range(n):
        write_image_mrc(tmp_path / f"m{k}.mrc", np.zeros((64, 64), np.float32), 1.5)
    return {"kind": "cryo3d", "seed": 0, "data": {"micrographs": str(tmp_path / "m*.mrc"), "L": 7, **data}}


def test_data_experiment_has_even_and_odd_half_runs(tmp_path):
    sim = {"kind": "cryo3d", "seed": 1, "volume": {"L": 7}, "micrographs": {"n_micrographs": 3}}
    plan = plan_3d({"d": _data(tmp_path, 5), "s": sim, "one": {"kind": "mtd1d", "seed": 0}})
    assert plan.experiments == ["d", "s"]
    assert plan.halves("d") == ["d/half1", "d/half2"] and plan.halves("s") == []
    assert plan.indices["d"] == [0, 1, 2, 3, 4]
    assert plan.indices["d/half1"] == [0, 2, 4] and plan.indices["d/half2"] == [1, 3]
    assert plan.owner["d/half2"] == "d" and plan.configs["d/half2"] is plan.configs["d"]
    assert plan.files["d"] == sorted(str(tmp_path / f"m{k}.mrc") for k in range(5))
    assert plan.indices["s"] == [0, 1, 2] and plan.runs(["d", "s"]) == ["d", "s", "d/half1", "d/half2"]


def test_start_up_errors_name_the_key(tmp_path):
    with pytest.raises(InputError, match=r"experiments\.d\.data\.micrographs: no file matches"):
        plan_3d({"d": {"kind": "cryo3d", "seed": 0, "data": {"micrographs": str(tmp_path / "none*.mrc"), "L": 7}}})
    with pytest.raises(InputError, match=r"experiments\.d\.data\.micrographs.*at least 2"):
        plan_3d({"d": _data(tmp_path, 1)})
    with pytest.raises(InputError, match=r"ctf\.star: CTF STAR file not found \(data\.ctf\)"):
        plan_3d({"d": _data(tmp_path, 2, ctf=str(tmp_path / "ctf.star"))})
    with pytest.raises(InputError, match=r"experiments\.d\.moments\.source"):
        plan_3d({"d": {**_data(tmp_path, 2), "moments": {"source": "exact"}}})


CTF_STAR = """
data_optics

loop_
_rlnOpticsGroup #1
_rlnVoltage #2
_rlnSphericalAberration #3
_rlnAmplitudeContrast #4
1 300.0 2.7 0.1

data_micrographs

loop_
_rlnMicrographName #1
_rlnDefocusU #2
_rlnDefocusV #3
_rlnDefocusAngle #4
Movies/m1.tif 21000.0 20000.0 30.0
Movies/m0.tif 11000.0 11000.0 0.0
"""


def test_data_ctf_table_is_matched_to_the_files_at_start_up(tmp_path):
    (tmp_path / "ctf.star").write_text(CTF_STAR)
    plan = plan_3d({"d": _data(tmp_path, 2, ctf=str(tmp_path / "ctf.star"))})
    assert [c["defocus"] for c in plan.ctfs["d"]] == [11000.0, 21000.0]
    assert plan.ctfs["d"][1]["defocus_v"] == 20000.0 and plan.ctfs["d"][1]["defocus_angle"] == 30.0
    write_image_mrc(tmp_path / "m2.mrc", np.zeros((64, 64), np.float32), 1.5)
    with pytest.raises(InputError, match=r"no rlnMicrographName row for m2\.mrc"):
        plan_3d(
            {
                "d": {
                    "kind": "cryo3d",
                    "seed": 0,
                    "data": {"micrographs": str(tmp_path / "m*.mrc"), "L": 7, "ctf": str(tmp_path / "ctf.star")},
                }
            }
        )
    assert plan_3d({"d": _data(tmp_path, 2)}).ctfs["d"] == [None, None, None]
