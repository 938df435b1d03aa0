// Face-neighbor dependencies (§4.4, NBR-1..6) observed through the executor:
// a recording kernel captures the neighbor collections each task receives.
//
// Most tests use a 3x3x3 grid of 4^3-cell blocks where block b sits at grid
// position (b % 3, (b / 3) % 3, b / 9); the expected neighbor sets are walks
// along one grid axis, computed from those coordinates rather than from box
// adjacency.
#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "exec_test_support.h"
#include "kangaroo/core/error.h"
#include "kangaroo/core/plan_json.h"

namespace kangaroo {
namespace {

using namespace exec_testing;

struct SeenCollection {
  std::int32_t halo_input = 0;
  std::int32_t face = 0;
  std::vector<std::int32_t> blocks;
  std::vector<double> values;  // first element of each chunk
};

struct NbrCall {
  std::int32_t block = 0;
  std::size_t collection_count = 0;
  std::vector<SeenCollection> collections;
};

std::mutex g_mu;
std::map<std::int32_t, NbrCall> g_calls;  // by task block

void nbr_kernel(KernelContext& ctx) {
  NbrCall c;
  c.block = ctx.block;
  c.collection_count = ctx.neighbors.size();
  for (const auto& n : ctx.neighbors) {
    SeenCollection s;
    s.halo_input = n.halo_input;
    s.face = n.face;
    s.blocks = n.blocks;
    for (const auto& chunk : n.chunks) s.values.push_back(chunk ? chunk->element_as_double(0) : -1.0);
    c.collections.push_back(std::move(s));
  }
  {
    std::lock_guard lk(g_mu);
    g_calls[ctx.block] = std::move(c);
  }
  ctx.outputs[0]->elements<double>()[0] = ctx.block;
}

void id_kernel(KernelContext& ctx) { ctx.outputs[0]->elements<double>()[0] = 7000.0 + ctx.block; }

NbrCall call_for(std::int32_t block) {
  std::lock_guard lk(g_mu);
  auto it = g_calls.find(block);
  if (it == g_calls.end()) {
    ADD_FAILURE() << "no call for block " << block;
    return {};
  }
  return it->second;
}

// Union of the collections of (halo input, face); empty when absent.
SeenCollection collection(const NbrCall& c, std::int32_t halo, int face) {
  SeenCollection out;
  out.halo_input = halo;
  out.face = face;
  int found = 0;
  for (const auto& s : c.collections) {
    if (s.halo_input == halo && s.face == face) {
      ++found;
      out = s;
    }
  }
  EXPECT_LE(found, 1) << "face " << face << " of halo input " << halo << " delivered more than once";
  return out;
}

std::size_t total_neighbor_chunks(const NbrCall& c) {
  std::size_t n = 0;
  for (const auto& s : c.collections) n += s.blocks.size();
  return n;
}

constexpr int kGrid = 3;

std::int32_t grid_index(int i, int j, int k) { return i + kGrid * j + kGrid * kGrid * k; }

RunMeta grid_meta(int levels = 1) {
  std::vector<std::vector<IndexBox>> lv;
  for (int l = 0; l < levels; ++l) {
    std::vector<IndexBox> boxes;
    for (int k = 0; k < kGrid; ++k) {
      for (int j = 0; j < kGrid; ++j) {
        for (int i = 0; i < kGrid; ++i) boxes.push_back(box3(4 * i, 4 * j, 4 * k, 4 * i + 3, 4 * j + 3, 4 * k + 3));
      }
    }
    lv.push_back(std::move(boxes));
  }
  RunMeta m = make_meta(std::move(lv));
  // Periodic flags must not create wrap-around neighbors (NBR-4).
  for (auto& l : m.steps[0].levels) l.geom.is_periodic = {true, true, true};
  return m;
}

// Blocks reached from `b` by stepping 1..width grid cells along the face's
// axis and direction, ascending.
std::vector<std::int32_t> expected_face(std::int32_t b, int face, int width) {
  int c[3] = {b % kGrid, (b / kGrid) % kGrid, b / (kGrid * kGrid)};
  const int axis = face / 2;
  const int dir = face % 2 == 0 ? -1 : 1;
  std::vector<std::int32_t> out;
  for (int s = 1; s <= width; ++s) {
    int d[3] = {c[0], c[1], c[2]};
    d[axis] += dir * s;
    if (d[axis] < 0 || d[axis] >= kGrid) break;
    out.push_back(grid_index(d[0], d[1], d[2]));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<double> plus(const std::vector<std::int32_t>& blocks, double base) {
  std::vector<double> v;
  for (auto b : blocks) v.push_back(base + b);
  return v;
}

class NeighborTest : public ::testing::Test {
 protected:
  void SetUp() override {
    {
      std::lock_guard lk(g_mu);
      g_calls.clear();
    }
    h.add("nbr", nbr_kernel);
    h.add("id", id_kernel);
    for (std::int32_t b = 0; b < kGrid * kGrid * kGrid; ++b) {
      h.dataset->set_chunk(cid(0, 0, 1, 0, b), f64_scalar(b));
      h.dataset->set_chunk(cid(0, 0, 2, 0, b), f64_scalar(1000.0 + b));
      h.dataset->set_chunk(cid(0, 1, 1, 0, b), f64_scalar(500.0 + b));
    }
  }

  static DepRule face_deps(std::int32_t width, std::array<bool, 6> faces = {true, true, true, true, true, true},
                           std::vector<std::int32_t> halo = {}) {
    DepRule d;
    d.kind = DepKind::face_neighbors;
    d.width = width;
    d.faces = faces;
    d.halo_inputs = std::move(halo);
    return d;
  }

  Plan nbr_plan(DepRule deps, std::vector<FieldRef> inputs = {input(1)},
                std::optional<std::vector<std::int32_t>> blocks = std::nullopt) {
    TaskTemplate t = chunk_template("n", "nbr", domain(0, 0, std::move(blocks)), std::move(inputs),
                                    {output(60, fixed_spec({1}))});
    t.deps = std::move(deps);
    return plan_of({stage("s", Plane::chunk, {t})});
  }

  Harness h;
  RunMeta meta = grid_meta(2);
};

// NBR-1
TEST_F(NeighborTest, NoDependencyKindGivesNoNeighbors) {
  h.run(nbr_plan(DepRule{}), meta);
  for (std::int32_t b = 0; b < 27; ++b) EXPECT_EQ(total_neighbor_chunks(call_for(b)), 0u) << b;
}

// NBR-3: width 0 is valid and yields empty sets.
TEST_F(NeighborTest, WidthZeroGivesEmptySets) {
  h.run(nbr_plan(face_deps(0)), meta);
  for (std::int32_t b = 0; b < 27; ++b) EXPECT_EQ(total_neighbor_chunks(call_for(b)), 0u) << b;
}

TEST_F(NeighborTest, WidthOneReachesTheAdjacentBlockPerFaceWithoutWrap) {
  h.run(nbr_plan(face_deps(1)), meta, threads_opt(3));
  for (std::int32_t b = 0; b < 27; ++b) {
    const NbrCall c = call_for(b);
    for (int f = 0; f < 6; ++f) {
      const auto want = expected_face(b, f, 1);
      const SeenCollection s = collection(c, 0, f);
      EXPECT_EQ(s.blocks, want) << "block " << b << " face " << f;
      EXPECT_EQ(s.values, plus(want, 0.0)) << "block " << b << " face " << f;
    }
  }
  // The centre block sees one neighbor per face; a corner only three.
  EXPECT_EQ(total_neighbor_chunks(call_for(13)), 6u);
  EXPECT_EQ(total_neighbor_chunks(call_for(0)), 3u);
  EXPECT_TRUE(collection(call_for(0), 0, 0).blocks.empty()) << "no periodic wrap across Xm";
}

TEST_F(NeighborTest, WiderWalksFollowOnlyTheirFace) {
  for (int width : {2, 5}) {
    h.reset_session();
    h.run(nbr_plan(face_deps(width)), meta, threads_opt(2));
    for (std::int32_t b = 0; b < 27; ++b) {
      const NbrCall c = call_for(b);
      for (int f = 0; f < 6; ++f) {
        const auto want = expected_face(b, f, width);
        const SeenCollection s = collection(c, 0, f);
        EXPECT_EQ(s.blocks, want) << "width " << width << " block " << b << " face " << f;
        EXPECT_EQ(s.values, plus(want, 0.0));
      }
    }
  }
  // Spot check from the spec's description: block 0 with width 2 reaches
  // 1 and 2 across Xp, 3 and 6 across Yp, 9 and 18 across Zp.
  const NbrCall c0 = call_for(0);
  EXPECT_EQ(collection(c0, 0, 1).blocks, (std::vector<std::int32_t>{1, 2}));
  EXPECT_EQ(collection(c0, 0, 3).blocks, (std::vector<std::int32_t>{3, 6}));
  EXPECT_EQ(collection(c0, 0, 5).blocks, (std::vector<std::int32_t>{9, 18}));
}

TEST_F(NeighborTest, FaceMaskSelectsFaces) {
  h.run(nbr_plan(face_deps(1, {false, false, false, false, false, false})), meta);
  for (std::int32_t b = 0; b < 27; ++b) EXPECT_EQ(total_neighbor_chunks(call_for(b)), 0u) << b;

  h.reset_session();
  h.run(nbr_plan(face_deps(2, {false, false, false, true, false, false})), meta);
  for (std::int32_t b = 0; b < 27; ++b) {
    const NbrCall c = call_for(b);
    for (int f = 0; f < 6; ++f) {
      const auto want = f == 3 ? expected_face(b, f, 2) : std::vector<std::int32_t>{};
      EXPECT_EQ(collection(c, 0, f).blocks, want) << "block " << b << " face " << f;
    }
  }
}

// NBR-2: duplicates dropped, first-occurrence order; each halo input reads its own field.
TEST_F(NeighborTest, HaloInputsAreDistinctInFirstOccurrenceOrder) {
  h.run(nbr_plan(face_deps(1, {true, true, true, true, true, true}, {1, 1, 0, 1}), {input(1), input(2)}), meta);
  for (std::int32_t b = 0; b < 27; ++b) {
    const NbrCall c = call_for(b);
    std::vector<std::int32_t> order;
    for (const auto& s : c.collections) {
      if (std::find(order.begin(), order.end(), s.halo_input) == order.end()) order.push_back(s.halo_input);
    }
    if (b == 13) {
      EXPECT_EQ(order, (std::vector<std::int32_t>{1, 0}));
    }
    for (int f = 0; f < 6; ++f) {
      const auto want = expected_face(b, f, 1);
      EXPECT_EQ(collection(c, 1, f).values, plus(want, 1000.0)) << "block " << b << " face " << f;
      EXPECT_EQ(collection(c, 0, f).values, plus(want, 0.0)) << "block " << b << " face " << f;
    }
    std::size_t n = 0;
    for (int f = 0; f < 6; ++f) n += expected_face(b, f, 1).size();
    EXPECT_EQ(total_neighbor_chunks(c), 2 * n) << "duplicates must not be collected twice";
  }
}

TEST_F(NeighborTest, EmptyHaloInputsMeanInputZero) {
  h.run(nbr_plan(face_deps(1), {input(2), input(1)}, std::vector<std::int32_t>{13}), meta);
  const NbrCall c = call_for(13);
  for (const auto& s : c.collections) EXPECT_EQ(s.halo_input, 0);
  for (int f = 0; f < 6; ++f) EXPECT_EQ(collection(c, 0, f).values, plus(expected_face(13, f, 1), 1000.0)) << f;
  EXPECT_EQ(total_neighbor_chunks(c), 6u);
}

// NBR-5: neighbors are read at the halo input's override step/level.
TEST_F(NeighborTest, NeighborsUseTheHaloInputOverrideLevel) {
  h.run(nbr_plan(face_deps(1), {input(1, 0, domain(0, 1))}, std::vector<std::int32_t>{13, 0}), meta);
  for (std::int32_t b : {13, 0}) {
    const NbrCall c = call_for(b);
    for (int f = 0; f < 6; ++f) EXPECT_EQ(collection(c, 0, f).values, plus(expected_face(b, f, 1), 500.0)) << f;
  }
}

// NBR-4: touching on the face axis AND overlapping (inclusive) on both others.
TEST_F(NeighborTest, AdjacencyRequiresOverlapOnTheOtherTwoAxes) {
  const RunMeta m = make_meta({{
      box3(0, 0, 0, 3, 3, 3),  // 0: the probe
      box3(4, 4, 0, 7, 7, 3),  // 1: touches in x, y ranges disjoint -> not adjacent
      box3(4, 3, 0, 7, 6, 3),  // 2: touches in x, y overlaps at 3 -> adjacent
      box3(4, 0, 4, 7, 3, 7),  // 3: touches in x, z disjoint -> not adjacent
      box3(5, 0, 0, 8, 3, 3),  // 4: one-cell gap in x -> not adjacent
      box3(0, 4, 0, 3, 7, 3),  // 5: Yp neighbor of 0
      box3(0, 0, -4, 3, 3, -1),  // 6: Zm neighbor of 0
      box3(-2, 1, 1, -1, 2, 2),  // 7: small Xm neighbor contained in 0's y/z range
  }});
  for (std::int32_t b = 0; b < 8; ++b) h.dataset->set_chunk(cid(0, 0, 3, 0, b), f64_scalar(b));
  h.run(nbr_plan(face_deps(1), {input(3)}), m);
  const NbrCall c0 = call_for(0);
  EXPECT_EQ(collection(c0, 0, 0).blocks, (std::vector<std::int32_t>{7}));
  EXPECT_EQ(collection(c0, 0, 1).blocks, (std::vector<std::int32_t>{2}));
  EXPECT_EQ(collection(c0, 0, 2).blocks, (std::vector<std::int32_t>{}));
  EXPECT_EQ(collection(c0, 0, 3).blocks, (std::vector<std::int32_t>{5}));
  EXPECT_EQ(collection(c0, 0, 4).blocks, (std::vector<std::int32_t>{6}));
  EXPECT_EQ(collection(c0, 0, 5).blocks, (std::vector<std::int32_t>{}));
  // Block 5 (x 0..3, y 4..7) touches blocks 1 and 2 across their Xm face.
  EXPECT_EQ(collection(call_for(2), 0, 0).blocks, (std::vector<std::int32_t>{0, 5}));
  EXPECT_EQ(collection(call_for(1), 0, 0).blocks, (std::vector<std::int32_t>{5}));
  EXPECT_EQ(collection(call_for(4), 0, 0).blocks, (std::vector<std::int32_t>{}));
  EXPECT_EQ(collection(call_for(7), 0, 1).blocks, (std::vector<std::int32_t>{0}));
}

// NBR-5: ascending block order inside a collection, whatever the box order.
TEST_F(NeighborTest, CollectionsAreInAscendingBlockOrder) {
  const RunMeta m = make_meta({{
      box3(4, 4, 4, 7, 7, 7),  // 0: small, upper quadrant
      box3(0, 0, 0, 3, 7, 7),  // 1: big block on the low x side
      box3(4, 0, 4, 7, 3, 7),  // 2
      box3(4, 4, 0, 7, 7, 3),  // 3
      box3(4, 0, 0, 7, 3, 3),  // 4
      box3(8, 0, 0, 11, 7, 7),  // 5: big block on the high x side
      box3(12, 0, 0, 15, 7, 7),  // 6: behind 5
  }});
  for (std::int32_t b = 0; b < 7; ++b) h.dataset->set_chunk(cid(0, 0, 3, 0, b), f64_scalar(b));
  h.run(nbr_plan(face_deps(2), {input(3)}), m);
  EXPECT_EQ(collection(call_for(1), 0, 1).blocks, (std::vector<std::int32_t>{0, 2, 3, 4, 5}));
  EXPECT_EQ(collection(call_for(1), 0, 1).values, (std::vector<double>{0, 2, 3, 4, 5}));
  EXPECT_EQ(collection(call_for(5), 0, 0).blocks, (std::vector<std::int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(collection(call_for(6), 0, 0).blocks, (std::vector<std::int32_t>{0, 2, 3, 4, 5}));
}

// Neighbor chunks produced by an earlier stage are read from the run.
TEST_F(NeighborTest, NeighborChunksMayBeProducedByThePlan) {
  TaskTemplate make = chunk_template("m", "id", domain(0, 0), {}, {output(40, fixed_spec({1}))});
  TaskTemplate use = chunk_template("n", "nbr", domain(0, 0), {input(40)}, {output(60, fixed_spec({1}))});
  use.deps = face_deps(1);
  for (int threads : {1, 4}) {
    h.reset_session();
    // The consumer is listed first and has no `after` edge: its neighbor
    // reads wait for the producer (EXEC-6).
    h.run(plan_of({stage("use", Plane::chunk, {use}), stage("make", Plane::chunk, {make})}), meta,
          threads_opt(threads));
    for (std::int32_t b = 0; b < 27; ++b) {
      for (int f = 0; f < 6; ++f) {
        EXPECT_EQ(collection(call_for(b), 0, f).values, plus(expected_face(b, f, 1), 7000.0)) << b << "/" << f;
      }
    }
  }
}

TEST_F(NeighborTest, MissingNeighborChunkFailsTheRun) {
  h.dataset->set_chunk(cid(0, 0, 3, 0, 13), f64_scalar(1.0));
  EXPECT_THROW(h.run(nbr_plan(face_deps(1), {input(3)}, std::vector<std::int32_t>{13}), meta), Error);
  // Without deps the same task only reads its own block and succeeds.
  h.reset_session();
  EXPECT_NO_THROW(h.run(nbr_plan(DepRule{}, {input(3)}, std::vector<std::int32_t>{13}), meta));
}

// Neighbor chunks are not kernel inputs: LikeInput indices only count inputs.
TEST_F(NeighborTest, LikeInputIndexDoesNotReachNeighborChunks) {
  TaskTemplate t = chunk_template("n", "nbr", domain(0, 0, std::vector<std::int32_t>{13}), {input(1)},
                                  {output(60, like_input_spec(1))});
  t.deps = face_deps(1);
  std::string msg;
  try {
    h.run(plan_of({stage("s", Plane::chunk, {t})}), meta);
  } catch (const std::exception& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("unable to resolve output Buffer Specification"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------
// ERR-5 and CONF-4 through the plan document

std::string plan_doc(const std::string& inputs_json, const std::string& deps_json) {
  return R"({"schema":"kangaroo.plan/1","stages":[{"name":"s","plane":"chunk","after":[],"templates":[{)"
         R"("name":"t","plane":"chunk","kernel":"nbr","domain":{"step":0,"level":0,"blocks":[13,0]},"inputs":)" +
         inputs_json +
         R"(,"outputs":[{"field":60,"version":0,"buffer":{"dtype":"f64","shape":{"kind":"fixed","extents":[1]},"init":"zero"}}],)"
         R"("deps":)" +
         deps_json + R"(,"params":{},"covered_boxes_ref":-1,"graph_reduce":null}]}],"shared_covered_boxes":[]})";
}

const std::string kOneInput = R"([{"field":1,"version":0,"domain":null}])";
const std::string kTwoInputs = R"([{"field":1,"version":0,"domain":null},{"field":2,"version":0,"domain":null}])";

std::string decode_error(const std::string& doc) {
  try {
    (void)decode_plan(doc);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no error>";
}

TEST_F(NeighborTest, DecodeRejectsFaceNeighborsWithoutInputs) {
  const std::string msg = decode_error(plan_doc("[]", R"({"kind":"FaceNeighbors","width":1})"));
  EXPECT_NE(msg, "<no error>");
  EXPECT_NE(msg.find("FaceNeighbors"), std::string::npos) << msg;
}

TEST_F(NeighborTest, DecodeRejectsHaloInputsOutOfRange) {
  for (const char* halo : {"[1]", "[0,2]", "[-1]"}) {
    const std::string msg =
        decode_error(plan_doc(kOneInput, std::string(R"({"kind":"FaceNeighbors","width":1,"halo_inputs":)") + halo + "}"));
    EXPECT_NE(msg, "<no error>") << halo;
    EXPECT_NE(msg.find("halo_inputs"), std::string::npos) << halo << ": " << msg;
  }
  // In range with two inputs decodes.
  EXPECT_EQ(decode_error(plan_doc(kTwoInputs, R"({"kind":"FaceNeighbors","width":1,"halo_inputs":[1]})")),
            "<no error>");
}

TEST_F(NeighborTest, RunRejectsFaceNeighborsWithoutInputsOrBadHaloIndex) {
  EXPECT_THROW(h.run(nbr_plan(face_deps(1), {}), meta), Error);
  h.reset_session();
  EXPECT_THROW(h.run(nbr_plan(face_deps(1, {true, true, true, true, true, true}, {2}), {input(1), input(2)}), meta),
               Error);
  h.reset_session();
  EXPECT_THROW(h.run(nbr_plan(face_deps(1, {true, true, true, true, true, true}, {-1}), {input(1)}), meta), Error);
}

TEST_F(NeighborTest, AcceptedConfigurationsRunFromTheDocument) {
  struct Case {
    std::string inputs;
    std::string deps;
    std::size_t centre_chunks;  // neighbor chunks delivered to block 13
  };
  const std::vector<Case> cases = {
      {kOneInput, R"({"kind":"FaceNeighbors","width":0})", 0},
      {kOneInput, R"({"kind":"FaceNeighbors","width":1,"faces":[false,false,false,false,false,false]})", 0},
      {kOneInput, R"({"kind":"FaceNeighbors","width":1,"faces":[0,1,0,0,0,0]})", 1},
      {kTwoInputs, R"({"kind":"FaceNeighbors","width":1,"halo_inputs":[1,1,1]})", 6},
      {kTwoInputs, R"({"kind":"FaceNeighbors","width":1,"halo_inputs":[0,1,0]})", 12},
      {kOneInput, R"({})", 0},
  };
  for (const auto& c : cases) {
    {
      std::lock_guard lk(g_mu);
      g_calls.clear();
    }
    h.reset_session();
    Plan p;
    ASSERT_NO_THROW(p = decode_plan(plan_doc(c.inputs, c.deps))) << c.deps;
    ASSERT_NO_THROW(h.run(std::move(p), meta)) << c.deps;
    EXPECT_EQ(total_neighbor_chunks(call_for(13)), c.centre_chunks) << c.deps;
  }
}

}  // namespace
}  // namespace kangaroo
