"""Tests of the synthetic AMReX plotfile writer (kangaroo.synthetic).

Written files are checked two ways: with a small independent parser of the
on-disk format (FUNCTIONAL.md 9.4, BACK-AMREX-1..12), which needs only numpy,
and with yt's AMReX frontend, which is an external reader of real AMReX
plotfiles. Expected cell values are recomputed from the documented
cell-centre formula ``prob_lo + (i + 0.5) * dx`` and ``analytic_field``.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.dirname(HERE)
sys.path.insert(0, SDK)

from kangaroo import synthetic  # noqa: E402
from kangaroo.synthetic import analytic_field, plan_hierarchy, write_plotfile  # noqa: E402

FIELDS = ("density", "temperature", "velx", "vely", "velz")


def _yt():
    yt = pytest.importorskip(
        "yt",
        reason="yt is not installed (scripts/bootstrap.sh installs python3-yt)",
    )
    yt.set_log_level(40)
    return yt


# ---------------------------------------------------------------------------
# A minimal reader of the format, independent of the writer's code.
# ---------------------------------------------------------------------------

_BOX = re.compile(r"\(\(([-\d,]+)\) \(([-\d,]+)\) \(([\d,]+)\)\)")


def _parse_box(text):
    m = _BOX.fullmatch(text.strip())
    assert m, text
    lo = tuple(int(v) for v in m.group(1).split(","))
    hi = tuple(int(v) for v in m.group(2).split(","))
    assert set(m.group(3).split(",")) == {"0"}
    return lo, hi


def read_header(path):
    with open(os.path.join(path, "Header")) as f:
        lines = f.read().split("\n")
    it = iter(lines)
    h = {"version": next(it)}
    ncomp = int(next(it))
    h["names"] = [next(it) for _ in range(ncomp)]
    d = h["dim"] = int(next(it))
    h["time"] = float(next(it))
    h["finest_level"] = int(next(it))
    nlev = h["finest_level"] + 1
    h["prob_lo"] = [float(v) for v in next(it).split()]
    h["prob_hi"] = [float(v) for v in next(it).split()]
    h["ref_ratio"] = [int(v) for v in next(it).split()]
    boxes = re.findall(r"\(\([^()]*\) \([^()]*\) \([^()]*\)\)", next(it))
    h["domains"] = [_parse_box(b) for b in boxes]
    h["steps"] = [int(v) for v in next(it).split()]
    h["dx"] = [[float(v) for v in next(it).split()] for _ in range(nlev)]
    h["coord_sys"] = int(next(it))
    h["bwidth"] = int(next(it))
    h["levels"] = []
    for _ in range(nlev):
        lev, ngrids, t = next(it).split()
        step = int(next(it))
        bounds = [
            [tuple(float(v) for v in next(it).split()) for _ in range(d)]
            for _ in range(int(ngrids))
        ]
        h["levels"].append(
            {"level": int(lev), "time": float(t), "step": step, "bounds": bounds, "mf": next(it)}
        )
    return h


def read_cell_h(path, level):
    with open(os.path.join(path, f"Level_{level}", "Cell_H")) as f:
        lines = f.read().split("\n")
    assert lines[0] == "1" and lines[3] == "0"
    ncomp = int(lines[2])
    nbox = int(lines[4].split()[0][1:])
    boxes = [_parse_box(lines[5 + i]) for i in range(nbox)]
    i = 5 + nbox
    assert lines[i] == ")" and int(lines[i + 1]) == nbox
    fabs = []
    for k in range(nbox):
        tag, fname, off = lines[i + 2 + k].split()
        assert tag == "FabOnDisk:"
        fabs.append((fname, int(off)))
    i += 2 + nbox
    mats = []
    for _ in range(2):
        assert lines[i] == ""
        assert lines[i + 1] == f"{nbox},{ncomp}"
        rows = []
        for k in range(nbox):
            row = lines[i + 2 + k]
            assert row.endswith(",")
            rows.append([float(v) for v in row[:-1].split(",")])
        mats.append(np.array(rows))
        i += 2 + nbox
    return {"ncomp": ncomp, "boxes": boxes, "fabs": fabs, "min": mats[0], "max": mats[1]}


_DESC = {
    "((8, (64 11 52 0 1 12 0 1023)),(8, (8 7 6 5 4 3 2 1)))": "<f8",
    "((4, (32 8 23 0 1 9 0 127)),(4, (4 3 2 1)))": "<f4",
}


def read_fab(path, level, fname, offset):
    """(box, ncomp, data[ncomp, ...x-fastest reversed axes...])."""
    fn = os.path.join(path, f"Level_{level}", fname)
    with open(fn, "rb") as f:
        f.seek(offset)
        line = f.readline().decode("ascii")
        assert line.startswith("FAB ((") and line.endswith("\n")
        m = re.fullmatch(r"FAB (\(\(.*?\)\)\))(\(\(.*\)\)) (\d+)\n", line)
        assert m, line
        dtype = np.dtype(_DESC[m.group(1)])
        box = _parse_box(m.group(2))
        ncomp = int(m.group(3))
        npts = int(np.prod([h - l + 1 for l, h in zip(*box)]))
        data = np.fromfile(f, dtype=dtype, count=ncomp * npts)
    assert data.size == ncomp * npts
    shape = (ncomp,) + tuple(reversed([h - l + 1 for l, h in zip(*box)]))
    return box, ncomp, data.reshape(shape)


def centers(prob_lo, prob_hi, domain, lo, n):
    """Documented cell-centre formula, one 1D array per axis."""
    out = []
    for a in range(len(lo)):
        dx = (prob_hi[a] - prob_lo[a]) / domain[a]
        out.append(prob_lo[a] + (np.arange(lo[a], lo[a] + n[a]) + 0.5) * dx)
    return out


def expected_xfastest(name, cs):
    """Analytic values on a box in the on-disk axis order (x fastest)."""
    d = len(cs)
    shaped = []
    for a, c in enumerate(cs):
        s = [1] * d
        s[d - 1 - a] = c.size
        shaped.append(c.reshape(s))
    return analytic_field(name, *(shaped + [None] * (3 - d)))


def covered_mask(domain, boxes):
    m = np.zeros(domain, dtype=np.int32)
    for lo, hi in boxes:
        m[tuple(slice(l, h + 1) for l, h in zip(lo, hi))] += 1
    return m


# ---------------------------------------------------------------------------
# Analytic fields
# ---------------------------------------------------------------------------


def test_analytic_field_documented_values():
    assert analytic_field("density", 0.25, 0.25, 0.25) == pytest.approx(1.5, abs=1e-15)
    assert analytic_field("density", 0.25, 0.75) == pytest.approx(0.5, abs=1e-15)
    assert analytic_field("density", 0.75) == pytest.approx(0.5, abs=1e-15)
    assert analytic_field("temperature", 0.5, 0.5, 0.5) == 500.0
    assert analytic_field("temperature", 0.5) == 500.0
    assert analytic_field("velx", 0.25, 0.0, 0.0) == pytest.approx(1.0, abs=1e-15)
    assert analytic_field("vely", 0.0, 0.25, 0.0) == pytest.approx(1.0, abs=1e-15)
    assert analytic_field("velz", 0.0, 0.0, 0.25) == pytest.approx(1.0, abs=1e-15)
    # velz in 2D omits the sin(2 pi z) factor.
    assert analytic_field("velz", 0.0, 0.0) == pytest.approx(1.0, abs=1e-15)
    p = analytic_field("pressure", 0.1, 0.2, 0.3)
    pt = (0.1, 0.2, 0.3)
    assert p == analytic_field("density", *pt) * analytic_field("temperature", *pt)
    # Unknown names get a stable, smooth, non-constant field.
    a = analytic_field("Y(H2O)", np.linspace(0, 1, 7), 0.3, 0.1)
    assert np.all(np.isfinite(a)) and np.ptp(a) > 0.1
    with pytest.raises(ValueError):
        analytic_field("density", 0.1, None, 0.2)


def test_analytic_field_is_shape_independent():
    # The writer evaluates on broadcast per-axis coordinates; a caller with
    # flat per-point coordinates must get bit-identical values.
    rng = np.random.default_rng(3)
    x, y, z = (rng.random(5), rng.random(4), rng.random(3))
    for name in FIELDS + ("pressure", "other"):
        full = analytic_field(name, x[None, None, :], y[None, :, None], z[:, None, None])
        zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
        flat = analytic_field(name, xx.ravel(), yy.ravel(), zz.ravel())
        assert np.array_equal(full.ravel(), flat), name


# ---------------------------------------------------------------------------
# Hierarchy planning
# ---------------------------------------------------------------------------


def _check_hierarchy(levels, r, mgs):
    d = len(levels[0].domain)
    cov0 = covered_mask(levels[0].domain, levels[0].boxes)
    assert np.all(cov0 == 1), "level 0 must tile the domain exactly once"
    for lv in levels:
        for lo, hi in lv.boxes:
            assert all(0 <= l <= h < n for l, h, n in zip(lo, hi, lv.domain))
            assert all(h - l + 1 <= mgs for l, h in zip(lo, hi))
    for coarse, fine in zip(levels, levels[1:]):
        assert fine.domain == tuple(n * r for n in coarse.domain)
        cmask = covered_mask(coarse.domain, coarse.boxes) > 0
        fmask = covered_mask(fine.domain, fine.boxes)
        assert fmask.max() == 1, "fine boxes overlap"
        for lo, hi in fine.boxes:
            assert all(l % r == 0 and (h + 1) % r == 0 for l, h in zip(lo, hi))
            # Proper nesting: coarsened box grown by one cell is inside the
            # coarse level (clipped at the domain boundary).
            sl = tuple(
                slice(max(l // r - 1, 0), min((h + 1) // r + 1, n))
                for l, h, n in zip(lo, hi, coarse.domain)
            )
            assert cmask[sl].all()
    assert len(levels[0].dx) == d


def test_plan_default_nested_sphere():
    levels = plan_hierarchy(n_cells=(64, 64, 64), levels=3, ref_ratio=2, max_grid_size=8)
    assert [lv.level for lv in levels] == [0, 1, 2]
    assert len(levels[0].boxes) == 8**3
    _check_hierarchy(levels, 2, 8)
    # The default region is a central ellipsoid: level 1 is a strict,
    # non-box-shaped subset (fewer boxes than its bounding box would need).
    lv1 = levels[1]
    lo = np.min([b[0] for b in lv1.boxes], axis=0)
    hi = np.max([b[1] for b in lv1.boxes], axis=0)
    bbox_tiles = np.prod((hi - lo + 1) // 8)
    assert 0 < len(lv1.boxes) < bbox_tiles
    assert np.all(lo > 0) and np.all(hi < 127)
    # Each level covers a smaller physical volume than the one below.
    vols = [lv.cells * np.prod(lv.dx) for lv in levels]
    assert vols[0] > vols[1] > vols[2] > 0


def test_plan_custom_refine_and_ratio_4():
    def left_half(level, x, y=None, z=None):
        return x < 0.3

    levels = plan_hierarchy(
        n_cells=(32, 16), levels=2, ref_ratio=4, max_grid_size=8, refine=left_half
    )
    _check_hierarchy(levels, 4, 8)
    fine = levels[1]
    assert fine.domain == (128, 64)
    # x < 0.3 tags coarse cells 0..9; tiles of 2 coarse cells -> 0..9 -> fine 0..39
    assert max(hi[0] for _, hi in fine.boxes) == 39
    assert min(lo[0] for lo, _ in fine.boxes) == 0
    assert covered_mask(fine.domain, fine.boxes)[:40, :].all()


def test_plan_proper_nesting_drops_unnested_tiles():
    # Level 1 tagged only at x < 0.2, level 2 tagged everywhere: level 2 may
    # only appear one coarse cell inside level 1, never at its edge.
    # Tiles are 2 coarse cells; x < 0.2 tags level-0 cells 0..5, so level 1
    # is 0..11 (three boxes of 4). The level-1 tile 10..11 grown by one cell
    # reaches 12, outside level 1, so level 2 ends at level-1 cell 9.
    def rule(level, x, y=None, z=None):
        return (x < 0.2) if level == 0 else np.ones_like(x, dtype=bool)

    levels = plan_hierarchy(n_cells=(32,), levels=3, ref_ratio=2, max_grid_size=4, refine=rule)
    _check_hierarchy(levels, 2, 4)
    assert max(hi[0] for _, hi in levels[1].boxes) == 11
    assert max(hi[0] for _, hi in levels[2].boxes) == 19
    assert min(lo[0] for lo, _ in levels[2].boxes) == 0


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError):
        plan_hierarchy(n_cells=(16, 16, 16), max_grid_size=7, ref_ratio=2)
    with pytest.raises(ValueError):
        plan_hierarchy(n_cells=(16, 16, 16), levels=0)
    with pytest.raises(ValueError):
        plan_hierarchy(n_cells=(16, 16), prob_lo=(0, 0), prob_hi=(1, 0))


# ---------------------------------------------------------------------------
# On-disk format (no yt needed)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pf3d(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("syn") / "plt3d")
    layout = write_plotfile(
        path,
        n_cells=(32, 32, 24),
        levels=3,
        max_grid_size=8,
        prob_lo=(-1.0, 0.0, 0.5),
        prob_hi=(1.0, 1.0, 2.0),
        time=1.25,
        step=7,
        particles=500,
        seed=11,
        max_file_bytes=200_000,
    )
    return path, layout


def test_header_matches_layout(pf3d):
    path, layout = pf3d
    h = read_header(path)
    assert h["version"] == "HyperCLaw-V1.1"
    assert h["names"] == list(FIELDS)
    assert h["dim"] == 3 and h["time"] == 1.25 and h["steps"] == [7, 7, 7]
    assert h["finest_level"] == 2 and h["ref_ratio"] == [2, 2]
    assert h["prob_lo"] == [-1.0, 0.0, 0.5] and h["prob_hi"] == [1.0, 1.0, 2.0]
    assert h["domains"] == [
        ((0, 0, 0), (31, 31, 23)),
        ((0, 0, 0), (63, 63, 47)),
        ((0, 0, 0), (127, 127, 95)),
    ]
    assert h["coord_sys"] == 0 and h["bwidth"] == 0
    for L, lvh in enumerate(h["levels"]):
        lv = layout.levels[L]
        assert lvh["mf"] == f"Level_{L}/Cell" and lvh["step"] == 7
        cell = read_cell_h(path, L)
        assert cell["boxes"] == lv.boxes
        dx = [(hi - lo) / n for lo, hi, n in zip(h["prob_lo"], h["prob_hi"], lv.domain)]
        assert np.allclose(h["dx"][L], dx, rtol=0, atol=0)
        # Physical grid bounds agree with the boxes (BACK-AMREX-9 check).
        for (lo, hi), bounds in zip(cell["boxes"], lvh["bounds"]):
            for a in range(3):
                ext = h["prob_hi"][a] - h["prob_lo"][a]
                assert abs(bounds[a][0] - (h["prob_lo"][a] + lo[a] * dx[a])) <= 1e-10 * ext
                assert abs(bounds[a][1] - (h["prob_lo"][a] + (hi[a] + 1) * dx[a])) <= 1e-10 * ext
    _check_hierarchy(layout.levels, 2, 8)


def test_fab_data_and_minmax_exact(pf3d):
    path, layout = pf3d
    h = read_header(path)
    for L, lv in enumerate(layout.levels):
        cell = read_cell_h(path, L)
        files = {f for f, _ in cell["fabs"]}
        assert files == set(lv.files)
        for b, (fname, off) in enumerate(cell["fabs"]):
            box, ncomp, data = read_fab(path, L, fname, off)
            assert box == cell["boxes"][b] and ncomp == 5
            assert np.array_equal(cell["min"][b], data.reshape(5, -1).min(axis=1))
            assert np.array_equal(cell["max"][b], data.reshape(5, -1).max(axis=1))
            if b % 7 == 0:
                n = [hh - ll + 1 for ll, hh in zip(*box)]
                cs = centers(h["prob_lo"], h["prob_hi"], lv.domain, box[0], n)
                for c, name in enumerate(FIELDS):
                    assert np.array_equal(data[c], expected_xfastest(name, cs)), (L, b, name)
    # max_file_bytes forces several Cell_D files on the finer levels.
    assert any(len(lv.files) > 1 for lv in layout.levels)
    assert layout.nbytes == sum(
        os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs
    )


def test_particle_files_follow_contract(pf3d):
    path, layout = pf3d
    with open(os.path.join(path, "Tracer", "Header")) as f:
        tok = f.read().split()
    assert tok[0] == "Version_Two_Dot_One_double"
    dim, nr = int(tok[1]), int(tok[2])
    names = tok[3 : 3 + nr]
    assert dim == 3 and names == ["mass", "vx", "vy", "vz"]
    i = 3 + nr
    ni, ckpt, total, next_id, finest = (int(v) for v in tok[i : i + 5])
    assert (ni, ckpt, total, next_id, finest) == (0, 1, 500, 501, 2)
    i += 5
    ngrids = [int(v) for v in tok[i : i + finest + 1]]
    assert ngrids == [len(lv.boxes) for lv in layout.levels]
    i += finest + 1
    triples = np.array(tok[i:], dtype=np.int64).reshape(-1, 3)
    assert len(triples) == sum(ngrids)
    assert triples[:, 1].sum() == 500
    n_real, n_int = dim + nr, ni + 2 * ckpt
    seen_ids = []
    g = 0
    for L, lv in enumerate(layout.levels):
        pdir = os.path.join(path, "Tracer", f"Level_{L}")
        with open(os.path.join(pdir, "Particle_H")) as f:
            ph = f.read().split("\n")
        assert ph[0] == f"({len(lv.boxes)} 0"
        assert [_parse_box(s) for s in ph[1 : 1 + len(lv.boxes)]] == lv.boxes
        level_triples = triples[g : g + len(lv.boxes)]
        for b, (fnum, count, off) in enumerate(level_triples):
            if count == 0:
                continue
            fn = os.path.join(pdir, "DATA_%05d" % fnum)
            size = os.path.getsize(fn)
            later = [o for _, c, o in level_triples if o > off]
            avail = (min(later) if later else size) - off
            # Integer width inference of BACK-AMREX-12 must give 4 bytes.
            assert (avail - count * n_real * 8) == count * n_int * 4
            with open(fn, "rb") as f:
                f.seek(off)
                ints = np.fromfile(f, "<i4", count * n_int).reshape(count, n_int)
                reals = np.fromfile(f, "<f8", count * n_real).reshape(count, n_real)
            seen_ids += list(ints[:, 0])
            assert np.all(ints[:, 1] == 0)
            pos = reals[:, :3]
            lo, hi = lv.boxes[b]
            for a in range(3):
                dx = lv.dx[a]
                assert np.all(pos[:, a] >= layout.prob_lo[a] + lo[a] * dx - 1e-12)
                assert np.all(pos[:, a] <= layout.prob_lo[a] + (hi[a] + 1) * dx + 1e-12)
            x, y, z = pos.T
            assert np.array_equal(reals[:, 3], analytic_field("density", x, y, z) / 500)
            assert np.array_equal(reals[:, 4], analytic_field("velx", x, y, z))
        g += len(lv.boxes)
    assert sorted(seen_ids) == list(range(1, 501))
    # Particles sit on the finest level containing them: some reach level 2.
    assert sum(layout.particles.grid_counts[-len(layout.levels[-1].boxes) :]) > 0


def test_float32_descriptor_and_rounding(tmp_path):
    path = str(tmp_path / "f32")
    layout = write_plotfile(
        path, n_cells=(16, 16, 16), levels=2, max_grid_size=8, fields=("density", "vely"),
        dtype="float32",
    )
    cell = read_cell_h(path, 1)
    with open(os.path.join(path, "Level_1", cell["fabs"][0][0]), "rb") as f:
        f.seek(cell["fabs"][0][1])
        line = f.readline().decode()
    assert line.startswith("FAB ((4, (32 8 23 0 1 9 0 127)),(4, (4 3 2 1)))((")
    box, ncomp, data = read_fab(path, 1, *cell["fabs"][0])
    assert data.dtype == np.float32
    n = [hh - ll + 1 for ll, hh in zip(*box)]
    cs = centers((0, 0, 0), (1, 1, 1), layout.levels[1].domain, box[0], n)
    exact = expected_xfastest("density", cs)
    assert np.array_equal(data[0], exact.astype(np.float32))
    assert np.allclose(data[0], exact, rtol=2.0**-24, atol=0)


def test_plan_predicts_written_size(tmp_path):
    kw = dict(n_cells=(24, 20, 16), levels=3, max_grid_size=8, fields=("density", "velz"),
              particles={"name": "dust", "count": 300, "real_comps": ("mass",)})
    plan = synthetic.plan_plotfile(**kw)
    assert not os.listdir(tmp_path)
    layout = write_plotfile(str(tmp_path / "p"), **kw)
    assert [lv.boxes for lv in plan.levels] == [lv.boxes for lv in layout.levels]
    # Only the sign characters of negative Cell_H minima/maxima and the
    # digits of particle offsets are unknown before writing.
    assert abs(layout.nbytes - plan.nbytes) < 0.01 * layout.nbytes
    assert os.path.isdir(str(tmp_path / "p" / "dust" / "Level_2"))


def test_refuses_to_clobber_non_plotfile(tmp_path):
    d = tmp_path / "busy"
    d.mkdir()
    (d / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_plotfile(str(d), n_cells=8, levels=1)
    with pytest.raises(FileExistsError):
        write_plotfile(str(d), n_cells=8, levels=1, overwrite=True)
    assert (d / "keep.txt").exists()
    p = tmp_path / "pf"
    write_plotfile(str(p), n_cells=8, levels=1)
    with pytest.raises(FileExistsError):
        write_plotfile(str(p), n_cells=8, levels=1)
    write_plotfile(str(p), n_cells=8, levels=2, overwrite=True, max_grid_size=4)
    assert read_header(str(p))["finest_level"] == 1


# ---------------------------------------------------------------------------
# yt as an external reader
# ---------------------------------------------------------------------------


def _yt_grid_values(g, name, prob_lo, prob_hi, n0, r, dim):
    """(yt values, analytic values) for one yt grid, both (nx, ny, nz)."""
    start = [int(v) for v in g.get_global_startindex()[:dim]]
    n = [int(v) for v in g.ActiveDimensions[:dim]]
    domain = [n0[a] * r**g.Level for a in range(dim)]
    cs = centers(prob_lo, prob_hi, domain, start, n)
    shaped = []
    for a, c in enumerate(cs):
        s = [1] * dim
        s[a] = c.size
        shaped.append(c.reshape(s))
    exact = analytic_field(name, *(shaped + [None] * (3 - dim)))
    exact = np.broadcast_to(exact, n).reshape(tuple(g.ActiveDimensions))
    got = np.asarray(g["boxlib", name].d)
    # yt's own cell centres agree with the documented formula.
    ytx = np.asarray(g["index", "x"].d)[:, 0, 0] if dim == 3 else None
    if ytx is not None:
        assert np.allclose(ytx, cs[0], rtol=0, atol=1e-12)
    return got, exact


def _yt_boxes(ds, dim):
    out = {}
    for g in ds.index.grids:
        lo = tuple(int(v) for v in g.get_global_startindex()[:dim])
        hi = tuple(int(a + b - 1) for a, b in zip(lo, g.ActiveDimensions[:dim]))
        out.setdefault(int(g.Level), []).append((lo, hi))
    return out


def test_yt_reads_3d_hierarchy_and_values(pf3d):
    yt = _yt()
    path, layout = pf3d
    ds = yt.load(path)
    assert list(ds.domain_dimensions) == [32, 32, 24]
    assert ds.index.max_level == 2
    assert ds.current_time.d == 1.25
    assert np.allclose(ds.domain_left_edge.d, [-1.0, 0.0, 0.5])
    assert np.allclose(ds.domain_right_edge.d, [1.0, 1.0, 2.0])
    boxes = _yt_boxes(ds, 3)
    for lv in layout.levels:
        assert boxes[lv.level] == lv.boxes
    grids = ds.index.grids
    picks = [0, len(grids) // 3, len(layout.levels[0].boxes), len(grids) // 2, len(grids) - 1]
    checked_levels = set()
    for gi in picks:
        g = grids[gi]
        checked_levels.add(int(g.Level))
        for name in FIELDS:
            got, exact = _yt_grid_values(
                g, name, layout.prob_lo, layout.prob_hi, (32, 32, 24), 2, 3
            )
            assert np.array_equal(got, exact), (gi, name)
        # Cell_H min/max agree with what yt reads; yt lists grids level by
        # level in Cell_H order.
        cell = read_cell_h(path, g.Level)
        b = gi - sum(len(lv.boxes) for lv in layout.levels[: g.Level])
        dens = np.asarray(g["boxlib", "density"].d)
        assert cell["min"][b][0] == dens.min() and cell["max"][b][0] == dens.max()
    assert checked_levels == {0, 1, 2}


def test_yt_reads_particles(pf3d):
    yt = _yt()
    path, layout = pf3d
    ds = yt.load(path)
    ad = ds.all_data()
    x = np.asarray(ad["Tracer", "particle_position_x"].d)
    y = np.asarray(ad["Tracer", "particle_position_y"].d)
    z = np.asarray(ad["Tracer", "particle_position_z"].d)
    ids = np.asarray(ad["Tracer", "particle_id"].d)
    mass = np.asarray(ad["Tracer", "particle_mass"].d)
    vz = np.asarray(ad["Tracer", "particle_vz"].d)
    assert x.size == 500
    assert sorted(ids.astype(int)) == list(range(1, 501))
    assert np.all((x >= -1) & (x < 1) & (y >= 0) & (y < 1) & (z >= 0.5) & (z < 2))
    assert np.array_equal(mass, analytic_field("density", x, y, z) / 500)
    assert np.array_equal(vz, analytic_field("velz", x, y, z))


def test_yt_float32_values(tmp_path):
    yt = _yt()
    path = str(tmp_path / "f32")
    write_plotfile(path, n_cells=(16, 16, 16), levels=2, max_grid_size=8,
                   fields=("temperature", "velx"), dtype="float32")
    ds = yt.load(path)
    assert ds.index._dtype == np.dtype("<f4")
    for g in (ds.index.grids[0], ds.index.grids[-1]):
        for name in ("temperature", "velx"):
            got, exact = _yt_grid_values(g, name, (0, 0, 0), (1, 1, 1), (16, 16, 16), 2, 3)
            assert np.array_equal(got, exact.astype(np.float32).astype(np.float64))
            assert np.allclose(got, exact, rtol=2.0**-24, atol=1e-7)


def test_yt_reads_2d(tmp_path):
    yt = _yt()
    path = str(tmp_path / "p2d")
    layout = write_plotfile(
        path, n_cells=(32, 16), levels=3, max_grid_size=8, prob_lo=(0, 0), prob_hi=(2, 1),
        particles=64,
    )
    ds = yt.load(path)
    assert ds.dimensionality == 2
    assert list(ds.domain_dimensions) == [32, 16, 1]
    assert ds.index.max_level == layout.finest_level == 2
    boxes = _yt_boxes(ds, 2)
    for lv in layout.levels:
        assert boxes[lv.level] == lv.boxes
    for g in (ds.index.grids[0], ds.index.grids[-1]):
        for name in ("density", "vely", "velz"):
            got, exact = _yt_grid_values(g, name, (0, 0), (2, 1), (32, 16), 2, 2)
            assert np.array_equal(got, exact), name
    ad = ds.all_data()
    px = np.asarray(ad["Tracer", "particle_position_x"].d)
    py = np.asarray(ad["Tracer", "particle_position_y"].d)
    assert px.size == 64
    assert np.array_equal(np.asarray(ad["Tracer", "particle_vy"].d), analytic_field("vely", px, py))


def test_yt_reads_1d(tmp_path):
    yt = _yt()
    path = str(tmp_path / "p1d")
    layout = write_plotfile(path, n_cells=(64,), levels=2, max_grid_size=16,
                            fields=("density", "pressure", "Y(O2)"))
    ds = yt.load(path)
    assert ds.dimensionality == 1
    assert list(ds.domain_dimensions) == [64, 1, 1]
    boxes = _yt_boxes(ds, 1)
    for lv in layout.levels:
        assert boxes[lv.level] == lv.boxes
    for g in ds.index.grids:
        for name in ("density", "pressure", "Y(O2)"):
            got, exact = _yt_grid_values(g, name, (0,), (1,), (64,), 2, 1)
            assert np.array_equal(got, exact), name


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=SDK + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "kangaroo.synthetic", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_and_reports_layout(tmp_path):
    out = str(tmp_path / "cli")
    res = _cli(out, "--cells", "16", "--levels", "2", "--fields", "density,temperature",
               "--max-grid", "8", "--dtype", "float32", "--dims", "3")
    assert res.returncode == 0, res.stderr
    assert "level 0: domain 16x16x16, 8 boxes" in res.stdout
    assert "level 1: domain 32x32x32" in res.stdout
    m = re.search(r"total: (\d+) bytes", res.stdout)
    assert m and int(m.group(1)) == sum(
        os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs
    )
    h = read_header(out)
    assert h["names"] == ["density", "temperature"] and h["finest_level"] == 1
    box, ncomp, data = read_fab(out, 0, *read_cell_h(out, 0)["fabs"][0])
    assert data.dtype == np.float32 and ncomp == 2
    # A second run onto the same directory is refused unless --force.
    again = _cli(out, "--cells", "16", "--levels", "1")
    assert again.returncode == 2 and "not empty" in again.stderr
    assert _cli(out, "--cells", "8", "--levels", "1", "--force").returncode == 0


def test_cli_target_bytes_and_2d(tmp_path):
    out = str(tmp_path / "tgt")
    target = 3.0e6
    res = _cli(out, "--target-bytes", str(target), "--levels", "3", "--max-grid", "8",
               "--fields", "density,velx", "--dims", "2")
    assert res.returncode == 0, res.stderr
    total = int(re.search(r"total: (\d+) bytes", res.stdout).group(1))
    assert 0.95 * target < total < 1.05 * target
    assert read_header(out)["dim"] == 2


def test_module_exports():
    for name in ("write_plotfile", "analytic_field", "plan_hierarchy", "main"):
        assert hasattr(synthetic, name)
