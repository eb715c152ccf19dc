// Parses WWW-Authenticate challenges (RFC 9110 section 11): the registry's answer to an
// unauthenticated request says how to authenticate ("Bearer realm=...,service=...,scope=...").
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace imagefs::registry {

struct Challenge {
  std::string scheme;                         // lowercased: "bearer", "basic"
  std::map<std::string, std::string> params;  // names lowercased, values unquoted
  std::string token68;                        // the rare token68 form ("Negotiate abc=="), else ""

  // The value of parameter `name` (lowercase), or "".
  [[nodiscard]] std::string param(const std::string& name) const;
  friend bool operator==(const Challenge&, const Challenge&) = default;
};

// Every challenge in one header value, in order. Never fails: bytes that are not part of a
// well-formed challenge are skipped (servers get this header subtly wrong often enough that
// leniency is the useful choice); duplicate parameters keep their first value.
std::vector<Challenge> parse_www_authenticate(std::string_view header);

// Every challenge of several header fields, in order.
std::vector<Challenge> parse_www_authenticate(const std::vector<std::string>& headers);

}  // namespace imagefs::registry
