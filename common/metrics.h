// Counters, gauges and histograms with labels, and their Prometheus text exposition (format
// 0.0.4). Our own, small: the daemon needs a handful of metrics, and no Debian C++ client fits
// (prometheus-cpp is not packaged in Debian 12); the format is a page of text.
//
// Metrics are updated from any thread without locks (relaxed atomics: each value is exact, but a
// rendering taken while updates run may see one metric before another). A family's children are
// found under a mutex, so hot paths look a child up once and keep its reference: children live as
// long as their Registry and never move.
//
// Bounded by construction: every label has a most-distinct-values count (Label::max_values);
// once a label has seen that many values, any new value is recorded as "other". So a label fed
// from outside (a registry host a user typed) cannot grow the registry without end, and the
// series of a family are at most the product of its labels' bounds (+1 each for "other").
//
// The text format, as Prometheus parses it (expfmt, "text/plain; version=0.0.4"): per family a
// `# HELP name text` line (backslash and newline escaped), a `# TYPE name counter|gauge|histogram`
// line, then its samples `name{label="value",...} number`, label values escaped (backslash,
// double quote, newline). A histogram has per child `name_bucket{...,le="B"}` lines, cumulative,
// ending with le="+Inf", then `name_sum` and `name_count` (equal to the +Inf bucket). Counter
// names end in `_total` (given so at registration: in 0.0.4 the TYPE line names the sample).
#pragma once

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/text.h"

namespace imagefs::metrics {

// The value a label takes once it has seen Label::max_values distinct values.
inline constexpr std::string_view kOther = "other";

class Counter {
 public:
  void inc(uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  [[nodiscard]] uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(double d) noexcept { value_.fetch_add(d, std::memory_order_relaxed); }
  [[nodiscard]] double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into fixed buckets: `bounds` are the upper bounds (le, inclusive),
// strictly increasing and finite; +Inf is implied.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)),
        counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

  void observe(double v) noexcept {
    // The first bucket whose bound is >= v; NaN goes to +Inf.
    size_t i = std::isnan(v)
                   ? bounds_.size()
                   : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                         bounds_.begin());
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
  }

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
    double sum = 0;
    [[nodiscard]] uint64_t count() const { return cumulative.empty() ? 0 : cumulative.back(); }
  };
  // Cumulative counts read bucket by bucket; the count is the +Inf bucket, so the two always
  // agree (the sum may lag or lead by observations made during the read).
  [[nodiscard]] Snapshot snapshot() const {
    Snapshot s;
    s.cumulative.reserve(bounds_.size() + 1);
    uint64_t total = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      total += counts_[i].load(std::memory_order_relaxed);
      s.cumulative.push_back(total);
    }
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
  }
  [[nodiscard]] const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
};

// A label of a family, with the most distinct values it may take (then kOther).
struct Label {
  std::string name;
  size_t max_values = 64;
};

namespace detail {

// A number as the text format writes it: integers plainly, others in the shortest form that
// reads back the same, and +Inf, -Inf, NaN.
inline std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, end);
}
inline std::string number(uint64_t v) { return std::to_string(v); }

// A label value inside double quotes: backslash, double quote and newline escaped.
inline void append_label_value(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
}

// HELP text: backslash and newline escaped.
inline void append_help(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
}

// `{a="x",b="y"}`, with `extra` (a histogram's le) last; "" without labels.
inline std::string label_set(const std::vector<Label>& names,
                             const std::vector<std::string>& values,
                             std::string_view extra_name = {}, std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out.push_back(',');
    out += names[i].name;
    out += "=\"";
    append_label_value(out, values[i]);
    out.push_back('"');
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out.push_back(',');
    out += extra_name;
    out += "=\"";
    append_label_value(out, extra_value);
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

}  // namespace detail

// Whether `name` may name a metric ([a-zA-Z_:][a-zA-Z0-9_:]*) or, with `label`, a label
// ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__", which Prometheus reserves).
inline bool valid_name(std::string_view name, bool label = false) {
  if (name.empty()) return false;
  if (label && name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
    bool digit = c >= '0' && c <= '9';
    if (!alpha && !(digit && i > 0)) return false;
  }
  return true;
}

enum class Type { counter, gauge, histogram };

class FamilyBase {
 public:
  FamilyBase(Type type, std::string name, std::string help, std::vector<Label> labels)
      : type_(type),
        name_(std::move(name)),
        help_(std::move(help)),
        labels_(std::move(labels)),
        seen_(labels_.size()) {}
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] Type type() const { return type_; }
  // Appends the family's HELP, TYPE and sample lines.
  virtual void render(std::string& out) const = 0;

 protected:
  // The values as recorded: printable() text (valid UTF-8, as the format wants; control
  // characters such as a newline become "\x0a"), and kOther for
  // a new value of a label that has seen max_values. Missing values are "", extra ones ignored.
  std::vector<std::string> bounded(std::initializer_list<std::string_view> values) REQUIRES(mu_) {
    std::vector<std::string> out;
    out.reserve(labels_.size());
    auto it = values.begin();
    for (size_t i = 0; i < labels_.size(); ++i) {
      std::string v = it != values.end() ? printable(*it++) : std::string();
      if (!seen_[i].contains(v)) {
        if (seen_[i].size() >= labels_[i].max_values) {
          v = std::string(kOther);
        } else {
          seen_[i].insert(v);
        }
      }
      out.push_back(std::move(v));
    }
    return out;
  }
  void header(std::string& out) const {
    static constexpr const char* kTypes[] = {"counter", "gauge", "histogram"};
    out += "# HELP " + name_ + " ";
    detail::append_help(out, help_);
    out += "\n# TYPE " + name_ + " " + kTypes[static_cast<int>(type_)] + "\n";
  }

  const Type type_;
  const std::string name_;
  const std::string help_;
  const std::vector<Label> labels_;
  mutable Mutex mu_;
  std::vector<std::set<std::string>> seen_ GUARDED_BY(mu_);  // per label
};

// The children of one metric name, one per combination of label values.
template <class M>
class Family final : public FamilyBase {
 public:
  Family(Type type, std::string name, std::string help, std::vector<Label> labels,
         std::vector<double> bounds = {})
      : FamilyBase(type, std::move(name), std::move(help), std::move(labels)),
        bounds_(std::move(bounds)) {
    if (labels_.empty()) with({});  // a family without labels always has its one sample
  }

  // The child for these label values (in the order of the family's labels), made on first use.
  // Thread-safe; the reference stays valid while the registry lives.
  M& with(std::initializer_list<std::string_view> values) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    std::vector<std::string> key = bounded(values);
    auto it = children_.find(key);
    if (it == children_.end()) it = children_.emplace(std::move(key), make()).first;
    return *it->second;
  }

  void render(std::string& out) const override EXCLUDES(mu_) {
    header(out);
    MutexLock lock(mu_);
    for (const auto& [values, child] : children_) render_child(out, values, *child);
  }

 private:
  std::unique_ptr<M> make() {
    if constexpr (std::is_same_v<M, Histogram>) {
      return std::make_unique<Histogram>(bounds_);
    } else {
      return std::make_unique<M>();
    }
  }

  void render_child(std::string& out, const std::vector<std::string>& values, const M& m) const {
    if constexpr (!std::is_same_v<M, Histogram>) {
      out += name_ + detail::label_set(labels_, values) + " " + detail::number(m.value()) + "\n";
    } else {
      Histogram::Snapshot s = m.snapshot();
      const std::vector<double>& bounds = m.bounds();
      for (size_t i = 0; i <= bounds.size(); ++i) {
        std::string le = i < bounds.size() ? detail::number(bounds[i]) : "+Inf";
        out += name_ + "_bucket" + detail::label_set(labels_, values, "le", le) + " " +
               detail::number(s.cumulative[i]) + "\n";
      }
      std::string labels = detail::label_set(labels_, values);
      out += name_ + "_sum" + labels + " " + detail::number(s.sum) + "\n";
      out += name_ + "_count" + labels + " " + detail::number(s.count()) + "\n";
    }
  }

  const std::vector<double> bounds_;  // histograms only
  std::map<std::vector<std::string>, std::unique_ptr<M>> children_ GUARDED_BY(mu_);
};

// A set of families, rendered in the order they were added. Families are added at start-up (the
// daemon's catalog) and live as long as the registry. Thread-safe.
class Registry {
 public:
  Family<Counter>& counter(std::string name, std::string help, std::vector<Label> labels = {}) {
    return add<Counter>(Type::counter, std::move(name), std::move(help), std::move(labels), {});
  }
  Family<Gauge>& gauge(std::string name, std::string help, std::vector<Label> labels = {}) {
    return add<Gauge>(Type::gauge, std::move(name), std::move(help), std::move(labels), {});
  }
  Family<Histogram>& histogram(std::string name, std::string help, std::vector<double> bounds,
                               std::vector<Label> labels = {}) {
    return add<Histogram>(Type::histogram, std::move(name), std::move(help), std::move(labels),
                          std::move(bounds));
  }

  // Every family in the text exposition format 0.0.4.
  [[nodiscard]] std::string render() const EXCLUDES(mu_) {
    std::string out;
    MutexLock lock(mu_);
    for (const auto& family : families_) family->render(out);
    return out;
  }

 private:
  template <class M>
  Family<M>& add(Type type, std::string name, std::string help, std::vector<Label> labels,
                 std::vector<double> bounds) EXCLUDES(mu_) {
    auto family = std::make_unique<Family<M>>(type, std::move(name), std::move(help),
                                              std::move(labels), std::move(bounds));
    Family<M>& ref = *family;
    MutexLock lock(mu_);
    families_.push_back(std::move(family));
    return ref;
  }

  mutable Mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_ GUARDED_BY(mu_);
};

// The content type of render()'s text, for an HTTP answer.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace imagefs::metrics
