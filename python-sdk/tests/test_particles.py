"""Particle lowering (LOW-17..20, PMETA-3) and the particle SDK surface (API-28..36)
against the in-process fake gateway: plan shapes, lineage rules, scalars, one
job for mixed values, the job RunMeta, and persisted fields read through
``seed_jobs``."""

import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

np = pytest.importorskip("numpy")

import kangaroo as kg  # noqa: E402
from kangaroo import ir  # noqa: E402
from kangaroo import lowering as lw  # noqa: E402
from kangaroo import particle_lowering as pl  # noqa: E402

from fake_gateway import small_metadata  # noqa: E402

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="the openssl command makes the test certificate")


# ---------------------------------------------------------------------------
# pure lowering


def doc(*frags):
    return ir.Plan([f.tail for f in frags]).to_dict()


def test_load_and_elementwise_specs():
    load = pl.load_plan(-1, 4, "e", "x", 1000)
    (st,) = doc(load)["stages"]
    (t,) = st["templates"]
    assert t["kernel"] == "particle_load_field_chunk_f64" and t["inputs"] == []
    assert t["domain"] == {"step": -1, "level": 0, "blocks": [0, 1, 2, 3]}
    assert t["outputs"][0]["buffer"] == {"dtype": "f64", "init": "uninitialized",
                                         "shape": {"kind": "dynamic",
                                                   "upper_bound": {"kind": "backend_chunk", "input_index": 0}}}
    assert t["params"] == {"type": "ParticleFieldParams", "particle_type": "e", "field_name": "x"}
    prods = {1000: load.tail}
    mask = pl.unary_plan(-1, 4, "particle_gt_mask", 1000, 1001, scalar=2, producers=prods)
    d = doc(mask)
    assert d["stages"][1]["after"] == [0]
    mt = d["stages"][1]["templates"][0]
    assert mt["outputs"][0]["buffer"]["shape"] == {"kind": "like_input", "input_index": 0}
    assert mt["outputs"][0]["buffer"]["dtype"] == "u8" and mt["params"] == {"type": "ScalarParams", "scalar": 2.0}
    fin = pl.unary_plan(-1, 4, "particle_isfinite_mask", 1000, 1002, producers=prods)
    assert doc(fin)["stages"][1]["templates"][0]["params"] == {}
    arith = pl.binary_plan(-1, 4, "particle_add", 1000, 1001, 1003)
    at = doc(arith)["stages"][0]["templates"][0]
    assert [i["field"] for i in at["inputs"]] == [1000, 1001]
    assert at["outputs"][0]["buffer"]["shape"]["upper_bound"] == {"kind": "like_input", "input_index": 0}
    assert doc(arith)["stages"][0]["after"] == []  # no producers given: LOW-1


def test_and_chain_and_filter():
    alloc = lw.FieldAllocator(2000)
    frag = pl.and_plan(-1, 2, [10, 11, 12], alloc, 1500)
    d = doc(frag)
    assert [st["templates"][0]["kernel"] for st in d["stages"]] == ["particle_and_mask"] * 2
    assert d["stages"][1]["after"] == [0] and frag.out_field == 1500
    assert d["stages"][1]["templates"][0]["outputs"][0]["field"] == 1500
    assert d["stages"][0]["templates"][0]["outputs"][0]["buffer"]["shape"]["kind"] == "dynamic"
    with pytest.raises(ValueError, match="particle_and requires at least one mask"):
        pl.and_plan(-1, 2, [], alloc, 1501)
    f = doc(pl.filter_plan(-1, 2, 10, 11, 12))["stages"][0]["templates"][0]
    assert f["kernel"] == "particle_filter" and f["outputs"][0]["buffer"]["dtype"] == "f64"


@pytest.mark.parametrize("op,kernel,reducer,dtype", [
    ("sum", "particle_sum", "uniform_slice_reduce", "f64"),
    ("min", "particle_min", "particle_scalar_min_reduce", "f64"),
    ("max", "particle_max", "particle_scalar_max_reduce", "f64"),
    ("count", "particle_count", "particle_int64_sum_reduce", "i64"),
    ("len", "particle_len_f64", "particle_int64_sum_reduce", "i64"),
])
def test_reductions_follow_low19(op, kernel, reducer, dtype):
    alloc = lw.FieldAllocator(3000)
    frag = pl.reduce_plan(-1, 16, op, 10, 20, alloc=alloc, fan_in=4, finite_only=False)
    d = doc(frag)
    first = d["stages"][0]["templates"][0]
    assert first["kernel"] == kernel
    assert first["outputs"][0]["buffer"] == {"dtype": dtype, "init": "zero", "shape": {"kind": "fixed", "extents": [1]}}
    reds = [st["templates"][0] for st in d["stages"][1:]]
    assert [r["kernel"] for r in reds] == [reducer, reducer]
    assert reds[0]["graph_reduce"]["output_blocks"] == [0, 4, 8, 12]
    assert reds[1]["graph_reduce"]["output_blocks"] == [0]
    if op in ("min", "max"):
        assert first["params"] == reds[0]["params"] == {"type": "FiniteOnlyParams", "finite_only": False}
    assert frag.block == 0 and frag.out_field == reds[1]["outputs"][0]["field"]
    single = pl.reduce_plan(-1, 1, op, 10, 21, alloc=alloc)
    assert len(doc(single)["stages"]) == 1 and single.out_field == 21


def test_histogram_and_topk_lowering():
    alloc = lw.FieldAllocator(4000)
    edges = pl.histogram_edges(4, (0.0, 1.0))
    assert edges == [0.0, 0.25, 0.5, 0.75, 1.0]
    h = pl.histogram_plan(-1, 3, 10, edges, 30, weights=11, alloc=alloc)
    t = doc(h)["stages"][0]["templates"][0]
    assert t["kernel"] == "particle_histogram1d_weighted" and len(t["inputs"]) == 2
    assert t["params"] == {"type": "ParticleHistogramParams", "edges": edges, "density": False}
    assert t["outputs"][0]["buffer"]["shape"] == {"kind": "fixed", "extents": [4]}
    with pytest.raises(ValueError, match="hist_range is required when bins is an integer"):
        pl.histogram_edges(4, None)
    with pytest.raises(ValueError, match="bins must define at least two edges"):
        pl.histogram_edges([1.0], None)

    tk = pl.topk_plan(-1, 5, "e", "id", 3, 50, alloc=alloc)
    d = doc(tk)
    kernels = [st["templates"][0]["kernel"] for st in d["stages"]]
    assert kernels[0] == "particle_topk_modes_map" and kernels[-1] == "particle_topk_modes_finalize"
    assert set(kernels[1:-1]) == {"particle_value_counts_reduce"}
    assert d["stages"][0]["templates"][0]["outputs"][0]["buffer"]["dtype"] == "opaque"
    fin = d["stages"][-1]["templates"][0]
    assert fin["domain"]["blocks"] == [0] and fin["params"] == {"type": "TopKModesParams", "k": 3}
    assert fin["outputs"][0]["buffer"]["shape"] == {"kind": "fixed", "extents": [6]}
    with pytest.raises(ValueError, match="k must be positive"):
        pl.topk_plan(-1, 5, "e", "id", 0, 51, alloc=alloc)


def test_virtual_particle_step_joins_the_mesh_runmeta():
    rm = lw.runmeta_from_metadata(small_metadata(), step=0, particle_species={"electrons": 3})
    assert pl.particle_step_label(rm) == -1
    job = pl.job_runmeta(rm, 3)
    assert [s.step for s in job.steps] == [0, -1]
    vs = job.to_dict()["steps"][1]
    assert vs["levels"][0]["boxes"] == [[[c, 0, 0], [c, 0, 0]] for c in range(3)]
    assert vs["levels"][0]["geom"]["dx"] == [1.0, 1.0, 1.0] and vs["levels"][0]["geom"]["x0"] == [0.0, 0.0, 0.0]
    assert job.particle_species == {"electrons": 3}
    assert pl.job_runmeta(rm, 0) is rm
    taken = lw.RunMeta(rm.steps + (pl.virtual_particle_step(-1, 1),))
    assert pl.particle_step_label(taken) == -2
    assert pl.species_chunk_count(rm, "electrons", 9) == 3
    assert pl.species_chunk_count(rm, "ions", 0) == 1 and pl.species_chunk_count(rm, "ions", 5) == 5


# ---------------------------------------------------------------------------
# the SDK surface against the fake gateway


pytestmark = pytest.mark.usefixtures("isolated_settings")


def open_ds(gw):
    return kg.Client(gw.url, "tok-a", gw.cert, backoff=0.01).open_dataset("plt00007")


def bodies(gw):
    return [gw.bodies[j] for j in sorted(gw.bodies)]


def test_exports():
    assert kg.Mask is kg.ParticleMask
    for name in ("ParticleSpecies", "ParticleArray", "Scalar", "TopK", "TopKResult", "ChunkedArray"):
        assert name in kg.__all__ and getattr(kg, name) is not None


@needs_openssl
def test_species_and_lineage_rules(gw):
    ds = open_ds(gw)
    sp = ds.particles["electrons"]
    assert sp.chunks == 3 and list(sp.fields) == ["x", "y", "z", "mass"]
    x, m = sp["x"], sp["mass"]
    assert sp["x"] is x and x.domain == "Particles(chunks=3)" and x.dtype == "float64"
    assert (x > 0.5).domain == "ParticleMask(chunks=3)" and (x > 0.5).dtype == "bool"
    assert x.sum().domain == "Scalar" and x.topk(2).domain == "TopK(k=2)"
    assert x.histogram(bins=4, range=(0, 1)).domain == "Histogram(bins=4)"

    a, b = x > 0.5, m < 2.0
    both = a & b
    kept = x[both]
    assert kept.domain == "Particles(chunks=3)"
    (kept + m[both]).sum()  # filtered by the same mask: combinable
    with pytest.raises(ValueError, match="different filtered particle domains"):
        kept + x[a]
    with pytest.raises(ValueError, match="different filtered particle domains"):
        kept + x
    with pytest.raises(ValueError, match="different filtered particle domains"):
        m[a][both]
    other = open_ds(gw).particles["electrons"]["x"]
    with pytest.raises(ValueError, match="different dataset contexts"):
        x + other
    with pytest.raises(TypeError):
        x + ds["density"]
    with pytest.raises(TypeError, match="only '&'"):
        a + 1.0
    with pytest.raises(TypeError):
        x & a
    with pytest.raises(TypeError):
        x > m
    with pytest.raises(ValueError, match="topk requires a backend particle field"):
        (x * 2.0).topk(3)
    assert x.rename("pos").topk(3).k == 3  # provenance, not the display name
    with pytest.raises(TypeError):
        x.astype("int64")
    assert x.astype("float32").dtype == "float32"
    with pytest.raises(ValueError):
        x + float("nan")
    assert not gw.seen("POST", "/v1/jobs")  # building runs nothing (API-18)


@needs_openssl
def test_different_species_are_refused(gw):
    meta = small_metadata()
    meta["particle_info"]["ions"] = dict(meta["particle_info"]["electrons"])
    gw.metadata.update(meta)
    ds = open_ds(gw)
    with pytest.raises(ValueError, match="different particle species"):
        ds.particles["electrons"]["x"] + ds.particles["ions"]["x"]


@needs_openssl
def test_scalar_refuses_conversions(gw):
    ds = open_ds(gw)
    s = ds.particles["electrons"]["mass"].sum()
    for conv in (float, int, bool):
        with pytest.raises(TypeError, match=r"compute\(\)"):
            conv(s)
    with pytest.raises(TypeError, match="no options"):
        s.compute(gather=True)
    with pytest.raises(TypeError):
        len(ds.particles["electrons"]["mass"])
    assert "particle_sum" in s.explain() and s.visualize().startswith("digraph kangaroo {")


@needs_openssl
def test_mixed_values_run_as_one_job(gw):
    ds = open_ds(gw)
    sp = ds.particles["electrons"]
    x = sp["x"]

    def canned(field, buf, where):
        step, level, block = where
        if buf["dtype"] == "i64":
            return np.array([7], dtype=np.int64)
        if buf["shape"]["kind"] == "fixed" and buf["shape"]["extents"] == [6]:
            return np.array([3.0, 1.0, 2.0, 5.0, 4.0, 4.0])
        if buf["shape"]["kind"] == "fixed" and buf["shape"]["extents"] == [1]:
            return np.array([10.0 + block])
        if buf["shape"]["kind"] == "fixed":
            return np.ones(buf["shape"]["extents"])
        return np.arange(4.0) + block

    gw.result_factory = canned
    img = ds["density"].slice(axis="z")
    cic = sp.project(axis="z", resolution=(8, 6))
    values = kg.compute(img, cic, x.sum(), x.len(), x.mean(), (x > 1.0).count(), x.topk(3),
                        x.histogram(bins=[0.0, 1.0, 3.0], density=True), x * 2.0, x > 1.0, gather=False)
    assert len(gw.seen("POST", "/v1/jobs")) == 1
    body = bodies(gw)[0]
    labels = [s["step"] for s in body["runmeta"]["steps"]]
    assert labels == [0, -1] and len(body["runmeta"]["steps"][1]["levels"][0]["boxes"]) == 3
    assert body["runmeta"]["particle_species"] == {"electrons": 3}
    assert "seed_jobs" not in body
    _, proj, total, n, mean, count, top, hist, doubled, mask = values
    assert proj.shape == (6, 8)
    assert total == 10.0 and isinstance(total, float)
    assert n == 7 and isinstance(n, int) and count == 7
    assert mean == pytest.approx(10.0 / 7)
    np.testing.assert_array_equal(top.values, [3.0, 1.0, 2.0])
    np.testing.assert_array_equal(top.counts, [5.0, 4.0, 4.0])
    np.testing.assert_allclose(hist.counts, [0.5, 0.25])  # density: count / (total * width)
    assert isinstance(doubled, kg.ChunkedArray) and len(doubled) == 3
    np.testing.assert_array_equal(doubled.gather(), np.concatenate([np.arange(4.0) + b for b in range(3)]))
    assert mask.gather().dtype == bool
    with pytest.raises(MemoryError, match="exceeding max_bytes=8"):
        doubled.gather(max_bytes=8)
    with pytest.raises(MemoryError):
        (x * 3.0).compute(max_bytes=8)
    assert isinstance((x * 4.0).compute(gather=True), np.ndarray)
    assert kg.ChunkedArray([]).gather().dtype == np.float64


@needs_openssl
def test_topk_short_result_is_empty(gw):
    ds = open_ds(gw)
    gw.result_factory = lambda field, buf, where: np.array([1.0])
    r = ds.particles["electrons"]["x"].topk(2).compute()
    assert r.values.size == 0 and r.counts.size == 0


@needs_openssl
def test_persist_seeds_later_jobs(gw):
    ds = open_ds(gw)
    derived = ds["density"] * 2.0
    early = derived.slice(axis="z")
    x2 = ds.particles["electrons"]["x"] * 2.0
    assert derived.persist() is derived and x2.persist() is x2
    first, second = sorted(gw.bodies)
    late = (derived + 1.0).histogram(bins=4, range=(0, 1))
    kg.compute(early, late, (x2 + 1.0).sum())
    body = gw.bodies[sorted(gw.bodies)[-1]]
    assert sorted(body["seed_jobs"]) == [first, second]
    kernels = [t["kernel"] for st in body["plan"]["stages"] for t in st["templates"]]
    assert "particle_load_field_chunk_f64" not in kernels
    # The expressions producing the persisted fields are gone; the field IDs are not bound.
    assert kernels.count("particle_multiply_scalar") == 0
    read = {i["field"] for st in body["plan"]["stages"] for t in st["templates"] for i in t["inputs"]}
    assert derived._field in read and x2._field in read
    assert str(derived._field) not in body.get("fields", {}) and str(ds.field_id("density")) not in body.get(
        "fields", {})
    before = len(gw.bodies)
    derived.compute()
    assert len(gw.bodies) == before  # the persisted value itself needs no job
    # Another view of a persisted value is read from the job that kept it.
    again = x2.rename("twice").compute(gather=True)
    assert len(gw.bodies) == before and again.shape == (30,)
    with pytest.raises(TypeError, match="unexpected persist options"):
        x2.persist(gather=True)
