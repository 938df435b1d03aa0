// JSON-Lines event log (EVT-1..9). Each event is one line appended to the
// file; rank r > 0 writes to a sibling `<stem>.locality<r><ext>` (EVT-2).
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace kangaroo {

struct TaskEvent {
  std::string_view run;
  int stage = 0;
  int template_index = 0;
  std::int32_t block = 0;
  std::string_view name;
  std::string_view kernel;
  std::string_view plane;   // chunk | graph
  std::string_view status;  // start | end | error
  std::string_view phase;   // empty for the task itself, else a sub-span (EVT-5)
  std::int32_t step = 0;
  std::int32_t level = 0;
  int worker = 0;
  double start = 0.0;
  double end = 0.0;
};

struct DataflowEvent {
  std::string_view op;    // get, put, load, write
  std::string_view mode;  // local, remote or a backend tag
  std::string_view status;
  std::int32_t step = 0, level = 0, field = 0, version = 0, block = 0;
  int target_locality = 0;
  int worker = 0;
  std::uint64_t bytes = 0;
  double start = 0.0;
  double end = 0.0;
};

class EventLog {
 public:
  // Returns nullptr for an empty path. A file that cannot be opened disables
  // logging with one warning on stderr instead of failing the run (EVT-9).
  static std::unique_ptr<EventLog> open(const std::string& path, int rank);
  // `<stem>.locality<r><ext>` for r > 0 (EVT-2).
  static std::string path_for_rank(const std::string& path, int rank);
  static double now();  // seconds since the Unix epoch

  explicit EventLog(std::FILE* file, int rank);
  ~EventLog();
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  void task(const TaskEvent& e);
  void phase(std::string_view name, std::string_view category, std::string_view status, double start, double end);
  void dataflow(const DataflowEvent& e);
  void flush();

 private:
  void write_line(const char* data, std::size_t size);

  std::FILE* file_;
  int rank_;
  std::mutex mutex_;
};

// Appends `s` to `out` as a JSON string literal (quotes included).
void append_json_string(std::string& out, std::string_view s);

}  // namespace kangaroo
