// printable() (common/text.h): well-formed UTF-8 passes, every malformed byte and every control
// character becomes \xNN, and the result always parses as JSON (nlohmann, strictly).
#include "common/text.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>

namespace imagefs {
namespace {

// The JSON dump of `s` throws on invalid UTF-8 (the crash of issue 11): it must not, and the
// string must come back from a strict parse unchanged.
void expect_json_safe(const std::string& s) {
  std::string dumped;
  ASSERT_NO_THROW(dumped = nlohmann::json(s).dump());
  auto back = nlohmann::json::parse(dumped, nullptr, false);
  ASSERT_FALSE(back.is_discarded()) << dumped;
  EXPECT_EQ(back.get<std::string>(), s);
}

TEST(PrintableTest, PlainTextAndValidUtf8PassUnchanged) {
  for (std::string s : {std::string(), std::string("python:3.12/rootfs/usr/bin"),
                        std::string("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x90\xb3"),
                        std::string("\xc2\xa0 (U+00A0, the first after C1)"),
                        std::string("\xed\x9f\xbf \xee\x80\x80 \xf4\x8f\xbf\xbf")}) {
    EXPECT_EQ(printable(s), s);
  }
}

TEST(PrintableTest, InvalidBytesAreEscapedOneByOne) {
  EXPECT_EQ(printable("bad\xff"), "bad\\xff");
  EXPECT_EQ(printable("\xfe\xff"), "\\xfe\\xff");
  // Latin-1 "café": the lone 0xe9 is escaped, the letters after it are kept.
  EXPECT_EQ(printable("caf\xe9!"), "caf\\xe9!");
  // A truncated sequence at the end, and one cut by an ASCII byte.
  EXPECT_EQ(printable("a\xe6\x97"), "a\\xe6\\x97");
  EXPECT_EQ(printable("\xe6"
                      "a\x97"),
            "\\xe6a\\x97");
  // A malformed lead followed by a good sequence: the good one survives.
  EXPECT_EQ(printable("\xc3\xc3\xa9"), "\\xc3\xc3\xa9");
}

TEST(PrintableTest, OverlongSurrogatesAndOutOfRangeAreInvalid) {
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");                    // overlong '/'
  EXPECT_EQ(printable("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");           // overlong, 3 bytes
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // a UTF-16 surrogate
  EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  EXPECT_EQ(printable("\xf8\x88\x80\x80\x80"), "\\xf8\\x88\\x80\\x80\\x80");
}

TEST(PrintableTest, ControlCharactersAreEscapedSoNoLineCanBeForged) {
  EXPECT_EQ(printable("a\nb"), "a\\x0ab");
  EXPECT_EQ(printable("x\r\n2026-01-01 imagefs[1]: mounted"),
            "x\\x0d\\x0a2026-01-01 imagefs[1]: mounted");
  EXPECT_EQ(printable("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
  EXPECT_EQ(printable(std::string("nul\0here", 8)), "nul\\x00here");
  EXPECT_EQ(printable("tab\there\x7f"), "tab\\x09here\\x7f");
  // C1 controls (U+0080..U+009F; U+009B is a CSI to some terminals): both bytes escaped.
  EXPECT_EQ(printable("\xc2\x9b"
                      "31m"),
            "\\xc2\\x9b31m");
  EXPECT_EQ(printable("\xc2\x80\xc2\x9f"), "\\xc2\\x80\\xc2\\x9f");
}

TEST(PrintableTest, BackslashStaysABackslashAndTheResultIsAFixedPoint) {
  EXPECT_EQ(printable("C:\\dir\\x41"), "C:\\dir\\x41");
  std::string once = printable("\xff\n\\x\xc3\xa9");
  EXPECT_EQ(printable(once), once);
}

TEST(PrintableTest, AnyBytesGiveValidJsonAndNoControlCharacters) {
  std::mt19937 random(11);
  for (int round = 0; round < 2000; ++round) {
    std::string bytes(random() % 40, '\0');
    for (char& c : bytes) c = static_cast<char>(random() % 256);
    if (round % 3 == 0) bytes += "\xe6\x97\xa5\xc3";  // valid and truncated sequences too
    std::string out = printable(bytes);
    expect_json_safe(out);
    for (char c : out) {
      auto b = static_cast<unsigned char>(c);
      EXPECT_FALSE(b < 0x20 || b == 0x7f) << "a control byte in " << out;
    }
    EXPECT_LE(out.size(), 4 * bytes.size());
  }
}

}  // namespace
}  // namespace imagefs
