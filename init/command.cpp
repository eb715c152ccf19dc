// Combination of Entrypoint, Cmd and overrides into one argv, and the PATH search for it.
#include "init/command.h"

namespace imagefs::init {

Result<Argv> compose_command(const Argv& entrypoint, const Argv& cmd,
                             const std::optional<Argv>& exec_override, const Argv& args) {
  if (exec_override) {
    if (exec_override->empty() || exec_override->front().empty())
      return make_error(ENOEXEC, "the program to run instead of the image's command is empty");
    Argv argv = *exec_override;
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  Argv argv = entrypoint;
  const Argv& tail = args.empty() ? cmd : args;
  argv.insert(argv.end(), tail.begin(), tail.end());
  if (argv.empty() || argv.front().empty())
    return make_error(ENOEXEC, "the image has neither Entrypoint nor Cmd: nothing to run");
  return argv;
}

Argv split_words(std::string_view text) {
  Argv out;
  size_t at = 0;
  while (true) {
    at = text.find_first_not_of(" \t\n", at);
    if (at == std::string_view::npos) return out;
    const size_t end = text.find_first_of(" \t\n", at);
    out.emplace_back(text.substr(at, end == std::string_view::npos ? end : end - at));
    if (end == std::string_view::npos) return out;
    at = end;
  }
}

Result<std::string> find_program(const std::string& name, std::string_view path,
                                 const std::function<bool(const std::string&)>& is_executable) {
  if (name.find('/') != std::string::npos) return name;
  size_t at = 0;
  while (true) {
    const size_t end = path.find(':', at);
    std::string candidate(path.substr(at, end == std::string_view::npos ? end : end - at));
    if (candidate.empty()) candidate = ".";
    candidate += '/';
    candidate += name;
    if (is_executable(candidate)) return candidate;
    if (end == std::string_view::npos) break;
    at = end + 1;
  }
  return make_error(ENOENT,
                    "\"" + name + "\": executable file not found in PATH=" + std::string(path));
}

}  // namespace imagefs::init
