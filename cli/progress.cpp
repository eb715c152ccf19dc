// Rendering of ProgressView: permanent lines above a progress area on a terminal (Screen), plain
// lines elsewhere.
#include "cli/progress.h"

#include <algorithm>
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

// `line` cut to fewer than `width` bytes (so fewer columns) at a UTF-8 character boundary: a
// line as wide as the terminal would wrap, or leave the cursor in the last column.
std::string fit(const std::string& line, size_t width) {
  if (width == 0 || line.size() < width) return line;
  size_t n = width - 1;
  while (n > 0 && (static_cast<unsigned char>(line[n]) & 0xC0) == 0x80) --n;
  return line.substr(0, n);
}

}  // namespace

// --- Screen ------------------------------------------------------------------------------------

Screen::Screen(std::ostream& terminal, size_t width) : terminal_(terminal), width_(width) {}

Screen::~Screen() {
  MutexLock lock(mutex_);
  erase();
  terminal_.flush();
}

void Screen::erase() {
  // The cursor is at the start of the line below the area: up to its first line, clear below.
  if (drawn_) terminal_ << "\r\033[" << drawn_ << "A\033[J";
  drawn_ = 0;
}

void Screen::draw() {
  std::string text;
  for (const auto& [owner, lines] : areas_)
    for (const std::string& l : lines) {
      text += fit(l, width_) + "\n";
      ++drawn_;
    }
  terminal_ << text;
}

void Screen::print_above(std::ostream& stream, std::string_view text) {
  MutexLock lock(mutex_);
  bool area = drawn_ > 0;
  erase();
  if (&stream != &terminal_) {
    terminal_.flush();  // the erase reaches the terminal before the text does
    stream << text;
    stream.flush();
  } else {
    terminal_ << text;
  }
  if (!text.empty() && text.back() != '\n' && area) terminal_ << "\n";
  draw();
  terminal_.flush();
}

void Screen::show(const void* owner, std::vector<std::string> lines) {
  MutexLock lock(mutex_);
  auto it = std::find_if(areas_.begin(), areas_.end(),
                         [owner](const auto& area) { return area.first == owner; });
  if (it == areas_.end()) {
    if (lines.empty()) return;  // nothing shown, nothing to show
    areas_.emplace_back(owner, std::move(lines));
  } else if (lines.empty()) {
    areas_.erase(it);
  } else {
    it->second = std::move(lines);
  }
  erase();
  draw();
  terminal_.flush();
}

// --- ScreenBuf ---------------------------------------------------------------------------------

ScreenBuf::~ScreenBuf() {
  if (!pending_.empty()) screen_.print_above(raw_, pending_);
}

void ScreenBuf::emit_lines() {
  size_t end = pending_.rfind('\n');
  if (end == std::string::npos) return;
  screen_.print_above(raw_, std::string_view(pending_).substr(0, end + 1));
  pending_.erase(0, end + 1);
}

ScreenBuf::int_type ScreenBuf::overflow(int_type c) {
  if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
  pending_ += traits_type::to_char_type(c);
  if (traits_type::to_char_type(c) == '\n') emit_lines();
  return c;
}

std::streamsize ScreenBuf::xsputn(const char* s, std::streamsize n) {
  pending_.append(s, static_cast<size_t>(n));
  if (std::string_view(s, static_cast<size_t>(n)).find('\n') != std::string_view::npos)
    emit_lines();
  return n;
}

// --- ProgressView ------------------------------------------------------------------------------

ProgressView::ProgressView(std::ostream& out, bool terminal) : out_(out), terminal_(terminal) {
  if (!terminal_) return;
  if (auto* buf = dynamic_cast<ScreenBuf*>(out.rdbuf())) {
    screen_ = &buf->screen();
  } else {
    own_screen_ = std::make_unique<Screen>(out);
    screen_ = own_screen_.get();
  }
}

ProgressView::~ProgressView() {
  MutexLock lock(mutex_);
  if (terminal_) {
    // Items still running (a pull that failed before their turn) keep their last line.
    auto now = Clock::now();
    for (const Item& item : items_)
      if (!item.finished) permanent(line(item, now));
    screen_->show(this, {});
  }
  out_.flush();
}

void ProgressView::permanent(const std::string& text) {
  if (terminal_)
    screen_->print_above(text + "\n");
  else
    out_ << text << "\n" << std::flush;
}

size_t ProgressView::start(const std::string& label, uint64_t total, const std::string& activity,
                           uint64_t already) {
  MutexLock lock(mutex_);
  items_.push_back(
      Item{label, activity, total, already, already, Clock::now(), {}, false, ItemEnd::done, ""});
  if (terminal_)
    redraw(Clock::now());
  else
    permanent(label + ": " + activity + (total ? " " + format_size(total) : ""));
  return items_.size() - 1;
}

void ProgressView::retitle(size_t id, const std::string& activity) {
  MutexLock lock(mutex_);
  if (id >= items_.size() || items_[id].finished || items_[id].activity == activity) return;
  Item& item = items_[id];
  item.activity = activity;
  item.started = Clock::now();  // the rate is this activity's
  item.base = item.done;
  if (terminal_)
    redraw(item.started);
  else
    permanent(item.label + ": " + activity + (item.total ? " " + format_size(item.total) : ""));
}

size_t ProgressView::add_finished(const std::string& label, uint64_t total, ItemEnd how,
                                  const std::string& note) {
  MutexLock lock(mutex_);
  auto now = Clock::now();
  items_.push_back(
      Item{label, "", total, how == ItemEnd::done ? total : 0, 0, now, now, true, how, note});
  permanent(line(items_.back(), now));
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
  if (id >= items_.size() || items_[id].finished) return;
  Item& item = items_[id];
  item.finished = true;
  item.how = how;
  item.note = note;
  item.ended = Clock::now();
  if (how == ItemEnd::done && item.total) item.done = item.total;
  permanent(line(item, item.ended));
  if (terminal_) redraw(item.ended);
}

void ProgressView::message(const std::string& text) {
  MutexLock lock(mutex_);
  permanent(printable(text));  // may quote a registry: no escape sequences through
}

std::string ProgressView::line(const Item& item, Clock::time_point now, size_t width) const {
  std::string s;
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
    s += item.activity + " " + format_size(item.done);
    if (item.total) s += " / " + format_size(item.total);
    if (std::string r = rate(item.done - std::min(item.base, item.done), now - item.started);
        !r.empty())
      s += "  " + r;
  }
  if (!item.note.empty()) s += ": " + item.note;
  // A line that does not fit would be cut at its end, taking the bytes and the rate: the label
  // gives way instead ("127.0.0.1:5000/pyt...1/2 sha256:f446014bf301"), its end kept longer.
  const std::string& label = item.label;
  if (width > 0 && label.size() + 2 + s.size() >= width && width > s.size() + 2 + 12) {
    size_t room = width - 1 - 2 - s.size();
    size_t tail = (room - 3) * 2 / 3;
    size_t head = room - 3 - tail;
    while (head > 0 && (static_cast<unsigned char>(label[head]) & 0xC0) == 0x80) --head;
    size_t from = label.size() - tail;
    while (from < label.size() && (static_cast<unsigned char>(label[from]) & 0xC0) == 0x80) ++from;
    return label.substr(0, head) + "..." + label.substr(from) + ": " + s;
  }
  return label + ": " + s;
}

void ProgressView::redraw(Clock::time_point now) {
  std::vector<std::string> lines;
  for (const Item& item : items_)
    if (!item.finished) lines.push_back(line(item, now, screen_->width()));
  screen_->show(this, std::move(lines));
  last_draw_ = now;
}

}  // namespace imagefs::cli
