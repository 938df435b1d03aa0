"""End-to-end tests of particle values and persisted fields through the real gateway.

Particle results (API-28..34, LOW-17..20) are compared with NumPy over the raw
particle files of the AMReX sample plotfiles, read by a small reference
reader below; the CIC projection, which NumPy cannot reproduce simply, is
compared with ``kangaroo-worker run`` of the same lowered plan. Persisted
values (API-36, LOW-23) are checked against the same computation without
persisting, and the later job's plan must be smaller and read the persisted
field from the earlier job (``seed_jobs``).

Skipped like ``test_gateway.py`` when the gateway, the worker or the sample data
are missing.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_gateway import DATA, SMALL, Gateway, pytestmark, worker_run  # noqa: E402,F401

np = pytest.importorskip("numpy")

import kangaroo as kg  # noqa: E402
from kangaroo import ir  # noqa: E402

WARPX = "warpx_3d_quartz_ring_particles/diag1001000"
TRACER = "amrex_singlevortex2d_tracer/plt00000"


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    g = Gateway(str(tmp_path_factory.mktemp("gw"))).start()
    yield g
    g.stop()


@pytest.fixture(autouse=True)
def no_user_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("KANGAROO_CONFIG", str(tmp_path / "client.json"))
    for var in ("KANGAROO_URL", "KANGAROO_TOKEN", "KANGAROO_CA_CERT"):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------------------
# reference reader of AMReX particle files (checkpoint layout, double reals)


def read_species(plotfile, species):
    """{field: [chunk arrays]} with chunks level-major in grid order (PMETA-1)."""
    folder = os.path.join(DATA, plotfile, species)
    tok = open(os.path.join(folder, "Header")).read().split()
    assert tok[0].endswith("_double"), tok[0]
    pos = 1
    dim = int(tok[pos]); pos += 1
    nreal = int(tok[pos]); pos += 1
    real_names = tok[pos:pos + nreal]; pos += nreal
    nint = int(tok[pos]); pos += 1
    int_names = tok[pos:pos + nint]; pos += nint
    checkpoint = int(tok[pos]); pos += 1
    pos += 2  # particle count, next id
    finest = int(tok[pos]); pos += 1
    per_level = [int(t) for t in tok[pos:pos + finest + 1]]  # grid counts of every level come first
    pos += finest + 1
    grids = []
    for level, n in enumerate(per_level):
        for _ in range(n):
            grids.append((level, int(tok[pos]), int(tok[pos + 1]), int(tok[pos + 2])))
            pos += 3
    assert checkpoint == 1
    names = ["x", "y", "z"][:dim] + real_names
    ints = ["id", "cpu"] + int_names
    out = {n: [] for n in names + ints}
    for level, which, count, offset in grids:
        with open(os.path.join(folder, f"Level_{level}", f"DATA_{which:05d}"), "rb") as f:
            f.seek(offset)
            idata = np.fromfile(f, dtype="<i4", count=count * len(ints)).reshape(count, len(ints))
            rdata = np.fromfile(f, dtype="<f8", count=count * len(names)).reshape(count, len(names))
        for i, n in enumerate(names):
            out[n].append(rdata[:, i].copy())
        for i, n in enumerate(ints):
            out[n].append(idata[:, i].astype(np.float64))
    return out


def cat(chunks):
    return np.concatenate(chunks) if chunks else np.empty(0)


def modes(values, k):
    v = values[np.isfinite(values)]
    uniq, counts = np.unique(v, return_counts=True)
    order = sorted(range(len(uniq)), key=lambda i: (-counts[i], -uniq[i]))[:k]
    return uniq[order], counts[order].astype(np.float64)


def jobs_of(client):
    return {j["id"] for j in client.jobs()}


# ---------------------------------------------------------------------------
# particle values


def test_species_surface(gw):
    ds = gw.client().open_dataset(WARPX)
    assert list(ds.particles) == ["electrons", "ions"]
    sp = ds.particles["electrons"]
    assert sp.name == "electrons" and sp.chunks == 32
    assert list(sp.fields)[:4] == ["x", "y", "z", "weight"]
    w = sp["weight"]
    assert isinstance(w, kg.ParticleArray) and w.dtype == "float64" and w.domain == "Particles(chunks=32)"
    assert w.chunks == 32


def test_particle_operators_equal_numpy_in_one_job(gw):
    c = gw.client()
    ds = c.open_dataset(WARPX)
    ref = read_species(WARPX, "electrons")
    sp = ds.particles["electrons"]
    x, w, ux = sp["x"], sp["weight"], sp["momentum_x"]
    rx, rw, rux = cat(ref["x"]), cat(ref["weight"]), cat(ref["momentum_x"])

    right = x > 0.0
    both = right & (w >= float(np.median(rw)))
    picked = w[both]
    values = {
        "sum": w.sum(), "min": x.min(), "max": x.max(finite_only=False), "len": x.len(), "mean": w.mean(),
        "count": right.count(), "count_both": both.count(), "filtered_sum": picked.sum(),
        "filtered_len": picked.len(), "combined": (picked * 2.0 + x[both]).sum(),
        "expr": ((w * 3.0 - 1.5) / 2.0 + x ** 2.0).sum(), "reflected": (1.0 - x).sum(),
        "rdiv": (2.0 / w).max(), "radd": (5.0 + x).min(), "rmul": (3.0 * x).max(), "neg": (-x).max(),
        "rpow": (2.0 ** x).sum(), "arrays": (x * ux - w / ux).sum(),
        "finite": ux.isfinite().count(), "ne": (x != 0.0).count(), "le": (x <= 0.0).count(),
        "hist": x.histogram(bins=8, range=(-0.1, 0.1)),
        "hist_w": x.histogram(bins=np.array([-0.1, -0.02, 0.0, 0.05, 0.1]), weights=w, density=True),
        "topk": sp["cpu"].topk(3), "gathered": (x * 2.0).rename("x2"), "mask": right, "filtered": picked,
    }
    before = jobs_of(c)
    names = list(values)
    got = dict(zip(names, kg.compute(*values.values())))
    assert len(jobs_of(c) - before) == 1  # mesh-free, but still a single job for every value

    r_right = rx > 0.0
    r_both = r_right & (rw >= float(np.median(rw)))
    assert got["sum"] == pytest.approx(rw.sum(), rel=1e-12)
    assert got["min"] == rx.min() and got["max"] == rx.max()
    assert got["len"] == len(rx) == 54 and isinstance(got["len"], int)
    assert got["mean"] == pytest.approx(rw.mean(), rel=1e-12)
    assert got["count"] == int(r_right.sum()) and isinstance(got["count"], int)
    assert got["count_both"] == int(r_both.sum())
    assert got["filtered_sum"] == pytest.approx(rw[r_both].sum(), rel=1e-12)
    assert got["filtered_len"] == int(r_both.sum())
    assert got["combined"] == pytest.approx((rw[r_both] * 2.0 + rx[r_both]).sum(), rel=1e-12)
    assert got["expr"] == pytest.approx(((rw * 3.0 - 1.5) / 2.0 + rx ** 2.0).sum(), rel=1e-12)
    assert got["reflected"] == pytest.approx((1.0 - rx).sum(), rel=1e-12)
    assert got["rdiv"] == pytest.approx((2.0 / rw).max(), rel=1e-12)
    assert got["radd"] == pytest.approx((5.0 + rx).min(), rel=1e-12)
    assert got["rmul"] == pytest.approx((3.0 * rx).max(), rel=1e-12)
    assert got["neg"] == pytest.approx((-rx).max(), rel=1e-12)
    assert got["rpow"] == pytest.approx((2.0 ** rx).sum(), rel=1e-12)
    assert got["arrays"] == pytest.approx((rx * rux - rw / rux).sum(), rel=1e-9)
    assert got["finite"] == int(np.isfinite(rux).sum())
    assert got["ne"] == int((rx != 0).sum()) and got["le"] == int((rx <= 0).sum())

    counts, edges = np.histogram(rx, bins=8, range=(-0.1, 0.1))
    np.testing.assert_allclose(got["hist"].edges, edges)
    np.testing.assert_array_equal(got["hist"].counts, counts)
    dens, _ = np.histogram(rx, bins=[-0.1, -0.02, 0.0, 0.05, 0.1], weights=rw, density=True)
    np.testing.assert_allclose(got["hist_w"].counts, dens, rtol=1e-12)

    mv, mc = modes(cat(ref["cpu"]), 3)
    assert isinstance(got["topk"], kg.TopKResult)
    np.testing.assert_array_equal(got["topk"].values, mv)
    np.testing.assert_array_equal(got["topk"].counts, mc)

    chunked = got["gathered"]
    assert isinstance(chunked, kg.ChunkedArray) and len(chunked) == 32
    for mine, theirs in zip(chunked, ref["x"]):
        np.testing.assert_array_equal(mine, theirs * 2.0)
    np.testing.assert_array_equal(chunked.gather(), rx * 2.0)
    assert got["mask"].gather().dtype == bool
    np.testing.assert_array_equal(got["mask"].gather(), r_right)
    np.testing.assert_array_equal(got["filtered"].gather(), rw[r_both])


def test_gather_and_max_bytes(gw):
    ds = gw.client().open_dataset(WARPX)
    ions = ds.particles["ions"]
    ref = cat(read_species(WARPX, "ions")["z"])
    z = ions["z"]
    np.testing.assert_array_equal(z.compute(gather=True), ref)
    np.testing.assert_array_equal(z.astype("float32").compute(gather=True), ref.astype(np.float32))
    with pytest.raises(MemoryError, match="exceeding max_bytes=100"):
        z.compute(max_bytes=100)
    s = z.sum()
    with pytest.raises(TypeError, match="compute"):
        float(s)
    assert s.compute() == pytest.approx(ref.sum(), rel=1e-12)


def test_multilevel_2d_tracer_and_fan_in(gw):
    ds = gw.client().open_dataset(TRACER)
    ref = read_species(TRACER, "Tracer")
    sp = ds.particles["Tracer"]
    assert sp.chunks == 57
    a = sp["real_comp0"]
    with kg.config.set({"reduction.fan_in": 2}):
        total, n, low, modes3 = kg.compute(a.sum(), sp["x"].len(), (sp["y"] < 0.5).count(), sp["id"].topk(2))
    ra = cat(ref["real_comp0"])
    assert total == pytest.approx(ra.sum(), rel=1e-12)
    assert n == 4096 and low == int((cat(ref["y"]) < 0.5).sum())
    mv, mc = modes(cat(ref["id"]), 2)
    np.testing.assert_array_equal(modes3.values, mv)
    np.testing.assert_array_equal(modes3.counts, mc)


def test_mesh_and_particles_in_one_job_equal_worker_run(gw, tmp_path):
    c = gw.client()
    ds = c.open_dataset(WARPX)
    rho = ds["rho"]
    img = rho.slice(axis="z", resolution=(16, 16))
    cic = ds.particles["ions"].project(axis="z", resolution=(24, 20), mass_field="weight")
    total = ds.particles["ions"]["weight"].sum()
    assert cic.shape == (20, 24) and cic.dtype == "float64"
    before = jobs_of(c)
    got_img, got_cic, got_total = kg.compute(img, cic, total)
    assert len(jobs_of(c) - before) == 1
    assert got_total == pytest.approx(cat(read_species(WARPX, "ions")["weight"]).sum(), rel=1e-12)

    targets = [t for v in (img, cic, total) for t in v._targets()]
    plan_doc = ir.Plan([t for _, t in targets]).to_dict()
    read = {ref["field"] for st in plan_doc["stages"] for t in st["templates"] for ref in t["inputs"]}
    bindings = {int(k): v for k, v in ds.field_bindings(sorted(read)).items()}
    ref = worker_run(plan_doc, ds._job_runmeta().to_dict(), "amrex://" + os.path.join(DATA, WARPX), bindings,
                     [f for f, _ in targets], str(tmp_path))
    np.testing.assert_array_equal(got_img, ref[img._field, ds.level, 0])
    np.testing.assert_array_equal(got_cic, ref[cic._field, ds.level, 0])
    assert got_cic.sum() > 0


# ---------------------------------------------------------------------------
# persisted fields (API-36, LOW-23)


def capture_submissions(client, monkeypatch):
    seen = []
    original = client.submit

    def submit(plan, **kw):
        seen.append({"plan": plan, **kw})
        return original(plan, **kw)

    monkeypatch.setattr(client, "submit", submit)
    return seen


def test_persisted_field_feeds_later_jobs(gw, monkeypatch):
    plain_ds = gw.client().open_dataset(SMALL)
    f = "Y(H2)"
    plain = plain_ds[f] * 2.0 + 1.0
    want_img, want_sum = kg.compute(plain.slice(axis="z", resolution=(24, 20)),
                                    (plain * plain).project(axis="x", resolution=(16, 12)))
    plain_stages = len(ir.Plan([(plain * plain).project(axis="x", resolution=(16, 12))._targets()[0][1]]).to_dict()
                       ["stages"])

    c = gw.client()
    seen = capture_submissions(c, monkeypatch)
    ds = c.open_dataset(SMALL)
    derived = ds[f] * 2.0 + 1.0
    early = derived.slice(axis="z", resolution=(24, 20))  # built before persisting
    assert derived.persist() is derived and derived.is_materialized
    assert len(seen) == 1
    first_job = c.jobs()[0]["id"]
    late = (derived * derived).project(axis="x", resolution=(16, 12))  # built after persisting
    got_img, got_proj = kg.compute(early, late)
    assert len(seen) == 2
    np.testing.assert_array_equal(got_img, want_img)
    np.testing.assert_array_equal(got_proj, want_sum)

    second = seen[1]
    assert second["seed_jobs"] == [first_job]
    stages = second["plan"]["stages"]
    expr_stages = [st for st in stages if st["templates"][0]["kernel"] == "field_expr"]
    # The two expressions producing the persisted field are not run again: only
    # the product stage reads it, and it is not bound to a dataset variable.
    assert len(expr_stages) == 1
    assert str(derived._field) not in second["fields"]
    unpruned = ir.Plan([early._targets()[0][1], late._targets()[0][1]]).to_dict()["stages"]
    assert len(stages) < len(unpruned)
    assert len(late._ancestry()) < plain_stages
    assert "field_expr" in late.explain()  # the product is still there


def test_persisted_particle_array(gw, monkeypatch):
    c = gw.client()
    seen = capture_submissions(c, monkeypatch)
    ds = c.open_dataset(WARPX)
    ref = read_species(WARPX, "electrons")
    w = ds.particles["electrons"]["weight"]
    scaled = w * 0.5
    scaled.persist()
    total = (scaled + 1.0).sum()
    assert total.compute() == pytest.approx((cat(ref["weight"]) * 0.5 + 1.0).sum(), rel=1e-12)
    second = seen[-1]
    assert second["seed_jobs"] and len(seen) == 2
    kernels = [t["kernel"] for st in second["plan"]["stages"] for t in st["templates"]]
    assert "particle_load_field_chunk_f64" not in kernels and "particle_multiply_scalar" not in kernels
    assert scaled.compute().gather().shape == (54,)
    assert len(seen) == 2  # served from the persisted result
