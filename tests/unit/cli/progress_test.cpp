// The progress display on a terminal: what a person sees once everything was drawn, read back
// with a tiny terminal emulator (tests/integration/cli/ptyterm.py does the same for the real
// program on a pty).
#include "cli/progress.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace imagefs::cli {
namespace {

// The rows a terminal of `width` columns shows after `bytes` (scrollback included), trailing
// blanks removed. Knows CR, LF and the CSI sequences A (up), F (up to column 0), J (erase below)
// and K (erase in line); anything else fails the test.
std::vector<std::string> screen_of(const std::string& bytes, size_t width = 200) {
  std::vector<std::string> rows{""};
  size_t row = 0, col = 0;
  auto at = [&](size_t r) -> std::string& {
    while (rows.size() <= r) rows.emplace_back();
    return rows[r];
  };
  for (size_t i = 0; i < bytes.size(); ++i) {
    char c = bytes[i];
    if (c == '\033') {
      EXPECT_EQ(bytes[i + 1], '[') << "at byte " << i;
      size_t j = i + 2;
      std::string digits;
      while (j < bytes.size() && std::isdigit(static_cast<unsigned char>(bytes[j])))
        digits += bytes[j++];
      size_t n = digits.empty() ? 0 : std::stoul(digits);
      switch (bytes[j]) {
        case 'A':
          row -= std::min(row, std::max<size_t>(n, 1));
          break;
        case 'F':
          row -= std::min(row, std::max<size_t>(n, 1));
          col = 0;
          break;
        case 'J':
          EXPECT_EQ(n, 0u);
          at(row).resize(std::min(at(row).size(), col));
          rows.resize(row + 1);
          break;
        case 'K':
          if (n == 2)
            at(row).clear();
          else
            at(row).resize(std::min(at(row).size(), col));
          break;
        default:
          ADD_FAILURE() << "unexpected escape sequence ESC[" << digits << bytes[j];
      }
      i = j;
    } else if (c == '\r') {
      col = 0;
    } else if (c == '\n') {
      ++row;
      col = 0;  // the pty's ONLCR
      at(row);
    } else {
      EXPECT_LT(col, width) << "a line wrapped: " << at(row);
      std::string& line = at(row);
      if (line.size() <= col) line.resize(col + 1, ' ');
      line[col++] = c;
    }
  }
  while (!rows.empty() && rows.back().empty()) rows.pop_back();
  return rows;
}

size_t count_lines(const std::vector<std::string>& rows, const std::string& needle) {
  return static_cast<size_t>(std::count_if(rows.begin(), rows.end(), [&](const std::string& r) {
    return r.find(needle) != std::string::npos;
  }));
}

std::string dump(const std::vector<std::string>& rows) {
  std::string s;
  for (const std::string& r : rows) s += "| " + r + "\n";
  return s;
}

// A pull of two images as cli::run() sets it up on a terminal: results on stdout and progress on
// stderr, both on one terminal (one stream here).
TEST(Screen, ResultLinesSurviveTheProgressOfLaterItems) {
  std::ostringstream terminal;
  {
    Screen screen(terminal);
    ScreenBuf out_buf(screen, terminal), err_buf(screen, terminal);
    std::ostream out(&out_buf), err(&err_buf);
    for (int image = 1; image <= 2; ++image) {
      ProgressView view(err, true);
      std::string name = "img" + std::to_string(image);
      size_t a = view.start(name + " layer 1/2", 1000);
      size_t b = view.start(name + " layer 2/2", 3000);
      view.update(a, 500);
      view.message(name + ": retrying after a reset");
      view.end(a, ItemEnd::done);
      std::this_thread::sleep_for(std::chrono::milliseconds(110));  // past the redraw limit
      view.update(b, 1500);
      view.end(b, ItemEnd::done);
      out << name + " sha256:abc linux/amd64\n";
      err << "a warning about " << name << "\n";
    }
  }
  std::vector<std::string> rows = screen_of(terminal.str());
  for (const char* line :
       {"img1 sha256:abc linux/amd64", "img2 sha256:abc linux/amd64",
        "img1: retrying after a reset", "a warning about img2", "img1 layer 1/2: done",
        "img1 layer 2/2: done", "img2 layer 1/2: done", "img2 layer 2/2: done"})
    EXPECT_EQ(count_lines(rows, line), 1u) << line << " in:\n" << dump(rows);
  EXPECT_EQ(count_lines(rows, "downloading"), 0u) << "progress left behind:\n" << dump(rows);
  EXPECT_EQ(rows.size(), 10u) << dump(rows);
  // Permanent lines in the order they were printed.
  EXPECT_EQ(rows[0], "img1: retrying after a reset");
  EXPECT_NE(rows[1].find("img1 layer 1/2: done"), std::string::npos) << dump(rows);
  EXPECT_EQ(rows[3], "img1 sha256:abc linux/amd64");
}

TEST(Screen, AResultPrintedWhileItemsRunStaysAboveThem) {
  std::ostringstream terminal;
  {
    Screen screen(terminal);
    ScreenBuf out_buf(screen, terminal);
    std::ostream out(&out_buf);
    ProgressView view(out, true);
    size_t a = view.start("layer a", 100);
    view.update(a, 10);
    out << "partial ";  // no newline yet: not printed until the line is complete
    out << "result\n";
    std::vector<std::string> rows = screen_of(terminal.str());
    ASSERT_EQ(rows.size(), 2u) << dump(rows);
    EXPECT_EQ(rows[0], "partial result");
    EXPECT_NE(rows[1].find("layer a: downloading"), std::string::npos) << dump(rows);
    view.end(a, ItemEnd::failed, "connection reset");
  }
  std::vector<std::string> rows = screen_of(terminal.str());
  ASSERT_EQ(rows.size(), 2u) << dump(rows);
  EXPECT_EQ(rows[1], "layer a: failed: connection reset");
}

TEST(Screen, ItemsStillRunningAtTheEndKeepTheirLastLine) {
  std::ostringstream terminal;
  {
    ProgressView view(terminal, true);  // a Screen of its own
    size_t a = view.start("layer a", 100);
    view.update(a, 10);
    view.start("layer b", 100, "waiting for another download");
  }
  std::vector<std::string> rows = screen_of(terminal.str());
  ASSERT_EQ(rows.size(), 2u) << dump(rows);
  EXPECT_NE(rows[0].find("layer a: downloading 10 B / 100 B"), std::string::npos) << dump(rows);
  EXPECT_NE(rows[1].find("layer b: waiting for another download 0 B / 100 B"), std::string::npos)
      << dump(rows);
}

TEST(Screen, LinesAreCutToTheTerminalsWidth) {
  std::ostringstream terminal;
  {
    Screen screen(terminal, 20);
    screen.show(&screen, {"a progress line much longer than twenty columns", "ünïcödé ünïcödé ü"});
    std::vector<std::string> rows = screen_of(terminal.str(), 20);
    ASSERT_EQ(rows.size(), 2u) << dump(rows);
    EXPECT_EQ(rows[0], "a progress line muc");
    EXPECT_EQ(rows[1], "ünïcödé ünïc") << "cut at a character boundary, under 20 bytes";
  }
  EXPECT_TRUE(screen_of(terminal.str()).empty()) << "the area is erased at the end";
}

TEST(Screen, ALongLabelGivesWayToTheNumbers) {
  std::ostringstream terminal;
  Screen screen(terminal, 60);
  ScreenBuf buf(screen, terminal);
  std::ostream err(&buf);
  ProgressView view(err, true);
  view.start("127.0.0.1:5000/python:3.12-alpine layer 1/2 sha256:f446014bf301", 2048, "downloading",
             1024);
  std::vector<std::string> rows = screen_of(terminal.str(), 60);
  ASSERT_EQ(rows.size(), 1u) << dump(rows);
  EXPECT_LT(rows[0].size(), 60u) << rows[0];
  EXPECT_EQ(rows[0].rfind("127.0.0.1", 0), 0u) << rows[0];
  EXPECT_NE(rows[0].find("bf301: downloading 1.0 KiB / 2.0 KiB"), std::string::npos) << rows[0];
  EXPECT_NE(rows[0].find("..."), std::string::npos) << rows[0];
}

TEST(Progress, WaitingThenDownloadingOffATerminal) {
  std::ostringstream out;
  {
    ProgressView view(out, false);
    size_t a = view.start("layer a", 2048, "waiting for another download");
    view.update(a, 1024);
    view.retitle(a, "downloading");
    view.end(a, ItemEnd::done);
    size_t b = view.start("layer b", 10, "waiting for another download");
    view.end(b, ItemEnd::cached, "another process downloaded it");
    size_t c = view.start("archive", 0, "compressing 1 segment");
    view.end(c, ItemEnd::done);
  }
  EXPECT_EQ(out.str().find('\033'), std::string::npos);
  for (const char* line :
       {"layer a: waiting for another download 2.0 KiB\n", "layer a: downloading 2.0 KiB\n",
        "layer a: done 2.0 KiB in ", "layer b: already present: another process downloaded it\n",
        "archive: compressing 1 segment\n", "archive: done 0 B in "})
    EXPECT_NE(out.str().find(line), std::string::npos) << line << " in:\n" << out.str();
  EXPECT_EQ(out.str().find("downloading 0 B"), std::string::npos) << out.str();
}

}  // namespace
}  // namespace imagefs::cli
