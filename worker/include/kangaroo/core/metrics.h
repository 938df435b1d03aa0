// Prometheus text exposition (format 0.0.4) for every long-running process.
//
// A small registry of counter, gauge and histogram families with label sets.
// Hot paths keep a pointer to their series (`family.with({...})`) and update it
// with atomic operations; only series creation and rendering take the family
// lock. Rendering checks nothing a scraper would refuse: names and label names
// are validated when the family is created and label values are escaped.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kangaroo {

enum class MetricType { counter, gauge, histogram };

class MetricSeries {
 public:
  explicit MetricSeries(std::size_t buckets) : bucket_counts_(buckets) {}
  void add(double v);      // counters: v >= 0; gauges: any sign
  void set(double v);      // gauges only
  void observe(double v);  // histograms: one sample
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  friend class MetricFamily;
  std::atomic<double> value_{0.0};  // counter/gauge value, histogram sum
  std::atomic<std::uint64_t> count_{0};
  std::vector<std::atomic<std::uint64_t>> bucket_counts_;  // non-cumulative
  const std::vector<double>* bounds_ = nullptr;
};

class MetricFamily {
 public:
  MetricFamily(std::string name, std::string help, MetricType type, std::vector<std::string> label_names,
               std::vector<double> bounds);
  // The series for these label values (created on first use; the pointer stays
  // valid as long as the family). Throws std::invalid_argument when the number
  // of values differs from the label names.
  MetricSeries& with(const std::vector<std::string>& values);
  MetricSeries& series() { return with({}); }
  void render(std::string& out) const;
  const std::string& name() const { return name_; }

 private:
  std::string name_, help_;
  MetricType type_;
  std::vector<std::string> labels_;
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<MetricSeries>> series_;
};

class MetricRegistry {
 public:
  MetricFamily& counter(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  MetricFamily& gauge(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  MetricFamily& histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                          std::vector<std::string> labels = {});
  std::string render() const;

 private:
  MetricFamily& add(std::string name, std::string help, MetricType type, std::vector<std::string> labels,
                    std::vector<double> bounds);
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<MetricFamily>> families_;
};

// Exponential bucket bounds: start, start*factor, ... (count values).
std::vector<double> exponential_buckets(double start, double factor, int count);

}  // namespace kangaroo
