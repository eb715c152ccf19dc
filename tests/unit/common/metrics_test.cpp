// common/metrics.h: counters, gauges and histograms, bounded labels, and the text exposition
// format 0.0.4 (checked line by line against the grammar Prometheus' parser accepts, and by
// value).
#include "common/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace imagefs::metrics {
namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Every line is a HELP, a TYPE or a sample line of the 0.0.4 grammar, the text ends with a
// newline, and each family's HELP and TYPE come before its samples, once.
void expect_well_formed(const std::string& text) {
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  static const std::regex help(R"(# HELP [a-zA-Z_:][a-zA-Z0-9_:]* ([^\\\n]|\\\\|\\n)*)");
  static const std::regex type(R"(# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram))");
  static const std::regex sample(
      R"([a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\\\|\\"|\\n)*",?)*\})? )"
      R"((NaN|[+-]Inf|-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?))");
  for (const std::string& line : lines_of(text)) {
    bool ok = std::regex_match(line, help) || std::regex_match(line, type) ||
              std::regex_match(line, sample);
    EXPECT_TRUE(ok) << "not a line of the text format: " << line;
  }
}

TEST(Metrics, CounterAndGaugeWithHelpAndType) {
  Registry r;
  auto& requests = r.counter("app_requests_total", "Requests served.");
  auto& temperature = r.gauge("app_temperature_celsius", "Current temperature.");
  requests.with({}).inc();
  requests.with({}).inc(41);
  temperature.with({}).set(-3.5);
  EXPECT_EQ(r.render(),
            "# HELP app_requests_total Requests served.\n"
            "# TYPE app_requests_total counter\n"
            "app_requests_total 42\n"
            "# HELP app_temperature_celsius Current temperature.\n"
            "# TYPE app_temperature_celsius gauge\n"
            "app_temperature_celsius -3.5\n");
}

TEST(Metrics, FamiliesWithoutLabelsShowZeroBeforeAnyUpdate) {
  Registry r;
  r.counter("app_events_total", "Events.");
  r.histogram("app_wait_seconds", "Waits.", {1});
  EXPECT_EQ(r.render(),
            "# HELP app_events_total Events.\n"
            "# TYPE app_events_total counter\n"
            "app_events_total 0\n"
            "# HELP app_wait_seconds Waits.\n"
            "# TYPE app_wait_seconds histogram\n"
            "app_wait_seconds_bucket{le=\"1\"} 0\n"
            "app_wait_seconds_bucket{le=\"+Inf\"} 0\n"
            "app_wait_seconds_sum 0\n"
            "app_wait_seconds_count 0\n");
}

TEST(Metrics, LabelValuesAndHelpAreEscaped) {
  Registry r;
  auto& f = r.counter("app_things_total", "A \\ backslash\nand a newline; \"quotes\" stay.",
                      {Label{"name"}, Label{"kind"}});
  f.with({"a\\b", "say \"hi\"\nbye"}).inc(2);
  std::string text = r.render();
  EXPECT_EQ(text,
            "# HELP app_things_total A \\\\ backslash\\nand a newline; \"quotes\" stay.\n"
            "# TYPE app_things_total counter\n"
            "app_things_total{name=\"a\\\\b\",kind=\"say \\\"hi\\\"\\\\x0abye\"} 2\n");
  expect_well_formed(text);
  // A control character never reaches the text raw: printable() made the newline "\x0a" (whose
  // backslash the format escapes). The format's own newline escape, for any caller:
  std::string escaped;
  detail::append_label_value(escaped, "a\nb\"c\\d");
  EXPECT_EQ(escaped, "a\\nb\\\"c\\\\d");
}

TEST(Metrics, LabelValuesThatAreNotUtf8BecomePrintable) {
  Registry r;
  auto& f = r.counter("app_hosts_total", "Hosts.", {Label{"host"}});
  f.with({std::string("bad\xff\x01host", 9)}).inc();
  f.with({"ok.example"}).inc();
  std::string text = r.render();
  // printable() turns the bytes into \xff and \x01; the format escapes the backslashes.
  EXPECT_NE(text.find("app_hosts_total{host=\"bad\\\\xff\\\\x01host\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("app_hosts_total{host=\"ok.example\"} 1\n"), std::string::npos) << text;
  expect_well_formed(text);
}

TEST(Metrics, HistogramBucketsAreCumulativeAndInclusive) {
  Registry r;
  auto& h = r.histogram("app_latency_seconds", "Latency.", {0.1, 0.5, 1}, {Label{"op"}});
  Histogram& reads = h.with({"read"});
  for (double v : {0.05, 0.1, 0.2, 0.5, 0.7, 3.0}) reads.observe(v);
  std::string text = r.render();
  // le is inclusive: 0.1 falls in the first bucket, 0.5 in the second; each bucket counts all
  // below it; the +Inf bucket is the count.
  const std::string buckets =
      "# HELP app_latency_seconds Latency.\n"
      "# TYPE app_latency_seconds histogram\n"
      "app_latency_seconds_bucket{op=\"read\",le=\"0.1\"} 2\n"
      "app_latency_seconds_bucket{op=\"read\",le=\"0.5\"} 4\n"
      "app_latency_seconds_bucket{op=\"read\",le=\"1\"} 5\n"
      "app_latency_seconds_bucket{op=\"read\",le=\"+Inf\"} 6\n"
      "app_latency_seconds_sum{op=\"read\"} ";
  EXPECT_EQ(text.substr(0, buckets.size()), buckets) << text;
  EXPECT_NE(text.find("app_latency_seconds_count{op=\"read\"} 6\n"), std::string::npos) << text;
  Histogram::Snapshot s = reads.snapshot();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 4, 5, 6}));
  EXPECT_EQ(s.count(), 6u);
  EXPECT_NEAR(s.sum, 4.55, 1e-9);
  const std::string sum = "app_latency_seconds_sum{op=\"read\"} ";
  size_t at = text.find(sum);
  ASSERT_NE(at, std::string::npos) << text;
  EXPECT_NEAR(std::stod(text.substr(at + sum.size())), 4.55, 1e-9);
  expect_well_formed(text);
}

TEST(Metrics, HistogramNaNGoesToInfOnly) {
  Histogram h({1, 2});
  h.observe(std::nan(""));
  EXPECT_EQ(h.snapshot().cumulative, (std::vector<uint64_t>{0, 0, 1}));
}

TEST(Metrics, ALabelTakesAtMostItsBoundThenOther) {
  Registry r;
  auto& f = r.counter("app_pulls_total", "Pulls.", {Label{"registry", 3}, Label{"result", 2}});
  for (std::string host : {"a.io", "b.io", "c.io", "d.io", "e.io", "a.io"})
    f.with({host, "ok"}).inc();
  f.with({"z.io", "error"}).inc();
  f.with({"a.io", "third"}).inc();  // a third result: over its bound of 2
  std::string text = r.render();
  EXPECT_NE(text.find("app_pulls_total{registry=\"a.io\",result=\"ok\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("app_pulls_total{registry=\"c.io\",result=\"ok\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("app_pulls_total{registry=\"other\",result=\"ok\"} 2\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("app_pulls_total{registry=\"other\",result=\"error\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("app_pulls_total{registry=\"a.io\",result=\"other\"} 1\n"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("d.io"), std::string::npos) << text;
  EXPECT_EQ(text.find("z.io"), std::string::npos) << text;
  // Never more series than the bounds allow, however many values come.
  for (int i = 0; i < 10000; ++i) f.with({"host" + std::to_string(i) + ".io", "ok"}).inc();
  size_t series = 0;
  for (const std::string& line : lines_of(r.render()))
    series += line.starts_with("app_pulls") ? 1 : 0;
  EXPECT_LE(series, (3u + 1) * (2u + 1));
}

TEST(Metrics, ChildrenAreSortedAndStable) {
  Registry r;
  auto& f = r.counter("app_files_total", "Files.", {Label{"file"}});
  Counter& b = f.with({"b"});
  Counter& a = f.with({"a"});
  EXPECT_EQ(&a, &f.with({"a"})) << "the same child for the same values";
  a.inc();
  b.inc(2);
  std::string text = r.render();
  EXPECT_LT(text.find("file=\"a\""), text.find("file=\"b\""));
}

TEST(Metrics, NumbersInTheirShortestExactForm) {
  EXPECT_EQ(detail::number(0.1), "0.1");
  EXPECT_EQ(detail::number(1.0), "1");
  EXPECT_EQ(detail::number(2.5e-4), "0.00025");
  EXPECT_EQ(detail::number(1e21), "1e+21");
  EXPECT_EQ(detail::number(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(detail::number(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(detail::number(std::nan("")), "NaN");
  EXPECT_EQ(detail::number(uint64_t{18446744073709551615U}), "18446744073709551615");
}

TEST(Metrics, ConcurrentUpdatesAreAllCounted) {
  Registry r;
  auto& c = r.counter("app_hits_total", "Hits.", {Label{"t"}});
  auto& g = r.gauge("app_level", "Level.");
  auto& h = r.histogram("app_size_bytes", "Sizes.", {10, 100});
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        c.with({t % 2 == 0 ? "even" : "odd"}).inc();
        g.with({}).add(1);
        h.with({}).observe(i % 200);
        if (i % 1000 == 0) (void)r.render();  // rendering while updating is safe
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(c.with({"even"}).value(), 20000u);
  EXPECT_EQ(c.with({"odd"}).value(), 20000u);
  EXPECT_EQ(g.with({}).value(), 40000.0);
  Histogram::Snapshot s = h.with({}).snapshot();
  EXPECT_EQ(s.count(), 40000u);
  // Each thread observes 0..199 fifty times: 11 of each 200 are <= 10, 101 are <= 100.
  EXPECT_EQ(s.cumulative[0], 4u * 50 * 11);
  EXPECT_EQ(s.cumulative[1], 4u * 50 * 101);
  expect_well_formed(r.render());
}

TEST(Metrics, ValidNames) {
  EXPECT_TRUE(valid_name("imagefs_lookups_total"));
  EXPECT_TRUE(valid_name("a:b_c"));
  EXPECT_FALSE(valid_name("9lives"));
  EXPECT_FALSE(valid_name("has-dash"));
  EXPECT_FALSE(valid_name(""));
  EXPECT_TRUE(valid_name("file", true));
  EXPECT_FALSE(valid_name("a:b", true));
  EXPECT_FALSE(valid_name("__reserved", true));
}

}  // namespace
}  // namespace imagefs::metrics
