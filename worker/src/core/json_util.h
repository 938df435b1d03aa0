// Private helpers for path-aware JSON decoding with issue collection.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kangaroo/core/plan_json.h"

namespace kangaroo::json_util {

using json = nlohmann::json;

// Collects issues with the current stage/template position.
struct IssueSink {
  std::vector<PlanIssue> issues;
  int stage = -1;
  int template_index = -1;
  // Decoding stops after this many issues so hostile documents stay cheap.
  static constexpr std::size_t kMaxIssues = 200;

  void add(const std::string& path, const std::string& message) {
    if (issues.size() < kMaxIssues) issues.push_back({path, stage, template_index, message});
  }
  bool full() const { return issues.size() >= kMaxIssues; }
};

inline std::string child(const std::string& path, const std::string& key) {
  std::string escaped;
  for (char c : key) {
    if (c == '~') escaped += "~0";
    else if (c == '/') escaped += "~1";
    else escaped += c;
  }
  return path + "/" + escaped;
}
inline std::string child(const std::string& path, std::size_t index) {
  return path + "/" + std::to_string(index);
}

inline const char* type_name(const json& v) { return v.type_name(); }

// Returns the member or nullptr; reports a missing required key.
inline const json* member(const json& obj, const char* key, const std::string& path,
                          IssueSink& sink, bool required) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) sink.add(child(path, key), std::string("missing required key '") + key + "'");
    return nullptr;
  }
  return &*it;
}

inline bool expect_object(const json& v, const std::string& path, IssueSink& sink) {
  if (!v.is_object()) {
    sink.add(path, std::string("expected an object, got ") + type_name(v));
    return false;
  }
  return true;
}

inline bool expect_array(const json& v, const std::string& path, IssueSink& sink) {
  if (!v.is_array()) {
    sink.add(path, std::string("expected an array, got ") + type_name(v));
    return false;
  }
  return true;
}

inline bool read_int(const json& v, const std::string& path, IssueSink& sink, std::int64_t& out,
                     std::int64_t lo = std::numeric_limits<std::int64_t>::min(),
                     std::int64_t hi = std::numeric_limits<std::int64_t>::max()) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      sink.add(path, "integer out of range");
      return false;
    }
    out = static_cast<std::int64_t>(u);
  } else if (v.is_number_integer()) {
    out = v.get<std::int64_t>();
  } else {
    sink.add(path, std::string("expected an integer, got ") + type_name(v));
    return false;
  }
  if (out < lo || out > hi) {
    sink.add(path, "integer " + std::to_string(out) + " out of range [" + std::to_string(lo) +
                       ", " + std::to_string(hi) + "]");
    return false;
  }
  return true;
}

inline bool read_int32(const json& v, const std::string& path, IssueSink& sink, std::int32_t& out) {
  std::int64_t t = 0;
  if (!read_int(v, path, sink, t, std::numeric_limits<std::int32_t>::min(),
                std::numeric_limits<std::int32_t>::max())) {
    return false;
  }
  out = static_cast<std::int32_t>(t);
  return true;
}

inline bool read_double(const json& v, const std::string& path, IssueSink& sink, double& out) {
  if (!v.is_number()) {
    sink.add(path, std::string("expected a number, got ") + type_name(v));
    return false;
  }
  out = v.get<double>();
  return true;
}

// Booleans also accept 0/1 (VAL-3).
inline bool read_bool(const json& v, const std::string& path, IssueSink& sink, bool& out) {
  if (v.is_boolean()) {
    out = v.get<bool>();
    return true;
  }
  if (v.is_number_integer() || v.is_number_unsigned()) {
    const auto i = v.get<std::int64_t>();
    if (i == 0 || i == 1) {
      out = i == 1;
      return true;
    }
  }
  sink.add(path, std::string("expected a boolean (or 0/1), got ") + v.dump());
  return false;
}

inline bool read_string(const json& v, const std::string& path, IssueSink& sink, std::string& out) {
  if (!v.is_string()) {
    sink.add(path, std::string("expected a string, got ") + type_name(v));
    return false;
  }
  out = v.get<std::string>();
  return true;
}

// Parses text; reports a syntax error as one issue at the document root.
inline bool parse(std::string_view text, json& out, IssueSink& sink) {
  // Plans nest a handful of levels; a cap keeps hostile input from exhausting
  // the stack in recursive JSON handling.
  constexpr int kMaxDepth = 64;
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) {
        sink.add("", "JSON nesting deeper than " + std::to_string(kMaxDepth) + " levels");
        return false;
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  out = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (out.is_discarded()) {
    // Re-parse with exceptions only for the position message.
    try {
      const json reparsed = json::parse(text.begin(), text.end());
      (void)reparsed;
    } catch (const json::exception& e) {
      sink.add("", std::string("malformed JSON: ") + e.what());
      return false;
    }
    sink.add("", "malformed JSON");
    return false;
  }
  return true;
}

}  // namespace kangaroo::json_util
