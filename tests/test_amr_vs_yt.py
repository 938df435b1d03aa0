"""Lowered AMR operators run through ``kangaroo-worker`` and compared with yt.

Plans come from ``kangaroo.lowering`` (slices LOW-9, projections LOW-10, mesh
histograms LOW-11, field expressions LOW-12); they run on the real AMReX
plotfiles in ``<repo>/../shared/data/amrex`` and the results are compared
with what yt computes from the same files.

Each dataset runs from two sources:

* ``amrex``: the worker reads the plotfile itself (``--dataset amrex://``,
  fields registered with ``--field ID=NAME``); the RunMeta is synthesized on
  the client from ``kangaroo-worker metadata`` (COORD-4, API-4). Skipped
  while the worker lacks plotfile support.
* ``seeded``: every FAB is taken from yt's grids and handed to the worker as a
  ``memory://`` dataset; the RunMeta is synthesized from a metadata
  dictionary built from yt's index. This isolates lowering and kernels from
  the plotfile reader, so the scientific comparison runs even without it.

All operators of one dataset go into one plan and one worker run.

Gradient and vorticity (LOW-13) and particle CIC (LOW-16) checks run only
when ``kangaroo-worker kernels --json`` reports those kernels implemented.
"""

import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python-sdk"))

np = pytest.importorskip("numpy", reason="numpy (python3-numpy) is needed for the yt comparisons")

from kangaroo import lowering as lw  # noqa: E402

BUILD_DIR = os.environ.get("KANGAROO_BUILD_DIR") or os.path.join(REPO, "build")
if not os.path.isabs(BUILD_DIR):
    BUILD_DIR = os.path.join(REPO, BUILD_DIR)
WORKER = os.path.join(BUILD_DIR, "worker", "kangaroo-worker")
DATA = os.path.join(REPO, "..", "shared", "data", "amrex")

pytestmark = pytest.mark.skipif(
    not os.access(WORKER, os.X_OK),
    reason=f"kangaroo-worker not built at {WORKER} (build it with scripts/build.sh or set KANGAROO_BUILD_DIR)",
)


def _yt():
    yt = pytest.importorskip("yt", reason="yt (python3-yt) is needed for the comparisons with yt")
    yt.set_log_level(40)
    return yt


# ---------------------------------------------------------------------------
# worker capabilities


def worker(*args, timeout=600):
    return subprocess.run([WORKER, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@functools.lru_cache(maxsize=None)
def worker_usage():
    r = worker("--help")
    return r.stdout + r.stderr


@functools.lru_cache(maxsize=None)
def amrex_support():
    """None when the worker can read plotfiles, else the reason it cannot."""
    usage = worker_usage()
    if "metadata" not in usage or "--field" not in usage:
        return ("kangaroo-worker has no AMReX plotfile support yet (no 'metadata' command or "
                "'run --field ID=NAME' in its usage)")
    return None


@functools.lru_cache(maxsize=None)
def implemented_kernels():
    r = worker("kernels", "--json")
    if r.returncode != 0:
        return frozenset()
    return frozenset(k["name"] for k in json.loads(r.stdout) if k.get("implemented", True))


def require_kernels(*names):
    missing = [n for n in names if n not in implemented_kernels()]
    if missing:
        pytest.skip(f"kernel(s) not implemented in this worker: {', '.join(missing)}")


# ---------------------------------------------------------------------------
# datasets


class Case:
    def __init__(self, key, path, fields, *, rz=False, mass=None, partial_slab=False):
        self.key = key
        self.path = path
        self.fields = fields
        self.rz = rz
        self.mass = mass  # field whose volume integral is checked
        self.partial_slab = partial_slab  # also project over a slab aligned to level-0 faces

    @property
    def full_path(self):
        return os.path.join(DATA, self.path)


CASES = [
    # three levels, the finest covering the whole domain: every coarse cell is covered
    Case("pelelmex_3d_small", "pelelmex_3d_small", ("Y(H2)", "Y(O2)"), mass="Y(O2)", partial_slab=True),
    # three levels with partial refinement and 38 components
    Case("pelelmex_3d_38comp", "pelelmex_3d_38comp", ("density", "temp"), mass="density", partial_slab=True),
    # two levels refining half of a non-cubic domain with a negative origin
    Case("eb_3d", "eb_3d", ("density", "volFrac"), mass="density", partial_slab=True),
    # 2D, three levels: the missing z axis is one unit cell (COORD-4)
    Case("singlevortex2d", "amrex_singlevortex2d_tracer/plt00000", ("phi",), mass="phi"),
    # one level of 64 blocks: multi-round block reductions
    Case("singlevortex3d", "amrex_singlevortex3d_gpu/plt00100", ("phi",), mass="phi"),
    # one level, 48x48x4 cells around a negative origin
    Case("erf_3d", "erf_iva_numdiff_3d/IVA_NumDiff", ("density", "temp"), mass="density"),
    # WarpX fields on one level of 32 blocks
    Case("warpx_3d", "warpx_3d_quartz_ring_particles/diag1001000", ("Ex", "rho"), mass="rho"),
    # 2D RZ (coord_sys = 1): slices and cell-count histograms only (COORD-5)
    Case("iamr_rz", "iamr_drop2d/plt00050", ("density", "tracer"), rz=True),
]
CASE_BY_KEY = {c.key: c for c in CASES}
SOURCES = ("amrex", "seeded")


@functools.lru_cache(maxsize=None)
def load_yt(key):
    case = CASE_BY_KEY[key]
    if not os.path.isdir(DATA):
        pytest.skip(f"shared AMReX data not found at {os.path.normpath(DATA)}")
    if not os.path.exists(os.path.join(case.full_path, "Header")):
        pytest.skip(f"plotfile {case.path} not found under {os.path.normpath(DATA)}")
    return _yt().load(case.full_path)


def yt_field(name):
    return ("boxlib", name)


def meta_from_yt(ds):
    """A META-1 dictionary built from yt's view of the plotfile (yt's grid order
    within a level is the Cell_H order)."""
    dim = ds.dimensionality
    nlev = ds.index.max_level + 1
    r = int(ds.refine_by)
    n0 = [int(n) for n in ds.domain_dimensions[:dim]]
    level_boxes, cell_size = [], []
    for L in range(nlev):
        grids = [g for g in ds.index.grids if g.Level == L]
        level_boxes.append([[list(map(int, g.get_global_startindex()[:dim])),
                             [int(s + n - 1) for s, n in zip(g.get_global_startindex()[:dim], g.ActiveDimensions[:dim])]]
                            for g in grids])
        cell_size.append([float(d) for d in grids[0].dds.d[:dim]])
    geometry = str(ds.geometry)
    coord_sys = {"cartesian": 0, "cylindrical": 1, "spherical": 2}.get(geometry.split(".")[-1].lower(), 0)
    return {
        "prob_lo": [float(x) for x in ds.domain_left_edge.d[:dim]],
        "prob_hi": [float(x) for x in ds.domain_right_edge.d[:dim]],
        "finest_level": nlev - 1,
        "cell_size": cell_size,
        "prob_domain": [[[0] * dim, [n * r ** L - 1 for n in n0]] for L in range(nlev)],
        "level_boxes": level_boxes,
        "coord_sys": coord_sys,
    }


# ---------------------------------------------------------------------------
# geometry of the comparisons


def finest_counts(runmeta):
    """Cells of the whole domain per axis on the finest level (from the level-0
    domain and the cumulative ratios)."""
    s = runmeta.steps[0]
    lo = [min(b.lo[a] for b in s.levels[0].boxes) for a in range(3)]
    hi = [max(b.hi[a] for b in s.levels[0].boxes) for a in range(3)]
    R = lw.cumulative_ratio(s, 0, s.finest_level)
    return [(hi[a] - lo[a] + 1) * R[a] for a in range(3)], [(hi[a] - lo[a] + 1) for a in range(3)]


def domain_edges(runmeta):
    s = runmeta.steps[0]
    g = s.levels[0].geom
    lo = [min(b.lo[a] for b in s.levels[0].boxes) for a in range(3)]
    hi = [max(b.hi[a] for b in s.levels[0].boxes) for a in range(3)]
    return [g.lower_edge(a, lo[a]) for a in range(3)], [g.lower_edge(a, hi[a] + 1) for a in range(3)]


def slice_coord(runmeta, axis):
    """Center of a finest cell 5/8 into the domain: never on a face of any level,
    so every level's plane index is unambiguous for both codes."""
    nf, _ = finest_counts(runmeta)
    s = runmeta.steps[0]
    g = s.levels[-1].geom
    lo, _hi = domain_edges(runmeta)
    i = (5 * nf[axis]) // 8
    return lo[axis] + (i + 0.5) * g.dx[axis]


def resolutions(runmeta, axis):
    """"finest": one pixel per finest cell; "coarse": one pixel per level-0 cell
    (half the finest count on single-level data); "unaligned": 5/8 of the finest
    count, so pixel edges cut through cells."""
    u, v = lw.plane_axes(axis)
    nf, n0 = finest_counts(runmeta)
    if len(runmeta.steps[0].levels) > 1:
        coarse = (n0[u], n0[v])
    else:
        coarse = (max(1, nf[u] // 2), max(1, nf[v] // 2))
    unaligned = (max(1, nf[u] * 5 // 8), max(1, nf[v] * 5 // 8))
    return {"finest": (nf[u], nf[v]), "coarse": coarse, "unaligned": unaligned}


def face_coord(runmeta, axis):
    """A level-0 cell face near the middle, hence a face on every level: LOW-3
    takes the upper cell there, as yt does."""
    _, n0 = finest_counts(runmeta)
    lo, _hi = domain_edges(runmeta)
    return lo[axis] + (n0[axis] // 2 + 1) * runmeta.steps[0].levels[0].geom.dx[axis]


def full_rect(runmeta, axis):
    u, v = lw.plane_axes(axis)
    lo, hi = domain_edges(runmeta)
    return (lo[u], lo[v], hi[u], hi[v])


# ---------------------------------------------------------------------------
# one plan per dataset and source


class Results:
    def __init__(self, case, source, runmeta, ids, ops, arrays, worker_runmeta=None, metadata=None):
        self.metadata = metadata or {}
        self.case = case
        self.source = source
        self.runmeta = runmeta
        self.ids = ids
        self.ops = ops
        self.arrays = arrays
        self.worker_runmeta = worker_runmeta


def build_ops(case, runmeta, ids, leaf):
    """Lowers every operator compared below; returns [(op description, fragment)]."""
    alloc = lw.FieldAllocator(5000)
    ops = []
    for name in case.fields:
        fid = ids[name]
        for axis in range(3):
            rect = full_rect(runmeta, axis)
            coord = slice_coord(runmeta, axis)
            if case.rz and axis != 2:
                continue  # RZ data: only the r-z image is compared
            if finest_counts(runmeta)[0][axis] > 1 and not case.rz:
                res = resolutions(runmeta, axis)["finest"]
                fc = face_coord(runmeta, axis)
                frag = lw.slice_plan(runmeta, fid, axis, fc, rect, res, alloc(), alloc_field=alloc,
                                     name=f"slice_{fid}_{axis}_face")
                ops.append((dict(kind="slice", field=name, axis=axis, coord=fc, rect=rect, res=res, rkind="face"),
                            frag))
            for rkind, res in resolutions(runmeta, axis).items():
                if case.rz and rkind != "finest":
                    continue  # the RZ reference is the leaf-cell composite at the finest resolution
                frag = lw.slice_plan(runmeta, fid, axis, coord, rect, res, alloc(), alloc_field=alloc,
                                     name=f"slice_{fid}_{axis}_{rkind}")
                ops.append((dict(kind="slice", field=name, axis=axis, coord=coord, rect=rect, res=res, rkind=rkind),
                            frag))
                if case.rz:
                    continue
                if rkind == "unaligned" and finest_counts(runmeta)[0][2] == 1 and axis != 2:
                    continue  # no pixel-exact reference for 2D in-plane projections (see leaf_projection_2d)
                lo, hi = domain_edges(runmeta)
                bounds = (lo[axis], hi[axis])
                frag = lw.projection_plan(runmeta, fid, axis, bounds, rect, res, alloc(), alloc_field=alloc,
                                          name=f"proj_{fid}_{axis}_{rkind}")
                ops.append((dict(kind="proj", field=name, axis=axis, bounds=bounds, rect=rect, res=res, rkind=rkind),
                            frag))
        if case.partial_slab and not case.rz:
            # a slab whose ends lie on level-0 cell faces (hence on faces of every
            # level): yt's region selection by cell center and our overlap-weighted
            # slab then take exactly the same cells
            axis = 2
            _, n0 = finest_counts(runmeta)
            g0 = runmeta.steps[0].levels[0].geom
            lo, _hi = domain_edges(runmeta)
            k0, k1 = n0[axis] // 4, (3 * n0[axis]) // 4
            bounds = (lo[axis] + k0 * g0.dx[axis], lo[axis] + k1 * g0.dx[axis])
            res = resolutions(runmeta, axis)["finest"]
            rect = full_rect(runmeta, axis)
            frag = lw.projection_plan(runmeta, fid, axis, bounds, rect, res, alloc(), alloc_field=alloc,
                                      name=f"slab_{fid}")
            ops.append((dict(kind="proj", field=name, axis=axis, bounds=bounds, rect=rect, res=res, rkind="slab"),
                        frag))
        values = leaf[name]
        rng = (float(values.min()), float(values.max()))
        if rng[0] < rng[1]:
            for mode in ("input",) if case.rz else ("input", "cell_volume"):
                frag = lw.histogram1d_plan(runmeta, fid, rng, 16, alloc(), weight_mode=mode, alloc_field=alloc,
                                           name=f"h1_{fid}_{mode}")
                ops.append((dict(kind="hist1d", field=name, range=rng, bins=16, mode=mode), frag))
            if case.mass == name:
                frag = lw.histogram1d_plan(runmeta, fid, rng, 4, alloc(), weight_mode="cell_mass", alloc_field=alloc,
                                           name=f"mass_{fid}")
                ops.append((dict(kind="mass", field=name, range=rng, bins=4), frag))
    if len(case.fields) >= 2:
        fx, fy = case.fields[:2]
        rx = (float(leaf[fx].min()), float(leaf[fx].max()))
        ry = (float(leaf[fy].min()), float(leaf[fy].max()))
        if rx[0] < rx[1] and ry[0] < ry[1]:
            for mode in ("input",) if case.rz else ("input", "cell_volume"):
                frag = lw.histogram2d_plan(runmeta, ids[fx], ids[fy], rx, ry, (8, 6), alloc(), weight_mode=mode,
                                           alloc_field=alloc, name=f"h2_{mode}")
                ops.append((dict(kind="hist2d", x=fx, y=fy, x_range=rx, y_range=ry, bins=(8, 6), mode=mode), frag))
    # a chained operator: the square of the first field (LOW-12 over every
    # block of every level), sliced along z (LOW-1 producer edge)
    name = case.fields[0]
    expr = lw.field_expr_plan(runmeta, "a*a", ["a"], [ids[name]], alloc(), name="square")
    axis = 2
    res = resolutions(runmeta, axis)["finest"]
    frag = lw.slice_plan(runmeta, expr.out_field, axis, slice_coord(runmeta, axis), full_rect(runmeta, axis), res,
                         alloc(), alloc_field=alloc, producers={expr.out_field: expr.tail}, name="slice_square")
    ops.append((dict(kind="slice_square", field=name, axis=axis, coord=slice_coord(runmeta, axis),
                     rect=full_rect(runmeta, axis), res=res), frag))
    return ops


def leaf_values(ds, names):
    ad = ds.all_data()
    out = {n: ad[yt_field(n)].d.copy() for n in names}
    out["__volume__"] = ad[("index", "cell_volume")].d.copy()
    return out


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


_RESULTS = {}


def results(key, source):
    """Runs (once) every operator of dataset ``key`` from ``source``."""
    if (key, source) in _RESULTS:
        r = _RESULTS[key, source]
        if isinstance(r, str):
            pytest.skip(r)
        return r
    case = CASE_BY_KEY[key]
    if source == "amrex" and amrex_support():
        _RESULTS[key, source] = amrex_support()
        pytest.skip(amrex_support())
    ds = load_yt(key)
    tmp = tempfile.mkdtemp(prefix=f"kangaroo_yt_{key}_")
    try:
        ids = {name: 1 + i for i, name in enumerate(case.fields)}
        extra = []
        worker_runmeta = None
        meta = None
        if source == "amrex":
            uri = "amrex://" + os.path.abspath(case.full_path)
            rm_out = os.path.join(tmp, "worker_runmeta.json")
            r = worker("metadata", "--dataset", uri, "--runmeta-out", rm_out)
            assert r.returncode == 0, f"metadata failed for {case.path}: {r.stderr}"
            meta = json.loads(r.stdout)
            runmeta = lw.runmeta_from_metadata(meta, step=0)
            if os.path.exists(rm_out):
                with open(rm_out) as f:
                    worker_runmeta = json.load(f)
            dataset = uri
            for name, fid in ids.items():
                extra += ["--field", f"{fid}={name}"]
        else:
            runmeta = lw.runmeta_from_metadata(meta_from_yt(ds), step=0)
            seed = os.path.join(tmp, "seed")
            os.makedirs(seed)
            for L in range(len(runmeta.steps[0].levels)):
                grids = [g for g in ds.index.grids if g.Level == L]
                for b, g in enumerate(grids):
                    for name, fid in ids.items():
                        np.save(os.path.join(seed, f"s0_l{L}_f{fid}_v0_b{b}.npy"),
                                np.ascontiguousarray(g[yt_field(name)].d, dtype=np.float64))
            dataset = "memory://"
            extra += ["--seed", seed]
        leaf = leaf_values(ds, case.fields)
        ops = build_ops(case, runmeta, ids, leaf)
        plan = ops[0][1].plan(*[f for _, f in ops[1:]])
        plan_path = _write_json(os.path.join(tmp, "plan.json"), plan.to_dict())
        meta_path = _write_json(os.path.join(tmp, "runmeta.json"), runmeta.to_dict())
        out = os.path.join(tmp, "out")
        r = worker("run", "--plan", plan_path, "--runmeta", meta_path, "--dataset", dataset, "--out", out, *extra)
        assert r.returncode == 0, f"worker run failed on {case.path} ({source}): {r.stderr[-4000:]}"
        arrays = {}
        for desc, frag in ops:
            path = os.path.join(out, f"s{frag.step}_l{frag.level}_f{frag.out_field}_v0_b{frag.block}.npy")
            assert os.path.exists(path), f"missing result {path} for {desc}"
            arrays[frag.out_field] = np.load(path)
        res = Results(case, source, runmeta, ids, ops, arrays, worker_runmeta, meta)
        _RESULTS[key, source] = res
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def params_for(comparable=lambda c: True):
    return [pytest.param(c.key, s, id=f"{c.key}-{s}") for c in CASES for s in SOURCES if comparable(c)]


# ---------------------------------------------------------------------------
# yt references


def yt_image(ds, data_obj, field, axis, rect, res):
    """yt's fixed-resolution image in our (v, u) layout (AXIS-2/4).

    yt's image axes for normal ``axis`` are ``x_axis[axis], y_axis[axis]``; they
    equal ours (u, v) for x and z normals, and are (z, x) for the y normal,
    whose yt image is the transpose of ours."""
    yt = _yt()
    u, v = lw.plane_axes(axis)
    u0, v0, u1, v1 = rect
    nu, nv = res
    xa = ds.coordinates.x_axis[axis]
    if xa == u:
        frb = yt.FixedResolutionBuffer(data_obj, (u0, u1, v0, v1), (nu, nv))
        img = frb[field]
        transpose = False
    else:
        frb = yt.FixedResolutionBuffer(data_obj, (v0, v1, u0, u1), (nv, nu))
        img = frb[field]
        transpose = True
    return img, transpose


def yt_slice(ds, name, axis, coord, rect, res):
    img, t = yt_image(ds, ds.slice(axis, coord), yt_field(name), axis, rect, res)
    a = np.asarray(img.d)
    return a.T if t else a


def yt_projection(ds, name, axis, bounds, rect, res):
    lo, hi = ds.domain_left_edge.d.copy(), ds.domain_right_edge.d.copy()
    source = None
    if (bounds[0], bounds[1]) != (lo[axis], hi[axis]):
        lo[axis], hi[axis] = bounds
        source = ds.region(0.5 * (lo + hi), lo, hi)
    proj = ds.proj(yt_field(name), axis, method="integrate", data_source=source)
    img, t = yt_image(ds, proj, yt_field(name), axis, rect, res)
    # yt multiplies by the path length in its own length unit (cm for most
    # codes, m for WarpX); our column integrals are value x code length
    # (OP-PROJ-2), so divide the field's units out and convert the rest.
    ds.index
    field_units = ds.field_info[yt_field(name)].units
    a = np.asarray((img / ds.quan(1.0, field_units)).to("code_length").d)
    return a.T if t else a


def leaf_projection_2d(ds, name, axis, res):
    """Column integrals of a 2D dataset along an in-plane axis, from the leaf-cell
    composite of yt's grids. yt's own ``proj`` along x or y of 2D AMR data is
    wrong (on the single-vortex file it gives 0.61-0.75 of the leaf-cell
    integral for y >= 0.5), so it cannot serve as the reference there."""
    comp = leaf_composite_z(ds, name)  # (y, x) at the finest resolution
    nlev = ds.index.max_level + 1
    r = int(ds.refine_by)
    width = ds.domain_width.to("code_length").d
    nf = [int(n) * r ** (nlev - 1) for n in ds.domain_dimensions[:2]]
    if axis == 0:
        line = comp.sum(axis=1) * (width[0] / nf[0])  # a function of y: u = y, v = z
    else:
        line = comp.sum(axis=0) * (width[1] / nf[1])  # a function of x: u = x, v = z
    nu, nv = res
    assert nv == 1 and len(line) % nu == 0
    return line.reshape(nu, -1).mean(axis=1)[None, :]


def leaf_composite_z(ds, name):
    """Leaf values on the finest grid of a 2D dataset, from yt's grids (used where
    yt's own images are not Cartesian, i.e. for RZ data)."""
    nlev = ds.index.max_level + 1
    r = int(ds.refine_by)
    nf = [int(n) * r ** (nlev - 1) for n in ds.domain_dimensions[:2]]
    img = np.full((nf[0], nf[1]), np.nan)
    for L in range(nlev):
        f = r ** (nlev - 1 - L)
        for g in [g for g in ds.index.grids if g.Level == L]:
            si = g.get_global_startindex()[:2] * f
            vals = np.repeat(np.repeat(g[yt_field(name)].d[:, :, 0], f, 0), f, 1)
            img[si[0]:si[0] + vals.shape[0], si[1]:si[1] + vals.shape[1]] = vals
    return img.T  # (v, u) = (y, x)


def assert_image_close(ours, ref, *, rtol, what):
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    assert np.isfinite(ref).all(), f"{what}: the reference has non-finite pixels"
    scale = float(np.abs(ref).max()) or 1.0
    err = np.abs(ours - ref)
    bad = err > rtol * np.maximum(np.abs(ref), scale * 1e-2)
    if bad.any():
        j, i = np.unravel_index(np.argmax(np.where(bad, err, -1)), err.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} pixels differ beyond rtol={rtol}; worst at (j={j}, i={i}): "
            f"ours {ours[j, i]!r} vs reference {ref[j, i]!r} (max |ref| {scale:.6g})")


def ops_of(res, kind):
    return [(d, f) for d, f in res.ops if d["kind"] == kind]


# ---------------------------------------------------------------------------
# RunMeta synthesis


@pytest.mark.parametrize("key", [c.key for c in CASES])
def test_runmeta_matches_yt_geometry(key):
    """COORD-4 synthesized from the worker's metadata agrees with yt's index: cell
    sizes, origin, blocks per level and (where the worker writes one) the
    worker's own synthesis."""
    if amrex_support():
        pytest.skip(amrex_support())
    res = results(key, "amrex")
    ds = load_yt(key)
    yt_rm = lw.runmeta_from_metadata(meta_from_yt(ds))
    ours = res.runmeta.to_dict()
    ref = yt_rm.to_dict()
    assert [len(lv["boxes"]) for lv in ours["steps"][0]["levels"]] == [len(lv["boxes"]) for lv in ref["steps"][0]["levels"]]
    for lo, lr in zip(ours["steps"][0]["levels"], ref["steps"][0]["levels"]):
        assert sorted(map(str, lo["boxes"])) == sorted(map(str, lr["boxes"]))
        assert lo["geom"]["ref_ratio"] == lr["geom"]["ref_ratio"]
        assert lo["geom"]["index_origin"] == lr["geom"]["index_origin"]
        np.testing.assert_allclose(lo["geom"]["dx"], lr["geom"]["dx"], rtol=1e-12)
        np.testing.assert_allclose(lo["geom"]["x0"], lr["geom"]["x0"], rtol=1e-12, atol=1e-15)
    assert ours["coord_sys"] == (1 if CASE_BY_KEY[key].rz else 0)
    # API-15 defaults from the same metadata span the whole level-0 domain
    for axis in range(3):
        g = lw.plane_geometry(res.metadata, axis=axis)
        np.testing.assert_allclose(g.rect, full_rect(res.runmeta, axis), rtol=1e-12, atol=1e-15)
        u, v = lw.plane_axes(axis)
        _, n0 = finest_counts(res.runmeta)
        assert g.resolution == (n0[u], n0[v])
    if res.worker_runmeta is not None:
        w = lw.RunMeta.from_dict(res.worker_runmeta).to_dict()
        w["particle_species"] = ours["particle_species"]  # counts are a backend query, not geometry
        # a plotfile's single step is addressable as 0 or as its Header step
        # (BACK-AMREX-7); the plans here use 0, the worker labels it with the latter
        assert w["steps"][0]["step"] in (0, res.metadata.get("step", 0))
        w["steps"][0]["step"] = ours["steps"][0]["step"]
        assert w == ours, "the worker's COORD-4 synthesis differs from the SDK's"


# ---------------------------------------------------------------------------
# slices


@pytest.mark.parametrize("key,source", params_for(lambda c: not c.rz))
def test_slices_match_yt(key, source):
    """Slices of every field along every axis at the finest native resolution
    (each pixel is one finest cell), at a coarser one (each pixel covers whole
    cells) and at an unaligned one (pixel edges cut cells), plus a slice on a
    face of every level's cells (LOW-3: the upper cell, as yt); the rect is the
    full domain (inside it, as OP-RED-3 requires for comparisons with yt).

    Tolerance rtol=1e-12: yt's antialiased FRB deposits every leaf cell onto
    the pixels by overlap area and divides by the pixel area, which for fully
    sampled pixels is exactly our area-weighted mean (OP-SLICE-2); only
    rounding differs (~1e-14 relative, observed)."""
    res = results(key, source)
    ds = load_yt(key)
    for d, frag in ops_of(res, "slice"):
        ours = res.arrays[frag.out_field]
        ref = yt_slice(ds, d["field"], d["axis"], d["coord"], d["rect"], d["res"])
        assert_image_close(ours, ref, rtol=1e-12,
                           what=f"{key}/{source} slice {d['field']} axis {d['axis']} {d['rkind']} {d['res']}")


@pytest.mark.parametrize("key,source", params_for(lambda c: c.rz))
def test_rz_slices_match_leaf_cells(key, source):
    """RZ data (coord_sys=1) may be sliced (COORD-5). yt pixelizes RZ images in
    its cylindrical geometry, so the reference is the leaf-cell composite of
    yt's grids on the finest grid; at the finest resolution a pixel is one
    cell, so equality holds to rounding (rtol=1e-12)."""
    res = results(key, source)
    ds = load_yt(key)
    for d, frag in ops_of(res, "slice"):
        ref = leaf_composite_z(ds, d["field"])
        assert_image_close(res.arrays[frag.out_field], ref, rtol=1e-12, what=f"{key}/{source} slice {d['field']}")


@pytest.mark.parametrize("key,source", params_for())
def test_chained_expression_slice(key, source):
    """``field_expr`` over every block of every level (LOW-12) feeding a slice
    through a producer edge (LOW-1): the slice of a*a equals the square of yt's
    slice of a (rtol=1e-12 as for plain slices; squaring doubles the relative
    rounding at most)."""
    res = results(key, source)
    ds = load_yt(key)
    ((d, frag),) = ops_of(res, "slice_square")
    if CASE_BY_KEY[key].rz:
        base = leaf_composite_z(ds, d["field"])
    else:
        base = yt_slice(ds, d["field"], d["axis"], d["coord"], d["rect"], d["res"])
    assert_image_close(res.arrays[frag.out_field], base * base, rtol=1e-12, what=f"{key}/{source} slice of a*a")


# ---------------------------------------------------------------------------
# projections


@pytest.mark.parametrize("key,source", params_for(lambda c: not c.rz))
def test_projections_match_yt(key, source):
    """Column integrals along every axis over the whole domain (and, on AMR data,
    over a slab bounded by level-0 faces), at the finest, a coarser and an
    unaligned resolution, against ``ds.proj(field, axis, method="integrate")``
    through an FRB, converted to code lengths. AXIS-2: the y-normal images are
    compared after transposing yt's.

    Tolerance rtol=1e-11: both sum value x length over the leaf cells of each
    column and average over the pixel by overlap area; the sums run over up to
    a few hundred cells in different orders."""
    res = results(key, source)
    ds = load_yt(key)
    for d, frag in ops_of(res, "proj"):
        ours = res.arrays[frag.out_field]
        if ds.dimensionality == 2 and d["axis"] != 2:
            ref = leaf_projection_2d(ds, d["field"], d["axis"], d["res"])
        else:
            ref = yt_projection(ds, d["field"], d["axis"], d["bounds"], d["rect"], d["res"])
        assert_image_close(ours, ref, rtol=1e-11,
                           what=f"{key}/{source} projection {d['field']} axis {d['axis']} {d['rkind']} {d['res']}")


@pytest.mark.parametrize("key", [c.key for c in CASES if c.rz])
def test_rz_projection_is_refused(key):
    """COORD-5: projections and cell weights need Cartesian cells."""
    ds = load_yt(key)
    rm = lw.runmeta_from_metadata(meta_from_yt(ds))
    assert rm.coord_sys == 1
    with pytest.raises(ValueError, match=r"operator requires Cartesian coordinates \(coord_sys=1\)"):
        lw.projection_plan(rm, 1, "z", (0, 1), (0, 0, 1, 2), (4, 4), 9)
    with pytest.raises(ValueError, match=r"coord_sys=1"):
        lw.histogram1d_plan(rm, 1, (0, 1), 4, 9, weight_mode="cell_volume")


# ---------------------------------------------------------------------------
# histograms and volume integrals


def np_hist1d(values, weights, rng, bins):
    return np.histogram(values, bins=bins, range=rng, weights=weights)[0]


@pytest.mark.parametrize("key,source", params_for())
def test_histograms_match_yt_leaf_cells(key, source):
    """1D and 2D histograms over leaf cells (COV-1, LOW-11) against numpy
    histograms of yt's leaf-cell arrays (``ds.all_data()``), counting cells
    (``input``) and weighting by ``("index", "cell_volume")``.

    Ranges are the data's [min, max]; the extreme values land in the first and
    last bins in both codes. Counts must be equal exactly; volume sums use
    rtol=1e-12 (sums of up to ~1e5 equal cell volumes in different orders)."""
    res = results(key, source)
    ds = load_yt(key)
    leaf = leaf_values(ds, CASE_BY_KEY[key].fields)
    vol = leaf["__volume__"]
    checked = 0
    for d, frag in ops_of(res, "hist1d"):
        w = None if d["mode"] == "input" else vol
        ref = np_hist1d(leaf[d["field"]], w, d["range"], d["bins"])
        ours = res.arrays[frag.out_field]
        what = f"{key}/{source} hist1d {d['field']} {d['mode']}"
        if d["mode"] == "input":
            np.testing.assert_array_equal(ours, ref, err_msg=what)
            assert ours.sum() == leaf[d["field"]].size
        else:
            np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12 * vol.sum(), err_msg=what)
        checked += 1
    for d, frag in ops_of(res, "hist2d"):
        w = None if d["mode"] == "input" else vol
        ref = np.histogram2d(leaf[d["x"]], leaf[d["y"]], bins=d["bins"], range=(d["x_range"], d["y_range"]),
                             weights=w)[0]
        ours = res.arrays[frag.out_field]
        assert ours.shape == tuple(d["bins"])  # indexed [ix, iy] like numpy's histogram2d
        what = f"{key}/{source} hist2d {d['x']} x {d['y']} {d['mode']}"
        if d["mode"] == "input":
            np.testing.assert_array_equal(ours, ref, err_msg=what)
        else:
            np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12 * vol.sum(), err_msg=what)
        checked += 1
    assert checked


@pytest.mark.parametrize("key,source", params_for(lambda c: c.mass is not None))
def test_volume_integral_matches_yt(key, source):
    """Volume integral of a field (the total mass for a density): yt's
    sum(value * cell_volume) over leaf cells versus (a) our ``cell_mass``
    histogram over the full value range and (b) the full-domain projection at
    the finest resolution times du*dv (OP-PROJ-2). rtol=1e-11 (summation order
    over all leaf cells)."""
    res = results(key, source)
    ds = load_yt(key)
    case = CASE_BY_KEY[key]
    leaf = leaf_values(ds, [case.mass])
    total = float(np.sum(leaf[case.mass] * leaf["__volume__"]))
    scale = float(np.sum(np.abs(leaf[case.mass]) * leaf["__volume__"]))
    ((d, frag),) = ops_of(res, "mass")
    assert abs(float(res.arrays[frag.out_field].sum()) - total) <= 1e-11 * scale
    for d, frag in ops_of(res, "proj"):
        if d["field"] != case.mass or d["rkind"] != "finest":
            continue
        img = res.arrays[frag.out_field]
        nu, nv = d["res"]
        u0, v0, u1, v1 = d["rect"]
        integral = float(img.sum()) * abs(u1 - u0) / nu * abs(v1 - v0) / nv
        assert abs(integral - total) <= 1e-11 * scale, f"projection along axis {d['axis']}"


# ---------------------------------------------------------------------------
# gradients and vorticity on analytic fields (memory datasets)


def _two_level_meta(n, periodic, x_refined=(0.25, 0.75)):
    """Unit cube, level 0 of n^3 cells in 8 blocks, level 1 refining the middle half."""
    h = n // 2
    l0_boxes = [((i * h, j * h, k * h), (i * h + h - 1, j * h + h - 1, k * h + h - 1))
                for k in range(2) for j in range(2) for i in range(2)]
    a, b = int(x_refined[0] * 2 * n), int(x_refined[1] * 2 * n) - 1
    mid = (a + b + 1) // 2
    l1_boxes = [((a, a, a), (mid - 1, b, b)), ((mid, a, a), (b, b, b))]
    flags = (periodic,) * 3
    levels = (
        lw.LevelMeta(lw.LevelGeom(dx=(1 / n,) * 3, x0=(0, 0, 0), is_periodic=flags, ref_ratio=2), l0_boxes),
        lw.LevelMeta(lw.LevelGeom(dx=(0.5 / n,) * 3, x0=(0, 0, 0), is_periodic=flags, ref_ratio=1), l1_boxes),
    )
    return lw.RunMeta((lw.StepMeta(0, levels),))


def _cell_centers(runmeta, L, b):
    g = runmeta.steps[0].levels[L].geom
    box = runmeta.steps[0].levels[L].boxes[b]
    axes = [g.x0[a] + (np.arange(box.lo[a], box.hi[a] + 1) - g.index_origin[a] + 0.5) * g.dx[a] for a in range(3)]
    return np.meshgrid(*axes, indexing="ij")


def _run_memory(runmeta, fragment, fields, tmp_path):
    """Seeds ``fields`` ({id: f(x, y, z)}) on every block and runs ``fragment``;
    returns {(level, block): result array}."""
    seed = tmp_path / "seed"
    seed.mkdir()
    for L, lv in enumerate(runmeta.steps[0].levels):
        for b in range(len(lv.boxes)):
            X, Y, Z = _cell_centers(runmeta, L, b)
            for fid, fn in fields.items():
                np.save(seed / f"s0_l{L}_f{fid}_v0_b{b}.npy", np.ascontiguousarray(fn(X, Y, Z), dtype=np.float64))
    plan = _write_json(tmp_path / "plan.json", fragment.plan().to_dict())
    meta = _write_json(tmp_path / "runmeta.json", runmeta.to_dict())
    out = tmp_path / "out"
    r = worker("run", "--plan", plan, "--runmeta", meta, "--dataset", "memory://", "--seed", seed, "--out", out)
    assert r.returncode == 0, r.stderr[-4000:]
    got = {}
    for L, lv in enumerate(runmeta.steps[0].levels):
        for b in range(len(lv.boxes)):
            got[L, b] = np.load(out / f"s0_l{L}_f{fragment.out_field}_v0_b{b}.npy")
    return got


def test_images_where_nothing_or_part_is_sampled(tmp_path):
    """LOW-9/10 and OP-RED-3 on a two-level mesh of f = x + 2y (no z term, so
    levels agree on every plane): a slice whose rect misses the mesh is all
    NaN and a projection all 0, both of the requested shape; a rect half
    outside the domain gives NaN there and, inside, the area-weighted mean of
    the cells, i.e. f at the pixel center (pixels are aligned to level-0
    cells, so the cells tile each pixel)."""
    rm = _two_level_meta(8, periodic=False)
    alloc = lw.FieldAllocator(100)
    frags = [
        lw.slice_plan(rm, 1, "z", 0.4, (2.0, 2.0, 3.0, 3.0), (5, 3), 10, alloc_field=alloc),
        lw.projection_plan(rm, 1, "z", (0.0, 1.0), (2.0, 2.0, 3.0, 3.0), (5, 3), 11, alloc_field=alloc),
        lw.slice_plan(rm, 1, "z", 0.4, (-0.5, 0.0, 0.5, 1.0), (4, 4), 12, alloc_field=alloc),
    ]
    seed = tmp_path / "seed"
    seed.mkdir()
    for L, lv in enumerate(rm.steps[0].levels):
        for b in range(len(lv.boxes)):
            X, Y, Z = _cell_centers(rm, L, b)
            np.save(seed / f"s0_l{L}_f1_v0_b{b}.npy", X + 2 * Y)
    plan = _write_json(tmp_path / "plan.json", frags[0].plan(*frags[1:]).to_dict())
    meta = _write_json(tmp_path / "runmeta.json", rm.to_dict())
    out = tmp_path / "out"
    r = worker("run", "--plan", plan, "--runmeta", meta, "--dataset", "memory://", "--seed", seed, "--out", out)
    assert r.returncode == 0, r.stderr[-4000:]
    empty_slice = np.load(out / "s0_l0_f10_v0_b0.npy")
    assert empty_slice.shape == (3, 5) and np.isnan(empty_slice).all()
    empty_proj = np.load(out / "s0_l0_f11_v0_b0.npy")
    assert empty_proj.shape == (3, 5) and (empty_proj == 0).all()
    half = np.load(out / "s0_l0_f12_v0_b0.npy")
    assert np.isnan(half[:, :2]).all()
    uc = -0.5 + (np.arange(4) + 0.5) * 0.25
    vc = (np.arange(4) + 0.5) * 0.25
    expected = uc[None, :] + 2 * vc[:, None]
    np.testing.assert_allclose(half[:, 2:], expected[:, 2:], rtol=1e-12)


def test_histogram_over_an_explicit_domain(tmp_path):
    """LOW-11 with a domain: only the listed blocks of that level count, without
    coverage (here level 0 block 3, which level 1 partly covers)."""
    rm = _two_level_meta(8, periodic=False)
    frag = lw.histogram1d_plan(rm, 1, (0.0, 3.0), 6, 20, domain=(0, [3]))
    f = lambda x, y, z: x + y + z  # noqa: E731
    seed = tmp_path / "seed"
    seed.mkdir()
    for L, lv in enumerate(rm.steps[0].levels):
        for b in range(len(lv.boxes)):
            np.save(seed / f"s0_l{L}_f1_v0_b{b}.npy", f(*_cell_centers(rm, L, b)))
    plan = _write_json(tmp_path / "plan.json", frag.plan().to_dict())
    meta = _write_json(tmp_path / "runmeta.json", rm.to_dict())
    out = tmp_path / "out"
    r = worker("run", "--plan", plan, "--runmeta", meta, "--dataset", "memory://", "--seed", seed, "--out", out)
    assert r.returncode == 0, r.stderr[-4000:]
    got = np.load(out / "s0_l0_f20_v0_b0.npy")
    values = f(*_cell_centers(rm, 0, 3)).ravel()
    np.testing.assert_array_equal(got, np.histogram(values, bins=6, range=(0.0, 3.0))[0])


TWO_PI = 2 * math.pi


def test_gradient_exact_for_affine_fields(tmp_path):
    """OP-GRAD-4 / CONF-1: an affine field's gradient is exact to rounding on
    every cell, including across the coarse-fine interface and at the
    (non-periodic) domain boundary."""
    require_kernels("amr_subbox_fetch_pack", "gradU_stencil")
    rm = _two_level_meta(8, periodic=False)
    frag = lw.gradient_plan(rm, 1, 50)
    got = _run_memory(rm, frag, {1: lambda x, y, z: 1 + 2 * x - 3 * y + 0.5 * z}, tmp_path)
    for (L, b), g in got.items():
        assert g.shape[-1] == 3
        np.testing.assert_allclose(g[..., 0], 2.0, atol=1e-9, err_msg=f"level {L} block {b}")
        np.testing.assert_allclose(g[..., 1], -3.0, atol=1e-9, err_msg=f"level {L} block {b}")
        np.testing.assert_allclose(g[..., 2], 0.5, atol=1e-9, err_msg=f"level {L} block {b}")


def _gradient_error(n, tmp_path):
    rm = _two_level_meta(n, periodic=True)
    frag = lw.gradient_plan(rm, 1, 50)
    f = lambda x, y, z: np.sin(TWO_PI * x) * np.cos(TWO_PI * y) + 0.5 * np.sin(TWO_PI * z)  # noqa: E731
    got = _run_memory(rm, frag, {1: f}, tmp_path)
    err2, count = 0.0, 0
    for (L, b), g in got.items():
        X, Y, Z = _cell_centers(rm, L, b)
        exact = np.stack([TWO_PI * np.cos(TWO_PI * X) * np.cos(TWO_PI * Y),
                          -TWO_PI * np.sin(TWO_PI * X) * np.sin(TWO_PI * Y),
                          0.5 * TWO_PI * np.cos(TWO_PI * Z)], axis=-1)
        err2 += float(np.sum((g - exact) ** 2))
        count += exact.size
    return math.sqrt(err2 / count)


def test_gradient_error_falls_with_refinement(tmp_path):
    """OP-VORT-2 (gradient part): on a smooth periodic field the RMS gradient error
    over all cells of a two-level mesh shrinks when the mesh is refined. The
    least-squares stencil is second order in the interior and at least first
    order at coarse-fine interfaces, so doubling the resolution must cut the
    error by more than a factor 1.5."""
    require_kernels("amr_subbox_fetch_pack", "gradU_stencil")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    e16 = _gradient_error(16, tmp_path / "a")
    e32 = _gradient_error(32, tmp_path / "b")
    assert e32 < e16 / 1.5, (e16, e32)


def test_vorticity_constant_curl_and_convergence(tmp_path):
    """OP-VORT-1/2: for v = (-y, x, 0) + const the vorticity magnitude is 2 on
    every cell; for a smooth periodic field the RMS error falls with
    refinement (same factor as for the gradient)."""
    require_kernels("amr_subbox_fetch_pack", "gradU_stencil", "vorticity_mag")
    rm = _two_level_meta(8, periodic=False)
    frag = lw.vorticity_plan(rm, (1, 2, 3), 60)
    (tmp_path / "affine").mkdir()
    got = _run_memory(rm, frag, {1: lambda x, y, z: 1.0 - y, 2: lambda x, y, z: x + 0.0 * y,
                                 3: lambda x, y, z: 0.25 + 0.0 * x}, tmp_path / "affine")
    for (L, b), w in got.items():
        np.testing.assert_allclose(w, 2.0, atol=1e-9, err_msg=f"level {L} block {b}")

    def rms(n, where):
        rm = _two_level_meta(n, periodic=True)
        fr = lw.vorticity_plan(rm, (1, 2, 3), 60)
        vel = {1: lambda x, y, z: np.sin(TWO_PI * y), 2: lambda x, y, z: np.sin(TWO_PI * z),
               3: lambda x, y, z: np.sin(TWO_PI * x)}
        out = _run_memory(rm, fr, vel, where)
        err2, cnt = 0.0, 0
        for (L, b), w in out.items():
            X, Y, Z = _cell_centers(rm, L, b)
            # curl = (-2pi cos(2pi z), -2pi cos(2pi x), -2pi cos(2pi y))
            exact = TWO_PI * np.sqrt(np.cos(TWO_PI * Z) ** 2 + np.cos(TWO_PI * X) ** 2 + np.cos(TWO_PI * Y) ** 2)
            err2 += float(np.sum((w - exact) ** 2))
            cnt += w.size
        return math.sqrt(err2 / cnt)

    (tmp_path / "c").mkdir()
    (tmp_path / "d").mkdir()
    e16, e32 = rms(16, tmp_path / "c"), rms(32, tmp_path / "d")
    assert e32 < e16 / 1.5, (e16, e32)


# ---------------------------------------------------------------------------
# particle CIC projection against a numpy deposit of yt's particle arrays


def numpy_cic_projection(geom, n_level, periodic, pos_u, pos_v, pos_a, mass, axis, bounds, rect, res):
    """OP-CIC-2 on one level without coverage, written directly from the contract."""
    u, v = lw.plane_axes(axis)
    keep = np.isfinite(pos_u) & np.isfinite(pos_v) & np.isfinite(pos_a) & np.isfinite(mass) & (mass > 0)
    keep &= (pos_a >= bounds[0]) & (pos_a <= bounds[1])
    pu, pv, m = pos_u[keep], pos_v[keep], mass[keep]
    su = (pu - (geom.x0[u] + (0.5 - geom.index_origin[u]) * geom.dx[u])) / geom.dx[u]
    sv = (pv - (geom.x0[v] + (0.5 - geom.index_origin[v]) * geom.dx[v])) / geom.dx[v]
    iu, iv = np.floor(su).astype(int), np.floor(sv).astype(int)
    tu, tv = su - iu, sv - iv
    native = np.zeros((n_level[v], n_level[u]))
    for du_, dv_, w in ((0, 0, (1 - tu) * (1 - tv)), (1, 0, tu * (1 - tv)), (0, 1, (1 - tu) * tv), (1, 1, tu * tv)):
        cu, cv = iu + du_, iv + dv_
        if periodic[u]:
            cu %= n_level[u]
        if periodic[v]:
            cv %= n_level[v]
        ok = (cu >= 0) & (cu < n_level[u]) & (cv >= 0) & (cv < n_level[v])
        np.add.at(native, (cv[ok], cu[ok]), (m * w)[ok])
    # the comparison uses the native resolution over the whole domain, so each
    # native cell is one pixel and the final stage divides by its area
    nu, nv = res
    assert (nu, nv) == (n_level[u], n_level[v])
    return native / (geom.dx[u] * geom.dx[v])


def test_cic_projection_matches_numpy_deposit(tmp_path):
    """LOW-16 / OP-CIC-2 on the WarpX file (one level, species ``electrons``, mass
    field ``weight``): our image equals a numpy CIC deposit of yt's particle
    arrays at the native resolution (rtol=1e-12: the same products summed in
    another order). Memory datasets carry no particles, so this runs on the
    plotfile source only."""
    require_kernels("particle_cic_projection_accumulate")
    if amrex_support():
        pytest.skip(amrex_support())
    key = "warpx_3d"
    ds = load_yt(key)
    case = CASE_BY_KEY[key]
    uri = "amrex://" + os.path.abspath(case.full_path)
    r = worker("metadata", "--dataset", uri)
    assert r.returncode == 0, r.stderr
    rm = lw.runmeta_from_metadata(json.loads(r.stdout))
    axis = 2
    lo, hi = domain_edges(rm)
    rect = full_rect(rm, axis)
    nf, _ = finest_counts(rm)
    u, v = lw.plane_axes(axis)
    resolution = (nf[u], nf[v])
    frag = lw.particle_cic_projection_plan(rm, "electrons", axis, (lo[axis], hi[axis]), rect, resolution, 77,
                                           mass_field="weight")
    plan = _write_json(tmp_path / "plan.json", frag.plan().to_dict())
    meta = _write_json(tmp_path / "runmeta.json", rm.to_dict())
    out = tmp_path / "out"
    r = worker("run", "--plan", plan, "--runmeta", meta, "--dataset", uri, "--out", out)
    assert r.returncode == 0, r.stderr[-4000:]
    ours = np.load(out / "s0_l0_f77_v0_b0.npy")
    ad = ds.all_data()
    pos = [ad[("electrons", f"particle_position_{c}")].to("code_length").d for c in "xyz"]
    mass = ad[("electrons", "particle_weight")].d
    g = rm.steps[0].levels[0].geom
    ref = numpy_cic_projection(g, nf, g.is_periodic, pos[u], pos[v], pos[axis], mass, axis, (lo[axis], hi[axis]),
                               rect, resolution)
    scale = float(np.abs(ref).max())
    assert scale > 0, "no particle mass was deposited in the reference image"
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12 * scale)
    # the image times the pixel area is the deposited mass (OP-CIC-2)
    pixel_area = (rect[2] - rect[0]) / resolution[0] * (rect[3] - rect[1]) / resolution[1]
    assert abs(ours.sum() * pixel_area - ref.sum() * pixel_area) <= 1e-12 * mass.sum()
