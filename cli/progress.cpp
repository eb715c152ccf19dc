// Rendering of ProgressView: ANSI redraws on a terminal, plain lines elsewhere.
#include "cli/progress.h"

#include <cstdio>
#include <ostream>

#include "cli/args.h"
#include "common/text.h"

namespace imagefs::cli {
namespace {

std::string rate(uint64_t bytes, ProgressView::Clock::duration elapsed) {
  double seconds = std::chrono::duration<double>(elapsed).count();
  if (seconds < 0.002) return "";
  return format_size(static_cast<uint64_t>(static_cast<double>(bytes) / seconds)) + "/s";
}

std::string seconds(ProgressView::Clock::duration elapsed) {
  char buf[32];
  double s = std::chrono::duration<double>(elapsed).count();
  if (s < 1)
    (void)std::snprintf(buf, sizeof buf, "%.0f ms", s * 1000);
  else
    (void)std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

}  // namespace

ProgressView::ProgressView(std::ostream& out, bool terminal) : out_(out), terminal_(terminal) {}

ProgressView::~ProgressView() {
  MutexLock lock(mutex_);
  if (terminal_) redraw(Clock::now());
  out_.flush();
}

size_t ProgressView::start(const std::string& label, uint64_t total) {
  MutexLock lock(mutex_);
  items_.push_back(Item{label, total, 0, Clock::now(), {}, false, ItemEnd::done, ""});
  if (terminal_) {
    redraw(Clock::now());
  } else {
    out_ << label << ": downloading" << (total ? " " + format_size(total) : "") << "\n";
    out_.flush();
  }
  return items_.size() - 1;
}

size_t ProgressView::add_finished(const std::string& label, uint64_t total, ItemEnd how,
                                  const std::string& note) {
  MutexLock lock(mutex_);
  auto now = Clock::now();
  items_.push_back(Item{label, total, how == ItemEnd::done ? total : 0, now, now, true, how, note});
  if (terminal_) {
    redraw(now);
  } else {
    out_ << line(items_.back(), now) << "\n";
    out_.flush();
  }
  return items_.size() - 1;
}

void ProgressView::update(size_t id, uint64_t done) {
  MutexLock lock(mutex_);
  if (id >= items_.size()) return;
  items_[id].done = done;
  auto now = Clock::now();
  // At most 10 redraws a second: a fast download would otherwise spend its time drawing.
  if (terminal_ && now - last_draw_ >= std::chrono::milliseconds(100)) redraw(now);
}

void ProgressView::end(size_t id, ItemEnd how, const std::string& note) {
  MutexLock lock(mutex_);
  if (id >= items_.size()) return;
  Item& item = items_[id];
  item.finished = true;
  item.how = how;
  item.note = note;
  item.ended = Clock::now();
  if (how == ItemEnd::done && item.total) item.done = item.total;
  if (terminal_) {
    redraw(item.ended);
  } else {
    out_ << line(item, item.ended) << "\n";
    out_.flush();
  }
}

void ProgressView::message(const std::string& text) {
  MutexLock lock(mutex_);
  if (terminal_ && drawn_) {
    out_ << "\033[" << drawn_ << "F\033[J";  // up to the first item line, clear below
    drawn_ = 0;
  }
  out_ << printable(text) << "\n";  // may quote a registry: no escape sequences through
  if (terminal_) redraw(Clock::now());
  out_.flush();
}

std::string ProgressView::line(const Item& item, Clock::time_point now) const {
  std::string s = item.label + ": ";
  if (item.finished) {
    switch (item.how) {
      case ItemEnd::cached:
        s += "already present";
        break;
      case ItemEnd::failed:
        s += "failed";
        break;
      case ItemEnd::done:
        s += "done " + format_size(item.done) + " in " + seconds(item.ended - item.started);
        if (std::string r = rate(item.done, item.ended - item.started); !r.empty())
          s += " (" + r + ")";
        break;
    }
  } else {
    s += format_size(item.done);
    if (item.total) s += " / " + format_size(item.total);
    if (std::string r = rate(item.done, now - item.started); !r.empty()) s += "  " + r;
  }
  if (!item.note.empty()) s += ": " + item.note;
  return s;
}

void ProgressView::redraw(Clock::time_point now) {
  if (drawn_) out_ << "\033[" << drawn_ << "F";  // to the start of the first item line
  for (const Item& item : items_) out_ << "\033[2K" << line(item, now) << "\n";
  drawn_ = items_.size();
  last_draw_ = now;
  out_.flush();
}

}  // namespace imagefs::cli
