"""Tests of the plan and buffer model (kangaroo.ir) against the functional contract.

Expected values come from the contract text (PLAN-13 document shape, OWN-2
arithmetic, LOW-6 worked examples) and from the documented example plan,
never from the implementation's own output.
"""

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.dirname(HERE)
REPO = os.path.dirname(SDK)
sys.path.insert(0, SDK)

from kangaroo import ir  # noqa: E402


def f64_fixed(*extents, init="zero"):
    return ir.BufferSpec("f64", ir.FixedShape(extents), init)


def simple_template(**kw):
    args = dict(
        name="t",
        kernel="field_expr",
        domain=ir.Domain(0, 0),
        inputs=[ir.FieldRef(1)],
        outputs=[ir.OutputRef(ir.FieldRef(2), ir.BufferSpec("f64", ir.BlockShape()))],
        params=ir.params("FieldExprParams", expression="a", variables=["a"]),
    )
    args.update(kw)
    return ir.TaskTemplate(**args)


# ---------------------------------------------------------------------------
# PLAN-13 document shape


def test_top_level_document_keys():
    doc = json.loads(ir.Plan().to_json())
    assert doc == {"schema": "kangaroo.plan/1", "stages": [], "shared_covered_boxes": []}


def test_stage_template_and_nested_keys():
    s0 = ir.Stage("expr")
    s0.add_template(
        ir.TaskTemplate(
            name="expr_l1",
            kernel="field_expr",
            domain=ir.Domain(3, 1, [4, 2]),
            inputs=[ir.FieldRef(7), ir.FieldRef(8, 2, ir.Domain(3, 0, [1]))],
            outputs=[ir.OutputRef(ir.FieldRef(9, 1), ir.BufferSpec("float32", ir.LikeInputShape(0)))],
            params=ir.params("FieldExprParams", expression="a+b", variables=["a", "b"]),
        )
    )
    s1 = ir.Stage("sum", plane="graph", after=[s0])
    s1.map_blocks(
        "sum_l1",
        "uniform_slice_reduce",
        ir.Domain(3, 1),
        inputs=[ir.FieldRef(9, 1)],
        outputs=[ir.OutputRef(ir.FieldRef(10), f64_fixed(4, 5))],
        graph_reduce=ir.GraphReduceSpec(fan_in=2, num_inputs=4, input_base=1, output_base=6),
    )
    doc = json.loads(ir.Plan([s0, s1]).to_json())
    assert list(doc) == ["schema", "stages", "shared_covered_boxes"]
    assert doc["schema"] == "kangaroo.plan/1"
    st0, st1 = doc["stages"]
    assert st0 == {"name": "expr", "plane": "chunk", "after": [], "templates": st0["templates"]}
    assert set(st1) == {"name", "plane", "after", "templates"}
    assert st1["plane"] == "graph" and st1["after"] == [0]
    t = st0["templates"][0]
    assert set(t) == {
        "name", "plane", "kernel", "domain", "inputs", "outputs", "deps", "params",
        "covered_boxes_ref", "graph_reduce",
    }
    assert t["name"] == "expr_l1"
    assert t["plane"] == "chunk"
    assert t["kernel"] == "field_expr"
    assert t["domain"] == {"step": 3, "level": 1, "blocks": [4, 2]}
    assert t["inputs"] == [
        {"field": 7, "version": 0, "domain": None},
        {"field": 8, "version": 2, "domain": {"step": 3, "level": 0, "blocks": [1]}},
    ]
    assert t["outputs"] == [
        {"field": 9, "version": 1,
         "buffer": {"dtype": "f32", "shape": {"kind": "like_input", "input_index": 0}, "init": "uninitialized"}}
    ]
    assert t["deps"] == {"kind": "None", "width": 0, "faces": [True] * 6, "halo_inputs": []}
    assert t["params"] == {"type": "FieldExprParams", "expression": "a+b", "variables": ["a", "b"]}
    assert t["covered_boxes_ref"] == -1
    assert t["graph_reduce"] is None
    g = st1["templates"][0]
    assert g["plane"] == "graph"
    assert g["domain"] == {"step": 3, "level": 1, "blocks": None}
    assert g["params"] == {}
    assert g["graph_reduce"] == {
        "fan_in": 2, "num_inputs": 4, "input_base": 1, "output_base": 6,
        "input_blocks": [], "output_blocks": [], "group_offsets": [],
    }
    assert g["outputs"][0]["buffer"] == {"dtype": "f64", "shape": {"kind": "fixed", "extents": [4, 5]}, "init": "zero"}


def test_shape_and_bound_encodings():
    assert ir.BlockShape().to_json() == {"kind": "block", "components": 1}
    assert ir.BlockShape(3).to_json() == {"kind": "block", "components": 3}
    assert ir.FixedShape((2, 3, 4, 5)).to_json() == {"kind": "fixed", "extents": [2, 3, 4, 5]}
    assert ir.FixedShape(7).to_json() == {"kind": "fixed", "extents": [7]}
    assert ir.LikeInputShape(1).to_json() == {"kind": "like_input", "input_index": 1}
    dyn = ir.DynamicShape
    ub = ir.DynamicUpperBound
    assert dyn(ub.literal(0)).to_json() == {"kind": "dynamic", "upper_bound": {"kind": "literal", "value": 0}}
    assert dyn(12).to_json() == {"kind": "dynamic", "upper_bound": {"kind": "literal", "value": 12}}
    assert dyn(ub.like_input(2)).to_json()["upper_bound"] == {"kind": "like_input", "input_index": 2}
    assert dyn(ub.backend_chunk()).to_json()["upper_bound"] == {"kind": "backend_chunk", "input_index": 0}
    assert dyn(ub.amr_subbox_pack()).to_json()["upper_bound"] == {"kind": "amr_subbox_pack"}
    spec = ir.BufferSpec("opaque", dyn(ub.amr_subbox_pack()), ir.InitPolicy.ZERO)
    assert spec.to_json() == {
        "dtype": "opaque",
        "shape": {"kind": "dynamic", "upper_bound": {"kind": "amr_subbox_pack"}},
        "init": "zero",
    }


def test_domain_blocks_none_and_empty_are_distinct():
    assert ir.Domain(0, 2).to_json() == {"step": 0, "level": 2, "blocks": None}
    assert ir.Domain(0, 2, []).to_json() == {"step": 0, "level": 2, "blocks": []}


def test_rebuilding_the_documented_example_gives_the_same_document():
    """docs/examples/plan_example.json rebuilt with the SDK encodes identically."""
    with open(os.path.join(REPO, "docs", "examples", "plan_example.json")) as f:
        expected = json.load(f)
    plan = ir.Plan()
    cov0 = plan.add_coverage([[[4, 4, 0], [7, 7, 7]]])
    cov1 = plan.add_coverage([])
    assert (cov0, cov1) == (0, 1)
    like = ir.BufferSpec("f64", ir.LikeInputShape(0))
    img = ir.FixedShape((32, 32))
    square = ir.Stage("square")
    for lv in (0, 1):
        square.map_blocks(
            f"rho_squared_l{lv}", "field_expr", ir.Domain(0, lv),
            inputs=[ir.FieldRef(1)], outputs=[ir.OutputRef(ir.FieldRef(1000), like)],
            params=ir.FieldExprParams(expression="rho*rho", variables=["rho"]),
        )
    project = ir.Stage("project", after=[square])
    for lv, cov in ((0, cov0), (1, cov1)):
        project.map_blocks(
            f"project_l{lv}", "uniform_projection_accumulate", ir.Domain(0, lv),
            inputs=[ir.FieldRef(1000)], outputs=[ir.OutputRef(ir.FieldRef(1001), ir.BufferSpec("f64", img, "zero"))],
            params=ir.UniformProjectionParams(axis=2, axis_bounds=[0.0, 0.5], rect=[0.0, 0.0, 1.0, 1.0], resolution=[32, 32]),
            covered_boxes_ref=cov,
        )
    sum0 = ir.Stage("sum_level0_blocks", plane="graph", after=[project])
    sum0.map_blocks(
        "sum_l0", "uniform_slice_reduce", ir.Domain(0, 0),
        inputs=[ir.FieldRef(1001)], outputs=[ir.OutputRef(ir.FieldRef(1002), ir.BufferSpec("f64", img, "zero"))],
        graph_reduce=ir.GraphReduceSpec(fan_in=8, num_inputs=4),
    )
    add = ir.Stage("add_levels", after=[project, sum0])
    add.map_blocks(
        "add_l1", "uniform_slice_add", ir.Domain(0, 0, [0]),
        inputs=[ir.FieldRef(1002), ir.FieldRef(1001, 0, ir.Domain(0, 1, [0]))],
        outputs=[ir.OutputRef(ir.FieldRef(1003), ir.BufferSpec("f64", img))],
    )
    fin = ir.Stage("finalize", after=[add])
    fin.map_blocks(
        "column_density", "uniform_slice_finalize", ir.Domain(0, 0, [0]),
        inputs=[ir.FieldRef(1003)], outputs=[ir.OutputRef(ir.FieldRef(1004), ir.BufferSpec("f64", img))],
        params=ir.SliceFinalizeParams(pixel_area=0.0009765625),
    )
    # listed out of order on purpose: the encoder sorts topologically
    plan.stages = [fin, add, sum0, project, square]
    assert json.loads(plan.to_json()) == expected


# ---------------------------------------------------------------------------
# dtypes and buffer specifications (PLAN-10/11)


@pytest.mark.parametrize(
    "tag, expected",
    [("u8", "u8"), ("uint8", "u8"), ("i64", "i64"), ("int64", "i64"), ("f32", "f32"),
     ("float32", "f32"), ("f64", "f64"), ("float64", "f64"), ("opaque", "opaque")],
)
def test_dtype_aliases(tag, expected):
    assert ir.DType.parse(tag).value == expected
    assert ir.DType(tag).value == expected
    shape = ir.FixedShape(4) if expected == "opaque" else ir.BlockShape()
    assert ir.BufferSpec(tag, shape).to_json()["dtype"] == expected


@pytest.mark.parametrize("tag", ["bool", "int32", "float16", "F64", "double", "", 3, None, 1.5])
def test_unsupported_dtype_tags_raise_type_error(tag):
    with pytest.raises(TypeError):
        ir.DType.parse(tag)
    with pytest.raises(TypeError):
        ir.BufferSpec(tag, ir.BlockShape())


def test_numpy_dtypes_are_accepted_when_numpy_is_present():
    np = pytest.importorskip("numpy")
    assert ir.DType.parse(np.float64) is ir.DType.F64
    assert ir.DType.parse(np.dtype("int64")) is ir.DType.I64
    assert ir.DType.parse(np.uint8) is ir.DType.U8
    with pytest.raises(TypeError):
        ir.DType.parse(np.int32)
    with pytest.raises(TypeError):
        ir.DType.parse(np.bool_)


def test_opaque_combinations():
    ir.BufferSpec("opaque", ir.FixedShape(16))
    ir.BufferSpec("opaque", ir.DynamicShape(ir.DynamicUpperBound.literal(8)))
    with pytest.raises(TypeError):
        ir.BufferSpec("opaque", ir.BlockShape())
    with pytest.raises(TypeError):
        ir.BufferSpec("opaque", ir.LikeInputShape(0))
    with pytest.raises(TypeError):
        ir.BufferSpec("opaque", ir.FixedShape((4, 4)))


def test_shape_value_checks():
    with pytest.raises(ValueError):
        ir.BlockShape(0)
    with pytest.raises(ValueError):
        ir.FixedShape(())
    with pytest.raises(ValueError):
        ir.FixedShape((1, 2, 3, 4, 5))
    with pytest.raises(ValueError):
        ir.FixedShape((3, 0))
    with pytest.raises(ValueError):
        ir.LikeInputShape(-1)
    with pytest.raises(ValueError):
        ir.DynamicUpperBound.literal(-1)
    with pytest.raises(ValueError):
        ir.DynamicUpperBound.like_input(-2)
    with pytest.raises(ValueError):
        ir.DynamicUpperBound("unbounded")
    with pytest.raises(TypeError):
        ir.BufferSpec("f64", "block")
    with pytest.raises(TypeError):
        ir.FixedShape((2.0, 3))


def test_init_policy():
    assert ir.BufferSpec("f64", ir.BlockShape()).init is ir.InitPolicy.UNINITIALIZED
    assert ir.BufferSpec("f64", ir.BlockShape(), "zero").init is ir.InitPolicy.ZERO
    with pytest.raises(ValueError):
        ir.BufferSpec("f64", ir.BlockShape(), "ones")


def test_outputs_need_a_buffer_spec_and_no_domain():
    with pytest.raises(TypeError):
        ir.OutputRef(ir.FieldRef(3), {"bytes": 64})
    with pytest.raises(ValueError):
        ir.OutputRef(ir.FieldRef(3, 0, ir.Domain(0, 0)), ir.BufferSpec("f64", ir.BlockShape()))
    out = ir.OutputRef(5, ir.BufferSpec("f64", ir.BlockShape()))
    assert out.to_json()["field"] == 5 and out.to_json()["version"] == 0


# ---------------------------------------------------------------------------
# dependency rules (PLAN-7, VAL-3/4)


def test_dependency_rule_checks():
    with pytest.raises(ValueError):
        ir.DependencyRule(width=-1)
    with pytest.raises(ValueError):
        ir.DependencyRule(faces=[True] * 5)
    with pytest.raises(ValueError):
        ir.DependencyRule(faces=[True] * 7)
    with pytest.raises(ValueError):
        ir.DependencyRule(halo_inputs=[0, -1])
    with pytest.raises(ValueError):
        ir.DependencyRule(kind="Neighbors")
    rule = ir.DependencyRule("FaceNeighbors", 2, [1, 0, 1, 0, 1, 0], [0, 0])
    assert rule.to_json() == {
        "kind": "FaceNeighbors", "width": 2,
        "faces": [True, False, True, False, True, False], "halo_inputs": [0, 0],
    }


def test_face_neighbors_needs_inputs_and_valid_halo_indices():
    with pytest.raises(ValueError):
        simple_template(inputs=[], deps=ir.DependencyRule("FaceNeighbors", 1))
    with pytest.raises(ValueError):
        simple_template(deps=ir.DependencyRule("FaceNeighbors", 1, halo_inputs=[1]))
    simple_template(deps=ir.DependencyRule("FaceNeighbors", 0, [False] * 6, [0, 0]))


# ---------------------------------------------------------------------------
# graph templates and reduction specs (VAL-6/7, RED-1..7)


def test_graph_plane_iff_reduce_spec():
    spec = ir.GraphReduceSpec(fan_in=2, num_inputs=2)
    assert simple_template(graph_reduce=spec).plane == "graph"
    assert simple_template().plane == "chunk"
    with pytest.raises(ValueError):
        simple_template(plane="graph")
    with pytest.raises(ValueError):
        simple_template(plane="chunk", graph_reduce=spec)
    with pytest.raises(ValueError):
        simple_template(plane="mixed", graph_reduce=spec)
    with pytest.raises(ValueError):
        simple_template(plane="vector")


def test_stage_plane_must_match_template_plane():
    spec = ir.GraphReduceSpec(fan_in=2, num_inputs=2)
    with pytest.raises(ValueError):
        ir.Stage("s", templates=[simple_template(graph_reduce=spec)])
    with pytest.raises(ValueError):
        ir.Stage("g", plane="graph", templates=[simple_template()])
    with pytest.raises(ValueError):
        ir.Stage("s", plane="parallel")
    t = ir.Stage("g", plane="graph").map_blocks(
        "r", "uniform_slice_reduce", ir.Domain(0, 0), inputs=[1],
        outputs=[ir.OutputRef(2, f64_fixed(3))], graph_reduce=spec)
    assert t.plane == "graph"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(fan_in=0, num_inputs=4),
        dict(fan_in=-3, num_inputs=4),
        dict(fan_in=2, num_inputs=0),
        dict(fan_in=2, num_inputs=4, input_blocks=[0, 1, 2]),
        dict(fan_in=2, num_inputs=4, group_offsets=[1, 4]),
        dict(fan_in=2, num_inputs=4, group_offsets=[0, 3]),
        dict(fan_in=2, num_inputs=4, group_offsets=[0, 2, 2, 4]),
        dict(fan_in=2, num_inputs=4, group_offsets=[0, 3, 1, 4]),
        dict(fan_in=2, num_inputs=4, output_blocks=[0]),
        dict(fan_in=3, num_inputs=4, output_blocks=[0, 1, 2]),
        dict(fan_in=1, num_inputs=4, group_offsets=[0, 1, 4], output_blocks=[0, 1, 2]),
    ],
)
def test_graph_reduce_spec_rejects(kwargs):
    with pytest.raises(ValueError):
        ir.GraphReduceSpec(**kwargs)


def test_red7_worked_example():
    spec = ir.GraphReduceSpec(fan_in=4, num_inputs=4, input_blocks=[0, 2, 1, 3],
                              group_offsets=[0, 2, 4], output_blocks=[10, 20])
    assert spec.num_groups == 2
    assert spec.groups() == [(10, [0, 2]), (20, [1, 3])]


def test_default_grouping_uses_bases():
    spec = ir.GraphReduceSpec(fan_in=3, num_inputs=7, input_base=10, output_base=5)
    assert spec.num_groups == 3  # ceil(7 / 3)
    assert spec.groups() == [(5, [10, 11, 12]), (6, [13, 14, 15]), (7, [16])]


def test_graph_templates_need_none_deps_and_io():
    spec = ir.GraphReduceSpec(fan_in=1, num_inputs=1)
    with pytest.raises(ValueError):
        simple_template(graph_reduce=spec, deps=ir.DependencyRule("FaceNeighbors", 1))
    with pytest.raises(ValueError):
        simple_template(graph_reduce=spec, inputs=[])
    with pytest.raises(ValueError):
        simple_template(graph_reduce=spec, outputs=[])


# ---------------------------------------------------------------------------
# typed parameters (PARAM-1..3)


def test_params_encoding_and_helpers():
    p = ir.params("UniformSliceCellParams", axis=2, coord=0.5, rect=(0, 0, 1, 1), resolution=(8, 4))
    assert p.to_json() == {"type": "UniformSliceCellParams", "axis": 2, "coord": 0.5,
                           "rect": [0.0, 0.0, 1.0, 1.0], "resolution": [8, 4]}
    q = ir.UniformSliceCellParams(coord=0.5, rect=[0, 0, 1, 1], resolution=[8, 4], plane_index=None)
    assert "plane_index" not in q.to_json()
    assert ir.UniformSliceCellParams(coord=0.5, rect=[0, 0, 1, 1], resolution=[8, 4], plane_index=3)["plane_index"] == 3
    assert ir.Histogram1DParams(range=[0, 1], bins=10).to_json() == {"type": "Histogram1DParams", "range": [0.0, 1.0], "bins": 10}
    assert ir.FiniteOnlyParams(finite_only=0).to_json() == {"type": "FiniteOnlyParams", "finite_only": False}
    assert ir.SliceFinalizeParams().to_json() == {"type": "SliceFinalizeParams"}
    assert len(ir.PARAM_TYPES) == 21
    # a mapping with a type discriminator is accepted as template params
    t = simple_template(params={"type": "FieldExprParams", "expression": "b", "variables": ["b"]})
    assert t.to_json()["params"] == {"type": "FieldExprParams", "expression": "b", "variables": ["b"]}
    assert simple_template(params={}).to_json()["params"] == {}
    assert simple_template(params=None).to_json()["params"] == {}


def test_params_errors():
    with pytest.raises(ValueError):
        ir.params("NoSuchParams")
    with pytest.raises(TypeError):
        ir.params("ScalarParams", scalar=1.0, extra=2)
    with pytest.raises(ValueError, match="rect"):
        ir.params("UniformProjectionParams", axis_bounds=[0, 1], rect=[0, 0, 1], resolution=[4, 4])
    with pytest.raises(ValueError, match="resolution"):
        ir.params("UniformProjectionParams", axis_bounds=[0, 1], rect=[0, 0, 1, 1], resolution=[4])
    with pytest.raises(ValueError, match="expression"):
        ir.params("FieldExprParams", variables=["a"])
    with pytest.raises(TypeError):
        ir.params("Histogram1DParams", range=[0, 1], bins=True)
    with pytest.raises(TypeError):
        ir.params("Histogram1DParams", range=[0, 1], bins=2.5)
    with pytest.raises(TypeError):
        ir.params("FieldExprParams", expression=3, variables=["a"])
    with pytest.raises(ValueError):
        ir.params("ScalarParams", scalar=float("nan"))
    with pytest.raises(ValueError):
        ir.params("FluxSurfaceParams", radii=[1.0], radius_indices=[0], num_radii=-1)
    with pytest.raises(ValueError):
        simple_template(params={"expression": "a"})


# ---------------------------------------------------------------------------
# stage graph (PLAN-14, DAG-2)


def test_topological_order_and_after_positions():
    a = ir.Stage("a")
    b = ir.Stage("b", after=[a])
    c = ir.Stage("c", after=[b, a])
    d = ir.Stage("d")
    plan = ir.Plan([c, d])  # a and b only reachable through `after`
    names = [s.name for s in plan.topo_stages()]
    assert names == ["a", "b", "c", "d"]
    doc = plan.to_dict()
    assert [s["name"] for s in doc["stages"]] == ["a", "b", "c", "d"]
    assert [s["after"] for s in doc["stages"]] == [[], [0], [1, 0], []]
    # every after index points backwards (serialized in topological order)
    for i, s in enumerate(doc["stages"]):
        assert all(j < i for j in s["after"])


def test_order_after_adds_every_producer_once():
    e1, e2 = ir.Stage("expr"), ir.Stage("expr")
    h1, h2 = ir.Stage("hist", after=[e1]), ir.Stage("hist", after=[e2])
    r = ir.Stage("reduce", after=[h1, h2])
    plan = ir.Plan([r])  # the expressions only reachable through `after`
    assert plan.order_after("hist", "expr") == 2
    assert all(h.after == [e, o] for h, e, o in ((h1, e1, e2), (h2, e2, e1)))
    assert plan.order_after("hist", "expr") == 0  # already ordered
    doc = plan.to_dict()
    pos = {id(s): i for i, s in enumerate(plan.topo_stages())}
    for h in (h1, h2):
        assert sorted(doc["stages"][pos[id(h)]]["after"]) == sorted([pos[id(e1)], pos[id(e2)]])
    with pytest.raises(ValueError, match="no stage named 'missing'"):
        plan.order_after("missing", "expr")
    with pytest.raises(ValueError, match="no stage named 'missing'"):
        plan.order_after("hist", "missing")
    with pytest.raises(ValueError, match="^stage dependency cycle at"):
        plan.order_after("expr", "reduce")


def test_cycle_detection_message():
    a = ir.Stage("alpha")
    b = ir.Stage("beta", after=[a])
    a.after.append(b)
    with pytest.raises(ValueError) as e:
        ir.Plan([a, b]).to_json()
    msg = str(e.value)
    assert msg.startswith("stage dependency cycle at '")
    assert msg in ("stage dependency cycle at 'alpha'", "stage dependency cycle at 'beta'")
    s = ir.Stage("self")
    s.after.append(s)
    with pytest.raises(ValueError, match=r"^stage dependency cycle at 'self'$"):
        ir.Plan([s]).topo_stages()


def test_stage_after_must_be_stages():
    with pytest.raises(TypeError):
        ir.Stage("s", after=[0])


def test_long_chain_does_not_recurse():
    prev = ir.Stage("s0")
    for i in range(1, 5000):
        prev = ir.Stage(f"s{i}", after=[prev])
    order = ir.Plan([prev]).topo_stages()
    assert len(order) == 5000 and order[0].name == "s0" and order[-1].name == "s4999"


# ---------------------------------------------------------------------------
# coverage lists (PLAN-9, COV-7, VAL-5)


def test_inline_coverage_is_shared_once():
    boxes = [[[0, 0, 0], [3, 3, 3]], [[4, 4, 4], [5, 5, 5]]]
    st = ir.Stage("s")
    params = ir.Histogram1DParams(range=[0, 1], bins=4)
    for lv in range(3):
        st.map_blocks(f"h{lv}", "histogram1d_accumulate", ir.Domain(0, 0, [lv]), inputs=[1],
                      outputs=[ir.OutputRef(2, f64_fixed(4))], params=params,
                      covered_boxes=boxes if lv < 2 else [])
    doc = ir.Plan([st]).to_dict()
    assert doc["shared_covered_boxes"] == [boxes, []]
    assert [t["covered_boxes_ref"] for t in doc["stages"][0]["templates"]] == [0, 0, 1]


def test_coverage_errors():
    with pytest.raises(ValueError):
        ir.Plan(shared_covered_boxes=[[[[0, 0], [1, 1, 1]]]])
    with pytest.raises(ValueError):
        simple_template(covered_boxes_ref=-2)
    st = ir.Stage("s", templates=[simple_template(covered_boxes_ref=1)])
    with pytest.raises(ValueError):
        ir.Plan([st], shared_covered_boxes=[[]]).to_dict()
    assert ir.Plan([st], shared_covered_boxes=[[], []]).to_dict()["stages"][0]["templates"][0]["covered_boxes_ref"] == 1


# ---------------------------------------------------------------------------
# OWN-2 home rank


M64 = (1 << 64) - 1


def own2_by_hand(values, world_size):
    """The OWN-2 recipe spelled out with explicit modulo-2**64 steps."""
    h = 0xCBF29CE484222325
    for v in values:
        v64 = v % (1 << 64)  # sign extension of a negative value to 64 bits
        shifted_left = (h * 64) % (1 << 64)
        shifted_right = h // 4
        total = (v64 + 0x9E3779B97F4A7C15 + shifted_left + shifted_right) % (1 << 64)
        h = h ^ total
    return h % world_size


def test_home_rank_first_mixing_step_by_hand():
    # OWN-2 for v = 0 starting from h0 = 0xcbf29ce484222325, written out in hex:
    h0 = 0xCBF29CE484222325
    left = (h0 << 6) & M64
    right = h0 >> 2
    assert left == 0xFCA739210888C940
    assert right == 0x32FCA739210888C9
    total = (0x9E3779B97F4A7C15 + left + right) & M64
    assert total == 0xCDDB5A13A8DBCE1E
    h1 = h0 ^ total
    assert h1 == 0x0629C6F72CF9ED3B
    assert own2_by_hand([0], 1 << 64) == h1


@pytest.mark.parametrize(
    "coords, world_size",
    [((0, 0, 0), 2), ((0, 0, 0), 7), ((0, 1, 5), 3), ((12, 3, 1000), 16), ((0, 0, 15), 5),
     ((-1, 0, 0), 7), ((0, 0, -5), 11), ((2**31 - 1, 32767, 2**31 - 1), 1000003)],
)
def test_home_rank_matches_the_formula(coords, world_size):
    assert ir.home_rank(*coords, world_size) == own2_by_hand(coords, world_size)


def test_home_rank_full_hash_values():
    # world sizes above 2**64 expose the whole 64-bit hash
    big = 1 << 65
    assert ir.home_rank(0, 0, 0, big) == own2_by_hand((0, 0, 0), big)
    assert ir.home_rank(-1, -1, -1, big) == own2_by_hand((-1, -1, -1), big)
    assert ir.home_rank(-1, -1, -1, big) < (1 << 64)


def test_home_rank_single_rank_and_errors():
    assert ir.home_rank(5, 2, 99, 1) == 0
    with pytest.raises(ValueError):
        ir.home_rank(0, 0, 0, 0)


def test_home_rank_is_independent_of_field():
    # OWN-1: only (step, level, block) participate; signature has no field
    ranks = {ir.home_rank(0, 1, b, 4) for b in range(64)}
    assert ranks <= {0, 1, 2, 3} and len(ranks) > 1


# ---------------------------------------------------------------------------
# LOW-5/6 block reductions


def counter(start):
    state = {"next": start}

    def alloc():
        v = state["next"]
        state["next"] += 1
        return v

    return alloc


def rounds(stages):
    out = []
    for st in stages:
        (t,) = st.templates
        g = t.graph_reduce
        out.append((list(g.input_blocks), list(g.output_blocks), list(g.group_offsets), g.fan_in, g.num_inputs))
    return out


def test_low5_default_fan_in():
    assert [ir.default_fan_in(n) for n in (0, 1, 3, 4, 9, 15, 16, 63, 64, 1000)] == [2, 2, 2, 2, 3, 3, 4, 7, 8, 8]
    assert ir.resolve_fan_in(100, 3) == 3
    with pytest.raises(ValueError, match="reduce_fan_in must be >= 2"):
        ir.resolve_fan_in(100, 1)


def test_low6_single_rank_example():
    spec = f64_fixed(8)
    stages, result = ir.block_reduction_stages(
        50, list(range(16)), buffer=spec, fan_in=4, step=0, level=1, alloc_field=counter(900))
    r = rounds(stages)
    assert len(r) == 2
    assert r[0][0] == list(range(16))
    assert r[0][1] == [0, 4, 8, 12]
    assert r[0][2] == [0, 4, 8, 12, 16]
    assert r[0][3:] == (4, 16)
    assert r[1][0] == [0, 4, 8, 12] and r[1][1] == [0] and r[1][2] == [0, 4]
    # round 1 writes a temporary field; the single-group round writes that field itself
    t1, t2 = stages[0].templates[0], stages[1].templates[0]
    assert t1.inputs[0].field == 50 and t1.outputs[0].field.field == 900
    assert t2.inputs[0].field == 900 and t2.outputs[0].field.field == 900
    assert result == (900, 0)
    assert stages[1].after == [stages[0]]
    assert t1.domain == ir.Domain(0, 1) and t1.kernel == "uniform_slice_reduce"
    assert t1.outputs[0].buffer == spec


def test_low6_two_rank_example_with_injected_home():
    stages, result = ir.block_reduction_stages(
        50, list(range(16)), buffer=f64_fixed(8), fan_in=4, world_size=2,
        home=lambda step, level, block: block % 2, alloc_field=counter(900))
    r = rounds(stages)
    assert [x[0] for x in r] == [
        [0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15],
        [0, 8, 1, 9],
        [0, 1],
    ]
    assert [x[1] for x in r] == [[0, 8, 1, 9], [0, 1], [0]]
    assert r[0][2] == [0, 4, 8, 12, 16]
    assert r[1][2] == [0, 2, 4]
    assert r[2][2] == [0, 2]
    assert result[1] == 0
    # a fresh temporary per multi-group round, the last round writes its input field
    fields = [(st.templates[0].inputs[0].field, st.templates[0].outputs[0].field.field) for st in stages]
    assert fields == [(50, 900), (900, 901), (901, 901)]
    assert result == (901, 0)


def test_low6_single_group_and_normalize():
    stages, result = ir.block_reduction_stages(7, [3, 5, 6], buffer=f64_fixed(2), fan_in=8)
    assert rounds(stages) == [([3, 5, 6], [0], [0, 3], 8, 3)]
    assert result == (7, 0)
    # one block, no normalization: nothing to do, the result stays where it is
    stages, result = ir.block_reduction_stages(7, [5], buffer=f64_fixed(2), fan_in=8)
    assert stages == [] and result == (7, 5)
    # one block b != 0 with normalization: one fan-in-1 round moving it to block 0
    before = ir.Stage("producer")
    stages, result = ir.block_reduction_stages(7, [5], buffer=f64_fixed(2), fan_in=8, normalize=True, after=[before])
    assert rounds(stages) == [([5], [0], [0, 1], 1, 1)]
    assert result == (7, 0) and stages[0].after == [before]
    stages, result = ir.block_reduction_stages(7, [0], buffer=f64_fixed(2), normalize=True)
    assert stages == [] and result == (7, 0)


def test_low6_rejects_small_fan_in():
    with pytest.raises(ValueError, match="fan_in must be >= 2 for multi-block reductions"):
        ir.block_reduction_stages(7, [0, 1], buffer=f64_fixed(2), fan_in=1)


def test_low6_default_fan_in_is_used():
    # 64 blocks -> default fan-in 8 -> 8 groups, then 1
    stages, _ = ir.block_reduction_stages(1, list(range(64)), buffer=f64_fixed(2), alloc_field=counter(10))
    assert [x[3] for x in rounds(stages)] == [8, 8]


def test_low6_stages_encode_and_pass_sdk_checks():
    stages, _ = ir.block_reduction_stages(
        50, list(range(16)), buffer=f64_fixed(8), fan_in=4, world_size=2,
        home=lambda s, lv, b: b % 2, alloc_field=counter(900))
    doc = ir.Plan(stages).to_dict()
    assert [s["after"] for s in doc["stages"]] == [[], [0], [1]]
    assert all(s["plane"] == "graph" for s in doc["stages"])


# ---------------------------------------------------------------------------
# LOW-7 level combination and LOW-8 final stage


def test_low7_pairs_without_location_preservation():
    p0, p1, p2 = ir.Stage("p0"), ir.Stage("p1"), ir.Stage("p2")
    vals = [ir.LevelValue(10, 2, 0, p2), ir.LevelValue(11, 1, 0, p1), ir.LevelValue(12, 0, 0, p0)]
    stages, combined = ir.level_combination_stages(
        vals, buffer=f64_fixed(4), alloc_field=counter(500), step=3, dataset_level=0)
    assert len(stages) == 2
    t1 = stages[0].templates[0]
    assert [i.field for i in t1.inputs] == [10, 11]
    assert [i.domain for i in t1.inputs] == [ir.Domain(3, 2), ir.Domain(3, 1)]
    assert t1.domain == ir.Domain(3, 0)
    assert t1.graph_reduce == ir.GraphReduceSpec(fan_in=1, num_inputs=1, input_base=0, output_base=0)
    assert stages[0].after == [p2, p1]
    t2 = stages[1].templates[0]
    assert [i.field for i in t2.inputs] == [500, 12]
    assert stages[1].after == [stages[0], p0]
    assert (combined.field, combined.level, combined.block) == (501, 0, 0)


def test_low7_location_preserving_and_home_order():
    # ranks by level: level 0 -> rank 1, level 1 -> rank 0, level 2 -> rank 1
    home = {0: 1, 1: 0, 2: 1}
    vals = [ir.LevelValue(20, 2, 4), ir.LevelValue(21, 1, 4), ir.LevelValue(22, 0, 4)]
    stages, combined = ir.level_combination_stages(
        vals, buffer=f64_fixed(4), alloc_field=counter(600), preserve_location=True,
        home_order=True, world_size=2, home=lambda s, lv, b: home[lv])
    # rank 0 holds [21] (even prefix empty), rank 1 holds [20, 22] (even prefix both);
    # order: 20, 22, then leftovers 21 -> pairs (20, 22), then (600, 21)
    t1 = stages[0].templates[0]
    assert [i.field for i in t1.inputs] == [20, 22]
    assert t1.domain == ir.Domain(0, 2, [4])
    assert t1.inputs[1].domain == ir.Domain(0, 0, [4])
    assert t1.graph_reduce == ir.GraphReduceSpec(fan_in=1, num_inputs=1, input_base=4, output_base=4, output_blocks=[4])
    assert [i.field for i in stages[1].templates[0].inputs] == [600, 21]
    assert (combined.field, combined.level, combined.block) == (601, 2, 4)
    with pytest.raises(ValueError, match="location-preserving reductions require matching blocks"):
        ir.level_combination_stages([ir.LevelValue(1, 1, 0), ir.LevelValue(2, 0, 3)],
                                    buffer=f64_fixed(4), alloc_field=counter(1), preserve_location=True)


def test_low8_final_stage():
    prod = ir.Stage("combine")
    st = ir.final_stage([ir.LevelValue(30, 1, 0, prod), ir.LevelValue(31, 1, 0, prod)], out_field=40,
                        buffer=f64_fixed(4, 8), kernel="uniform_slice_finalize",
                        params=ir.SliceFinalizeParams(pixel_area=0.25), step=2)
    (t,) = st.templates
    assert st.plane == "graph" and st.after == [prod]
    assert t.domain == ir.Domain(2, 0)
    assert [(i.field, i.domain) for i in t.inputs] == [(30, ir.Domain(2, 1)), (31, ir.Domain(2, 1))]
    assert t.graph_reduce == ir.GraphReduceSpec(fan_in=1, num_inputs=1)
    assert t.to_json()["params"] == {"type": "SliceFinalizeParams", "pixel_area": 0.25}


def test_package_exports():
    import kangaroo

    assert kangaroo.ir is ir
    assert isinstance(kangaroo.__version__, str)
    for name in ("Plan", "Stage", "TaskTemplate", "Domain", "FieldRef", "OutputRef", "DependencyRule",
                 "GraphReduceSpec", "BufferSpec", "DType", "InitPolicy", "BlockShape", "FixedShape",
                 "LikeInputShape", "DynamicShape", "DynamicUpperBound"):
        assert hasattr(ir, name), name
