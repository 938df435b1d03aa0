#include "kangaroo/core/runmeta.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "json_util.h"
#include "kangaroo/core/error.h"

namespace kangaroo {

using json_util::child;
using json_util::IssueSink;
using json_util::json;

std::uint64_t IndexBox::cells() const {
  if (empty()) return 0;
  std::uint64_t n = 1;
  for (int a = 0; a < 3; ++a) n *= static_cast<std::uint64_t>(extent(a));
  return n;
}

IndexBox IndexBox::intersect(const IndexBox& o) const {
  IndexBox r;
  for (int a = 0; a < 3; ++a) {
    r.lo[a] = std::max(lo[a], o.lo[a]);
    r.hi[a] = std::min(hi[a], o.hi[a]);
  }
  return r;
}

std::string IndexBox::to_string() const {
  return "[(" + std::to_string(lo[0]) + "," + std::to_string(lo[1]) + "," + std::to_string(lo[2]) +
         "),(" + std::to_string(hi[0]) + "," + std::to_string(hi[1]) + "," + std::to_string(hi[2]) +
         ")]";
}

const StepMeta* RunMeta::find_step(std::int64_t label) const {
  for (const auto& s : steps) {
    if (s.step == label) return &s;
  }
  return nullptr;
}

const LevelMeta* RunMeta::find_level(std::int64_t step, std::int64_t level) const {
  const StepMeta* s = find_step(step);
  if (s == nullptr || level < 0 || level >= static_cast<std::int64_t>(s->levels.size())) return nullptr;
  return &s->levels[static_cast<std::size_t>(level)];
}

double cell_low_edge(const LevelGeom& g, int axis, std::int64_t index) {
  return g.x0[axis] + static_cast<double>(index - g.index_origin[axis]) * g.dx[axis];
}

std::int64_t coord_to_index(const LevelGeom& g, int axis, double x) {
  if (g.dx[axis] == 0.0) return g.index_origin[axis];
  const double f = std::floor((x - g.x0[axis]) / g.dx[axis]);
  // Saturate: coordinates far outside the domain must not overflow.
  const double clamped = std::clamp(f, -4.0e18, 4.0e18);
  return static_cast<std::int64_t>(clamped) + g.index_origin[axis];
}

namespace {
std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
}  // namespace

std::int64_t cumulative_ratio(const StepMeta& step, int coarse, int fine, int axis) {
  // Saturate: any ratio beyond the int32 index range floors every index to
  // the same coarse cell, so capping keeps results exact without overflow.
  constexpr std::int64_t kCap = std::int64_t{1} << 40;
  std::int64_t r = 1;
  for (int l = coarse; l < fine; ++l) {
    const std::int64_t f = std::max<std::int64_t>(1, step.levels[static_cast<std::size_t>(l)].geom.ref_ratio[axis]);
    r = r > kCap / f ? kCap : r * f;
  }
  return r;
}

IndexBox coarsen_box(const StepMeta& step, const IndexBox& fb, int fine, int coarse) {
  const auto& gf = step.levels[static_cast<std::size_t>(fine)].geom;
  const auto& gc = step.levels[static_cast<std::size_t>(coarse)].geom;
  IndexBox r;
  for (int a = 0; a < 3; ++a) {
    const std::int64_t R = cumulative_ratio(step, coarse, fine, a);
    r.lo[a] = static_cast<std::int32_t>(floor_div(fb.lo[a] - gf.index_origin[a], R) + gc.index_origin[a]);
    r.hi[a] = static_cast<std::int32_t>(floor_div(std::int64_t{fb.hi[a]} - gf.index_origin[a] + 1, R) +
                                        gc.index_origin[a] - 1);
  }
  return r;
}

std::vector<IndexBox> volume_coverage(const StepMeta& step, int level) {
  std::vector<IndexBox> out;
  for (int f = level + 1; f < static_cast<int>(step.levels.size()); ++f) {
    for (const auto& b : step.levels[static_cast<std::size_t>(f)].boxes) {
      out.push_back(coarsen_box(step, b, f, level));
    }
  }
  return out;
}

bool is_covered(std::span<const IndexBox> covered, std::int64_t i, std::int64_t j, std::int64_t k) {
  for (const auto& b : covered) {
    if (b.contains(i, j, k)) return true;
  }
  return false;
}

namespace {

void check_structure(const RunMeta& meta, IssueSink& sink) {
  std::set<std::int32_t> labels;
  for (std::size_t s = 0; s < meta.steps.size(); ++s) {
    const auto& st = meta.steps[s];
    const std::string sp = "/steps/" + std::to_string(s);
    if (!labels.insert(st.step).second) {
      sink.add(sp + "/step", "duplicate step label " + std::to_string(st.step) + " (DATA-6)");
    }
    for (std::size_t l = 0; l < st.levels.size(); ++l) {
      const auto& lv = st.levels[l];
      const std::string lp = sp + "/levels/" + std::to_string(l);
      for (int a = 0; a < 3; ++a) {
        if (lv.geom.ref_ratio[a] < 1) {
          sink.add(lp + "/geom/ref_ratio", "refinement ratio must be a positive integer");
        }
        if (!std::isfinite(lv.geom.dx[a]) || !std::isfinite(lv.geom.x0[a])) {
          sink.add(lp + "/geom", "dx and x0 must be finite");
          break;
        }
      }
      for (std::size_t b = 0; b < lv.boxes.size(); ++b) {
        const auto& box = lv.boxes[b];
        if (box.empty()) {
          sink.add(lp + "/boxes/" + std::to_string(b),
                   "block box " + box.to_string() + " must have a positive extent on every axis (DATA-5)");
          continue;
        }
        if (l == 0) continue;
        // COV-3: fine boxes align to the ratio from the next coarser level.
        const auto& coarse = st.levels[l - 1].geom;
        for (int a = 0; a < 3; ++a) {
          const std::int64_t r = coarse.ref_ratio[a];
          if (r < 1) break;
          const std::int64_t o = lv.geom.index_origin[a];
          if ((box.lo[a] - o) % r != 0 || (std::int64_t{box.hi[a]} + 1 - o) % r != 0) {
            sink.add(lp + "/boxes/" + std::to_string(b),
                     "fine box not aligned to refinement ratio: " + box.to_string() + " on axis " +
                         std::to_string(a) + " with ratio " + std::to_string(r) + " (COV-3)");
            break;
          }
        }
      }
    }
  }
  if (meta.coord_sys < 0 || meta.coord_sys > 2) {
    sink.add("/coord_sys", "coord_sys must be 0 (Cartesian), 1 (RZ) or 2 (spherical)");
  }
}

template <class T, class Read>
void read_triple(const json& v, const std::string& path, IssueSink& sink, std::array<T, 3>& out,
                 Read read) {
  if (!v.is_array() || v.size() != 3) {
    sink.add(path, "expected an array of 3 values");
    return;
  }
  for (std::size_t a = 0; a < 3; ++a) read(v[a], child(path, a), sink, out[a]);
}

IndexBox read_box(const json& v, const std::string& path, IssueSink& sink) {
  IndexBox box;
  if (!v.is_array() || v.size() != 2) {
    sink.add(path, "a box must be [[ilo,jlo,klo],[ihi,jhi,khi]]");
    return box;
  }
  read_triple(v[0], child(path, 0), sink, box.lo, json_util::read_int32);
  read_triple(v[1], child(path, 1), sink, box.hi, json_util::read_int32);
  return box;
}

}  // namespace

// Shared by the plan decoder for shared_covered_boxes.
IndexBox decode_index_box(const json& v, const std::string& path, IssueSink& sink) {
  return read_box(v, path, sink);
}

RunMeta decode_runmeta(std::string_view text) {
  IssueSink sink;
  json doc;
  RunMeta meta;
  if (!json_util::parse(text, doc, sink) || !json_util::expect_object(doc, "", sink)) {
    throw PlanError(sink.issues);
  }
  if (const json* steps = json_util::member(doc, "steps", "", sink, true)) {
    if (json_util::expect_array(*steps, "/steps", sink)) {
      for (std::size_t s = 0; s < steps->size() && !sink.full(); ++s) {
        const json& sj = (*steps)[s];
        const std::string sp = child("/steps", s);
        if (!json_util::expect_object(sj, sp, sink)) continue;
        StepMeta st;
        if (const json* v = json_util::member(sj, "step", sp, sink, true)) {
          json_util::read_int32(*v, child(sp, "step"), sink, st.step);
        }
        const json* levels = json_util::member(sj, "levels", sp, sink, true);
        if (levels != nullptr && json_util::expect_array(*levels, child(sp, "levels"), sink)) {
          for (std::size_t l = 0; l < levels->size() && !sink.full(); ++l) {
            const json& lj = (*levels)[l];
            const std::string lp = child(child(sp, "levels"), l);
            if (!json_util::expect_object(lj, lp, sink)) continue;
            LevelMeta lv;
            if (const json* g = json_util::member(lj, "geom", lp, sink, true)) {
              const std::string gp = child(lp, "geom");
              if (json_util::expect_object(*g, gp, sink)) {
                if (const json* v = json_util::member(*g, "dx", gp, sink, true))
                  read_triple(*v, child(gp, "dx"), sink, lv.geom.dx, json_util::read_double);
                if (const json* v = json_util::member(*g, "x0", gp, sink, true))
                  read_triple(*v, child(gp, "x0"), sink, lv.geom.x0, json_util::read_double);
                if (const json* v = json_util::member(*g, "index_origin", gp, sink, false))
                  read_triple(*v, child(gp, "index_origin"), sink, lv.geom.index_origin,
                              json_util::read_int32);
                if (const json* v = json_util::member(*g, "is_periodic", gp, sink, false))
                  read_triple(*v, child(gp, "is_periodic"), sink, lv.geom.is_periodic,
                              json_util::read_bool);
                if (const json* v = json_util::member(*g, "ref_ratio", gp, sink, true)) {
                  if (v->is_number()) {
                    std::int32_t r = 1;
                    json_util::read_int32(*v, child(gp, "ref_ratio"), sink, r);
                    lv.geom.ref_ratio = {r, r, r};
                  } else {
                    read_triple(*v, child(gp, "ref_ratio"), sink, lv.geom.ref_ratio,
                                json_util::read_int32);
                  }
                }
              }
            }
            const json* boxes = json_util::member(lj, "boxes", lp, sink, true);
            if (boxes != nullptr && json_util::expect_array(*boxes, child(lp, "boxes"), sink)) {
              lv.boxes.reserve(boxes->size());
              for (std::size_t b = 0; b < boxes->size(); ++b) {
                lv.boxes.push_back(read_box((*boxes)[b], child(child(lp, "boxes"), b), sink));
              }
            }
            st.levels.push_back(std::move(lv));
          }
        }
        meta.steps.push_back(std::move(st));
      }
    }
  }
  if (const json* ps = json_util::member(doc, "particle_species", "", sink, false)) {
    if (ps->is_object()) {
      for (auto it = ps->begin(); it != ps->end(); ++it) {
        std::int64_t n = 0;
        if (json_util::read_int(it.value(), child("/particle_species", it.key()), sink, n)) {
          meta.particle_species.emplace_back(it.key(), n);
        }
      }
    } else if (ps->is_array()) {
      for (std::size_t i = 0; i < ps->size(); ++i) {
        const json& e = (*ps)[i];
        const std::string ep = child("/particle_species", i);
        std::int64_t n = 0;
        std::string name;
        if (!e.is_array() || e.size() != 2) {
          sink.add(ep, "particle_species entries must be [name, count] pairs");
          continue;
        }
        if (json_util::read_string(e[0], child(ep, 0), sink, name) &&
            json_util::read_int(e[1], child(ep, 1), sink, n)) {
          meta.particle_species.emplace_back(name, n);
        }
      }
    } else if (!ps->is_null()) {
      sink.add("/particle_species", "particle_species must be an object or a list of [name, count] pairs");
    }
  }
  if (const json* cs = json_util::member(doc, "coord_sys", "", sink, false)) {
    std::int64_t c = 0;
    if (json_util::read_int(*cs, "/coord_sys", sink, c, 0, 2)) meta.coord_sys = static_cast<int>(c);
  }
  if (sink.issues.empty()) check_structure(meta, sink);
  if (!sink.issues.empty()) throw PlanError(sink.issues);
  return meta;
}

void validate_runmeta(const RunMeta& meta) {
  IssueSink sink;
  check_structure(meta, sink);
  if (!sink.issues.empty()) throw PlanError(sink.issues);
}

std::string encode_runmeta(const RunMeta& meta) {
  json doc;
  json steps = json::array();
  for (const auto& st : meta.steps) {
    json levels = json::array();
    for (const auto& lv : st.levels) {
      json boxes = json::array();
      for (const auto& b : lv.boxes) boxes.push_back({b.lo, b.hi});
      levels.push_back({{"geom",
                         {{"dx", lv.geom.dx},
                          {"x0", lv.geom.x0},
                          {"index_origin", lv.geom.index_origin},
                          {"is_periodic", lv.geom.is_periodic},
                          {"ref_ratio", lv.geom.ref_ratio}}},
                        {"boxes", boxes}});
    }
    steps.push_back({{"step", st.step}, {"levels", levels}});
  }
  doc["steps"] = steps;
  json species = json::object();
  for (const auto& [name, n] : meta.particle_species) species[name] = n;
  doc["particle_species"] = species;
  doc["coord_sys"] = meta.coord_sys;
  return doc.dump();
}

}  // namespace kangaroo
