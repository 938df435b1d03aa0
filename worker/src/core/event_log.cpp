#include "kangaroo/core/event_log.h"

#include <chrono>
#include <cinttypes>
#include <filesystem>
#include <iostream>

namespace kangaroo {

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

std::string EventLog::path_for_rank(const std::string& path, int rank) {
  if (rank <= 0) return path;
  const std::filesystem::path p(path);
  const std::string ext = p.extension().string();
  const std::string suffix = ".locality" + std::to_string(rank);
  if (ext.empty()) return path + suffix;
  return (p.parent_path() / (p.stem().string() + suffix + ext)).string();
}

double EventLog::now() {
  const auto t = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(t).count()) * 1e-6;
}

std::unique_ptr<EventLog> EventLog::open(const std::string& path, int rank) {
  if (path.empty()) return nullptr;
  const std::string target = path_for_rank(path, rank);
  std::FILE* f = std::fopen(target.c_str(), "ab");
  if (f == nullptr) {
    std::cerr << "warning: event log '" << target << "' cannot be opened; continuing without it\n";
    return nullptr;
  }
  return std::make_unique<EventLog>(f, rank);
}

EventLog::EventLog(std::FILE* file, int rank) : file_(file), rank_(rank) {
  // A large stdio buffer keeps per-event cost to a memcpy.
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
}

EventLog::~EventLog() {
  if (file_ != nullptr) std::fclose(file_);
}

void EventLog::write_line(const char* data, std::size_t size) {
  std::lock_guard lock(mutex_);
  std::fwrite(data, 1, size, file_);
}

void EventLog::flush() {
  std::lock_guard lock(mutex_);
  std::fflush(file_);
}

void EventLog::task(const TaskEvent& e) {
  thread_local std::string line;
  line.clear();
  char num[512];
  line += R"({"type":"task","id":)";
  std::string id(e.run);
  id += ':' + std::to_string(e.stage) + ':' + std::to_string(e.template_index) + ':' + std::to_string(e.block);
  std::string name(e.name);
  if (!e.phase.empty()) {
    id += ':';
    id += e.phase;
    name += '/';
    name += e.phase;
  }
  append_json_string(line, id);
  line += ",\"name\":";
  append_json_string(line, name);
  line += ",\"kernel\":";
  append_json_string(line, e.kernel);
  line += ",\"plane\":";
  append_json_string(line, e.plane);
  line += ",\"status\":";
  append_json_string(line, e.status);
  std::snprintf(num, sizeof num,
                ",\"stage\":%d,\"template\":%d,\"block\":%" PRId32 ",\"step\":%" PRId32 ",\"level\":%" PRId32
                ",\"locality\":%d,\"worker\":\"worker-%d\",\"ts\":%.6f,\"start\":%.6f,\"end\":%.6f}\n",
                e.stage, e.template_index, e.block, e.step, e.level, rank_, e.worker, e.end > 0 ? e.end : e.start,
                e.start, e.end);
  line += num;
  write_line(line.data(), line.size());
}

void EventLog::phase(std::string_view name, std::string_view category, std::string_view status, double start,
                     double end) {
  std::string line = R"({"type":"phase","name":)";
  append_json_string(line, name);
  line += ",\"category\":";
  append_json_string(line, category);
  line += ",\"status\":";
  append_json_string(line, status);
  char num[256];
  std::snprintf(num, sizeof num, ",\"locality\":%d,\"worker\":\"main\",\"ts\":%.6f,\"start\":%.6f,\"end\":%.6f}\n",
                rank_, end > 0 ? end : start, start, end);
  line += num;
  write_line(line.data(), line.size());
}

void EventLog::dataflow(const DataflowEvent& e) {
  std::string line = R"({"type":"dataflow","op":)";
  append_json_string(line, e.op);
  line += ",\"mode\":";
  append_json_string(line, e.mode);
  line += ",\"status\":";
  append_json_string(line, e.status);
  char num[512];
  std::snprintf(num, sizeof num,
                ",\"step\":%" PRId32 ",\"level\":%" PRId32 ",\"field\":%" PRId32 ",\"version\":%" PRId32
                ",\"block\":%" PRId32 ",\"locality\":%d,\"target_locality\":%d,\"worker\":\"worker-%d\",\"bytes\":%" PRIu64
                ",\"elapsed\":%.6f,\"ts\":%.6f,\"start\":%.6f,\"end\":%.6f}\n",
                e.step, e.level, e.field, e.version, e.block, rank_, e.target_locality, e.worker, e.bytes,
                e.end - e.start, e.end, e.start, e.end);
  line += num;
  write_line(line.data(), line.size());
}

}  // namespace kangaroo
