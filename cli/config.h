// The configuration file (/etc/imagefs/imagefs.conf): defaults for every command's options, in
// the command line's own words. Each line is `KEY = VALUE`, KEY a long option name
// ("cache-dir"; "cache_dir" is the same), VALUE its value as the command line would take it;
// a repeatable option may be given on several lines; a flag takes yes/no/true/false/on/off/1/0
// (or the key alone for yes); '#' starts a comment line. Options given on the command line win
// over the file's (for a repeatable option, the command line's list replaces the file's).
// A command takes the keys of its own options and leaves the others to the commands that have
// them; a key that is no option of any command is an error. docs/OPERATIONS.md documents it.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/args.h"
#include "common/result.h"

namespace imagefs::cli {

inline constexpr const char* kDefaultConfigFile = "/etc/imagefs/imagefs.conf";

struct ConfigEntry {
  std::string key;    // the long option name, '_' turned into '-'
  std::string value;  // "1" for a flag that is on (a flag that is off has no entry)
  int line = 0;
  std::string written;  // the value as the line has it ("yes"), for messages
};

struct Config {
  std::string file;  // empty: no file was read
  std::vector<ConfigEntry> entries;
};

// The option names a configuration file may set: every command's options but those that name a
// single run (--config, --output, --tar, --json, --repair, --foreground, --debug).
std::vector<OptionSpec> config_keys();

// Parses `text`, read from `file` (for messages), against `keys`. EINVAL "FILE:LINE: ..." for
// a line that is no `KEY = VALUE`, an unknown key, or a flag whose value is no yes/no.
Result<Config> parse_config(std::string_view text, const std::string& file,
                            const std::vector<OptionSpec>& keys);

// Which file to read: `explicit_file` (--config FILE), else $IMAGEFS_CONFIG when set (empty:
// none), else /etc/imagefs/imagefs.conf. A missing default file is no file; a missing file that
// was named is an error (ENOENT naming it).
Result<Config> load_config(const std::optional<std::string>& explicit_file);

// `cli` with the file's values for the options in `specs` that the command line did not give.
Args with_config(const Config& config, const std::vector<OptionSpec>& specs, Args cli);

// A usage error of a command run with the file's values: when it is about an option the file
// set (the message names --KEY), the error names the file, line and value, so the person knows
// which file to edit; otherwise it is returned as it is.
Error blame_config(const Config& config, const Args& cli, const Error& error);

}  // namespace imagefs::cli
