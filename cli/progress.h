// Progress of long work (layer downloads, archive compression) for people. On a terminal the
// screen has two parts: permanent lines (results on stdout, messages and finished items on
// stderr), printed once and never touched again, and below them a progress area of the items
// still running, redrawn in place. Only the progress area is ever erased, so nothing a command
// printed is lost. Off a terminal (logs, CI, pipes): plain lines when an item starts and ends, so
// nothing is lost and nothing floods. Thread-safe: downloads report from several threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <streambuf>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/mutex.h"

namespace imagefs::cli {

// The terminal one command writes to: permanent lines above, the progress area below. Every
// write that reaches the terminal while a progress area is shown must go through it (ScreenBuf
// makes a stream do so), or the area's redraw would overwrite it.
class Screen {
 public:
  // `terminal`: where the progress area is drawn (stderr). `width`: the terminal's columns, 0 if
  // unknown; area lines are cut to fit, since a line that wraps would throw the redraw off.
  explicit Screen(std::ostream& terminal, size_t width = 0);
  ~Screen();  // erases the progress area
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

  // Prints `text` (whole lines) to `stream` (stdout or the terminal's own stream) above the
  // progress area: the area is erased, the text written and flushed, the area drawn again.
  void print_above(std::ostream& stream, std::string_view text);
  void print_above(std::string_view text) { print_above(terminal_, text); }
  // The lines `owner` shows in the progress area (none: empty), after those of owners that came
  // first; redrawn at once.
  void show(const void* owner, std::vector<std::string> lines);
  // The terminal's columns, 0 if unknown.
  [[nodiscard]] size_t width() const { return width_; }

 private:
  void erase() REQUIRES(mutex_);
  void draw() REQUIRES(mutex_);

  std::ostream& terminal_;
  const size_t width_;
  Mutex mutex_;
  std::vector<std::pair<const void*, std::vector<std::string>>> areas_ GUARDED_BY(mutex_);
  size_t drawn_ GUARDED_BY(mutex_) = 0;  // lines of the area on screen, the cursor below them
};

// A stream buffer that hands each complete line written to it to Screen::print_above (onto
// `raw`, the real stream); a last line without '\n' is printed when the buffer is destroyed.
// cli::run() puts one in front of stdout and one in front of stderr when stderr is a terminal.
// Not thread-safe (as std::ostream is not).
class ScreenBuf : public std::streambuf {
 public:
  ScreenBuf(Screen& screen, std::ostream& raw) : screen_(screen), raw_(raw) {}
  ~ScreenBuf() override;
  ScreenBuf(const ScreenBuf&) = delete;
  ScreenBuf& operator=(const ScreenBuf&) = delete;
  [[nodiscard]] Screen& screen() const { return screen_; }

 protected:
  int_type overflow(int_type c) override;
  std::streamsize xsputn(const char* s, std::streamsize n) override;

 private:
  void emit_lines();

  Screen& screen_;
  std::ostream& raw_;
  std::string pending_;
};

enum class ItemEnd { done, cached, failed };

class ProgressView {
 public:
  using Clock = std::chrono::steady_clock;

  // `terminal`: draw in the progress area of the Screen behind `out` (its ScreenBuf), or of a
  // Screen of the view's own over `out` when it has none.
  ProgressView(std::ostream& out, bool terminal);
  ~ProgressView();
  ProgressView(const ProgressView&) = delete;
  ProgressView& operator=(const ProgressView&) = delete;

  // Starts an item (e.g. "sha256:1a2b3c4d5e6f layer") doing `activity` ("downloading",
  // "compressing 19 segments"); `total` 0 when unknown; `already`: bytes done before it started
  // (a resumed download), which the rate leaves out. Returns its id.
  size_t start(const std::string& label, uint64_t total,
               const std::string& activity = "downloading", uint64_t already = 0);
  // A new activity for a running item (waiting, then downloading): a plain line off a terminal.
  void retitle(size_t id, const std::string& activity);
  // An item that is over before it started (e.g. a layer already in the store): one line.
  size_t add_finished(const std::string& label, uint64_t total, ItemEnd how,
                      const std::string& note = "");
  void update(size_t id, uint64_t done);
  // The item's last line becomes permanent (above the progress area on a terminal).
  void end(size_t id, ItemEnd how, const std::string& note = "");
  // A line of its own (above the progress area on a terminal).
  void message(const std::string& text);

 private:
  struct Item {
    std::string label;
    std::string activity;
    uint64_t total = 0;
    uint64_t done = 0;
    uint64_t base = 0;  // `done` when the activity started: the rate counts what came since
    Clock::time_point started;
    Clock::time_point ended;
    bool finished = false;
    ItemEnd how = ItemEnd::done;
    std::string note;
  };
  // "LABEL: STATUS"; with `width`, the label is shortened in its middle so that the status fits.
  [[nodiscard]] std::string line(const Item& item, Clock::time_point now, size_t width = 0) const;
  void permanent(const std::string& text) REQUIRES(mutex_);  // one line, '\n' added
  void redraw(Clock::time_point now) REQUIRES(mutex_);       // terminal only

  std::ostream& out_;
  const bool terminal_;
  std::unique_ptr<Screen> own_screen_;  // when `out` has no ScreenBuf
  Screen* screen_ = nullptr;            // terminal only
  Mutex mutex_;
  std::vector<Item> items_ GUARDED_BY(mutex_);
  Clock::time_point last_draw_ GUARDED_BY(mutex_){};
};

}  // namespace imagefs::cli
