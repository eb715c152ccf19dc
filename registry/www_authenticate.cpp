// A small recursive-descent reader for the challenge grammar:
//   challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//   auth-param = token BWS "=" BWS ( token / quoted-string )
// Commas separate both parameters and challenges; a name followed by "=" continues the current
// challenge, anything else starts the next one. libcurl has no public parser for this header,
// so this one is ours.
#include "registry/www_authenticate.h"

#include <cctype>
#include <cstring>
#include <optional>

namespace imagefs::registry {
namespace {

bool is_tchar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
         (c != '\0' && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr);
}

bool is_token68_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
         (c != '\0' && std::strchr("-._~+/", c) != nullptr);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

class Reader {
 public:
  explicit Reader(std::string_view text) : text_(text) {}

  [[nodiscard]] bool at_end() const { return pos_ >= text_.size(); }
  [[nodiscard]] char peek() const { return at_end() ? '\0' : text_[pos_]; }
  [[nodiscard]] size_t pos() const { return pos_; }
  void seek(size_t pos) { pos_ = pos; }
  void advance() { ++pos_; }

  void skip_space() {
    while (!at_end() && (peek() == ' ' || peek() == '\t')) ++pos_;
  }
  void skip_space_and_commas() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == ',')) ++pos_;
  }

  std::string_view token() {
    size_t start = pos_;
    while (!at_end() && is_tchar(peek())) ++pos_;
    return text_.substr(start, pos_ - start);
  }

  // A quoted-string with its quotes removed and quoted-pairs resolved. An unterminated string
  // runs to the end of the header.
  std::string quoted() {
    std::string out;
    ++pos_;  // the opening quote
    while (!at_end()) {
      char c = text_[pos_++];
      if (c == '"') return out;
      if (c == '\\' && !at_end()) c = text_[pos_++];
      out.push_back(c);
    }
    return out;
  }

  // After "name": true if "BWS = BWS" follows and then a value (token or quoted string), which
  // is what makes it a parameter rather than a token68 with "=" padding or a new challenge.
  [[nodiscard]] bool param_follows() const {
    size_t p = pos_;
    while (p < text_.size() && (text_[p] == ' ' || text_[p] == '\t')) ++p;
    if (p >= text_.size() || text_[p] != '=') return false;
    ++p;
    while (p < text_.size() && (text_[p] == ' ' || text_[p] == '\t')) ++p;
    return p < text_.size() && (text_[p] == '"' || is_tchar(text_[p])) && text_[p] != '=';
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

// Reads "name = value" at the reader (which must be at the name); nullopt when none is there,
// leaving the reader where it was.
std::optional<std::pair<std::string, std::string>> read_param(Reader& r) {
  size_t start = r.pos();
  std::string_view name = r.token();
  if (name.empty() || !r.param_follows()) {
    r.seek(start);
    return std::nullopt;
  }
  r.skip_space();
  r.advance();  // '='
  r.skip_space();
  std::string value = r.peek() == '"' ? r.quoted() : std::string(r.token());
  return std::make_pair(lower(name), std::move(value));
}

// Skips to the next comma (or the end): recovery from bytes that fit no rule.
void skip_item(Reader& r) {
  while (!r.at_end() && r.peek() != ',') {
    if (r.peek() == '"') {
      (void)r.quoted();
    } else {
      r.advance();
    }
  }
}

}  // namespace

std::string Challenge::param(const std::string& name) const {
  auto it = params.find(name);
  return it == params.end() ? std::string() : it->second;
}

std::vector<Challenge> parse_www_authenticate(std::string_view header) {
  std::vector<Challenge> challenges;
  Reader r(header);
  for (;;) {
    r.skip_space_and_commas();
    if (r.at_end()) break;
    std::string_view scheme = r.token();
    if (scheme.empty()) {
      r.advance();
      skip_item(r);
      continue;
    }
    Challenge challenge;
    challenge.scheme = lower(scheme);
    r.skip_space();
    // token68: only directly after the scheme, and only if it is not a parameter.
    if (!r.at_end() && is_token68_char(r.peek())) {
      size_t start = r.pos();
      std::string_view name = r.token();
      bool param = !name.empty() && r.param_follows();
      r.seek(start);
      if (!param) {
        std::string token68;
        while (!r.at_end() && is_token68_char(r.peek())) {
          token68.push_back(r.peek());
          r.advance();
        }
        while (!r.at_end() && r.peek() == '=') {
          token68.push_back('=');
          r.advance();
        }
        r.skip_space();
        if (r.at_end() || r.peek() == ',') {
          challenge.token68 = std::move(token68);
          challenges.push_back(std::move(challenge));
          continue;
        }
        // Neither a token68 nor a parameter: keep the scheme, drop the junk.
        skip_item(r);
        challenges.push_back(std::move(challenge));
        continue;
      }
    }
    // Parameters, separated by commas, until something that is not "name=value".
    for (;;) {
      r.skip_space();
      auto param = read_param(r);
      if (!param) break;
      challenge.params.emplace(std::move(param->first), std::move(param->second));
      r.skip_space();
      if (r.at_end()) break;
      if (r.peek() != ',') {
        skip_item(r);  // junk after a value, e.g. a="x"y: ignore up to the next comma
        if (r.at_end()) break;
      }
      // At a comma: continue this challenge only if another parameter follows it.
      size_t comma = r.pos();
      r.skip_space_and_commas();
      size_t next = r.pos();
      std::string_view name = r.token();
      bool more = !name.empty() && r.param_follows();
      r.seek(more ? next : comma);
      if (!more) break;
    }
    challenges.push_back(std::move(challenge));
  }
  return challenges;
}

std::vector<Challenge> parse_www_authenticate(const std::vector<std::string>& headers) {
  std::vector<Challenge> all;
  for (const std::string& header : headers) {
    std::vector<Challenge> some = parse_www_authenticate(header);
    all.insert(all.end(), std::make_move_iterator(some.begin()),
               std::make_move_iterator(some.end()));
  }
  return all;
}

}  // namespace imagefs::registry
