"""Tests of client-side lowering (kangaroo.lowering) against the functional contract.

Expected values are derived by hand from the contract text (COORD-1..5,
COV-3..6, LOW-2..16, AXIS-1..4, ERR-32..36/48/49); nothing here runs a kernel.
"""

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from kangaroo import ir  # noqa: E402
from kangaroo import lowering as lw  # noqa: E402


# ---------------------------------------------------------------------------
# helpers


def level(dx, boxes, ratio=2, x0=(0.0, 0.0, 0.0), origin=(0, 0, 0), periodic=(False, False, False)):
    if isinstance(dx, (int, float)):
        dx = (dx, dx, dx)
    return lw.LevelMeta(lw.LevelGeom(dx=dx, x0=x0, index_origin=origin, is_periodic=periodic, ref_ratio=ratio), boxes)


def runmeta(*levels, step=0, coord_sys=0, mapped_mesh=False):
    return lw.RunMeta((lw.StepMeta(step, tuple(levels)),), coord_sys=coord_sys, mapped_mesh=mapped_mesh)


def three_level_meta():
    """Unit cube: level 0 is 8^3 in four x-y quadrant blocks, level 1 (16^3) refines
    x,y in [0.25, 0.75) for z in [0, 0.5), level 2 (32^3) refines x,y,z in [0.375, 0.5)."""
    l0 = level(1 / 8, [((0, 0, 0), (3, 3, 7)), ((4, 0, 0), (7, 3, 7)), ((0, 4, 0), (3, 7, 7)), ((4, 4, 0), (7, 7, 7))])
    l1 = level(1 / 16, [((4, 4, 0), (11, 11, 7))])
    l2 = level(1 / 32, [((12, 12, 12), (15, 15, 15))], ratio=1)
    return runmeta(l0, l1, l2)


def doc(fragment):
    return fragment.plan().to_dict()


def stage_by_name(d, name):
    (s,) = [s for s in d["stages"] if s["name"] == name]
    return s


def names(d):
    return [s["name"] for s in d["stages"]]


def counter(start):
    return lw.FieldAllocator(start)


# ---------------------------------------------------------------------------
# AXIS-1..2, ERR-32..34


@pytest.mark.parametrize("axis,expected", [("x", 0), ("y", 1), ("z", 2), ("X", 0), ("Y", 1), ("Z", 2),
                                           (0, 0), (1, 1), (2, 2)])
def test_axis_spellings(axis, expected):
    assert lw.axis_index(axis) == expected


def test_axis_accepts_numpy_integers():
    np = pytest.importorskip("numpy")
    assert lw.axis_index(np.int64(2)) == 2


@pytest.mark.parametrize("axis", ["w", "xy", "", " x", 3, -1, 1.0, True, None, "0", b"x"])
def test_invalid_axes_raise_value_error(axis):
    with pytest.raises(ValueError, match="invalid axis"):
        lw.axis_index(axis)


def test_plane_axes_follow_axis2():
    assert lw.plane_axes("z") == (0, 1) and lw.plane_name("z") == "xy"
    assert lw.plane_axes("y") == (0, 2) and lw.plane_name("Y") == "xz"
    assert lw.plane_axes(0) == (1, 2) and lw.plane_name("x") == "yz"


def test_resolution_parsing():
    assert lw.parse_resolution((4, 3)) == (4, 3)
    assert lw.parse_resolution("4, 3") == (4, 3)
    for bad in [(0, 3), (4, -1), "4", "a,b", (1, 2, 3), 5, (2.5, 3), (True, 2), None]:
        with pytest.raises(ValueError):
            lw.parse_resolution(bad)
    with pytest.raises(ValueError, match="resolution must be positive"):
        lw.parse_resolution((0, 3))


def test_rect_checks():
    assert lw.parse_rect((1, 0, 0, 2)) == (1.0, 0.0, 0.0, 2.0)  # kept as given; kernels sort it
    for bad in [(0, 0, 0, 1), (0, 1, 1, 1), (0, 0, 1), (0, 0, float("nan"), 1), (0, 0, float("inf"), 1)]:
        with pytest.raises(ValueError):
            lw.parse_rect(bad)


# ---------------------------------------------------------------------------
# API-15 plane geometry


def test_plane_geometry_defaults_follow_api15():
    meta = dict(meta_3d(), prob_domain=[[[2, 0, 0], [9, 7, 7]], [[4, 0, 0], [19, 15, 15]],
                                        [[8, 0, 0], [39, 31, 31]]])
    g = lw.plane_geometry(meta, axis="y")
    assert (g.plane, g.labels, g.axis_index) == ("xz", ("x", "z"), 1)
    # the low edge of cell dlo is prob_lo (COORD-1/COORD-4), not prob_lo + dlo*dx
    assert g.axis_bounds == (-1.0, -1.0 + 8 * 0.002)
    assert g.rect == pytest.approx((0.0, 2.0, 0.016, 2.016))
    assert g.resolution == (8, 8)
    # center of the middle cell: (dhi - dlo) // 2 = 3 -> prob_lo + 3.5 dx
    assert g.coord == pytest.approx(-1.0 + 3.5 * 0.002)
    g = lw.plane_geometry(meta, axis="x", level=1, zoom=2.0, resolution="4,2")
    assert g.resolution == (4, 2)
    assert g.coord == pytest.approx(0.0 + 7.5 * 0.001)
    assert g.rect == pytest.approx((-1.0 + 0.004, 2.004, -1.0 + 0.012, 2.012))
    for zoom in (0, -1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="--zoom must be a positive number"):
            lw.plane_geometry(meta, axis="z", zoom=zoom)
    with pytest.raises(ValueError, match="resolution must be positive"):
        lw.plane_geometry(meta, axis="z", resolution=(0, 3))
    with pytest.raises(ValueError, match="invalid axis"):
        lw.plane_geometry(meta, axis="r")


def test_plane_geometry_2d_and_unusable_cell_size():
    meta = {"prob_lo": [0.0, 0.0], "prob_hi": [1.0, 2.0], "cell_size": [[0.0, 0.5]], "spacedim": 2,
            "prob_domain": [[[0, 0], [3, 3]]], "level_boxes": [[[[0, 0], [3, 3]]]]}
    g = lw.plane_geometry(meta, axis="z")
    assert g.axis_bounds == (0.0, 1.0)  # the missing axis is the unit cell
    assert g.coord == 0.5
    assert g.rect == (0.0, 0.0, 1.0, 2.0)  # x spacing recovered from prob_hi
    g = lw.plane_geometry(meta, axis="x")
    assert g.coord == 0.375 and g.resolution == (4, 1)  # middle cell 1 of 4, dx 0.25


# ---------------------------------------------------------------------------
# COORD-1..3


def test_cell_index_and_edges():
    g = lw.LevelGeom(dx=(0.25, 0.5, 0.0), x0=(-1.0, 0.0, 3.0), index_origin=(4, 0, 7))
    # COORD-2: floor((x - x0)/dx) + origin; the upper cell at a face
    assert lw.cell_index(g, 0, -1.0) == 4
    assert lw.cell_index(g, 0, -0.75) == 5
    assert lw.cell_index(g, 0, -0.76) == 4
    assert lw.cell_index(g, 0, -1.01) == 3
    # dx == 0 -> index_origin (reference behavior)
    assert lw.cell_index(g, 2, 123.0) == 7
    # COORD-1 low edge
    assert g.lower_edge(0, 6) == -0.5


def test_index_range_is_half_open_and_order_free():
    g = lw.LevelGeom(dx=(0.25, 0.25, 0.25), x0=(0.0, 0.0, 0.0))
    assert lw.index_range(g, 0, 0.25, 0.5) == (1, 1)  # [0.25, 0.5) is exactly cell 1
    assert lw.index_range(g, 0, 0.5, 0.25) == (1, 1)
    assert lw.index_range(g, 0, 0.2, 0.51) == (0, 2)
    assert lw.index_range(g, 0, 0.0, 1.0) == (0, 3)


# ---------------------------------------------------------------------------
# RunMeta model and DATA-7


def test_runmeta_json_round_trip():
    rm = three_level_meta()
    d = rm.to_dict()
    assert list(d) == ["steps", "particle_species", "coord_sys"]
    g = d["steps"][0]["levels"][0]["geom"]
    assert g == {"dx": [0.125] * 3, "x0": [0.0] * 3, "index_origin": [0, 0, 0],
                 "is_periodic": [False] * 3, "ref_ratio": [2, 2, 2]}
    assert d["steps"][0]["levels"][1]["boxes"] == [[[4, 4, 0], [11, 11, 7]]]
    again = lw.RunMeta.from_json(rm.to_json())
    assert again == rm


def test_runmeta_from_dict_defaults_and_forms():
    d = {"steps": [{"step": 5, "levels": [{"geom": {"dx": [1, 1, 1], "x0": [0, 0, 0], "ref_ratio": 2},
                                          "boxes": [[[0, 0, 0], [3, 3, 3]]]}]}],
         "particle_species": [["electrons", 4], ["ions", 2]]}
    rm = lw.RunMeta.from_dict(d)
    geom = rm.steps[0].levels[0].geom
    assert geom.ref_ratio == (2, 2, 2)  # scalar ratio applies to all axes
    assert geom.index_origin == (0, 0, 0) and geom.is_periodic == (False, False, False)
    assert rm.particle_species == {"electrons": 4, "ions": 2}
    assert rm.coord_sys == 0
    assert rm.step_meta(5) is rm.steps[0]  # label lookup (DATA-6)
    with pytest.raises(ValueError, match="step 0 is not in the RunMeta"):
        rm.step_meta(0)


@pytest.mark.parametrize("path,key", [
    ((), "steps"), (("steps", 0), "step"), (("steps", 0), "levels"), (("steps", 0, "levels", 0), "geom"),
    (("steps", 0, "levels", 0, "geom"), "dx"), (("steps", 0, "levels", 0, "geom"), "x0"),
    (("steps", 0, "levels", 0, "geom"), "ref_ratio"), (("steps", 0, "levels", 0), "boxes"),
])
def test_runmeta_missing_keys_are_named(path, key):
    d = {"steps": [{"step": 0, "levels": [{"geom": {"dx": [1, 1, 1], "x0": [0, 0, 0], "ref_ratio": 1},
                                          "boxes": [[[0, 0, 0], [1, 1, 1]]]}]}]}
    node = d
    for p in path:
        node = node[p]
    del node[key]
    with pytest.raises(ValueError, match=f"missing key '{key}'"):
        lw.RunMeta.from_dict(d)


def test_runmeta_rejects_bad_particle_species_and_duplicate_steps():
    base = {"steps": [{"step": 0, "levels": []}]}
    with pytest.raises((TypeError, ValueError)):
        lw.RunMeta.from_dict({**base, "particle_species": "electrons"})
    with pytest.raises(ValueError):
        lw.RunMeta.from_dict({**base, "particle_species": [["electrons"]]})
    with pytest.raises(ValueError, match="unique"):
        lw.RunMeta.from_dict({"steps": [{"step": 1, "levels": []}, {"step": 1, "levels": []}]})


def test_unaligned_fine_box_is_rejected():
    l0 = level(1.0, [((0, 0, 0), (7, 7, 7))])
    with pytest.raises(ValueError, match="fine box not aligned to refinement ratio"):
        runmeta(l0, level(0.5, [((2, 2, 2), (6, 5, 5))], ratio=1))  # hi + 1 = 7 is odd
    with pytest.raises(ValueError, match="fine box not aligned to refinement ratio"):
        runmeta(l0, level(0.5, [((1, 2, 2), (6, 5, 5))], ratio=1))  # lo = 1 is odd
    runmeta(l0, level(0.5, [((2, 2, 2), (5, 5, 5))], ratio=1))  # aligned: fine


def test_empty_box_is_rejected():
    with pytest.raises(ValueError, match="positive extent"):
        level(1.0, [((0, 0, 0), (-1, 3, 3))])


# ---------------------------------------------------------------------------
# COORD-4 synthesis


def meta_3d():
    """Shaped like the metadata of a three-level 3D plotfile (prob_domain 8, 16, 32 cells)."""
    return {
        "var_names": ["a", "b"], "finest_level": 2, "time": 0.5,
        "prob_lo": [0.0, -1.0, 2.0], "prob_hi": [0.016, 0.015, 2.016],
        "ref_ratio": [2, 2, 0],
        "cell_size": [[0.002] * 3, [0.001] * 3, [0.0005] * 3],
        "prob_domain": [[[0, 0, 0], [7, 7, 7]], [[0, 0, 0], [15, 15, 15]], [[0, 0, 0], [31, 31, 31]]],
        "level_boxes": [[[[0, 0, 0], [7, 7, 7]]], [[[0, 0, 0], [7, 7, 7]], [[8, 0, 0], [15, 7, 7]]],
                        [[[0, 0, 0], [7, 7, 7]]]],
        "coord_sys": 0,
    }


def test_coord4_three_levels():
    rm = lw.runmeta_from_metadata(meta_3d(), step=7)
    assert [s.step for s in rm.steps] == [7]
    lv = rm.steps[0].levels
    assert [l.geom.ref_ratio for l in lv] == [(2, 2, 2), (2, 2, 2), (1, 1, 1)]
    assert lv[1].geom.dx == (0.001, 0.001, 0.001)
    assert all(l.geom.x0 == (0.0, -1.0, 2.0) for l in lv)
    assert lv[1].boxes == (((0, 0, 0), (7, 7, 7)), ((8, 0, 0), (15, 7, 7)))
    assert rm.coord_sys == 0 and rm.mapped_mesh is False
    assert all(l.geom.is_periodic == (False, False, False) for l in lv)
    assert rm.particle_species == {}


def test_coord4_anisotropic_ratio_from_prob_domain():
    # ERF-style refinement 2 2 1: the Header's scalar ratio cannot express it,
    # the domain boxes can.
    meta = {
        "prob_lo": [0, 0, 0], "cell_size": [[1.0, 1.0, 0.5], [0.5, 0.5, 0.5]], "finest_level": 1,
        "prob_domain": [[[0, 0, 0], [9, 9, 3]], [[0, 0, 0], [19, 19, 3]]],
        "level_boxes": [[[[0, 0, 0], [9, 9, 3]]], [[[4, 4, 0], [11, 11, 3]]]],
    }
    rm = lw.runmeta_from_metadata(meta)
    assert rm.steps[0].levels[0].geom.ref_ratio == (2, 2, 1)
    assert rm.steps[0].levels[0].geom.dx == (1.0, 1.0, 0.5)  # per-axis spacing, not axis 0 replicated


def test_coord4_non_integer_ratio_fails():
    meta = meta_3d()
    meta["prob_domain"][1] = [[0, 0, 0], [11, 15, 15]]  # 12 / 8 cells on x
    with pytest.raises(ValueError, match="not an exact integer"):
        lw.runmeta_from_metadata(meta)


def test_coord4_2d_and_1d_missing_axes():
    meta = {
        "prob_lo": [0.5, -1.0], "cell_size": [[0.25, 0.125], [0.125, 0.0625]], "finest_level": 1,
        "prob_domain": [[[2, 0], [5, 15]], [[4, 0], [11, 31]]],
        "level_boxes": [[[[2, 0], [5, 15]]], [[[4, 8], [7, 15]]]],
        "is_periodic": [True, False, True], "coord_sys": 1,
    }
    rm = lw.runmeta_from_metadata(meta)
    l0, l1 = rm.steps[0].levels
    assert l0.geom.dx == (0.25, 0.125, 1.0) and l0.geom.x0 == (0.5, -1.0, 0.0)
    assert l0.geom.index_origin == (2, 0, 0) and l1.geom.index_origin == (4, 0, 0)
    assert l0.geom.ref_ratio == (2, 2, 1)  # the single z cell is never coarsened away
    assert l1.boxes == (((4, 8, 0), (7, 15, 0)),)
    assert l0.geom.is_periodic == (True, False, False)  # missing axes are never periodic
    assert rm.coord_sys == 1
    # the coarse cells under the fine box are covered (the reference's scalar
    # ratio made the z range empty, so nothing was ever covered on 2D files)
    assert lw.volume_coverage(rm.steps[0], 0) == (((2, 4, 0), (3, 7, 0)),)
    # boxes reported with three components (zeros beyond spacedim) read the same
    meta3 = dict(meta, level_boxes=[[[[2, 0, 0], [5, 15, 0]]], [[[4, 8, 0], [7, 15, 0]]]])
    assert lw.runmeta_from_metadata(meta3).steps[0].levels[1].boxes == l1.boxes
    one_d = {"prob_lo": [0.0], "cell_size": [[0.1]], "prob_domain": [[[0], [9]]], "level_boxes": [[[[0], [9]]]]}
    g = lw.runmeta_from_metadata(one_d).steps[0].levels[0]
    assert g.geom.dx == (0.1, 1.0, 1.0) and g.boxes == (((0, 0, 0), (9, 0, 0)),)


def test_coord4_periodic_override_and_flags():
    meta = dict(meta_3d(), is_periodic=[True, True, False], mapped_mesh=True, coord_sys=2)
    rm = lw.runmeta_from_metadata(meta)
    assert rm.steps[0].levels[0].geom.is_periodic == (True, True, False)
    assert rm.mapped_mesh is True and rm.coord_sys == 2
    rm = lw.runmeta_from_metadata(meta, is_periodic=(False, False, True), particle_species={"ions": 3})
    assert rm.steps[0].levels[2].geom.is_periodic == (False, False, True)
    assert rm.particle_species == {"ions": 3}
    # the DATA-7 document carries no mapped_mesh key
    assert "mapped_mesh" not in rm.to_dict()


def test_coord4_without_metadata_fails():
    with pytest.raises(ValueError, match="Backend does not provide metadata for RunMeta construction"):
        lw.runmeta_from_metadata({})
    with pytest.raises(ValueError, match="level_boxes"):
        lw.runmeta_from_metadata({k: v for k, v in meta_3d().items() if k != "level_boxes"})


# ---------------------------------------------------------------------------
# COV-3..6


def test_cov3_coarsening_with_origins_and_cumulative_ratio():
    l0 = level(1.0, [((10, 0, 0), (17, 7, 7))], ratio=(2, 2, 1), origin=(10, 0, 0))
    l1 = level((0.5, 0.5, 1.0), [((24, 4, 2), (31, 7, 3))], ratio=(2, 2, 2), origin=(20, 0, 0))
    l2 = level((0.25, 0.25, 0.5), [((48, 8, 4), (55, 15, 7))], ratio=1, origin=(40, 0, 0))
    step = lw.StepMeta(0, (l0, l1, l2))
    assert lw.cumulative_ratio(step, 0, 2) == (4, 4, 2)
    # level 1 -> 0: x (24-20)/2 + 10 = 12 .. (31-20+1)/2 + 10 - 1 = 15; z ratio 1
    assert lw.coarsen_box(l1.boxes[0], step, 1, 0) == ((12, 2, 2), (15, 3, 3))
    # level 2 -> 0 with cumulative (4, 4, 2)
    assert lw.coarsen_box(l2.boxes[0], step, 2, 0) == ((12, 2, 2), (13, 3, 3))
    assert lw.coarsen_box(l2.boxes[0], step, 2, 1) == ((24, 4, 2), (27, 7, 3))
    # floor division also below the origin
    assert lw.coarsen_box(((16, -4, 0), (19, -1, 1)), step, 1, 0) == ((8, -2, 0), (9, -1, 1))


def test_cov4_volume_coverage():
    rm = three_level_meta()
    s = rm.steps[0]
    assert lw.volume_coverage(s, 2) == ()
    assert lw.volume_coverage(s, 1) == (((6, 6, 6), (7, 7, 7)),)
    assert lw.volume_coverage(s, 0) == (((2, 2, 0), (5, 5, 3)), ((3, 3, 3), (3, 3, 3)))


def test_low3_plane_indices_nest_and_pick_the_containing_cell():
    s = three_level_meta().steps[0]
    # coord 0.40 lies in finest cell 12 ([0.375, 0.40625)), level-1 cell 6
    # ([0.375, 0.4375)) and level-0 cell 3 ([0.375, 0.5)).
    assert lw.plane_indices(s, "z", 0.40) == [3, 6, 12]
    # LOW-3 deviation example: coord 0.48 is in the upper half of level-0 cell 3.
    # The reference took the first fine layer inside that coarse cell
    # ((p0 - o0) * R + o), i.e. level-2 layer 12 ([0.375, 0.406)), which does not
    # contain the coordinate; the contract takes the cell containing it.
    p = lw.plane_indices(s, "z", 0.48)
    assert p == [3, 7, 15]
    assert p[2] != (p[0] - 0) * 4 + 0
    for L, lv in enumerate(s.levels):
        g = lv.geom
        assert g.lower_edge(2, p[L]) <= 0.48 < g.lower_edge(2, p[L] + 1)
    # at a face the upper cell is taken on every level (as yt does)
    assert lw.plane_indices(s, 2, 0.5) == [4, 8, 16]


def test_low3_with_origins():
    l0 = level(1.0, [((10, 0, 0), (17, 7, 7))], origin=(10, 0, 0), x0=(-3.0, 0.0, 0.0))
    l1 = level(0.5, [((24, 0, 0), (27, 3, 3))], ratio=1, origin=(20, 0, 0), x0=(-3.0, 0.0, 0.0))
    # x = -0.2: fine index floor(2.8 / 0.5) + 20 = 25, coarse floor((25-20)/2) + 10 = 12
    assert lw.plane_indices((l0, l1), "x", -0.2) == [12, 25]


def test_cov5_plane_coverage():
    s = three_level_meta().steps[0]
    p = lw.plane_indices(s, "z", 0.40)  # [3, 6, 12]
    assert lw.plane_coverage(s, "z", p, 2) == ()
    # level 1: the level-2 box contains layer 12 -> coarsened to 6..7, clamped to layer 6
    assert lw.plane_coverage(s, "z", p, 1) == (((6, 6, 6), (7, 7, 6)),)
    # level 0: the level-1 box (z 0..7) contains layer 6 -> clamp to layer 3;
    # the level-2 box also contains its layer and coarsens to layer 3
    assert lw.plane_coverage(s, "z", p, 0) == (((2, 2, 3), (5, 5, 3)), ((3, 3, 3), (3, 3, 3)))
    # above the refined region (z = 0.6): nothing on level 0 is covered
    p = lw.plane_indices(s, "z", 0.6)
    assert p == [4, 9, 19]
    assert lw.plane_coverage(s, "z", p, 0) == ()
    # along x: only boxes containing the x layer count, clamped on x
    p = lw.plane_indices(s, "x", 0.3)  # [2, 4, 9]
    assert lw.plane_coverage(s, "x", p, 0) == (((2, 2, 0), (2, 5, 3)),)


def test_low4_cov6_slab_ranges_and_coverage():
    s = three_level_meta().steps[0]
    r = lw.slab_ranges(s, "z", (0.25, 0.45))
    assert r == [(2, 3), (4, 7), (8, 14)]
    assert lw.slab_coverage(s, "z", r, 2) == ()
    assert lw.slab_coverage(s, "z", r, 1) == (((6, 6, 6), (7, 7, 7)),)
    assert lw.slab_coverage(s, "z", r, 0) == (((2, 2, 2), (5, 5, 3)), ((3, 3, 3), (3, 3, 3)))
    # a slab ending inside the level-2 box: its coarsened box is clipped to r[1]
    r = lw.slab_ranges(s, "z", (0.25, 0.40))
    assert r == [(2, 3), (4, 6), (8, 12)]
    assert lw.slab_coverage(s, "z", r, 1) == (((6, 6, 6), (7, 7, 6)),)
    # slab above the refinement: fine boxes do not overlap their ranges
    r = lw.slab_ranges(s, "z", (0.75, 1.0))
    assert r == [(6, 7), (12, 15), (24, 31)]
    assert lw.slab_coverage(s, "z", r, 0) == ()


def test_low2_block_selection_uses_closed_intervals():
    l0 = three_level_meta().steps[0].levels[0]
    # block 0 spans x,y in [0, 0.5]; a rect touching x = 0.5 from the right still selects it
    assert lw.select_blocks(l0, "z", (3, 3), (0.5, 0.0, 1.0, 0.25)) == [0, 1]
    assert lw.select_blocks(l0, "z", (3, 3), (0.51, 0.0, 1.0, 0.25)) == [1]
    # rect corners in reverse order are sorted
    assert lw.select_blocks(l0, "z", (3, 3), (1.0, 0.25, 0.51, 0.0)) == [1]
    # normal-axis range outside every block
    assert lw.select_blocks(l0, "z", (8, 9), (0, 0, 1, 1)) == []
    # x-normal: (u, v) = (y, z)
    assert lw.select_blocks(l0, "x", (5, 5), (0.6, 0.0, 0.9, 1.0)) == [3]


# ---------------------------------------------------------------------------
# LOW-9 slices


def test_slice_plan_shape():
    rm = three_level_meta()
    fr = lw.slice_plan(rm, 7, "z", 0.40, (0.0, 0.0, 1.0, 1.0), (16, 8), 99, alloc_field=counter(500))
    d = doc(fr)
    assert (fr.out_field, fr.step, fr.level, fr.block, fr.shape) == (99, 0, 0, 0, (8, 16))
    assert fr.info["plane_indices"] == [3, 6, 12]
    # levels finest to coarsest; level 0 has four blocks, default fan-in 2 -> two rounds each
    assert sorted(names(d)) == sorted([
        "slice_l2", "slice_l1", "slice_l0",
        "slice_sum_l0_r1", "slice_sum_l0_r2", "slice_area_l0_r1", "slice_area_l0_r2",
        "slice_combine_sum_1", "slice_combine_sum_2", "slice_combine_area_1", "slice_combine_area_2",
        "slice_finalize",
    ])
    l0 = stage_by_name(d, "slice_l0")
    assert l0["plane"] == "chunk" and l0["after"] == []
    # one template per level, over the level's selected blocks
    assert [t["domain"] for t in l0["templates"]] == [{"step": 0, "level": 0, "blocks": [0, 1, 2, 3]}]
    t = l0["templates"][0]
    assert t["kernel"] == "uniform_slice_cellavg_accumulate"
    assert t["inputs"] == [{"field": 7, "version": 0, "domain": None}]
    assert t["params"] == {"type": "UniformSliceCellParams", "axis": 2, "coord": 0.40, "plane_index": 3,
                           "rect": [0.0, 0.0, 1.0, 1.0], "resolution": [16, 8]}
    img = {"dtype": "f64", "shape": {"kind": "fixed", "extents": [8, 16]}, "init": "zero"}
    assert [o["buffer"] for o in t["outputs"]] == [img, img]
    sum_f, area_f = (o["field"] for o in t["outputs"])
    assert sum_f != area_f
    # plane coverage per level (COV-5), shared once per distinct list
    cov = d["shared_covered_boxes"]
    assert cov[t["covered_boxes_ref"]] == [[[2, 2, 3], [5, 5, 3]], [[3, 3, 3], [3, 3, 3]]]
    assert len({tt["covered_boxes_ref"] for tt in l0["templates"]}) == 1
    l2 = stage_by_name(d, "slice_l2")
    assert cov[l2["templates"][0]["covered_boxes_ref"]] == []
    assert l2["templates"][0]["params"]["plane_index"] == 12
    l1 = stage_by_name(d, "slice_l1")
    assert cov[l1["templates"][0]["covered_boxes_ref"]] == [[[6, 6, 6], [7, 7, 6]]]
    # block reductions (LOW-6, normalized); the area reduction follows the sum reduction
    pos = {s["name"]: i for i, s in enumerate(d["stages"])}
    s1 = stage_by_name(d, "slice_sum_l0_r1")
    assert s1["after"] == [pos["slice_l0"]]
    assert s1["templates"][0]["graph_reduce"]["input_blocks"] == [0, 1, 2, 3]
    assert s1["templates"][0]["graph_reduce"]["output_blocks"] == [0, 2]
    assert stage_by_name(d, "slice_area_l0_r1")["after"] == [pos["slice_sum_l0_r2"]]
    assert stage_by_name(d, "slice_area_l0_r1")["templates"][0]["inputs"][0]["field"] == area_f
    # finalize: two inputs (sum, area), pixel area, dataset level, block 0
    fin = stage_by_name(d, "slice_finalize")["templates"][0]
    assert fin["kernel"] == "uniform_slice_finalize"
    assert fin["domain"] == {"step": 0, "level": 0, "blocks": None}
    assert len(fin["inputs"]) == 2
    assert fin["params"] == {"type": "SliceFinalizeParams", "pixel_area": (1 / 16) * (1 / 8)}
    assert fin["outputs"] == [{"field": 99, "version": 0, "buffer": img}]
    assert fin["graph_reduce"]["num_inputs"] == 1 and fin["graph_reduce"]["input_base"] == 0


def test_slice_level_combination_is_not_location_preserving():
    rm = three_level_meta()
    d = doc(lw.slice_plan(rm, 7, "z", 0.40, (0, 0, 1, 1), (4, 4), 99, dataset_level=1, step=0))
    comb = [s for s in d["stages"] if s["name"].startswith("slice_combine_sum")]
    assert len(comb) == 2
    for s in comb:
        t = s["templates"][0]
        assert t["domain"] == {"step": 0, "level": 1, "blocks": None}  # the dataset level
        assert t["graph_reduce"]["output_blocks"] == [] and t["graph_reduce"]["input_base"] == 0
    # first pair: finest two levels
    assert [i["domain"]["level"] for i in comb[0]["templates"][0]["inputs"]] == [2, 1]
    assert stage_by_name(d, "slice_finalize")["templates"][0]["domain"]["level"] == 1


def test_slice_single_block_off_zero_is_normalized_to_block_zero():
    l0 = level(1.0, [((0, 0, 0), (3, 3, 3)), ((4, 0, 0), (7, 3, 3))], ratio=1)
    rm = runmeta(l0)
    d = doc(lw.slice_plan(rm, 1, "z", 1.5, (4.5, 0, 7, 4), (5, 4), 9))
    acc = stage_by_name(d, "slice_l0")
    assert [t["domain"]["blocks"] for t in acc["templates"]] == [[1]]
    r = stage_by_name(d, "slice_sum_l0_r1")["templates"][0]["graph_reduce"]
    assert (r["input_blocks"], r["output_blocks"], r["fan_in"]) == ([1], [0], 1)


def test_slice_dtype_and_mapped_mesh_and_other_coord_sys():
    rm = three_level_meta()
    d = doc(lw.slice_plan(rm, 7, "Z", 0.4, (0, 0, 1, 1), (4, 4), 99, dtype="float32"))
    assert stage_by_name(d, "slice_finalize")["templates"][0]["outputs"][0]["buffer"]["dtype"] == "f32"
    with pytest.raises(TypeError):
        lw.slice_plan(rm, 7, "z", 0.4, (0, 0, 1, 1), (4, 4), 99, dtype="i64")
    rz = runmeta(*three_level_meta().steps[0].levels, coord_sys=1)
    lw.slice_plan(rz, 7, "z", 0.4, (0, 0, 1, 1), (4, 4), 99)  # slices stay allowed (COORD-5)
    mapped = runmeta(*three_level_meta().steps[0].levels, mapped_mesh=True)
    with pytest.raises(ValueError, match="operator requires an unmapped mesh"):
        lw.slice_plan(mapped, 7, "z", 0.4, (0, 0, 1, 1), (4, 4), 99)


def test_slice_with_nothing_selected_still_builds_an_image():
    rm = three_level_meta()
    fr = lw.slice_plan(rm, 7, "z", 0.4, (2.0, 2.0, 3.0, 3.0), (4, 2), 99)
    d = doc(fr)
    assert fr.info["blocks"] == {}
    acc = [s for s in d["stages"] if s["plane"] == "chunk"]
    assert len(acc) == 1 and len(acc[0]["templates"]) == 1
    t = acc[0]["templates"][0]
    assert t["kernel"] == "uniform_slice_cellavg_accumulate"
    assert t["domain"] == {"step": 0, "level": 0, "blocks": [0]}
    fin = stage_by_name(d, "slice_finalize")["templates"][0]
    assert fin["outputs"][0]["buffer"]["shape"]["extents"] == [2, 4]


@pytest.mark.parametrize("kwargs,err", [
    (dict(axis="w"), ValueError), (dict(axis=3), ValueError), (dict(resolution=(0, 4)), ValueError),
    (dict(resolution=(4, -1)), ValueError), (dict(resolution="4x4"), ValueError),
    (dict(rect=(0, 0, 0, 1)), ValueError), (dict(coord=float("nan")), ValueError),
])
def test_slice_rejects_invalid_arguments(kwargs, err):
    args = dict(axis="z", coord=0.4, rect=(0, 0, 1, 1), resolution=(4, 4))
    args.update(kwargs)
    with pytest.raises(err):
        lw.slice_plan(three_level_meta(), 7, args["axis"], args["coord"], args["rect"], args["resolution"], 99)


def test_sixteen_block_reduction_matches_low6_example():
    l0 = level(1.0, [((4 * i, 0, 0), (4 * i + 3, 3, 3)) for i in range(16)], ratio=1)
    d = doc(lw.slice_plan(runmeta(l0), 1, "z", 1.5, (0, 0, 64, 4), (8, 2), 9, fan_in=4))
    r1 = stage_by_name(d, "slice_sum_l0_r1")["templates"][0]["graph_reduce"]
    r2 = stage_by_name(d, "slice_sum_l0_r2")["templates"][0]["graph_reduce"]
    assert r1["output_blocks"] == [0, 4, 8, 12] and r1["group_offsets"] == [0, 4, 8, 12, 16]
    assert r2["input_blocks"] == [0, 4, 8, 12] and r2["output_blocks"] == [0]


def test_configured_fan_in_below_two_is_rejected():
    rm = three_level_meta()
    for fan_in in (1, 0, -3):
        with pytest.raises(ValueError, match="reduce_fan_in must be >= 2"):
            lw.slice_plan(rm, 1, "z", 0.4, (0, 0, 1, 1), (4, 4), 9, fan_in=fan_in)
        with pytest.raises(ValueError, match="reduce_fan_in must be >= 2"):
            lw.projection_plan(rm, 1, "z", (0, 1), (0, 0, 1, 1), (4, 4), 9, fan_in=fan_in)
        with pytest.raises(ValueError, match="reduce_fan_in must be >= 2"):
            lw.histogram1d_plan(rm, 1, (0, 1), 4, 9, fan_in=fan_in)
        with pytest.raises(ValueError, match="reduce_fan_in must be >= 2"):
            lw.particle_cic_projection_plan(rm, "e", "z", (0, 1), (0, 0, 1, 1), (4, 4), 9, fan_in=fan_in)


def test_world_size_two_groups_by_home_rank():
    l0 = level(1.0, [((4 * i, 0, 0), (4 * i + 3, 3, 3)) for i in range(16)], ratio=1)
    home = lambda s, lv, b: b % 2  # noqa: E731
    d = doc(lw.projection_plan(runmeta(l0), 1, "z", (0, 4), (0, 0, 64, 4), (8, 2), 9, fan_in=4,
                               world_size=2, home=home))
    rounds = [stage_by_name(d, f"project_reduce_l0_r{i}")["templates"][0]["graph_reduce"] for i in (1, 2, 3)]
    assert rounds[0]["input_blocks"] == [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15]
    assert [r["output_blocks"] for r in rounds] == [[0, 8, 1, 9], [0, 1], [0]]


# ---------------------------------------------------------------------------
# LOW-10 projections


def test_projection_plan_shape():
    rm = three_level_meta()
    fr = lw.projection_plan(rm, 7, "z", (0.25, 0.45), (0, 0, 1, 1), (8, 4), 99, alloc_field=counter(500))
    d = doc(fr)
    assert fr.info["slab_ranges"] == [(2, 3), (4, 7), (8, 14)]
    l0 = stage_by_name(d, "project_l0")
    t = l0["templates"][0]
    assert t["kernel"] == "uniform_projection_accumulate"
    assert t["params"] == {"type": "UniformProjectionParams", "axis": 2, "axis_bounds": [0.25, 0.45],
                           "rect": [0, 0, 1, 1], "resolution": [8, 4]}
    assert len(t["outputs"]) == 1
    cov = d["shared_covered_boxes"]
    assert cov[t["covered_boxes_ref"]] == [[[2, 2, 2], [5, 5, 3]], [[3, 3, 3], [3, 3, 3]]]
    assert cov[stage_by_name(d, "project_l1")["templates"][0]["covered_boxes_ref"]] == [[[6, 6, 6], [7, 7, 7]]]
    # location-preserving level combination (LOW-7): domain at the left level and block
    comb = [s for s in d["stages"] if s["name"].startswith("project_combine")]
    assert len(comb) == 2
    ct = comb[0]["templates"][0]
    assert ct["domain"] == {"step": 0, "level": 2, "blocks": [0]}
    assert ct["graph_reduce"]["output_blocks"] == [0]
    assert [i["domain"] for i in ct["inputs"]] == [{"step": 0, "level": 2, "blocks": [0]},
                                                   {"step": 0, "level": 1, "blocks": [0]}]
    fin = stage_by_name(d, "project_finalize")["templates"][0]
    assert fin["kernel"] == "uniform_slice_finalize" and len(fin["inputs"]) == 1
    assert fin["inputs"][0]["domain"]["level"] == 2  # the combined value lives on the left level
    assert fin["params"]["pixel_area"] == (1 / 8) * (1 / 4)
    assert fin["domain"] == {"step": 0, "level": 0, "blocks": None}
    assert fin["outputs"][0]["buffer"] == {"dtype": "f64", "shape": {"kind": "fixed", "extents": [4, 8]},
                                           "init": "zero"}


def test_projection_skips_levels_outside_the_slab():
    rm = three_level_meta()
    fr = lw.projection_plan(rm, 7, "z", (0.75, 1.0), (0, 0, 1, 1), (8, 4), 99)
    assert sorted(fr.info["blocks"]) == [0]  # refined levels end below z = 0.5


def test_projection_rejections():
    rm = three_level_meta()
    call = lambda r=rm, **kw: lw.projection_plan(  # noqa: E731
        r, 7, kw.get("axis", "z"), kw.get("bounds", (0, 1)), kw.get("rect", (0, 0, 1, 1)), kw.get("res", (4, 4)), 9,
        amr_cell_average=kw.get("avg", True))
    with pytest.raises(ValueError, match="UniformProjection requires amr_cell_average semantics"):
        call(avg=False)
    for bounds in [(1, 1), (1, 0), (0, float("inf"))]:
        with pytest.raises(ValueError):
            call(bounds=bounds)
    with pytest.raises(ValueError):
        call(res=(0, 4))
    with pytest.raises(ValueError):
        call(rect=(0, 1, 1, 1))
    with pytest.raises(ValueError, match="invalid axis"):
        call(axis="q")
    rz = runmeta(*rm.steps[0].levels, coord_sys=1)
    with pytest.raises(ValueError, match=r"operator requires Cartesian coordinates \(coord_sys=1\)"):
        call(r=rz)
    mapped = runmeta(*rm.steps[0].levels, mapped_mesh=True)
    with pytest.raises(ValueError, match="operator requires an unmapped mesh"):
        call(r=mapped)


def test_projection_empty_image():
    rm = three_level_meta()
    fr = lw.projection_plan(rm, 7, "x", (2.0, 3.0), (0, 0, 1, 1), (4, 4), 9)
    d = doc(fr)
    (acc,) = [s for s in d["stages"] if s["plane"] == "chunk"]
    assert acc["templates"][0]["domain"] == {"step": 0, "level": 0, "blocks": [0]}
    assert stage_by_name(d, "project_finalize")["templates"][0]["params"]["pixel_area"] == 1 / 16


# ---------------------------------------------------------------------------
# LOW-11 histograms


def test_histogram1d_plan_shape():
    rm = three_level_meta()
    fr = lw.histogram1d_plan(rm, 7, (0.0, 2.0), 5, 99, weight_mode="cell_volume")
    d = doc(fr)
    acc = stage_by_name(d, "hist1d_accumulate")
    assert [t["domain"] for t in acc["templates"]] == [
        {"step": 0, "level": L, "blocks": None} for L in (2, 1, 0)]
    cov = d["shared_covered_boxes"]
    assert [cov[t["covered_boxes_ref"]] for t in acc["templates"]] == [
        [], [[[6, 6, 6], [7, 7, 7]]], [[[2, 2, 0], [5, 5, 3]], [[3, 3, 3], [3, 3, 3]]]]
    t = acc["templates"][0]
    assert t["params"] == {"type": "Histogram1DParams", "range": [0.0, 2.0], "bins": 5, "weight_mode": "cell_volume"}
    assert t["outputs"][0]["buffer"] == {"dtype": "f64", "shape": {"kind": "fixed", "extents": [5]}, "init": "zero"}
    # level 0 (four blocks) is reduced without normalization
    r = stage_by_name(d, "hist1d_reduce_l0_r1")["templates"][0]["graph_reduce"]
    assert r["input_blocks"] == [0, 1, 2, 3]
    fin = stage_by_name(d, "hist1d_finalize")["templates"][0]
    assert fin["kernel"] == "uniform_slice_reduce" and fin["params"] == {}
    assert (fr.level, fr.block, fr.shape) == (0, 0, (5,))


def test_histogram_weights_and_domain():
    rm = three_level_meta()
    d = doc(lw.histogram1d_plan(rm, 7, (0, 1), 3, 99, weights=8, domain=(0, [1, 3])))
    (t,) = stage_by_name(d, "hist1d_accumulate")["templates"]
    assert [i["field"] for i in t["inputs"]] == [7, 8]
    assert t["domain"] == {"step": 0, "level": 0, "blocks": [1, 3]}
    assert t["covered_boxes_ref"] == -1  # an explicit domain takes no coverage
    assert t["params"]["weight_mode"] == "input"
    d = doc(lw.histogram1d_plan(rm, 7, (0, 1), 3, 99, domain=0))
    (t,) = stage_by_name(d, "hist1d_accumulate")["templates"]
    assert t["domain"]["blocks"] is None and t["covered_boxes_ref"] == -1


def test_histogram2d_plan_shape():
    rm = three_level_meta()
    d = doc(lw.histogram2d_plan(rm, 7, 8, (0, 1), (-1, 1), (3, 4), 99, weight_mode="cell_mass"))
    t = stage_by_name(d, "hist2d_accumulate")["templates"][0]
    assert [i["field"] for i in t["inputs"]] == [7, 8]
    assert t["params"] == {"type": "Histogram2DParams", "x_range": [0, 1], "y_range": [-1, 1], "bins": [3, 4],
                           "weight_mode": "cell_mass"}
    assert stage_by_name(d, "hist2d_finalize")["templates"][0]["outputs"][0]["buffer"]["shape"]["extents"] == [3, 4]


def test_histogram_rejections():
    rm = three_level_meta()
    with pytest.raises(ValueError, match="positive"):
        lw.histogram1d_plan(rm, 7, (0, 1), 0, 99)
    with pytest.raises(ValueError, match="increasing"):
        lw.histogram1d_plan(rm, 7, (1, 1), 4, 99)
    with pytest.raises(ValueError, match="finite"):
        lw.histogram1d_plan(rm, 7, (0, float("nan")), 4, 99)
    with pytest.raises(ValueError, match="positive"):
        lw.histogram2d_plan(rm, 7, 8, (0, 1), (0, 1), (2, -1), 99)
    with pytest.raises(ValueError, match="weight_mode"):
        lw.histogram1d_plan(rm, 7, (0, 1), 4, 99, weight_mode="mass")
    with pytest.raises(ValueError, match="explicit weights"):
        lw.histogram1d_plan(rm, 7, (0, 1), 4, 99, weights=8, weight_mode="cell_volume")
    rz = runmeta(*rm.steps[0].levels, coord_sys=1)
    lw.histogram1d_plan(rz, 7, (0, 1), 4, 99)  # counting cells is allowed on RZ data
    for mode in ("cell_volume", "cell_mass"):
        with pytest.raises(ValueError, match=r"Cartesian coordinates \(coord_sys=1\)"):
            lw.histogram1d_plan(rz, 7, (0, 1), 4, 99, weight_mode=mode)
    with pytest.raises(ValueError):
        lw.histogram1d_plan(rm, 7, (0, 1), 4, 99, domain=(5, None))


# ---------------------------------------------------------------------------
# LOW-12 field expressions, LOW-1 producer edges


def test_field_expr_unbounded_and_bounded():
    rm = three_level_meta()
    fr = lw.field_expr_plan(rm, "a*b", ["a", "b"], [7, 8], 20)
    d = doc(fr)
    (st,) = d["stages"]
    assert [t["domain"] for t in st["templates"]] == [
        {"step": 0, "level": 0, "blocks": [0, 1, 2, 3]}, {"step": 0, "level": 1, "blocks": [0]},
        {"step": 0, "level": 2, "blocks": [0]}]
    t = st["templates"][0]
    assert t["outputs"][0]["buffer"] == {"dtype": "f64", "shape": {"kind": "block", "components": 1},
                                         "init": "uninitialized"}
    assert t["params"] == {"type": "FieldExprParams", "expression": "a*b", "variables": ["a", "b"]}
    assert fr.level is None and fr.block is None
    d = doc(lw.field_expr_plan(rm, "a", ["a"], [7], 21, dtype="f32", bounded=True))
    (t,) = d["stages"][0]["templates"]
    assert t["domain"] == {"step": 0, "level": 0, "blocks": [0]}
    assert t["outputs"][0]["buffer"] == {"dtype": "f32", "shape": {"kind": "like_input", "input_index": 0},
                                         "init": "uninitialized"}
    d = doc(lw.field_expr_plan(rm, "a<1.5", ["a"], [7], 22, dtype="u8", kernel="mesh_compare"))
    assert d["stages"][0]["templates"][0]["outputs"][0]["buffer"]["dtype"] == "u8"
    d = doc(lw.field_expr_plan(rm, None, [], [22, 23], 24, dtype="u8", kernel="mesh_mask_and"))
    assert d["stages"][0]["templates"][0]["params"] == {}


@pytest.mark.parametrize("expr,variables,inputs,kw,err", [
    ("", ["a"], [1], {}, ValueError),
    ("a", [], [], {}, ValueError),
    ("a", list("abcdefghi"), list(range(9)), {}, ValueError),
    ("a", [""], [1], {}, ValueError),
    ("a+b", ["a", "b"], [1], {}, ValueError),
    ("a", ["a"], [1], {"dtype": "u8"}, TypeError),
    ("a<1", ["a"], [1], {"kernel": "mesh_compare"}, TypeError),
])
def test_field_expr_rejections(expr, variables, inputs, kw, err):
    with pytest.raises(err):
        lw.field_expr_plan(three_level_meta(), expr, variables, inputs, 30, **kw)


def test_at_most_eight_variables_message():
    with pytest.raises(ValueError, match="at most 8 variables"):
        lw.field_expr_plan(three_level_meta(), "a", list("abcdefghi"), list(range(9)), 30)


def test_low1_edges_only_to_producers_of_read_fields():
    rm = three_level_meta()
    expr = lw.field_expr_plan(rm, "a*a", ["a"], [7], 20)
    other = lw.field_expr_plan(rm, "a+1", ["a"], [8], 21, name="other")
    producers = {20: expr.tail, 21: other.tail}
    sl = lw.slice_plan(rm, 20, "z", 0.4, (0, 0, 1, 1), (4, 4), 30, producers=producers)
    accs = [s for s in sl.stages if s.plane == "chunk"]
    assert accs and all(s.after == [expr.tail] for s in accs)
    # an operator over a source field gains no edge, even with producers known
    pr = lw.projection_plan(rm, 7, "z", (0, 1), (0, 0, 1, 1), (4, 4), 31, producers=producers)
    assert all(s.after == [] for s in pr.stages if s.plane == "chunk")
    # the combined document orders the slice after its producer only
    d = sl.plan(pr).to_dict()
    pos = {s["name"]: i for i, s in enumerate(d["stages"])}
    assert "expr" in pos and "other" not in pos  # the unrelated expression is not pulled in
    assert stage_by_name(d, "slice_l0")["after"] == [pos["expr"]]
    h = lw.histogram1d_plan(rm, 20, (0, 1), 2, 32, weights=21, producers=producers)
    assert h.stages[0].after == [expr.tail, other.tail]


# ---------------------------------------------------------------------------
# LOW-13 gradients and vorticity


def test_vorticity_plan_shape():
    rm = three_level_meta()
    fr = lw.vorticity_plan(rm, (1, 2, 3), 40, stencil_radius=2, alloc_field=counter(700))
    d = doc(fr)
    assert names(d) == ["neighbor_fetch", "gradients", "vortmag"]
    assert [s["after"] for s in d["stages"]] == [[], [0], [1]]
    fetch = d["stages"][0]["templates"]
    assert len(fetch) == 9  # three components x three levels
    t = fetch[4]  # component 1, level 1
    assert t["kernel"] == "amr_subbox_fetch_pack" and t["inputs"] == []
    assert t["domain"] == {"step": 0, "level": 1, "blocks": None}
    assert t["outputs"][0]["buffer"] == {"dtype": "opaque",
                                         "shape": {"kind": "dynamic", "upper_bound": {"kind": "amr_subbox_pack"}},
                                         "init": "uninitialized"}
    assert t["params"] == {"type": "AmrSubboxPackParams", "input_field": 2, "input_version": 0, "input_step": 0,
                           "input_level": 1, "halo_cells": 2}
    halo = t["outputs"][0]["field"]
    g = d["stages"][1]["templates"][4]
    assert g["kernel"] == "gradU_stencil"
    assert [i["field"] for i in g["inputs"]] == [2, halo]
    assert g["outputs"][0]["buffer"] == {"dtype": "f64", "shape": {"kind": "block", "components": 3}, "init": "zero"}
    assert g["params"] == {"type": "GradStencilParams", "input_field": 2, "input_version": 0, "input_step": 0,
                           "input_level": 1, "stencil_radius": 2}
    grads = fr.info["gradients"]
    v = d["stages"][2]["templates"]
    assert [t["domain"]["level"] for t in v] == [0, 1, 2]
    assert [i["field"] for i in v[0]["inputs"]] == grads
    assert v[0]["params"] == {}
    assert v[0]["outputs"] == [{"field": 40, "version": 0,
                                "buffer": {"dtype": "f64", "shape": {"kind": "block", "components": 1},
                                           "init": "zero"}}]


def test_vorticity_and_gradient_rejections():
    rm = three_level_meta()
    with pytest.raises(ValueError, match="three"):
        lw.vorticity_plan(rm, (1, 2), 40)
    rz = runmeta(*rm.steps[0].levels, coord_sys=1)
    with pytest.raises(ValueError, match="Cartesian"):
        lw.vorticity_plan(rz, (1, 2, 3), 40)
    with pytest.raises(ValueError):
        lw.gradient_plan(rm, 1, 40, stencil_radius=0)
    g = lw.gradient_plan(rm, 1, 40)
    assert [s.name for s in g.stages] == ["neighbor_fetch", "gradients"]
    assert all(t.outputs[0].field.field == 40 for t in g.stages[1].templates)


# ---------------------------------------------------------------------------
# LOW-16 particle CIC projection


def test_cic_plan_shape():
    rm = three_level_meta()
    fr = lw.particle_cic_projection_plan(rm, "electrons", "z", (0.0, 0.45), (0, 0, 1, 1), (8, 8), 50,
                                         mass_field="weight", alloc_field=counter(800))
    d = doc(fr)
    pos = {s["name"]: i for i, s in enumerate(d["stages"])}
    l2, l1, l0 = (stage_by_name(d, f"cic_l{L}") for L in (2, 1, 0))
    assert l2["after"] == []
    assert l1["after"] == [pos["cic_l2"]]  # no reduction on the single-block level 2
    assert l0["after"] == [pos["cic_l1"]]
    (t,) = l0["templates"]
    assert t["kernel"] == "particle_cic_projection_accumulate" and t["inputs"] == []
    assert t["domain"] == {"step": 0, "level": 0, "blocks": [0, 1, 2, 3]}
    assert t["params"] == {"type": "ParticleCicProjectionParams", "particle_type": "electrons", "level_index": 0,
                           "axis": 2, "axis_bounds": [0.0, 0.45], "rect": [0, 0, 1, 1], "resolution": [8, 8],
                           "mass_field": "weight"}
    assert d["shared_covered_boxes"][t["covered_boxes_ref"]] == [[[2, 2, 0], [5, 5, 3]], [[3, 3, 3], [3, 3, 3]]]
    comb = [s for s in d["stages"] if s["name"].startswith("cic_combine")]
    assert comb[0]["templates"][0]["graph_reduce"]["output_blocks"] == [0]
    fin = stage_by_name(d, "cic_finalize")["templates"][0]
    assert fin["params"]["pixel_area"] == 1 / 64


def test_cic_empty_and_rejections():
    rm = three_level_meta()
    d = doc(lw.particle_cic_projection_plan(rm, "e", "z", (2.0, 3.0), (0, 0, 1, 1), (4, 4), 50))
    (acc,) = [s for s in d["stages"] if s["plane"] == "chunk"]
    assert acc["templates"][0]["params"]["mass_max"] == 0.0  # deposits nothing
    with pytest.raises(ValueError):
        lw.particle_cic_projection_plan(rm, "", "z", (0, 1), (0, 0, 1, 1), (4, 4), 50)
    with pytest.raises(ValueError):
        lw.particle_cic_projection_plan(rm, "e", "z", (0, 1), (0, 0, 1, 1), (0, 4), 50)
    rz = runmeta(*rm.steps[0].levels, coord_sys=2)
    with pytest.raises(ValueError, match=r"coord_sys=2"):
        lw.particle_cic_projection_plan(rz, "e", "z", (0, 1), (0, 0, 1, 1), (4, 4), 50)


# ---------------------------------------------------------------------------
# documents


def test_all_fragments_encode_to_valid_documents():
    rm = three_level_meta()
    frags = [
        lw.slice_plan(rm, 7, "y", 0.4, (0, 0, 1, 1), (4, 4), 90),
        lw.projection_plan(rm, 7, "x", (0, 1), (0, 0, 1, 1), (4, 4), 91),
        lw.histogram1d_plan(rm, 7, (0, 1), 4, 92),
        lw.histogram2d_plan(rm, 7, 8, (0, 1), (0, 1), (2, 2), 93),
        lw.vorticity_plan(rm, (1, 2, 3), 94),
        lw.particle_cic_projection_plan(rm, "e", "z", (0, 1), (0, 0, 1, 1), (4, 4), 95),
    ]
    for fr in frags:
        d = json.loads(fr.plan().to_json())
        assert d["schema"] == ir.PLAN_SCHEMA
        for i, s in enumerate(d["stages"]):
            assert all(a < i for a in s["after"])  # topological order (PLAN-14)
        # temporaries never collide with the inputs or the result
        outs = [o["field"] for s in d["stages"] for t in s["templates"] for o in t["outputs"]]
        assert fr.out_field in outs and 7 not in outs and 8 not in outs


# ---------------------------------------------------------------------------
# blocks entirely covered by finer levels (COV-4, COV-6)


def fully_covered(box, coverage, **kw):
    return lw.CoverageIndex(coverage, [box]).covers(box, **kw)


def test_fully_covered_with_overlapping_and_partial_coverage():
    box = ((0, 0, 0), (7, 7, 7))
    # two overlapping halves cover it; one cell short does not
    assert fully_covered(box, [((0, 0, 0), (4, 7, 7)), ((3, 0, 0), (7, 7, 7))])
    assert not fully_covered(box, [((0, 0, 0), (4, 7, 7)), ((5, 0, 0), (7, 7, 6))])
    # eight octants plus strays, in any order
    octants = [((x, y, z), (x + 3, y + 3, z + 3)) for x in (0, 4) for y in (0, 4) for z in (0, 4)]
    assert fully_covered(box, [((20, 20, 20), (30, 30, 30))] + octants[::-1])
    assert not fully_covered(box, octants[:-1])
    assert not fully_covered(box, [])
    # too many parts to follow: keep the block
    stripes = [((x, 0, 0), (x, 7, 7)) for x in range(8)]
    assert fully_covered(box, stripes)
    assert not fully_covered(box, stripes, max_pieces=3)


def covered_block_meta():
    """Level 0: two 4^3 blocks side by side; level 1 refines all of block 1 and
    half of block 0."""
    l0 = level(1 / 8, [((0, 0, 0), (3, 3, 3)), ((4, 0, 0), (7, 3, 3))])
    l1 = level(1 / 16, [((4, 0, 0), (15, 7, 7))])
    return runmeta(l0, l1)


def test_histogram_and_projection_leave_out_fully_covered_blocks():
    rm = covered_block_meta()
    h = doc(lw.histogram1d_plan(rm, 1, (0.0, 1.0), 4, 99))
    acc = stage_by_name(h, "hist1d_accumulate")
    assert [t["domain"] for t in acc["templates"]] == [
        {"step": 0, "level": 1, "blocks": None}, {"step": 0, "level": 0, "blocks": [0]}]
    p = doc(lw.projection_plan(rm, 1, "z", (0.0, 0.5), (0.0, 0.0, 1.0, 0.5), (8, 4), 98))
    assert [t["domain"] for t in stage_by_name(p, "project_l0")["templates"]] == [{"step": 0, "level": 0, "blocks": [0]}]
    # a slab that misses the refined region keeps both blocks
    rm2 = runmeta(level(1 / 8, [((0, 0, 0), (3, 3, 7)), ((4, 0, 0), (7, 3, 7))]),
                  level(1 / 16, [((8, 0, 0), (15, 7, 7))]))
    p2 = doc(lw.projection_plan(rm2, 1, "z", (0.5, 1.0), (0.0, 0.0, 1.0, 0.5), (8, 4), 98))
    assert stage_by_name(p2, "project_l0")["templates"][0]["domain"]["blocks"] == [0, 1]
