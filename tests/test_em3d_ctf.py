"""Approximate EM with the CTF (cryomtd.em3d.ctfmodel and the CTF paths of estep/mstep/driver).

Every check compares with an independent definition written here: the CTF formula
(relativistic wavelength from CODATA constants typed in, RELION's astigmatic defocus and
sign), the filtered projection built by pasting it into the micrograph-sized grid,
multiplying its 2-D DFT by that CTF, transforming back and cutting the enlarged box, then
padding, np.roll and cropping; log-densities summed pixel by pixel; the M-step as a dense
weighted least-squares problem.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
from test_em3d import random_wigner, tiny_model

from cryomtd.ctf import CTF, ctf_group_table
from cryomtd.em3d import PatchSource, em, estep_batch, get_backend, log_likelihoods, mstep, projection_spectra
from cryomtd.em3d.ctfmodel import energy_profile, plan_ctf, truncation_radius
from cryomtd.em3d.estep import Statistics
from cryomtd.io import InputError


# ----------------------------------------------------------------------------- independent CTF
def wavelength(kv):
    h, m, e, c = 6.62607015e-34, 9.1093837139e-31, 1.602176634e-19, 299792458.0  # CODATA 2022
    v = kv * 1e3
    return h / math.sqrt(2 * m * e * v * (1 + e * v / (2 * m * c * c))) * 1e10


def ctf_value(sy, sx, du, dv, angle_deg, kv=300.0, cs_mm=2.7, amp=0.1, bfac=0.0):
    """−(√(1−A²) sin χ + A cos χ)·exp(−B s²/4), χ = πλΔf(θ)s² − ½πC_sλ³s⁴."""
    lam = wavelength(kv)
    s2 = sx**2 + sy**2
    theta = np.arctan2(sy, sx)
    df = 0.5 * (du + dv) + 0.5 * (du - dv) * np.cos(2 * (theta - np.deg2rad(angle_deg)))
    chi = np.pi * lam * df * s2 - 0.5 * np.pi * cs_mm * 1e7 * lam**3 * s2**2
    return -(np.sqrt(1 - amp**2) * np.sin(chi) + amp * np.cos(chi)) * np.exp(-bfac * s2 / 4)


def filtered_box(p, params, pixel, grid, t):
    """The projection p (L×L) pasted at the corner of a periodic ``grid`` micrograph, filtered by
    the DFT, and cut on the enlarged box: pixels [−t, L + t)² around the corner → (L+2t)²."""
    L = p.shape[0]
    img = np.zeros(grid)
    img[:L, :L] = p
    fy = np.fft.fftfreq(grid[0], d=pixel)[:, None]
    fx = np.fft.fftfreq(grid[1], d=pixel)[None, :]
    q = np.fft.ifft2(np.fft.fft2(img) * ctf_value(fy, fx, *params)).real
    rows = np.arange(-t, L + t) % grid[0]
    cols = np.arange(-t, L + t) % grid[1]
    return q[np.ix_(rows, cols)]


def crop_shifted(q, s, L):
    """C R_s Z q: the box q (B×B) padded to (L+B)², rolled by s, cropped to L×L."""
    B = q.shape[0]
    z = np.zeros((L + B, L + B))
    z[:B, :B] = q
    return np.roll(z, s, axis=(0, 1))[:L, :L]


# (defocus U, defocus V, angle): one astigmatic group, one round
GROUPS = [(9000.0, 7000.0, 30.0), (14000.0, 14000.0, 0.0)]
PIXEL, GRID, T = 3.0, (21, 17), 2  # odd grids: no Nyquist row or column


def ctf_of(params):
    du, dv, ang = params
    return CTF(du, defocus_v=dv if dv != du else None, defocus_angle=ang)


def setup(L=4, R=3, P=6, sigma=0.6, seed=0):
    model = tiny_model(L, seed=seed)
    wig = random_wigner(R, 2)
    rng = np.random.default_rng(3)
    coef = rng.standard_normal(model.size)
    patches = rng.standard_normal((P, L, L)) * sigma + rng.standard_normal((P, 1, 1))
    N = L + L + 2 * T
    rho = rng.random((N, N)) + 0.1
    rho /= rho.sum()
    pi = rng.random(R) + 0.5
    pi /= pi.sum()
    return model, wig, coef, patches, rho, pi, sigma


def direct_loglik(patches, boxes, sigma, log_rho, log_pi):
    P, L = patches.shape[:2]
    R, B = boxes.shape[:2]
    N = L + B
    out = np.empty((P, R, N, N))
    for i in range(P):
        for r in range(R):
            for sy in range(N):
                for sx in range(N):
                    resid = patches[i] - crop_shifted(boxes[r], (sy, sx), L)
                    out[i, r, sy, sx] = (
                        -np.sum(resid**2) / (2 * sigma**2)
                        - 0.5 * L * L * np.log(2 * np.pi * sigma**2)
                        + log_rho[sy, sx]
                        + log_pi[r]
                    )
    return out


def ctf_model(L):
    ctf = plan_ctf([ctf_of(g) for g in GROUPS], [GRID, GRID], L, PIXEL, truncation=T)
    assert ctf.box == L + 2 * T and ctf.n_groups == 2
    return ctf


# ----------------------------------------------------------------------------- E-step
@pytest.mark.parametrize("backend", ["numpy", "torch-cpu"])
@pytest.mark.parametrize("method", ["fft", "matmul"])
@pytest.mark.parametrize("group", [0, 1])
def test_loglik_with_ctf_matches_direct_sum(backend, method, group):
    model, wig, coef, patches, rho, pi, sigma = setup()
    L = model.L
    xp = get_backend(backend)
    gmodel = ctf_model(L).models(model)[group]
    spectra = projection_spectra(gmodel.project(coef, wig), np.log(rho), np.log(pi), xp, method, L=L)
    ll, _ = log_likelihoods(patches, spectra, sigma, xp, rot_chunk=2)
    boxes = np.stack([filtered_box(p, GROUPS[group], PIXEL, GRID, T) for p in model.project(coef, wig)])
    ref = direct_loglik(patches, boxes, sigma, np.log(rho), np.log(pi))
    # float64 FFT round-off on O(100) terms
    np.testing.assert_allclose(xp.to_numpy(ll), ref, rtol=0, atol=1e-9)
    stats = estep_batch(patches, spectra, sigma, xp, rot_chunk=2)
    np.testing.assert_allclose(stats.loglik, scipy.special.logsumexp(ref, axis=(1, 2, 3)).sum(), atol=1e-8)


@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_em_first_loglik_uses_each_micrographs_group(method):
    """Two micrographs in two defocus groups (a third micrograph repeats group 0): EM's first
    log-likelihood equals the direct sum with each patch compared to its own group's filtered
    projections, uniform priors over rotations and the (L+B)² shifts."""
    model, wig, coef, _, _, _, sigma = setup()
    L = model.L
    rng = np.random.default_rng(9)
    mics = [rng.standard_normal((12, 8)) * 2.0 for _ in range(3)]
    params = [GROUPS[0], GROUPS[1], GROUPS[0]]
    res = em(
        PatchSource(mics, L),
        model,
        wig,
        sigma=sigma,
        x0=coef,
        iterations=1,
        tol=0,
        backend="numpy",
        method=method,
        ctfs=[ctf_of(p) for p in params],
        pixel_size=PIXEL,
        ctf_truncation=T,
    )
    assert res.ctf["box"] == L + 2 * T and res.ctf["group_of"] == [0, 1, 0] and res.rho.shape == (L + 8, L + 8)
    # the kernel grid is the micrographs' shape (12, 8), enlarged to 2(L + t) + 1 = 13 per axis
    assert res.ctf["grids"] == [[13, 13], [13, 13]]
    proj = model.project(coef, wig)
    N = 2 * L + 2 * T
    total, count = 0.0, 0
    for mic, prm in zip(mics, params):
        boxes = np.stack([filtered_box(p, prm, PIXEL, (13, 13), T) for p in proj])
        patches = np.stack([mic[r * L : (r + 1) * L, c * L : (c + 1) * L] for r in range(3) for c in range(2)])
        ref = direct_loglik(patches, boxes, sigma, np.full((N, N), -2 * np.log(N)), np.full(3, -np.log(3)))
        total += scipy.special.logsumexp(ref, axis=(1, 2, 3)).sum()
        count += len(patches)
    assert res.loglik[0] == pytest.approx(total / count, rel=1e-12, abs=1e-10)


# ----------------------------------------------------------------------------- M-step
@pytest.mark.parametrize("prior_weight", [0.0, 0.3])
def test_mstep_with_ctf_is_weighted_least_squares_minimiser(prior_weight):
    model, wig, coef, patches, rho, pi, sigma = setup(P=4)
    L, R = model.L, 3
    xp = get_backend("numpy")
    models = ctf_model(L).models(model)
    groups = [patches[:2], patches[2:]]  # two patches per defocus group
    parts = []
    for gm, gp in zip(models, groups):
        spectra = projection_spectra(gm.project(0.5 * coef, wig), np.log(rho), np.log(pi), xp, "fft", L=L)
        parts.append(estep_batch(gp, spectra, sigma, xp, 2))
    stats = Statistics(
        sum(p.count for p in parts),
        sum(p.loglik for p in parts),
        np.concatenate([p.n for p in parts]),
        np.concatenate([p.b for p in parts]),
    )
    new = mstep(stats, models, wig, sigma, prior_weight=prior_weight, learn_rotation_prior=True)
    G = model.operators(wig)  # (R, L², size)
    rows, rhs, ws = [], [], []
    for g, gp in enumerate(groups):
        # columns: the independently filtered box of every coefficient's projection, per rotation
        cols = np.stack(
            [
                np.stack([filtered_box(G[r, :, k].reshape(L, L), GROUPS[g], PIXEL, GRID, T) for k in range(model.size)])
                for r in range(R)
            ]
        )  # (R, size, B, B)
        boxes = np.einsum("rkab,k->rab", cols, 0.5 * coef)
        ref = direct_loglik(gp, boxes, sigma, np.log(rho), np.log(pi))
        w = np.exp(ref - scipy.special.logsumexp(ref, axis=(1, 2, 3), keepdims=True))
        ws.append(w)
        N = ref.shape[-1]
        for i in range(len(gp)):
            for r in range(R):
                for sy in range(N):
                    for sx in range(N):
                        M = np.stack([crop_shifted(cols[r, k], (sy, sx), L).ravel() for k in range(model.size)], 1)
                        rows.append(np.sqrt(w[i, r, sy, sx]) * M)
                        rhs.append(np.sqrt(w[i, r, sy, sx]) * gp[i].ravel())
    rows.append(np.sqrt(prior_weight) * sigma * np.eye(model.size))
    rhs.append(np.zeros(model.size))
    c_ref = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0]
    np.testing.assert_allclose(new["coef"], c_ref, rtol=1e-8, atol=1e-10)
    # the same equations with the groups summed on the L×L domain (the driver's path at large size)
    fast = mstep(
        stats, model, wig, sigma, prior_weight=prior_weight, learn_rotation_prior=True,
        ctf_operators=ctf_model(L).operators,
    )  # fmt: skip
    np.testing.assert_allclose(fast["coef"], c_ref, rtol=1e-8, atol=1e-10)
    w_all = np.concatenate(ws)
    np.testing.assert_allclose(new["rho"], w_all.sum(axis=(0, 1)) / 4, atol=1e-12)
    np.testing.assert_allclose(new["pi"], w_all.sum(axis=(0, 2, 3)) / 4, atol=1e-12)


def test_mstep_path_choice():
    from cryomtd.em3d.mstep import ctf_path_is_cheaper

    assert ctf_path_is_cheaper(11, 27, 258, 1) and ctf_path_is_cheaper(11, 27, 258, 4)  # published size
    assert not ctf_path_is_cheaper(7, 15, 30, 3)  # few coefficients: per-group filtered models


# ----------------------------------------------------------------------------- truncation and the simulator
def test_truncation_rule_and_energy_profile():
    L, px = 7, 4.0
    for df in (5000.0, 10000.0, 25000.0):
        c = CTF(df)
        t, kept, deloc = truncation_radius(c, L, px)
        assert t <= math.ceil(deloc)
        assert kept >= 0.99 or t == math.ceil(deloc)
        if t > 0:  # the smallest such t
            cap = math.ceil(deloc)
            from cryomtd.em3d.ctfmodel import ctf_kernel, kernel_grid

            prof = energy_profile(ctf_kernel(c, px, kernel_grid((4 * (L + cap),) * 2, L, cap)), L)
            assert prof[t - 1] < 0.99 <= prof[t]
            assert np.all(np.diff(prof) >= -1e-12) and prof[-1] <= 1 + 1e-12
    # more defocus spreads further
    assert truncation_radius(CTF(25000.0), L, px)[0] > truncation_radius(CTF(5000.0), L, px)[0]


def test_filtered_box_equals_the_simulators_micrograph():
    """A particle pasted by the simulator and the whole micrograph filtered by apply_ctf (the
    kernel grid is the micrograph's): on the enlarged box the model's filtered projection
    equals the micrograph exactly; outside it lies the truncation loss, which falls with t."""
    from cryomtd import simulate
    from cryomtd.ctf import apply_ctf

    L, size, px = 5, 60, 4.0
    c = CTF(12000.0, defocus_v=10000.0, defocus_angle=20.0)
    model = tiny_model(L, S=(2, 1, 1))
    wig = random_wigner(1, 2)
    coef = np.random.default_rng(0).standard_normal(model.size)
    corner = np.array([[27, 26]])
    mic = apply_ctf(simulate.paste(size, corner, model.project(coef, wig)), c, px)
    lost = []
    for t in (1, 3, 8, 20):
        ctf = plan_ctf([c], [(size, size)], L, px, truncation=t)
        assert ctf.grids == ((size, size),)
        q = ctf.models(model)[0].project(coef, wig)[0]
        y0, x0 = corner[0] - t
        inside = mic[y0 : y0 + L + 2 * t, x0 : x0 + L + 2 * t]
        np.testing.assert_allclose(q, inside, rtol=0, atol=1e-12 * np.abs(mic).max())
        lost.append(1.0 - np.sum(inside**2) / np.sum(mic**2))
    assert lost[0] > lost[1] > lost[2] > lost[3] >= 0 and lost[1] > 0.01 and lost[3] < 2e-3, lost


def test_bad_ctf_inputs():
    model = tiny_model(4)
    wig = random_wigner(2, 2)
    src = PatchSource([np.zeros((8, 8)), np.zeros((8, 8))], 4)
    with pytest.raises(InputError, match="for none"):
        em(src, model, wig, sigma=1.0, ctfs=[CTF(10000.0), None], pixel_size=2.0, iterations=1)
    with pytest.raises(InputError, match="pixel size"):
        em(src, model, wig, sigma=1.0, ctfs=[CTF(10000.0)] * 2, iterations=1)
    with pytest.raises(InputError, match="one CTF per micrograph"):
        em(src, model, wig, sigma=1.0, ctfs=[CTF(10000.0)], pixel_size=2.0, iterations=1)


def test_no_ctf_is_the_ctf_free_model():
    """ctfs=None or all None: the same numbers as a run without the argument, bit for bit."""
    model = tiny_model(4)
    wig = random_wigner(3, 2)
    mic = np.random.default_rng(2).standard_normal((16, 12))
    kw = dict(sigma=0.7, iterations=2, tol=0, backend="numpy", seed=1)
    a = em(PatchSource([mic], 4), model, wig, **kw)
    b = em(PatchSource([mic], 4), model, wig, ctfs=[None], pixel_size=2.0, **kw)
    np.testing.assert_array_equal(a.coef, b.coef)
    np.testing.assert_array_equal(a.loglik, b.loglik)
    assert a.ctf is None and b.ctf is None


def test_ctf_resume_and_fingerprint(tmp_path):
    """Batch EM with a CTF killed after iteration 2 resumes to the uninterrupted numbers; a
    checkpoint made with another defocus is not resumed."""
    model = tiny_model(4)
    wig = random_wigner(3, 2)
    rng = np.random.default_rng(5)
    mics = [rng.standard_normal((12, 12)) for _ in range(2)]
    ctfs = [CTF(9000.0), CTF(15000.0)]
    kw = dict(sigma=0.8, iterations=4, tol=0, backend="numpy", seed=2, pixel_size=3.0, ctf_truncation=2)
    full = em(PatchSource(mics, 4), model, wig, ctfs=ctfs, checkpoint=tmp_path / "a.npz", **kw)

    class Killed(Exception):
        pass

    def kill(k, res):
        if k == 2:
            raise Killed

    with pytest.raises(Killed):
        em(PatchSource(mics, 4), model, wig, ctfs=ctfs, checkpoint=tmp_path / "b.npz", callback=kill, **kw)
    resumed = em(PatchSource(mics, 4), model, wig, ctfs=ctfs, checkpoint=tmp_path / "b.npz", **kw)
    assert resumed.resumed_from == 2
    np.testing.assert_array_equal(resumed.coef, full.coef)
    np.testing.assert_array_equal(resumed.loglik, full.loglik)
    other = em(PatchSource(mics, 4), model, wig, ctfs=[CTF(9000.0), CTF(16000.0)], checkpoint=tmp_path / "b.npz", **kw)
    assert other.resumed_from == 0


# ----------------------------------------------------------------------------- through the stage
def test_stage_reads_the_ctf_group_table(tmp_path):
    import json

    from cryomtd import rotations, simulate, volume
    from cryomtd.basis import SphericalBessel
    from cryomtd.em3d.stage import reconstruct

    L = 5
    b = SphericalBessel(L, 2)
    coef = b.expand(volume.gaussian_blobs(L, 3, 0))
    infos, mics = [], []
    for k, df in enumerate((8000.0, 14000.0)):
        g = np.random.default_rng(k)
        corners = simulate.place_particles(40, L, 4, 3 * L, g)
        from cryomtd.ctf import apply_ctf

        img = apply_ctf(simulate.paste(40, corners, b.project(coef, rotations.random(4, g))), CTF(df), 4.0)
        img += 0.05 * g.standard_normal(img.shape)
        path = tmp_path / f"{k}.mrc"
        volume.write_image_mrc(path, img, 4.0)
        info = {"sigma": 0.05, "L": L, "pixel_size": 4.0, "ctf": CTF(df).to_dict(), "size": [40, 40]}
        (tmp_path / f"{k}.json").write_text(json.dumps(info))
        infos.append(info)
        mics.append(path)
    table = ctf_group_table(infos, ["0", "1"], max_phase_error=0.1)
    assert table.modelled and len(table.groups) == 2
    table.save(tmp_path / "ctf_groups.json")
    kw = dict(settings={"iterations": 1, "grid_step": 60, "advanced": {"backend": "numpy"}}, ell_max=2)
    res, _, _ = reconstruct(
        mics, [tmp_path / "0.json", tmp_path / "1.json"], ctf_groups=tmp_path / "ctf_groups.json", **kw
    )
    assert res.ctf is not None and res.ctf["group_of"] == [0, 1]
    assert [c["defocus"] for c in res.ctf["groups"]] == [8000.0, 14000.0]
    plain, _, _ = reconstruct(mics, [tmp_path / "0.json", tmp_path / "1.json"], **kw)
    assert plain.ctf is None
    ignore = ctf_group_table(infos, ["0", "1"], mode="ignore")
    ignore.save(tmp_path / "ignore.json")
    ign, _, _ = reconstruct(mics, [tmp_path / "0.json", tmp_path / "1.json"], ctf_groups=tmp_path / "ignore.json", **kw)
    assert ign.ctf is None and np.array_equal(ign.coef, plain.coef)
    from cryomtd.cli import main
    from cryomtd.io import read_json

    cli = ["em", *map(str, mics), "--out", str(tmp_path / "out"), "--ell-max", "2", "--grid-step", "60"]
    cli += ["--iterations", "1", "--backend", "numpy", "--ctf-groups", str(tmp_path / "ctf_groups.json")]
    assert main(cli) == 0
    trace = read_json(tmp_path / "out" / "em_trace.json")
    assert trace["ctf"]["group_of"] == [0, 1] and trace["ctf"]["box"] == res.ctf["box"]
    est = np.load(tmp_path / "out" / "em.npz")
    assert int(est["ctf_box"]) == res.ctf["box"] and est["rho"].shape == (L + res.ctf["box"],) * 2
    bad = ctf_group_table(infos, ["0", "7"], max_phase_error=0.1)
    bad.save(tmp_path / "bad.json")
    with pytest.raises(InputError, match="not in the CTF group table"):
        reconstruct(mics, [tmp_path / "0.json", tmp_path / "1.json"], ctf_groups=tmp_path / "bad.json", **kw)


# ----------------------------------------------------------------------------- recovery
@pytest.mark.slow
def test_recovers_volume_with_ctf_as_well_as_without():
    """Three micrographs from cryomtd.simulate.micrograph (Haar-random rotations, SNR 20, 5 Å
    pixels) at defocus 0.7, 1.0, 1.3 µm (three groups; the rule picks t = 4, box 15), centres
    ≥ 21 px apart so that a patch sees at most one filtered particle. From the truth low-passed
    to ℓ ≤ 1 (it fixes the frame: no alignment), 4 iterations on the 60° grid. The same
    micrographs without a CTF, reconstructed without one, set the bar: the 60° grid (72
    rotations against random ones) and 60 particles limit both runs alike (measured: relative
    error 0.41 with the CTF modelled, 0.43 without a CTF in the data). Ignoring the CTF on
    the CTF data is measurably worse (measured 0.72)."""
    from cryomtd import simulate, volume
    from cryomtd.basis import SphericalBessel
    from cryomtd.em3d import run
    from cryomtd.evaluate.align import relative_error
    from cryomtd.evaluate.fsc import fsc

    L, size, px = 7, 140, 5.0
    b = SphericalBessel(L, 3)
    coef = b.expand(volume.gaussian_blobs(L, 5, 0))
    truth = b.evaluate(coef)
    defoci = [7000.0, 10000.0, 13000.0]

    def data(with_ctf):
        return [
            simulate.micrograph(
                coef, size, gamma=0.05, snr=20.0, seed=k, spacing=21, basis=b, pixel_size=px,
                ctf=CTF(df) if with_ctf else None,
            )
            for k, df in enumerate(defoci)
        ]  # fmt: skip

    x0 = np.where(b.ell <= 1, coef, 0.0)
    kw = dict(grid_step=60, x0=x0, iterations=4, tol=0, seed=0, backend="numpy", pixel_size=px)
    out = {}
    for name, mics, ctfs in (
        ("plain", data(False), None),
        ("ctf", data(True), [CTF(df) for df in defoci]),
    ):
        out[name] = run([m.image for m in mics], b, sigma=mics[0].sigma, ctfs=ctfs, **kw)
        if name == "ctf":
            out["ignore"] = run([m.image for m in mics], b, sigma=mics[0].sigma, **kw)
    assert out["ctf"].ctf["box"] == L + 2 * 4 and out["ctf"].ctf["group_of"] == [0, 1, 2]
    err = {k: relative_error(b.evaluate(r.coef), truth) for k, r in out.items()}
    f = {k: fsc(b.evaluate(r.coef), truth) for k, r in out.items()}
    # about the same as without a CTF: relative error within 0.05, FSC within 0.05 at shells 0–2
    assert err["ctf"] <= err["plain"] + 0.05, err
    assert np.all(f["ctf"][:3] >= f["plain"][:3] - 0.05), f
    assert np.all(f["ctf"][:2] >= 0.95), f
    # ignoring the CTF: relative error at least 0.15 worse
    assert err["ignore"] >= err["ctf"] + 0.15, err
