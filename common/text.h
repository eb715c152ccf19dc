// Text from outside (tar entry names, registry headers and bodies, token realms, paths) made safe
// to show: for JSON (nlohmann::json::dump throws on invalid UTF-8), for log lines (a registry must
// not be able to forge a line), and for a terminal (no escape sequences).
//
// The rule: well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above
// U+10FFFF) passes unchanged, except control characters; every byte of a malformed sequence and
// every control character (C0: 0x00-0x1f, DEL 0x7f, and C1: U+0080-U+009F, whose UTF-8 bytes are
// escaped) becomes `\xNN` (two lowercase hex digits). A backslash stays a backslash: the escaping
// is for display, not reversible (`\xff` in the output may be the byte 0xff or the four
// characters of a name that said so). Nothing that needs the original bytes may use it: rootfs
// names are served as the raw bytes they are; escape only where bytes become JSON or a log line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace imagefs {

namespace text_detail {

// The length of the well-formed UTF-8 sequence at the start of `s`, or 0 when it is malformed.
inline size_t utf8_sequence(std::string_view s) {
  auto at = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  auto cont = [&](size_t i, uint8_t lo = 0x80, uint8_t hi = 0xbf) {
    return i < s.size() && at(i) >= lo && at(i) <= hi;
  };
  const uint8_t b = at(0);
  if (b < 0x80) return 1;
  if (b >= 0xc2 && b <= 0xdf) return cont(1) ? 2 : 0;
  if (b == 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if (b == 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;  // no surrogates
  if (b >= 0xe1 && b <= 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (b == 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (b >= 0xf1 && b <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (b == 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

inline void append_hex_escape(std::string& out, uint8_t byte) {
  constexpr char kHex[] = "0123456789abcdef";
  out += "\\x";
  out.push_back(kHex[byte >> 4]);
  out.push_back(kHex[byte & 0xf]);
}

}  // namespace text_detail

// `bytes` as display text: valid UTF-8 without control characters, under the rule above.
// Never fails; the result is at most four times as long.
inline std::string printable(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const auto b = static_cast<uint8_t>(bytes[i]);
    const size_t n = text_detail::utf8_sequence(bytes.substr(i));
    const bool control =
        b < 0x20 || b == 0x7f || (n == 2 && b == 0xc2 && static_cast<uint8_t>(bytes[i + 1]) < 0xa0);
    if (n == 0 || control) {
      // A malformed sequence: only its first byte is escaped here; the next byte starts afresh
      // (it may begin a well-formed sequence). A C1 control: both of its bytes.
      const size_t escaped = n == 0 ? 1 : n;
      for (size_t k = 0; k < escaped; ++k)
        text_detail::append_hex_escape(out, static_cast<uint8_t>(bytes[i + k]));
      i += escaped;
      continue;
    }
    out.append(bytes.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace imagefs
