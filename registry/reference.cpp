// Parses image references with docker's grammar (distribution/reference) and normalization rules.
#include "registry/reference.h"

#include <algorithm>
#include <cctype>

namespace imagefs::registry {
namespace {

constexpr size_t kMaxNameLength = 255;
constexpr size_t kMaxTagLength = 128;

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// path-component := alnum+ (separator alnum+)*, separator := [_.] | __ | -+
// Returns "" if valid, else the reason.
std::string check_path_component(std::string_view c) {
  if (c.empty()) return "empty path component";
  if (!is_lower_alnum(c.front()) || !is_lower_alnum(c.back())) {
    if (std::any_of(c.begin(), c.end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; }))
      return "repository name must be lowercase";
    return "path component \"" + std::string(c) +
           "\" must start and end with a lowercase letter or digit";
  }
  for (size_t i = 0; i < c.size();) {
    char ch = c[i];
    if (is_lower_alnum(ch)) {
      ++i;
      continue;
    }
    if (ch >= 'A' && ch <= 'Z') return "repository name must be lowercase";
    size_t j = i;
    while (j < c.size() && !is_lower_alnum(c[j])) ++j;
    std::string_view sep = c.substr(i, j - i);
    bool ok = sep == "." || sep == "_" || sep == "__" ||
              std::all_of(sep.begin(), sep.end(), [](char s) { return s == '-'; });
    if (!ok) {
      if (std::any_of(sep.begin(), sep.end(), [](char s) { return s >= 'A' && s <= 'Z'; }))
        return "repository name must be lowercase";
      return "invalid character sequence \"" + std::string(sep) + "\" in \"" + std::string(c) +
             "\"";
    }
    i = j;
  }
  return "";
}

// domain := host [":" port]; host := domain-component ("." domain-component)* | "[" IPv6 "]"
std::string check_domain(std::string_view d) {
  std::string_view host = d;
  if (!d.empty() && d.front() == '[') {
    size_t close = d.find(']');
    if (close == std::string_view::npos)
      return "unterminated IPv6 address in \"" + std::string(d) + "\"";
    std::string_view inner = d.substr(1, close - 1);
    if (inner.empty() || !std::all_of(inner.begin(), inner.end(), [](char c) {
          return is_hex(static_cast<char>(std::tolower(static_cast<unsigned char>(c)))) ||
                 c == ':' || c == '.';
        }))
      return "invalid IPv6 address \"" + std::string(inner) + "\"";
    std::string_view rest = d.substr(close + 1);
    if (rest.empty()) return "";
    if (rest.front() != ':') return "invalid registry \"" + std::string(d) + "\"";
    host = "";
    d = rest;
  } else {
    size_t colon = d.rfind(':');
    host = d.substr(0, colon);
    d = colon == std::string_view::npos ? std::string_view{} : d.substr(colon);
    size_t start = 0;
    while (start <= host.size()) {
      size_t dot = host.find('.', start);
      std::string_view label =
          host.substr(start, dot == std::string_view::npos ? dot : dot - start);
      bool ok =
          !label.empty() && is_alnum(label.front()) && is_alnum(label.back()) &&
          std::all_of(label.begin(), label.end(), [](char c) { return is_alnum(c) || c == '-'; });
      if (!ok) return "invalid registry host \"" + std::string(host) + "\"";
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
  }
  if (!d.empty()) {  // ":port"
    std::string_view port = d.substr(1);
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return "invalid port \"" + std::string(port) + "\"";
  }
  return "";
}

std::string check_tag(std::string_view t) {
  if (t.empty()) return "empty tag";
  if (t.size() > kMaxTagLength) return "tag is longer than 128 characters";
  auto word = [](char c) { return is_alnum(c) || c == '_'; };
  if (!word(t.front()))
    return "tag \"" + std::string(t) + "\" must start with a letter, digit or _";
  for (char c : t)
    if (!word(c) && c != '.' && c != '-')
      return "invalid character '" + std::string(1, c) + "' in tag \"" + std::string(t) + "\"";
  return "";
}

std::string check_digest(std::string_view d) {
  size_t colon = d.find(':');
  if (colon == std::string_view::npos) return "digest \"" + std::string(d) + "\" has no algorithm";
  std::string_view algo = d.substr(0, colon);
  std::string_view hex = d.substr(colon + 1);
  if (algo != "sha256")
    return "unsupported digest algorithm \"" + std::string(algo) + "\" (only sha256 is supported)";
  if (hex.size() != 64 || !std::all_of(hex.begin(), hex.end(), is_hex))
    return "digest must be sha256: followed by 64 lowercase hex digits";
  return "";
}

}  // namespace

Result<Reference> parse_reference(std::string_view text) {
  auto fail = [&](const std::string& why) -> Error {
    return make_error(EINVAL, "invalid reference \"" + std::string(text) + "\": " + why);
  };
  if (text.empty()) return fail("empty reference");
  for (char c : text)
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) == 0x7f)
      return fail("contains whitespace or a control character");

  Reference ref;
  std::string_view rest = text;
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    ref.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
    if (std::string why = check_digest(ref.digest); !why.empty()) return fail(why);
  }
  // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
  size_t slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    ref.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (std::string why = check_tag(ref.tag); !why.empty()) return fail(why);
  }
  if (rest.empty()) return fail("missing repository name");

  // Docker's rule: the first component is a registry if it has a '.' or ':', is "localhost", or
  // has an uppercase letter; otherwise the image is on Docker Hub.
  size_t first = rest.find('/');
  std::string_view head = rest.substr(0, first);
  bool has_upper =
      std::any_of(head.begin(), head.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
  if (first != std::string_view::npos &&
      (head.find_first_of(".:") != std::string_view::npos || head == "localhost" || has_upper)) {
    ref.domain = std::string(head);
    ref.repository = std::string(rest.substr(first + 1));
    if (std::string why = check_domain(ref.domain); !why.empty()) return fail(why);
  } else {
    ref.domain = std::string(kDefaultDomain);
    ref.repository = std::string(rest);
  }
  if (ref.domain == "index.docker.io" || ref.domain == "registry-1.docker.io")
    ref.domain = std::string(kDefaultDomain);
  if (ref.domain == kDefaultDomain && ref.repository.find('/') == std::string::npos) {
    if (ref.repository.size() == 64 &&
        std::all_of(ref.repository.begin(), ref.repository.end(), is_hex))
      return fail("a 64-character hexadecimal string is an image ID, not a repository name");
    ref.repository = "library/" + ref.repository;
  }

  std::string_view repo = ref.repository;
  for (size_t start = 0;;) {
    size_t end = repo.find('/', start);
    std::string_view component =
        repo.substr(start, end == std::string_view::npos ? end : end - start);
    if (std::string why = check_path_component(component); !why.empty()) return fail(why);
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  if (ref.name().size() > kMaxNameLength)
    return fail("repository name is longer than 255 characters");

  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

std::string Reference::str() const {
  std::string s = name();
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

std::string Reference::familiar() const {
  std::string s = name();
  if (domain == kDefaultDomain) {
    std::string_view repo = repository;
    // "library/" is dropped for official images, unless what is left would read as an image ID.
    if (repo.starts_with("library/") && repo.find('/', 8) == std::string_view::npos &&
        !(repo.size() == 8 + 64 &&
          std::all_of(repo.begin() + 8, repo.end(), [](char c) { return is_hex(c); })))
      repo.remove_prefix(8);
    // Docker drops "docker.io/", but then a first component that looks like a registry
    // ("docker.io/a.b/c") would be read as one: keep the domain in that case.
    std::string_view head = repo.substr(0, repo.find('/'));
    bool reads_as_domain =
        repo.find('/') != std::string_view::npos &&
        (head.find_first_of(".:") != std::string_view::npos || head == "localhost");
    if (!reads_as_domain) s = std::string(repo);
  }
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

}  // namespace imagefs::registry
