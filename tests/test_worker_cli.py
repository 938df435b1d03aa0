"""End-to-end tests of the ``kangaroo-worker`` command line.

Plans are built with the Python SDK's plan model (``kangaroo.ir``), so these
tests also check that the SDK's documents are what the runtime decodes.
Expected results are computed with numpy from the functional contract, never
taken from the runtime's own output.

The binary is ``$KANGAROO_BUILD_DIR/worker/kangaroo-worker`` (default build
folder: ``build`` in the repository root).
"""

import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python-sdk"))

from kangaroo import ir  # noqa: E402

BUILD_DIR = os.environ.get("KANGAROO_BUILD_DIR") or os.path.join(REPO, "build")
if not os.path.isabs(BUILD_DIR):
    BUILD_DIR = os.path.join(REPO, BUILD_DIR)
WORKER = os.path.join(BUILD_DIR, "worker", "kangaroo-worker")

pytestmark = pytest.mark.skipif(
    not os.access(WORKER, os.X_OK),
    reason=f"kangaroo-worker not built at {WORKER} (build it with scripts/build.sh or set KANGAROO_BUILD_DIR)",
)

CHUNK_NAME = re.compile(r"^s(-?\d+)_l(\d+)_f(-?\d+)_v(-?\d+)_b(-?\d+)\.(npy|bin)$")


# ---------------------------------------------------------------------------
# helpers


def worker(*args, timeout=120):
    return subprocess.run([WORKER, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def np_or_skip():
    return pytest.importorskip("numpy", reason="numpy (python3-numpy) is needed for end-to-end runs")


def chunk_file(step, level, field, version, block):
    return f"s{step}_l{level}_f{field}_v{version}_b{block}.npy"


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def runmeta_doc(levels, step=0):
    """levels: list of dicts with dx (float or 3), boxes [(lo, hi)], ref_ratio."""
    out = []
    for lv in levels:
        dx = lv["dx"] if isinstance(lv["dx"], (list, tuple)) else [lv["dx"]] * 3
        out.append({
            "geom": {"dx": list(dx), "x0": list(lv.get("x0", [0.0, 0.0, 0.0])),
                     "index_origin": [0, 0, 0], "is_periodic": [False, False, False],
                     "ref_ratio": lv.get("ref_ratio", 1)},
            "boxes": [[list(lo), list(hi)] for lo, hi in lv["boxes"]],
        })
    return {"steps": [{"step": step, "levels": out}], "particle_species": {}, "coord_sys": 0}


def box_shape(box):
    lo, hi = box
    return tuple(h - l + 1 for l, h in zip(lo, hi))


class FieldIds:
    def __init__(self, start):
        self.next = start

    def __call__(self):
        v = self.next
        self.next += 1
        return v


def run_plan(tmp_path, plan, runmeta, seeds, out_name="out", extra=()):
    plan_path = write_json(tmp_path / f"{out_name}_plan.json", json.loads(plan.to_json()) if isinstance(plan, ir.Plan) else plan)
    meta_path = write_json(tmp_path / f"{out_name}_runmeta.json", runmeta)
    out = tmp_path / out_name
    args = ["run", "--plan", plan_path, "--runmeta", meta_path, "--dataset", "memory://", "--out", out]
    for s in seeds:
        args += ["--seed", s]
    return worker(*args, *extra), out


def load_manifest(out):
    with open(out / "manifest.json") as f:
        return json.load(f)


# A one-level mesh of four 4x3x2 blocks along x (non-cubic, to catch axis mix-ups).
FOUR_BLOCKS = [((4 * b, 0, 0), (4 * b + 3, 2, 1)) for b in range(4)]
FOUR_BLOCK_META = runmeta_doc([{"dx": 0.25, "boxes": FOUR_BLOCKS}])


def seed_four_blocks(np, tmp_path, rng):
    seed = tmp_path / "seed"
    seed.mkdir()
    a, b = {}, {}
    for blk, box in enumerate(FOUR_BLOCKS):
        shape = box_shape(box)
        a[blk] = rng.uniform(-3, 3, size=shape)
        b[blk] = rng.uniform(-2, 2, size=shape).astype(np.float32)
        np.save(seed / chunk_file(0, 0, 1, 0, blk), a[blk])
        np.save(seed / chunk_file(0, 0, 2, 0, blk), b[blk])
    return seed, a, b


def expr_plan(expression, variables, in_fields, out_field, dtype="f64", step=0):
    st = ir.Stage("expr")
    st.map_blocks(
        "expr_l0", "field_expr", ir.Domain(step, 0),
        inputs=[ir.FieldRef(f) for f in in_fields],
        outputs=[ir.OutputRef(ir.FieldRef(out_field), ir.BufferSpec(dtype, ir.BlockShape()))],
        params=ir.FieldExprParams(expression=expression, variables=variables),
    )
    return ir.Plan([st])


# ---------------------------------------------------------------------------
# validate


def test_validate_documented_example():
    plan = os.path.join(REPO, "docs", "examples", "plan_example.json")
    meta = os.path.join(REPO, "docs", "examples", "runmeta_example.json")
    r = worker("validate", plan)
    assert r.returncode == 0, r.stderr
    r = worker("validate", plan, "--runmeta", meta)
    assert r.returncode == 0, r.stderr


def test_sdk_plan_validates(tmp_path):
    plan = expr_plan("a*b+1", ["a", "b"], [1, 2], 10)
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    r = worker("validate", path)
    assert r.returncode == 0, r.stderr
    assert "valid (1 stages, 1 templates)" in r.stdout


def two_stage_doc():
    s0 = ir.Stage("exprs")
    for name in ("first", "second"):
        s0.map_blocks(name, "field_expr", ir.Domain(0, 0), inputs=[1],
                      outputs=[ir.OutputRef(10, ir.BufferSpec("f64", ir.BlockShape()))],
                      params=ir.FieldExprParams(expression="a", variables=["a"]))
    s1 = ir.Stage("sum", plane="graph", after=[s0])
    s1.map_blocks("sum", "uniform_slice_reduce", ir.Domain(0, 0), inputs=[10],
                  outputs=[ir.OutputRef(11, ir.BufferSpec("f64", ir.FixedShape(3), "zero"))],
                  graph_reduce=ir.GraphReduceSpec(fan_in=2, num_inputs=4))
    return json.loads(ir.Plan([s0, s1]).to_json())


def test_validate_reports_one_line_per_error(tmp_path):
    doc = two_stage_doc()
    doc["stages"][0]["templates"][1]["deps"]["faces"] = [True] * 5
    doc["stages"][1]["templates"][0]["graph_reduce"]["fan_in"] = 0
    path = write_json(tmp_path / "bad.json", doc)
    r = worker("validate", path)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2, r.stderr
    faces = [ln for ln in lines if "faces" in ln]
    fan_in = [ln for ln in lines if "fan_in" in ln]
    assert len(faces) == 1 and len(fan_in) == 1, r.stderr
    assert "stage 0 template 1" in faces[0] and "/stages/0/templates/1/deps/faces" in faces[0]
    assert "stage 1 template 0" in fan_in[0] and "/stages/1/templates/0/graph_reduce" in fan_in[0]


def test_unknown_kernel_is_rejected(tmp_path):
    doc = two_stage_doc()
    doc["stages"][0]["templates"][0]["kernel"] = "no_such_kernel"
    path = write_json(tmp_path / "bad.json", doc)
    r = worker("validate", path)
    assert r.returncode == 2
    assert "kernel not found: no_such_kernel" in r.stderr
    r, out = run_plan(tmp_path, doc, FOUR_BLOCK_META, [])
    assert r.returncode == 2, r.stderr
    assert not out.exists()


def test_incompatible_params_are_rejected(tmp_path):
    doc = two_stage_doc()
    doc["stages"][0]["templates"][0]["params"] = {"type": "ScalarParams", "scalar": 1.0}
    r = worker("validate", write_json(tmp_path / "bad.json", doc))
    assert r.returncode == 2
    assert "received incompatible typed parameters" in r.stderr


def test_stage_cycle_is_rejected(tmp_path):
    doc = two_stage_doc()
    doc["stages"][0]["after"] = [1]
    r = worker("validate", write_json(tmp_path / "cycle.json", doc))
    assert r.returncode == 2
    assert "stage dependency cycle detected" in r.stderr
    doc["stages"][0]["after"] = [5]
    r = worker("validate", write_json(tmp_path / "range.json", doc))
    assert r.returncode == 2
    assert "stage dependency index out of range" in r.stderr


def test_unknown_schema_is_rejected(tmp_path):
    doc = two_stage_doc()
    doc["schema"] = "kangaroo.plan/0"
    r = worker("validate", write_json(tmp_path / "schema.json", doc))
    assert r.returncode == 2


def test_kernels_lists_the_catalog():
    r = worker("kernels")
    assert r.returncode == 0
    names = [ln.split("\t")[0] for ln in r.stdout.splitlines() if ln.strip()]
    assert len(names) == 59
    assert len(set(names)) == 59
    for name in ("field_expr", "histogram1d_accumulate", "uniform_slice_reduce", "uniform_slice_add",
                 "uniform_slice_finalize", "uniform_projection_accumulate", "uniform_slice_cellavg_accumulate",
                 "particle_topk_modes_finalize", "vorticity_mag", "amr_subbox_fetch_pack"):
        assert name in names
    r = worker("kernels", "--json")
    assert r.returncode == 0
    listed = json.loads(r.stdout)
    assert sorted(k["name"] for k in listed) == sorted(names)


def test_usage_errors_exit_1(tmp_path):
    assert worker().returncode == 1
    assert worker("frobnicate").returncode == 1
    assert worker("run", "--plan", "x.json").returncode == 1
    assert worker("validate", tmp_path / "missing.json").returncode == 1


# ---------------------------------------------------------------------------
# run


def test_field_expr_end_to_end_and_manifest(tmp_path):
    np = np_or_skip()
    rng = np.random.default_rng(7)
    seed, a, b = seed_four_blocks(np, tmp_path, rng)
    plan = expr_plan("a*b+1", ["a", "b"], [1, 2], 10)
    r, out = run_plan(tmp_path, plan, FOUR_BLOCK_META, [seed])
    assert r.returncode == 0, r.stderr
    files = sorted(os.listdir(out))
    expected_files = sorted([chunk_file(0, 0, 10, 0, blk) for blk in range(4)] + ["manifest.json"])
    assert files == expected_files
    for blk in range(4):
        got = np.load(out / chunk_file(0, 0, 10, 0, blk))
        want = a[blk] * b[blk].astype(np.float64) + 1.0
        assert got.dtype == np.float64 and got.shape == box_shape(FOUR_BLOCKS[blk])
        assert np.array_equal(got, want), f"block {blk}: max diff {np.max(np.abs(got - want))}"
    m = load_manifest(out)
    assert m["schema"] == "kangaroo.manifest/1"
    assert m["dataset"] == "memory://"
    assert m["tasks_total"] == 4 and m["tasks_run"] == 4 and m["stages_run"] == 1
    assert isinstance(m["seconds"], (int, float)) and m["seconds"] >= 0
    chunks = sorted(m["chunks"], key=lambda c: c["block"])
    assert [c["file"] for c in chunks] == [chunk_file(0, 0, 10, 0, blk) for blk in range(4)]
    for blk, c in enumerate(chunks):
        assert (c["step"], c["level"], c["field"], c["version"], c["block"]) == (0, 0, 10, 0, blk)
        assert c["dtype"] == "f64"
        assert c["shape"] == [4, 3, 2]
        assert c["bytes"] == 4 * 3 * 2 * 8
        assert CHUNK_NAME.match(c["file"])


def test_field_expr_f32_output(tmp_path):
    np = np_or_skip()
    seed, a, b = seed_four_blocks(np, tmp_path, np.random.default_rng(3))
    plan = expr_plan("a - 2*b", ["a", "b"], [1, 2], 12, dtype="float32")
    r, out = run_plan(tmp_path, plan, FOUR_BLOCK_META, [seed])
    assert r.returncode == 0, r.stderr
    for blk in range(4):
        got = np.load(out / chunk_file(0, 0, 12, 0, blk))
        want = (a[blk] - 2.0 * b[blk].astype(np.float64)).astype(np.float32)
        assert got.dtype == np.float32
        assert np.array_equal(got, want)


def spec_histogram(np, values, lo, hi, bins):
    """OP-HIST-1 binning: bin = bins-1 if x == hi else floor((x-lo)*bins/(hi-lo));
    non-finite and out-of-range samples are skipped."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x) & (x >= lo) & (x <= hi)]
    idx = np.where(x == hi, bins - 1, np.floor((x - lo) * bins / (hi - lo))).astype(np.int64)
    idx = idx[(idx >= 0) & (idx < bins)]
    return np.bincount(idx, minlength=bins).astype(np.float64)


def histogram_case(np, tmp_path):
    rng = np.random.default_rng(11)
    seed = tmp_path / "hseed"
    seed.mkdir()
    values = {}
    for blk, box in enumerate(FOUR_BLOCKS):
        v = rng.integers(-4, 45, size=box_shape(box)).astype(np.float64) * 0.25  # [-1, 11]
        flat = v.reshape(-1)
        flat[0] = 10.0  # == hi: last bin
        flat[1] = 0.0  # == lo: first bin
        flat[2] = [np.nan, np.inf, -np.inf, 10.0000001][blk]
        values[blk] = v
        np.save(seed / chunk_file(0, 0, 1, 0, blk), v)
    return seed, values


def histogram_plan(fields, bins=8, rng=(0.0, 10.0), fan_in=2):
    hist_field = fields()
    st = ir.Stage("hist")
    st.map_blocks("hist_l0", "histogram1d_accumulate", ir.Domain(0, 0), inputs=[1],
                  outputs=[ir.OutputRef(hist_field, ir.BufferSpec("f64", ir.FixedShape(bins), "zero"))],
                  params=ir.Histogram1DParams(range=list(rng), bins=bins))
    red, result = ir.block_reduction_stages(
        hist_field, range(4), buffer=ir.BufferSpec("f64", ir.FixedShape(bins), "zero"),
        fan_in=fan_in, after=[st], alloc_field=fields, name="hist_sum")
    return ir.Plan([st, *red]), hist_field, result, red


def test_histogram_with_graph_reduction(tmp_path):
    np = np_or_skip()
    seed, values = histogram_case(np, tmp_path)
    plan, hist_field, (res_field, res_block), red = histogram_plan(FieldIds(100))
    # fan-in 2 over 4 blocks: two rounds (outputs 0, 2 then 0)
    assert [list(s.templates[0].graph_reduce.output_blocks) for s in red] == [[0, 2], [0]]
    r, out = run_plan(tmp_path, plan, FOUR_BLOCK_META, [seed])
    assert r.returncode == 0, r.stderr
    got = np.load(out / chunk_file(0, 0, res_field, 0, res_block))
    allv = np.concatenate([values[b].ravel() for b in range(4)])
    want = spec_histogram(np, allv, 0.0, 10.0, 8)
    assert np.array_equal(got, want), (got, want)
    # the data avoid bin-edge rounding, so numpy.histogram agrees with the spec rule
    finite = allv[np.isfinite(allv)]
    assert np.array_equal(want, np.histogram(finite, bins=8, range=(0.0, 10.0))[0].astype(np.float64))
    # only the final result is written: every other chunk is read by a later task
    m = load_manifest(out)
    assert [(c["field"], c["block"]) for c in m["chunks"]] == [(res_field, 0)]
    assert m["chunks"][0]["shape"] == [8] and m["chunks"][0]["dtype"] == "f64"
    assert m["tasks_total"] == 4 + 2 + 1


def test_output_flag_keeps_intermediate_chunks(tmp_path):
    np = np_or_skip()
    seed, values = histogram_case(np, tmp_path)
    plan, hist_field, (res_field, _), _ = histogram_plan(FieldIds(100))
    r, out = run_plan(tmp_path, plan, FOUR_BLOCK_META, [seed], extra=["--output", f"{hist_field}:0"])
    assert r.returncode == 0, r.stderr
    for blk in range(4):
        got = np.load(out / chunk_file(0, 0, hist_field, 0, blk))
        assert np.array_equal(got, spec_histogram(np, values[blk], 0.0, 10.0, 8))
    names = {c["file"] for c in load_manifest(out)["chunks"]}
    assert names == {chunk_file(0, 0, hist_field, 0, b) for b in range(4)} | {chunk_file(0, 0, res_field, 0, 0)}


def test_failed_run_creates_no_output_dir(tmp_path):
    np = np_or_skip()
    seed, _ = histogram_case(np, tmp_path)
    # bins = 0 passes decoding but the kernel must refuse it (OP-HIST-4, OP-GEN-3)
    plan, _, _, _ = histogram_plan(FieldIds(100), bins=1)
    doc = json.loads(plan.to_json())
    doc["stages"][0]["templates"][0]["params"]["bins"] = 0
    r, out = run_plan(tmp_path, doc, FOUR_BLOCK_META, [seed])
    assert r.returncode == 3, r.stderr
    assert "invalid parameters" in r.stderr
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith("out.")], os.listdir(tmp_path)


def test_missing_input_chunk_fails_the_run(tmp_path):
    np = np_or_skip()
    seed, _, _ = seed_four_blocks(np, tmp_path, np.random.default_rng(1))
    plan = expr_plan("a*c", ["a", "c"], [1, 77], 10)  # field 77 exists nowhere
    r, out = run_plan(tmp_path, plan, FOUR_BLOCK_META, [seed])
    assert r.returncode == 3, r.stderr
    assert not out.exists()


def test_existing_output_dir(tmp_path):
    np = np_or_skip()
    seed, _, _ = seed_four_blocks(np, tmp_path, np.random.default_rng(2))
    plan = expr_plan("a+1", ["a"], [1], 10)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r, _ = run_plan(tmp_path, plan, FOUR_BLOCK_META, [seed])
    assert r.returncode == 1, r.stderr
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
    # an existing empty directory is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    r, got = run_plan(tmp_path, plan, FOUR_BLOCK_META, [seed], out_name="empty")
    assert r.returncode == 0, r.stderr
    assert (got / "manifest.json").exists()


def test_event_log(tmp_path):
    np = np_or_skip()
    seed, _ = histogram_case(np, tmp_path)
    plan, _, _, _ = histogram_plan(FieldIds(100))
    log = tmp_path / "events.jsonl"
    r, out = run_plan(tmp_path, plan, FOUR_BLOCK_META, [seed], extra=["--event-log", log])
    assert r.returncode == 0, r.stderr
    with open(log) as f:
        events = [json.loads(line) for line in f if line.strip()]
    tasks = [e for e in events if e["type"] == "task" and e["id"].count(":") == 3]
    by_id = {}
    for e in tasks:
        assert set(e) >= {"type", "id", "name", "kernel", "plane", "status", "stage", "template", "block",
                          "step", "level", "locality", "worker", "ts", "start", "end"}
        assert e["plane"] in ("chunk", "graph")
        assert isinstance(e["worker"], str)
        by_id.setdefault(e["id"], []).append(e["status"])
    assert len(by_id) == load_manifest(out)["tasks_total"] == 7
    for tid, statuses in by_id.items():
        assert sorted(statuses) == ["end", "start"], (tid, statuses)
        run, stage, tmpl, block = tid.split(":")
        assert stage.isdigit() and tmpl.isdigit()
    ends = [e for e in tasks if e["status"] == "end"]
    assert all(e["end"] >= e["start"] > 0 for e in ends)
    # graph tasks are named by their group's output block: (0, 2) then 0
    graph_blocks = sorted((e["stage"], e["block"]) for e in ends if e["plane"] == "graph")
    assert graph_blocks == [(1, 0), (1, 2), (2, 0)]
    assert any(e["type"] == "phase" and e["name"] == "execute" and e["status"] == "end" for e in events)


def test_chaining_runs_through_seed_dirs(tmp_path):
    np = np_or_skip()
    seed, a, b = seed_four_blocks(np, tmp_path, np.random.default_rng(5))
    r, out1 = run_plan(tmp_path, expr_plan("a*b+1", ["a", "b"], [1, 2], 10), FOUR_BLOCK_META, [seed], out_name="first")
    assert r.returncode == 0, r.stderr
    r, out2 = run_plan(tmp_path, expr_plan("c*2 - a", ["c", "a"], [10, 1], 20), FOUR_BLOCK_META, [seed, out1],
                       out_name="second")
    assert r.returncode == 0, r.stderr
    for blk in range(4):
        c = a[blk] * b[blk].astype(np.float64) + 1.0
        assert np.array_equal(np.load(out2 / chunk_file(0, 0, 20, 0, blk)), c * 2.0 - a[blk])
    assert {c["field"] for c in load_manifest(out2)["chunks"]} == {20}


def test_seed_dirs_lay_over_a_plotfile(tmp_path):
    """--seed on a plotfile: an earlier run's result is read next to the
    plotfile's own fields (persisted fields across runs, LOW-23)."""
    np = np_or_skip()
    plt = os.path.join(REPO, "..", "shared", "data", "amrex", "pelelmex_3d_small")
    if not os.path.isfile(os.path.join(plt, "Header")):
        pytest.skip("shared plotfile pelelmex_3d_small not present")
    meta = json.loads(worker("metadata", "--dataset", plt).stdout)
    var, step = meta["var_names"][0], meta["step"]
    first = tmp_path / "first"
    plan1 = tmp_path / "p1.json"
    write_json(plan1, expr_plan("a*2", ["a"], [1], 10, step=step).to_dict())
    r = worker("run", "--plan", plan1, "--dataset", plt, "--field", f"1={var}", "--out", first)
    assert r.returncode == 0, r.stderr
    second = tmp_path / "second"
    plan2 = tmp_path / "p2.json"
    write_json(plan2, expr_plan("c - a", ["c", "a"], [10, 1], 20, step=step).to_dict())
    r = worker("run", "--plan", plan2, "--dataset", plt, "--field", f"1={var}", "--seed", first, "--out", second)
    assert r.returncode == 0, r.stderr
    chunks = load_manifest(second)["chunks"]
    assert chunks and {c["field"] for c in chunks} == {20}
    for c in chunks:
        a = np.load(first / chunk_file(step, 0, 10, 0, c["block"]))
        assert np.array_equal(np.load(second / c["file"]), a - a / 2.0)


# ---------------------------------------------------------------------------
# a two-level mesh: coverage, projections and slices against numpy


def two_level_case(np, tmp_path):
    """Level 0: 8^3 cells (dx 1/8) in two blocks split along x; level 1 (ratio 2,
    dx 1/16) covers level-0 cells [2,5]x[2,5]x[4,7] with two blocks split along y."""
    l0 = [((0, 0, 0), (3, 7, 7)), ((4, 0, 0), (7, 7, 7))]
    l1 = [((4, 4, 8), (11, 7, 15)), ((4, 8, 8), (11, 11, 15))]
    meta = runmeta_doc([{"dx": 1 / 8, "boxes": l0, "ref_ratio": 2}, {"dx": 1 / 16, "boxes": l1}])
    seed = tmp_path / "amr_seed"
    seed.mkdir()

    def rho(x, y, z):
        return 1.0 + x + 2.0 * y * y + 3.0 * z + x * y * z

    data = {0: {}, 1: {}}
    for lv, boxes, dx in ((0, l0, 1 / 8), (1, l1, 1 / 16)):
        for blk, (lo, hi) in enumerate(boxes):
            c = [(np.arange(lo[a], hi[a] + 1) + 0.5) * dx for a in range(3)]
            X, Y, Z = np.meshgrid(*c, indexing="ij")
            data[lv][blk] = rho(X, Y, Z)
            np.save(seed / chunk_file(0, lv, 1, 0, blk), data[lv][blk])
    coverage = [[[2, 2, 4], [5, 3, 7]], [[2, 4, 4], [5, 5, 7]]]  # level-1 boxes coarsened
    # composite leaf field sampled on the level-1 grid (16^3)
    comp = np.zeros((16, 16, 16))
    leaf1 = np.zeros((16, 16, 16), dtype=bool)
    for blk, (lo, hi) in enumerate(l0):
        comp[2 * lo[0]:2 * hi[0] + 2, 2 * lo[1]:2 * hi[1] + 2, 2 * lo[2]:2 * hi[2] + 2] = \
            data[0][blk].repeat(2, 0).repeat(2, 1).repeat(2, 2)
    for blk, (lo, hi) in enumerate(l1):
        comp[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = data[1][blk]
        leaf1[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = True
    return meta, seed, data, coverage, comp, leaf1, l0, l1


def test_two_level_projection_and_histogram(tmp_path):
    np = np_or_skip()
    meta, seed, data, coverage, comp, leaf1, l0, l1 = two_level_case(np, tmp_path)
    fields = FieldIds(200)
    plan = ir.Plan()
    cov = plan.add_coverage(coverage)
    n = 16
    img = ir.BufferSpec("f64", ir.FixedShape((n, n)), "zero")
    proj_field, hist_field = fields(), fields()
    accum = ir.Stage("accumulate")
    hist_bins, hist_range = 10, (0.0, 8.0)
    for lv in (1, 0):
        accum.map_blocks(f"proj_l{lv}", "uniform_projection_accumulate", ir.Domain(0, lv), inputs=[1],
                         outputs=[ir.OutputRef(proj_field, img)],
                         params=ir.UniformProjectionParams(axis=2, axis_bounds=[0.0, 1.0], rect=[0, 0, 1, 1],
                                                           resolution=[n, n]),
                         covered_boxes_ref=cov if lv == 0 else -1)
        accum.map_blocks(f"hist_l{lv}", "histogram1d_accumulate", ir.Domain(0, lv), inputs=[1],
                         outputs=[ir.OutputRef(hist_field, ir.BufferSpec("f64", ir.FixedShape(hist_bins), "zero"))],
                         params=ir.Histogram1DParams(range=list(hist_range), bins=hist_bins),
                         covered_boxes_ref=cov if lv == 0 else -1)
    results = {}
    for what, field_id in (("proj", proj_field), ("hist", hist_field)):
        spec = img if what == "proj" else ir.BufferSpec("f64", ir.FixedShape(hist_bins), "zero")
        per_level = []
        for lv in (1, 0):
            st, (f, blk) = ir.block_reduction_stages(field_id, [0, 1], buffer=spec, fan_in=2, level=lv,
                                                     normalize=True, after=[accum], alloc_field=fields,
                                                     name=f"{what}_l{lv}")
            per_level.append(ir.LevelValue(f, lv, blk, st[-1]))
        comb, value = ir.level_combination_stages(per_level, buffer=spec, alloc_field=fields,
                                                  preserve_location=(what == "proj"), name=f"{what}_levels")
        out_field = fields()
        if what == "proj":
            fin = ir.final_stage([value], out_field=out_field, buffer=ir.BufferSpec("f64", ir.FixedShape((n, n))),
                                 kernel="uniform_slice_finalize",
                                 params=ir.SliceFinalizeParams(pixel_area=(1 / n) ** 2))
        else:
            fin = ir.final_stage([value], out_field=out_field, buffer=spec)
        plan.add_stage(fin)
        results[what] = out_field
    r, out = run_plan(tmp_path, plan, meta, [seed])
    assert r.returncode == 0, r.stderr

    # projection: column integral of the leaf field along z, per 1/16 pixel (AXIS-4: [y, x])
    got = np.load(out / chunk_file(0, 0, results["proj"], 0, 0))
    want = (comp.sum(axis=2) * (1 / 16)).T
    assert got.shape == (n, n)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)

    # histogram over leaf cells only
    leaf0 = np.concatenate([
        data[0][b][~covered_mask(np, l0[b], coverage)] for b in range(2)])
    leaf_vals = np.concatenate([leaf0, data[1][0].ravel(), data[1][1].ravel()])
    hist = np.load(out / chunk_file(0, 0, results["hist"], 0, 0))
    assert np.array_equal(hist, spec_histogram(np, leaf_vals, *hist_range, hist_bins))
    # every leaf value lies inside the range: the total is the number of leaf cells
    assert np.all((leaf_vals >= hist_range[0]) & (leaf_vals <= hist_range[1]))
    assert hist.sum() == (8 ** 3 - 4 * 4 * 4) + 2 * (8 * 4 * 8)


def covered_mask(np, box, coverage):
    lo, hi = box
    idx = np.meshgrid(*[np.arange(lo[a], hi[a] + 1) for a in range(3)], indexing="ij")
    m = np.zeros(box_shape(box), dtype=bool)
    for clo, chi in coverage:
        m |= (idx[0] >= clo[0]) & (idx[0] <= chi[0]) & (idx[1] >= clo[1]) & (idx[1] <= chi[1]) & \
             (idx[2] >= clo[2]) & (idx[2] <= chi[2])
    return m


def test_two_level_slice(tmp_path):
    np = np_or_skip()
    meta, seed, data, coverage, comp, leaf1, l0, l1 = two_level_case(np, tmp_path)
    z = 0.55  # level 1 plane 8 (z in [0.5, 0.5625)), level 0 plane 4
    p1, p0 = 8, 4
    plane_cov = [[[lo[0], lo[1], p0], [hi[0], hi[1], p0]] for lo, hi in coverage]
    fields = FieldIds(300)
    plan = ir.Plan()
    n = 16
    img = ir.BufferSpec("f64", ir.FixedShape((n, n)), "zero")
    sum_f, area_f = fields(), fields()
    st = ir.Stage("slice")
    for lv, plane in ((1, p1), (0, p0)):
        st.map_blocks(f"slice_l{lv}", "uniform_slice_cellavg_accumulate", ir.Domain(0, lv), inputs=[1],
                      outputs=[ir.OutputRef(sum_f, img), ir.OutputRef(area_f, img)],
                      params=ir.UniformSliceCellParams(axis=2, coord=z, plane_index=plane, rect=[0, 0, 1, 1],
                                                       resolution=[n, n]),
                      covered_boxes=plane_cov if lv == 0 else [])
    finals = []
    for f in (sum_f, area_f):
        per_level = []
        for lv in (1, 0):
            red, (rf, rb) = ir.block_reduction_stages(f, [0, 1], buffer=img, fan_in=2, level=lv, normalize=True,
                                                      after=[st], alloc_field=fields, name=f"r{f}_l{lv}")
            per_level.append(ir.LevelValue(rf, lv, rb, red[-1]))
        comb, value = ir.level_combination_stages(per_level, buffer=img, alloc_field=fields, name=f"c{f}")
        finals.append(value)
    out_field = fields()
    plan.add_stage(ir.final_stage(finals, out_field=out_field, buffer=ir.BufferSpec("f64", ir.FixedShape((n, n))),
                                  kernel="uniform_slice_finalize",
                                  params=ir.SliceFinalizeParams(pixel_area=(1 / n) ** 2)))
    r, out = run_plan(tmp_path, plan, meta, [seed])
    assert r.returncode == 0, r.stderr
    got = np.load(out / chunk_file(0, 0, out_field, 0, 0))
    # pixels are level-1 cells: each holds the leaf value of the cell containing the plane
    want = comp[:, :, p1].T
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


def test_partially_sampled_pixels(tmp_path):
    """OP-RED-3 / OP-SLICE-2: a slice pixel without data is NaN, a partly sampled
    one holds the area-weighted mean of what it overlaps; a projection pixel
    without data is 0 (OP-PROJ-2)."""
    np = np_or_skip()
    box = ((0, 0, 0), (3, 3, 0))  # 4x4x1 cells of 0.25 on [0,1]x[0,1]x[0,0.25]
    meta = runmeta_doc([{"dx": 0.25, "boxes": [box]}])
    seed = tmp_path / "pseed"
    seed.mkdir()
    v = np.arange(16, dtype=np.float64).reshape(4, 4, 1) ** 1.5
    np.save(seed / chunk_file(0, 0, 1, 0, 0), v)
    rect = [-1.0, 0.0, 2.0, 1.0]  # u pixels [-1,0) [0,1) [1,2); v pixels [0,.5) [.5,1)
    res = [3, 2]
    du, dv = 1.0, 0.5
    img = ir.BufferSpec("f64", ir.FixedShape((2, 3)), "zero")
    fields = FieldIds(400)
    sum_f, area_f, proj_f, slice_out, proj_out = (fields() for _ in range(5))
    acc = ir.Stage("accumulate")
    acc.map_blocks("slice", "uniform_slice_cellavg_accumulate", ir.Domain(0, 0), inputs=[1],
                   outputs=[ir.OutputRef(sum_f, img), ir.OutputRef(area_f, img)],
                   params=ir.UniformSliceCellParams(axis=2, coord=0.1, rect=rect, resolution=res))
    acc.map_blocks("proj", "uniform_projection_accumulate", ir.Domain(0, 0), inputs=[1],
                   outputs=[ir.OutputRef(proj_f, img)],
                   params=ir.UniformProjectionParams(axis=2, axis_bounds=[0.0, 1.0], rect=rect, resolution=res))
    out_spec = ir.BufferSpec("f64", ir.FixedShape((2, 3)))
    fin_slice = ir.final_stage([ir.LevelValue(sum_f, 0, 0, acc), ir.LevelValue(area_f, 0, 0, acc)],
                               out_field=slice_out, buffer=out_spec, kernel="uniform_slice_finalize",
                               params=ir.SliceFinalizeParams(pixel_area=du * dv), name="slice_final")
    fin_proj = ir.final_stage([ir.LevelValue(proj_f, 0, 0, acc)], out_field=proj_out, buffer=out_spec,
                              kernel="uniform_slice_finalize", params=ir.SliceFinalizeParams(pixel_area=du * dv),
                              name="proj_final")
    r, out = run_plan(tmp_path, ir.Plan([fin_slice, fin_proj]), meta, [seed])
    assert r.returncode == 0, r.stderr
    got = np.load(out / chunk_file(0, 0, slice_out, 0, 0))
    assert got.shape == (2, 3)
    assert np.all(np.isnan(got[:, 0])) and np.all(np.isnan(got[:, 2]))
    # pixel (j, 1) overlaps cells i = 0..3, y-cells 2j and 2j+1, all with equal area
    want_mid = [v[:, 2 * j:2 * j + 2, 0].mean() for j in range(2)]
    np.testing.assert_allclose(got[:, 1], want_mid, rtol=1e-14)
    proj = np.load(out / chunk_file(0, 0, proj_out, 0, 0))
    assert np.all(proj[:, 0] == 0.0) and np.all(proj[:, 2] == 0.0)
    cell_volume = 0.25 ** 3
    want_proj = [v[:, 2 * j:2 * j + 2, 0].sum() * cell_volume / (du * dv) for j in range(2)]
    np.testing.assert_allclose(proj[:, 1], want_proj, rtol=1e-14)


def test_field_expr_sdk_subset(tmp_path):
    """OP-EXPR-2: the subset the SDK emits (repr floats, + - * /, pow, comparisons)."""
    np = np_or_skip()
    seed, a, b = seed_four_blocks(np, tmp_path, np.random.default_rng(9))
    expr = "pow(a, 2.0) - b / 1e-05 * 3.5e-06 + (a > b) - (a <= -0.5) + (a == a) * (b != 0.25) - (b >= 1.0) + (a < 0.0)"
    r, out = run_plan(tmp_path, expr_plan(expr, ["a", "b"], [1, 2], 10), FOUR_BLOCK_META, [seed])
    assert r.returncode == 0, r.stderr
    for blk in range(4):
        x, y = a[blk], b[blk].astype(np.float64)
        want = (x ** 2.0 - y / 1e-05 * 3.5e-06 + (x > y) - (x <= -0.5) + (x == x) * (y != 0.25)
                - (y >= 1.0) + (x < 0.0))
        np.testing.assert_allclose(np.load(out / chunk_file(0, 0, 10, 0, blk)), want, rtol=1e-15, atol=1e-15)


def test_field_expr_parse_failure_fails_the_run(tmp_path):
    np = np_or_skip()
    seed, _, _ = seed_four_blocks(np, tmp_path, np.random.default_rng(4))
    r, out = run_plan(tmp_path, expr_plan("a*(b", ["a", "b"], [1, 2], 10), FOUR_BLOCK_META, [seed])
    assert r.returncode in (2, 3), r.stderr
    assert "parse" in r.stderr
    assert not out.exists()
