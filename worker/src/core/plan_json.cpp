#include "kangaroo/core/plan_json.h"

#include <set>

#include "json_util.h"
#include "param_fields.h"

namespace kangaroo {

IndexBox decode_index_box(const nlohmann::json& v, const std::string& path, json_util::IssueSink& sink);

namespace {

using json_util::child;
using json_util::IssueSink;
using json_util::json;
using json_util::member;

std::optional<Plane> parse_plane(const std::string& s) {
  if (s == "chunk") return Plane::chunk;
  if (s == "graph") return Plane::graph;
  if (s == "mixed") return Plane::mixed;
  return std::nullopt;
}

Plane read_plane(const json& obj, const std::string& path, IssueSink& sink) {
  const json* v = member(obj, "plane", path, sink, false);
  if (v == nullptr) return Plane::chunk;
  std::string s;
  if (!json_util::read_string(*v, child(path, "plane"), sink, s)) return Plane::chunk;
  auto p = parse_plane(s);
  if (!p) {
    sink.add(child(path, "plane"), "unknown plane '" + s + "' (expected chunk, graph or mixed)");
    return Plane::chunk;
  }
  return *p;
}

std::vector<std::int32_t> read_int32_array(const json& v, const std::string& path, IssueSink& sink) {
  std::vector<std::int32_t> out;
  if (!json_util::expect_array(v, path, sink)) return out;
  out.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::int32_t x = 0;
    json_util::read_int32(v[i], child(path, i), sink, x);
    out.push_back(x);
  }
  return out;
}

Domain read_domain(const json& v, const std::string& path, IssueSink& sink) {
  Domain d;
  if (!json_util::expect_object(v, path, sink)) return d;
  if (const json* s = member(v, "step", path, sink, true)) json_util::read_int32(*s, child(path, "step"), sink, d.step);
  if (const json* l = member(v, "level", path, sink, true)) {
    std::int64_t level = 0;
    if (json_util::read_int(*l, child(path, "level"), sink, level, 0, INT16_MAX)) {
      d.level = static_cast<std::int32_t>(level);
    }
  }
  if (const json* b = member(v, "blocks", path, sink, false); b != nullptr && !b->is_null()) {
    d.blocks = read_int32_array(*b, child(path, "blocks"), sink);
  }
  return d;
}

// Keys that older encoders used for a per-output byte size (PLAN-12).
constexpr const char* kLegacySizeKeys[] = {"bytes", "byte_size", "nbytes", "size_bytes", "output_bytes"};

BufferSpec read_buffer(const json& v, const std::string& path, IssueSink& sink) {
  BufferSpec b;
  if (!json_util::expect_object(v, path, sink)) return b;
  for (const char* k : kLegacySizeKeys) {
    if (v.contains(k)) {
      sink.add(child(path, k), std::string("legacy byte-size key '") + k +
                                   "' is not accepted; describe the output with a buffer shape (PLAN-12)");
    }
  }
  if (const json* d = member(v, "dtype", path, sink, true)) {
    std::string tag;
    if (json_util::read_string(*d, child(path, "dtype"), sink, tag)) {
      auto s = parse_scalar(tag);
      if (!s) sink.add(child(path, "dtype"), "unsupported dtype tag '" + tag + "'");
      else b.dtype = *s;
    }
  }
  if (const json* i = member(v, "init", path, sink, false); i != nullptr && !i->is_null()) {
    std::string tag;
    if (json_util::read_string(*i, child(path, "init"), sink, tag)) {
      if (tag == "zero") b.init = InitPolicy::zero;
      else if (tag == "uninitialized") b.init = InitPolicy::uninitialized;
      else sink.add(child(path, "init"), "unknown init policy '" + tag + "' (expected uninitialized or zero)");
    }
  }
  const json* shape = member(v, "shape", path, sink, true);
  if (shape == nullptr) return b;
  const std::string sp = child(path, "shape");
  if (!json_util::expect_object(*shape, sp, sink)) return b;
  const json* kind = member(*shape, "kind", sp, sink, true);
  std::string k;
  if (kind == nullptr || !json_util::read_string(*kind, child(sp, "kind"), sink, k)) return b;
  if (k == "block") {
    b.shape = ShapeKind::block;
    if (const json* c = member(*shape, "components", sp, sink, false)) {
      if (json_util::read_int(*c, child(sp, "components"), sink, b.components) && b.components < 1) {
        sink.add(child(sp, "components"), "block components must be >= 1 (VAL-8)");
      }
    }
    if (b.dtype == ScalarType::opaque) sink.add(child(path, "dtype"), "opaque buffers cannot use a block shape (PLAN-11)");
  } else if (k == "fixed") {
    b.shape = ShapeKind::fixed;
    if (const json* e = member(*shape, "extents", sp, sink, true)) {
      const std::string ep = child(sp, "extents");
      if (json_util::expect_array(*e, ep, sink)) {
        if (e->empty() || e->size() > 4) sink.add(ep, "fixed shape rank must be 1..4 (VAL-8)");
        if (b.dtype == ScalarType::opaque && e->size() != 1) sink.add(ep, "opaque fixed shape must have rank 1 (PLAN-11)");
        for (std::size_t i = 0; i < e->size(); ++i) {
          std::int64_t x = 0;
          if (json_util::read_int(e->at(i), child(ep, i), sink, x)) {
            if (x <= 0) sink.add(child(ep, i), "fixed extents must be > 0 (VAL-8)");
            b.extents.push_back(static_cast<std::uint64_t>(x));
          }
        }
      }
    }
  } else if (k == "like_input") {
    b.shape = ShapeKind::like_input;
    if (const json* i = member(*shape, "input_index", sp, sink, true)) {
      if (json_util::read_int(*i, child(sp, "input_index"), sink, b.input_index) && b.input_index < 0) {
        sink.add(child(sp, "input_index"), "like_input index must be >= 0 (VAL-8)");
      }
    }
    if (b.dtype == ScalarType::opaque) sink.add(child(path, "dtype"), "opaque buffers cannot use a like_input shape (PLAN-11)");
  } else if (k == "dynamic") {
    b.shape = ShapeKind::dynamic;
    const json* ub = member(*shape, "upper_bound", sp, sink, true);
    if (ub == nullptr) return b;
    const std::string up = child(sp, "upper_bound");
    if (!json_util::expect_object(*ub, up, sink)) return b;
    const json* bk = member(*ub, "kind", up, sink, true);
    std::string bkind;
    if (bk == nullptr || !json_util::read_string(*bk, child(up, "kind"), sink, bkind)) return b;
    if (bkind == "literal") {
      b.bound = BoundKind::literal;
      if (const json* val = member(*ub, "value", up, sink, true)) {
        std::int64_t x = 0;
        if (json_util::read_int(*val, child(up, "value"), sink, x)) {
          if (x < 0) sink.add(child(up, "value"), "literal bound must be >= 0 (PLAN-10)");
          else b.literal = static_cast<std::uint64_t>(x);
        }
      }
    } else if (bkind == "like_input" || bkind == "backend_chunk") {
      b.bound = bkind == "like_input" ? BoundKind::like_input : BoundKind::backend_chunk;
      const bool required = b.bound == BoundKind::like_input;
      if (const json* i = member(*ub, "input_index", up, sink, required)) {
        if (json_util::read_int(*i, child(up, "input_index"), sink, b.bound_input) && b.bound_input < 0) {
          sink.add(child(up, "input_index"), "bound input index must be >= 0 (VAL-8)");
        }
      }
    } else if (bkind == "amr_subbox_pack") {
      b.bound = BoundKind::amr_subbox_pack;
    } else {
      sink.add(child(up, "kind"), "unknown bound kind '" + bkind + "'");
    }
  } else {
    sink.add(child(sp, "kind"), "unknown shape kind '" + k + "'");
  }
  return b;
}

KernelParams read_params(const json& v, const std::string& path, IssueSink& sink) {
  if (v.is_null()) return {};
  if (!json_util::expect_object(v, path, sink)) return {};
  if (v.empty()) return {};
  const json* t = member(v, "type", path, sink, true);
  std::string name;
  if (t == nullptr || !json_util::read_string(*t, child(path, "type"), sink, name)) return {};
  if (name == "none") return {};
  auto type = parse_param_type(name);
  if (!type) {
    sink.add(child(path, "type"), "unknown parameter alternative '" + name + "'");
    return {};
  }
  KernelParams params = param_fields::default_params(*type);
  const auto& fields = param_fields::fields_of(*type);
  for (const auto& f : fields) {
    const json* fv = member(v, f.name.c_str(), path, sink, f.required);
    if (fv != nullptr) f.decode(params, *fv, child(path, f.name), sink);
  }
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (it.key() == "type") continue;
    bool known = false;
    for (const auto& f : fields) known |= f.name == it.key();
    if (!known) sink.add(child(path, it.key()), "unknown field '" + it.key() + "' for parameters " + name);
  }
  return params;
}

DepRule read_deps(const json& v, const std::string& path, IssueSink& sink) {
  DepRule d;
  if (!json_util::expect_object(v, path, sink)) return d;
  if (const json* k = member(v, "kind", path, sink, false)) {
    std::string s;
    if (json_util::read_string(*k, child(path, "kind"), sink, s)) {
      if (s == "None") d.kind = DepKind::none;
      else if (s == "FaceNeighbors") d.kind = DepKind::face_neighbors;
      else sink.add(child(path, "kind"), "unknown dependency kind '" + s + "' (expected None or FaceNeighbors)");
    }
  }
  if (const json* w = member(v, "width", path, sink, false)) {
    std::int64_t width = 0;
    if (json_util::read_int(*w, child(path, "width"), sink, width, 0, INT32_MAX)) d.width = static_cast<std::int32_t>(width);
  }
  if (const json* f = member(v, "faces", path, sink, false)) {
    const std::string fp = child(path, "faces");
    if (json_util::expect_array(*f, fp, sink)) {
      if (f->size() != 6) {
        sink.add(fp, "faces must have exactly 6 entries (Xm, Xp, Ym, Yp, Zm, Zp), got " + std::to_string(f->size()));
      } else {
        for (std::size_t i = 0; i < 6; ++i) json_util::read_bool((*f)[i], child(fp, i), sink, d.faces[i]);
      }
    }
  }
  if (const json* h = member(v, "halo_inputs", path, sink, false)) {
    d.halo_inputs = read_int32_array(*h, child(path, "halo_inputs"), sink);
  }
  return d;
}

GraphReduceSpec read_graph_reduce(const json& v, const std::string& path, IssueSink& sink) {
  GraphReduceSpec g;
  if (!json_util::expect_object(v, path, sink)) return g;
  auto read_i = [&](const char* key, std::int64_t& out) {
    if (const json* x = member(v, key, path, sink, false)) json_util::read_int(*x, child(path, key), sink, out);
  };
  read_i("fan_in", g.fan_in);
  read_i("num_inputs", g.num_inputs);
  read_i("input_base", g.input_base);
  read_i("output_base", g.output_base);
  if (const json* x = member(v, "input_blocks", path, sink, false)) g.input_blocks = read_int32_array(*x, child(path, "input_blocks"), sink);
  if (const json* x = member(v, "output_blocks", path, sink, false)) g.output_blocks = read_int32_array(*x, child(path, "output_blocks"), sink);
  if (const json* x = member(v, "group_offsets", path, sink, false)) {
    const std::string op = child(path, "group_offsets");
    if (json_util::expect_array(*x, op, sink)) {
      for (std::size_t i = 0; i < x->size(); ++i) {
        std::int64_t o = 0;
        json_util::read_int(x->at(i), child(op, i), sink, o);
        g.group_offsets.push_back(o);
      }
    }
  }
  // VAL-7.
  if (g.fan_in < 1) sink.add(child(path, "fan_in"), "fan_in must be >= 1 (VAL-7)");
  if (g.num_inputs < 1) sink.add(child(path, "num_inputs"), "num_inputs must be >= 1 (VAL-7)");
  if (g.num_inputs > INT32_MAX) sink.add(child(path, "num_inputs"), "num_inputs too large");
  if (!g.input_blocks.empty() && static_cast<std::int64_t>(g.input_blocks.size()) != g.num_inputs) {
    sink.add(child(path, "input_blocks"), "input_blocks must have exactly num_inputs (" +
                                               std::to_string(g.num_inputs) + ") entries (VAL-7)");
  }
  bool offsets_ok = true;
  if (!g.group_offsets.empty()) {
    const auto& o = g.group_offsets;
    if (o.front() != 0 || o.back() != g.num_inputs || o.size() < 2) {
      sink.add(child(path, "group_offsets"), "group_offsets must start at 0 and end at num_inputs (VAL-7)");
      offsets_ok = false;
    }
    for (std::size_t i = 1; i < o.size(); ++i) {
      if (o[i] <= o[i - 1]) {
        sink.add(child(path, "group_offsets"), "group_offsets must be strictly increasing (VAL-7)");
        offsets_ok = false;
        break;
      }
    }
  }
  if (!g.output_blocks.empty() && offsets_ok && g.fan_in >= 1 && g.num_inputs >= 1 &&
      static_cast<std::int64_t>(g.output_blocks.size()) != g.group_count()) {
    sink.add(child(path, "output_blocks"), "output_blocks must have one entry per group (" +
                                                std::to_string(g.group_count()) + ") (VAL-7)");
  }
  return g;
}

TaskTemplate read_template(const json& v, const std::string& path, IssueSink& sink, std::size_t n_cov) {
  TaskTemplate t;
  if (!json_util::expect_object(v, path, sink)) return t;
  if (const json* x = member(v, "name", path, sink, true)) json_util::read_string(*x, child(path, "name"), sink, t.name);
  t.plane = read_plane(v, path, sink);
  if (const json* x = member(v, "kernel", path, sink, true)) json_util::read_string(*x, child(path, "kernel"), sink, t.kernel);
  if (const json* x = member(v, "domain", path, sink, true)) t.domain = read_domain(*x, child(path, "domain"), sink);
  if (const json* x = member(v, "inputs", path, sink, false)) {
    const std::string ip = child(path, "inputs");
    if (json_util::expect_array(*x, ip, sink)) {
      for (std::size_t i = 0; i < x->size(); ++i) {
        const json& in = (*x)[i];
        const std::string p = child(ip, i);
        FieldRef f;
        if (json_util::expect_object(in, p, sink)) {
          if (const json* fld = member(in, "field", p, sink, true)) json_util::read_int32(*fld, child(p, "field"), sink, f.field);
          if (const json* ver = member(in, "version", p, sink, false)) json_util::read_int32(*ver, child(p, "version"), sink, f.version);
          if (const json* dom = member(in, "domain", p, sink, false); dom != nullptr && !dom->is_null()) {
            f.domain = read_domain(*dom, child(p, "domain"), sink);
          }
        }
        t.inputs.push_back(std::move(f));
      }
    }
  }
  if (const json* x = member(v, "outputs", path, sink, false)) {
    const std::string op = child(path, "outputs");
    if (json_util::expect_array(*x, op, sink)) {
      for (std::size_t i = 0; i < x->size(); ++i) {
        const json& out = (*x)[i];
        const std::string p = child(op, i);
        OutputRef o;
        if (json_util::expect_object(out, p, sink)) {
          if (const json* fld = member(out, "field", p, sink, true)) json_util::read_int32(*fld, child(p, "field"), sink, o.field);
          if (const json* ver = member(out, "version", p, sink, false)) json_util::read_int32(*ver, child(p, "version"), sink, o.version);
          for (const char* k : kLegacySizeKeys) {
            if (out.contains(k)) sink.add(child(p, k), std::string("legacy byte-size key '") + k + "' is not accepted (PLAN-12)");
          }
          if (const json* buf = member(out, "buffer", p, sink, true)) o.buffer = read_buffer(*buf, child(p, "buffer"), sink);
        }
        t.outputs.push_back(std::move(o));
      }
    }
  }
  if (const json* x = member(v, "deps", path, sink, true)) t.deps = read_deps(*x, child(path, "deps"), sink);
  if (const json* x = member(v, "params", path, sink, false)) t.params = read_params(*x, child(path, "params"), sink);
  if (const json* x = member(v, "covered_boxes_ref", path, sink, false)) {
    std::int64_t r = -1;
    if (json_util::read_int(*x, child(path, "covered_boxes_ref"), sink, r)) {
      if (r < -1 || r >= static_cast<std::int64_t>(n_cov)) {
        sink.add(child(path, "covered_boxes_ref"), "covered_boxes_ref " + std::to_string(r) +
                                                     " must be -1 or an index below " + std::to_string(n_cov) + " (VAL-5)");
      } else {
        t.covered_boxes_ref = static_cast<std::int32_t>(r);
      }
    }
  }
  const json* gr = member(v, "graph_reduce", path, sink, false);
  if (gr != nullptr && gr->is_null()) gr = nullptr;
  if (t.plane == Plane::graph) {
    if (gr == nullptr) sink.add(child(path, "graph_reduce"), "graph template requires graph_reduce (VAL-6)");
    else t.graph_reduce = read_graph_reduce(*gr, child(path, "graph_reduce"), sink);
  }
  // VAL-4.
  if (t.deps.kind == DepKind::face_neighbors && t.inputs.empty()) {
    sink.add(child(path, "deps"), "FaceNeighbors dependencies require at least one input (VAL-4)");
  }
  for (std::size_t i = 0; i < t.deps.halo_inputs.size(); ++i) {
    const auto h = t.deps.halo_inputs[i];
    if (h < 0 || h >= static_cast<std::int64_t>(t.inputs.size())) {
      sink.add(child(child(child(path, "deps"), "halo_inputs"), i),
               "halo_inputs entry " + std::to_string(h) + " out of range [0, " + std::to_string(t.inputs.size()) + ") (VAL-4)");
    }
  }
  return t;
}

}  // namespace

Plan decode_plan(std::string_view text) {
  IssueSink sink;
  json doc;
  Plan plan;
  if (!json_util::parse(text, doc, sink) || !json_util::expect_object(doc, "", sink)) throw PlanError(sink.issues);
  if (const json* s = member(doc, "schema", "", sink, true)) {
    std::string id;
    if (json_util::read_string(*s, "/schema", sink, id)) {
      if (id != kPlanSchemaId) {
        sink.add("/schema", "plan schema '" + id + "' is not implemented by this runtime (expected '" +
                                std::string(kPlanSchemaId) + "'); rebuild the plan with a matching SDK (PLAN-15)");
      }
      plan.schema = id;
    }
  }
  if (const json* cov = member(doc, "shared_covered_boxes", "", sink, false); cov != nullptr && !cov->is_null()) {
    if (json_util::expect_array(*cov, "/shared_covered_boxes", sink)) {
      for (std::size_t i = 0; i < cov->size(); ++i) {
        const std::string lp = child("/shared_covered_boxes", i);
        std::vector<IndexBox> list;
        if (json_util::expect_array((*cov)[i], lp, sink)) {
          for (std::size_t b = 0; b < (*cov)[i].size(); ++b) {
            list.push_back(decode_index_box((*cov)[i][b], child(lp, b), sink));
          }
        }
        plan.shared_covered_boxes.push_back(std::move(list));
      }
    }
  }
  const json* stages = member(doc, "stages", "", sink, true);
  if (stages != nullptr && json_util::expect_array(*stages, "/stages", sink)) {
    plan.stages.reserve(stages->size());
    for (std::size_t s = 0; s < stages->size() && !sink.full(); ++s) {
      const json& sj = (*stages)[s];
      const std::string sp = child("/stages", s);
      sink.stage = static_cast<int>(s);
      sink.template_index = -1;
      Stage st;
      if (json_util::expect_object(sj, sp, sink)) {
        if (const json* x = member(sj, "name", sp, sink, true)) json_util::read_string(*x, child(sp, "name"), sink, st.name);
        st.plane = read_plane(sj, sp, sink);
        if (const json* x = member(sj, "after", sp, sink, false)) st.after = read_int32_array(*x, child(sp, "after"), sink);
        if (const json* x = member(sj, "templates", sp, sink, false)) {
          const std::string tp = child(sp, "templates");
          if (json_util::expect_array(*x, tp, sink)) {
            for (std::size_t t = 0; t < x->size() && !sink.full(); ++t) {
              sink.template_index = static_cast<int>(t);
              st.templates.push_back(read_template((*x)[t], child(tp, t), sink, plan.shared_covered_boxes.size()));
            }
            sink.template_index = -1;
          }
        }
      }
      plan.stages.push_back(std::move(st));
    }
  }
  if (!sink.issues.empty()) throw PlanError(sink.issues);
  return plan;
}

namespace {

json encode_domain(const Domain& d) {
  json j = {{"step", d.step}, {"level", d.level}};
  j["blocks"] = d.blocks ? json(*d.blocks) : json(nullptr);
  return j;
}

json encode_buffer(const BufferSpec& b) {
  json shape;
  switch (b.shape) {
    case ShapeKind::block: shape = {{"kind", "block"}, {"components", b.components}}; break;
    case ShapeKind::fixed: shape = {{"kind", "fixed"}, {"extents", b.extents}}; break;
    case ShapeKind::like_input: shape = {{"kind", "like_input"}, {"input_index", b.input_index}}; break;
    case ShapeKind::dynamic: {
      json ub;
      switch (b.bound) {
        case BoundKind::literal: ub = {{"kind", "literal"}, {"value", b.literal}}; break;
        case BoundKind::like_input: ub = {{"kind", "like_input"}, {"input_index", b.bound_input}}; break;
        case BoundKind::backend_chunk: ub = {{"kind", "backend_chunk"}, {"input_index", b.bound_input}}; break;
        case BoundKind::amr_subbox_pack: ub = {{"kind", "amr_subbox_pack"}}; break;
      }
      shape = {{"kind", "dynamic"}, {"upper_bound", ub}};
      break;
    }
  }
  return {{"dtype", scalar_name(b.dtype)}, {"shape", shape},
          {"init", b.init == InitPolicy::zero ? "zero" : "uninitialized"}};
}

json encode_params(const KernelParams& p) {
  const ParamType type = param_type_of(p);
  if (type == ParamType::none) return json::object();
  json j = {{"type", param_type_name(type)}};
  for (const auto& f : param_fields::fields_of(type)) f.encode(p, j);
  return j;
}

}  // namespace

std::string encode_plan(const Plan& plan) {
  json stages = json::array();
  for (const auto& st : plan.stages) {
    json templates = json::array();
    for (const auto& t : st.templates) {
      json inputs = json::array();
      for (const auto& in : t.inputs) {
        inputs.push_back({{"field", in.field}, {"version", in.version},
                          {"domain", in.domain ? encode_domain(*in.domain) : json(nullptr)}});
      }
      json outputs = json::array();
      for (const auto& o : t.outputs) {
        outputs.push_back({{"field", o.field}, {"version", o.version}, {"buffer", encode_buffer(o.buffer)}});
      }
      json gr = nullptr;
      if (t.graph_reduce) {
        const auto& g = *t.graph_reduce;
        gr = {{"fan_in", g.fan_in}, {"num_inputs", g.num_inputs}, {"input_base", g.input_base},
              {"output_base", g.output_base}, {"input_blocks", g.input_blocks},
              {"output_blocks", g.output_blocks}, {"group_offsets", g.group_offsets}};
      }
      templates.push_back({{"name", t.name},
                           {"plane", plane_name(t.plane)},
                           {"kernel", t.kernel},
                           {"domain", encode_domain(t.domain)},
                           {"inputs", inputs},
                           {"outputs", outputs},
                           {"deps",
                            {{"kind", t.deps.kind == DepKind::none ? "None" : "FaceNeighbors"},
                             {"width", t.deps.width},
                             {"faces", t.deps.faces},
                             {"halo_inputs", t.deps.halo_inputs}}},
                           {"params", encode_params(t.params)},
                           {"covered_boxes_ref", t.covered_boxes_ref},
                           {"graph_reduce", gr}});
    }
    stages.push_back({{"name", st.name}, {"plane", plane_name(st.plane)}, {"after", st.after}, {"templates", templates}});
  }
  json cov = json::array();
  for (const auto& list : plan.shared_covered_boxes) {
    json l = json::array();
    for (const auto& b : list) l.push_back({b.lo, b.hi});
    cov.push_back(l);
  }
  return json{{"schema", plan.schema}, {"stages", stages}, {"shared_covered_boxes", cov}}.dump();
}

}  // namespace kangaroo
