// The config file of the default /init: NUL-separated fields, written by cpio/ and read at boot.
#include "init/init_config.h"

#include <cstdlib>
#include <vector>

namespace imagefs::init {

namespace {

constexpr std::string_view kMagic = "imagefs-init-config";
constexpr int kVersion = 1;

void put(std::string& out, std::string_view field) {
  out += field;
  out += '\0';
}

void put_list(std::string& out, std::string_view key, const Argv& values) {
  put(out, key);
  put(out, std::to_string(values.size()));
  for (const std::string& v : values) put(out, v);
}

Error bad(std::string_view why) {
  return make_error(
      EINVAL, "the init config " + std::string(kConfigPath) + " is damaged: " + std::string(why));
}

// A count: decimal digits only, and no more than the fields left.
std::optional<size_t> parse_count(std::string_view text, size_t left) {
  if (text.empty() || text.size() > 9) return std::nullopt;
  size_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  if (n > left) return std::nullopt;
  return n;
}

}  // namespace

std::string encode_config(const InitConfig& config) {
  std::string out;
  put(out, std::string(kMagic) + " " + std::to_string(kVersion));
  put_list(out, "entrypoint", config.entrypoint);
  put_list(out, "cmd", config.cmd);
  put_list(out, "env", config.env);
  put_list(out, "workdir", {config.working_dir});
  put_list(out, "user", {config.user});
  if (config.exec) put_list(out, "exec", *config.exec);
  return out;
}

Result<InitConfig> decode_config(std::string_view bytes) {
  if (!bytes.empty() && bytes.back() != '\0') return bad("it does not end with a NUL (truncated)");
  std::vector<std::string_view> fields;
  for (size_t at = 0; at < bytes.size();) {
    const size_t end = bytes.find('\0', at);
    fields.push_back(bytes.substr(at, end - at));
    at = end + 1;
  }
  if (fields.empty()) return bad("it is empty");
  const std::string_view head = fields[0];
  if (!head.starts_with(std::string(kMagic) + " ")) return bad("it does not start with the magic");
  const std::string_view version = head.substr(kMagic.size() + 1);
  if (version != std::to_string(kVersion))
    return make_error(EINVAL, "the init config " + std::string(kConfigPath) + " has version " +
                                  std::string(version) + ", which this /init does not know");

  InitConfig config;
  size_t i = 1;
  while (i < fields.size()) {
    const std::string_view key = fields[i];
    if (i + 1 >= fields.size()) return bad("the record " + std::string(key) + " has no count");
    const auto count = parse_count(fields[i + 1], fields.size() - i - 2);
    if (!count) return bad("the record " + std::string(key) + " has a bad count");
    Argv values(fields.begin() + static_cast<std::ptrdiff_t>(i + 2),
                fields.begin() + static_cast<std::ptrdiff_t>(i + 2 + *count));
    i += 2 + *count;
    auto single = [&](std::string& out) -> Result<void> {
      if (values.size() != 1) return bad("the record " + std::string(key) + " needs one value");
      out = std::move(values[0]);
      return {};
    };
    if (key == "entrypoint") {
      config.entrypoint = std::move(values);
    } else if (key == "cmd") {
      config.cmd = std::move(values);
    } else if (key == "env") {
      config.env = std::move(values);
    } else if (key == "workdir") {
      IMAGEFS_CHECK(single(config.working_dir));
    } else if (key == "user") {
      IMAGEFS_CHECK(single(config.user));
    } else if (key == "exec") {
      config.exec = std::move(values);
    }
    // Other keys: written by a newer imagefs, not needed here.
  }
  return config;
}

}  // namespace imagefs::init
