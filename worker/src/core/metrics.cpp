#include "kangaroo/core/metrics.h"

#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace kangaroo {
namespace {

bool valid_name(const std::string& s, bool allow_colon) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    if (!(alpha || (i > 0 && c >= '0' && c <= '9'))) return false;
  }
  return true;
}

void append_number(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out += buf;
  }
}

void append_escaped(std::string& out, const std::string& v) {
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

void append_labels(std::string& out, const std::vector<std::string>& names, const std::vector<std::string>& values,
                   const char* extra_name = nullptr, const std::string& extra_value = {}) {
  if (names.empty() && extra_name == nullptr) return;
  out += '{';
  bool first = true;
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!first) out += ',';
    first = false;
    out += names[i];
    out += "=\"";
    append_escaped(out, values[i]);
    out += '"';
  }
  if (extra_name != nullptr) {
    if (!first) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

void atomic_add(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

}  // namespace

void MetricSeries::add(double v) { atomic_add(value_, v); }
void MetricSeries::set(double v) { value_.store(v, std::memory_order_relaxed); }

void MetricSeries::observe(double v) {
  atomic_add(value_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
  if (bounds_ == nullptr) return;
  std::size_t i = 0;
  while (i < bounds_->size() && v > (*bounds_)[i]) ++i;
  if (i < bucket_counts_.size()) bucket_counts_[i].fetch_add(1, std::memory_order_relaxed);
}

MetricFamily::MetricFamily(std::string name, std::string help, MetricType type, std::vector<std::string> label_names,
                           std::vector<double> bounds)
    : name_(std::move(name)), help_(std::move(help)), type_(type), labels_(std::move(label_names)),
      bounds_(std::move(bounds)) {
  if (!valid_name(name_, true)) throw std::invalid_argument("invalid metric name '" + name_ + "'");
  for (const auto& l : labels_) {
    if (!valid_name(l, false) || l == "le") throw std::invalid_argument("invalid label name '" + l + "' on " + name_);
  }
  for (std::size_t i = 1; i < bounds_.size(); ++i) {
    if (!(bounds_[i] > bounds_[i - 1])) throw std::invalid_argument("histogram bounds must increase on " + name_);
  }
}

MetricSeries& MetricFamily::with(const std::vector<std::string>& values) {
  if (values.size() != labels_.size()) {
    throw std::invalid_argument(name_ + " expects " + std::to_string(labels_.size()) + " label value(s)");
  }
  std::lock_guard lock(mu_);
  auto& slot = series_[values];
  if (!slot) {
    slot = std::make_unique<MetricSeries>(type_ == MetricType::histogram ? bounds_.size() : 0);
    slot->bounds_ = &bounds_;
  }
  return *slot;
}

void MetricFamily::render(std::string& out) const {
  static const char* kTypes[] = {"counter", "gauge", "histogram"};
  out += "# HELP " + name_ + " " + help_ + "\n";
  out += "# TYPE " + name_ + " " + kTypes[static_cast<int>(type_)] + "\n";
  std::lock_guard lock(mu_);
  for (const auto& [values, s] : series_) {
    if (type_ != MetricType::histogram) {
      out += name_;
      append_labels(out, labels_, values);
      out += ' ';
      append_number(out, s->value());
      out += '\n';
      continue;
    }
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += s->bucket_counts_[i].load(std::memory_order_relaxed);
      std::string le;
      append_number(le, bounds_[i]);
      out += name_ + "_bucket";
      append_labels(out, labels_, values, "le", le);
      out += ' ' + std::to_string(cumulative) + '\n';
    }
    const auto count = s->count_.load(std::memory_order_relaxed);
    out += name_ + "_bucket";
    append_labels(out, labels_, values, "le", "+Inf");
    out += ' ' + std::to_string(count) + '\n';
    out += name_ + "_sum";
    append_labels(out, labels_, values);
    out += ' ';
    append_number(out, s->value());
    out += '\n';
    out += name_ + "_count";
    append_labels(out, labels_, values);
    out += ' ' + std::to_string(count) + '\n';
  }
}

MetricFamily& MetricRegistry::add(std::string name, std::string help, MetricType type, std::vector<std::string> labels,
                                  std::vector<double> bounds) {
  std::lock_guard lock(mu_);
  for (const auto& f : families_) {
    if (f->name() == name) throw std::invalid_argument("metric '" + name + "' registered twice");
  }
  families_.push_back(std::make_unique<MetricFamily>(std::move(name), std::move(help), type, std::move(labels),
                                                     std::move(bounds)));
  return *families_.back();
}

MetricFamily& MetricRegistry::counter(const std::string& name, const std::string& help,
                                      std::vector<std::string> labels) {
  return add(name, help, MetricType::counter, std::move(labels), {});
}
MetricFamily& MetricRegistry::gauge(const std::string& name, const std::string& help,
                                    std::vector<std::string> labels) {
  return add(name, help, MetricType::gauge, std::move(labels), {});
}
MetricFamily& MetricRegistry::histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                                        std::vector<std::string> labels) {
  return add(name, help, MetricType::histogram, std::move(labels), std::move(bounds));
}

std::string MetricRegistry::render() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& f : families_) f->render(out);
  return out;
}

std::vector<double> exponential_buckets(double start, double factor, int count) {
  std::vector<double> b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

}  // namespace kangaroo
