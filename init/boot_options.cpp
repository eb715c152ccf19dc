// The kernel command line, split as the kernel splits it, and the parameters of the default /init.
#include "init/boot_options.h"

namespace imagefs::init {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

Argv kernel_words(std::string_view cmdline) {
  Argv out;
  size_t at = 0;
  while (at < cmdline.size() && is_space(cmdline[at])) ++at;
  while (at < cmdline.size()) {
    // As next_arg(): a leading quote opens a quoted word; quotes toggle wherever they are.
    bool in_quote = false;
    bool quoted = false;
    if (cmdline[at] == '"') {
      ++at;
      in_quote = quoted = true;
    }
    size_t i = at;
    size_t equals = std::string_view::npos;
    for (; i < cmdline.size(); ++i) {
      if (is_space(cmdline[i]) && !in_quote) break;
      if (equals == std::string_view::npos && cmdline[i] == '=') equals = i;
      if (cmdline[i] == '"') in_quote = !in_quote;
    }
    std::string_view word = cmdline.substr(at, i - at);
    std::string text;
    if (equals == std::string_view::npos) {
      if (quoted && !word.empty() && word.back() == '"') word.remove_suffix(1);
      text = std::string(word);
    } else {
      std::string_view param = word.substr(0, equals - at);
      std::string_view value = word.substr(equals - at + 1);
      if (!value.empty() && value.front() == '"') {
        value.remove_prefix(1);
        if (!value.empty() && value.back() == '"') value.remove_suffix(1);
      } else if (quoted && !value.empty() && value.back() == '"') {
        value.remove_suffix(1);
      }
      text = std::string(param) + "=" + std::string(value);
    }
    out.push_back(std::move(text));
    at = i;
    while (at < cmdline.size() && is_space(cmdline[at])) ++at;
  }
  return out;
}

BootOptions parse_boot_options(std::string_view cmdline) {
  BootOptions out;
  const Argv words = kernel_words(cmdline);
  bool after_dashes = false;
  for (const std::string& w : words) {
    if (after_dashes) {
      out.args.push_back(w);
    } else if (w == "--") {
      after_dashes = true;
    } else if (w.starts_with("imagefs.exec=")) {
      Argv exec = split_words(std::string_view(w).substr(13));
      if (!exec.empty()) out.exec = std::move(exec);
    } else if (w.starts_with("imagefs.env=")) {
      if (w.size() > 12) out.env.push_back(w.substr(12));
    }
  }
  return out;
}

}  // namespace imagefs::init
