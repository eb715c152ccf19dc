// Reading /etc/imagefs/imagefs.conf (cli/config.h): a line format of our own rather than TOML,
// because every key is a command-line option and every value the text that option takes, so the
// file needs nothing a `KEY = VALUE` line cannot say, and its errors can name a line.
#include "cli/config.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "cli/commands.h"
#include "common/errno_error.h"
#include "common/text.h"

namespace imagefs::cli {
namespace {

std::string trim(std::string_view s) {
  size_t start = s.find_first_not_of(" \t\r");
  if (start == std::string_view::npos) return "";
  size_t end = s.find_last_not_of(" \t\r");
  return std::string(s.substr(start, end + 1 - start));
}

std::optional<bool> parse_bool(const std::string& text) {
  std::string v;
  for (char c : text) v += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (v == "yes" || v == "true" || v == "on" || v == "1") return true;
  if (v == "no" || v == "false" || v == "off" || v == "0") return false;
  return std::nullopt;
}

// Whether `message` names option --`key` (and not only a longer one: --allow-registry-file is
// not --allow-registry).
bool names_option(const std::string& message, const std::string& key) {
  std::string needle = "--" + key;
  for (size_t at = message.find(needle); at != std::string::npos;
       at = message.find(needle, at + 1)) {
    size_t end = at + needle.size();
    if (end == message.size() ||
        !(std::isalnum(static_cast<unsigned char>(message[end])) || message[end] == '-'))
      return true;
  }
  return false;
}

}  // namespace

std::vector<OptionSpec> config_keys() {
  // --foreground and --debug would keep mount(8)'s helper (and `imagefs mount` in scripts)
  // from ever returning: they are for one run too.
  static const std::set<std::string, std::less<>> kNotDefaults = {
      "config", "output", "tar", "json", "prometheus", "repair", "foreground", "debug"};
  std::vector<OptionSpec> keys;
  std::set<std::string, std::less<>> seen;
  for (const Command& c : commands())
    for (const OptionSpec& s : c.options)
      if (!kNotDefaults.contains(s.name) && seen.insert(s.name).second) keys.push_back(s);
  return keys;
}

Result<Config> parse_config(std::string_view text, const std::string& file,
                            const std::vector<OptionSpec>& keys) {
  Config config;
  config.file = file;
  std::istringstream in{std::string(text)};
  int number = 0;
  for (std::string raw; std::getline(in, raw);) {
    ++number;
    std::string line = trim(raw);
    if (line.empty() || line[0] == '#') continue;
    auto where = file + ":" + std::to_string(number) + ": ";
    size_t eq = line.find('=');
    std::string key = trim(std::string_view(line).substr(0, eq));
    std::optional<std::string> value;
    if (eq != std::string::npos) {
      value = trim(std::string_view(line).substr(eq + 1));
      if (value->size() >= 2 && value->front() == '"' && value->back() == '"')
        value = value->substr(1, value->size() - 2);
    }
    for (char& c : key)
      if (c == '_') c = '-';
    if (key.starts_with("--")) key = key.substr(2);
    const OptionSpec* spec = nullptr;
    for (const OptionSpec& s : keys)
      if (s.name == key) spec = &s;
    if (key.empty())
      return make_error(EINVAL, where + "expected KEY = VALUE, not \"" + printable(line) + "\"");
    if (!spec)
      return make_error(EINVAL, where + "unknown key \"" + printable(key) +
                                    "\" (keys are the long options of imagefs' commands, such "
                                    "as cache-dir, platform, ttl; `imagefs help` lists them)");
    if (spec->arity == Arity::flag) {
      std::optional<bool> on = value ? parse_bool(*value) : std::optional<bool>(true);
      if (!on)
        return make_error(
            EINVAL, where + key + " is a flag: give yes or no, not \"" + printable(*value) + "\"");
      if (*on)
        config.entries.push_back({key, "1", number, value.value_or("yes")});
      else
        std::erase_if(config.entries, [&](const ConfigEntry& e) { return e.key == key; });
      continue;
    }
    if (!value || value->empty())
      return make_error(EINVAL, where + key + " needs a value (" + spec->metavar + ")");
    if (spec->arity == Arity::value)  // the last line of a key wins, as on the command line
      std::erase_if(config.entries, [&](const ConfigEntry& e) { return e.key == key; });
    config.entries.push_back({key, *value, number, *value});
  }
  return config;
}

Result<Config> load_config(const std::optional<std::string>& explicit_file) {
  std::string file;
  bool named = true;
  if (explicit_file) {
    file = *explicit_file;
  } else if (const char* env = std::getenv("IMAGEFS_CONFIG")) {  // NOLINT(concurrency-mt-unsafe)
    file = env;
    if (file.empty()) return Config{};
  } else {
    file = kDefaultConfigFile;
    named = false;
  }
  std::ifstream in(file);
  if (!in) {
    int err = errno;
    if (err == ENOENT && !named) return Config{};
    return errno_error(err, "cannot read the configuration file", file);
  }
  std::stringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), file, config_keys());
}

Args with_config(const Config& config, const std::vector<OptionSpec>& specs, Args cli) {
  for (const OptionSpec& s : specs) {
    if (cli.has(s.name)) continue;
    std::vector<std::string> values;
    for (const ConfigEntry& e : config.entries)
      if (e.key == s.name) values.push_back(e.value);
    if (!values.empty()) cli.set_default(s.name, std::move(values));
  }
  return cli;
}

Error blame_config(const Config& config, const Args& cli, const Error& error) {
  for (const ConfigEntry& e : config.entries)
    if (!cli.has(e.key) && names_option(error.message, e.key))
      return make_error(error.code, config.file + ":" + std::to_string(e.line) + ": " + e.key +
                                        " = " + printable(e.written) + ": " + error.message);
  return error;
}

}  // namespace imagefs::cli
