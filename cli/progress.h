// Progress of long work (layer downloads) for people: on a terminal, one line per item redrawn in
// place with bytes, total and rate; otherwise (logs, CI, pipes) plain lines when an item starts
// and ends, so nothing is lost and nothing floods. Thread-safe: downloads report from several
// threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "common/mutex.h"

namespace imagefs::cli {

enum class ItemEnd { done, cached, failed };

class ProgressView {
 public:
  using Clock = std::chrono::steady_clock;

  // `terminal`: redraw in place (use isatty on the stream's fd).
  ProgressView(std::ostream& out, bool terminal);
  ~ProgressView();
  ProgressView(const ProgressView&) = delete;
  ProgressView& operator=(const ProgressView&) = delete;

  // Starts an item (e.g. "sha256:1a2b3c4d5e6f layer"); `total` 0 when unknown. Returns its id.
  size_t start(const std::string& label, uint64_t total);
  // An item that is over before it started (e.g. a layer already in the store): one line.
  size_t add_finished(const std::string& label, uint64_t total, ItemEnd how,
                      const std::string& note = "");
  void update(size_t id, uint64_t done);
  void end(size_t id, ItemEnd how, const std::string& note = "");
  // A line of its own, above the items on a terminal.
  void message(const std::string& text);

 private:
  struct Item {
    std::string label;
    uint64_t total = 0;
    uint64_t done = 0;
    Clock::time_point started;
    Clock::time_point ended;
    bool finished = false;
    ItemEnd how = ItemEnd::done;
    std::string note;
  };
  [[nodiscard]] std::string line(const Item& item, Clock::time_point now) const;
  void redraw(Clock::time_point now) REQUIRES(mutex_);  // terminal only

  std::ostream& out_;
  const bool terminal_;
  Mutex mutex_;
  std::vector<Item> items_ GUARDED_BY(mutex_);
  size_t drawn_ GUARDED_BY(mutex_) = 0;  // lines drawn last time
  Clock::time_point last_draw_ GUARDED_BY(mutex_){};
};

}  // namespace imagefs::cli
