// What the kernel command line asks of the default /init (README, "The default /init").
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "init/command.h"

namespace imagefs::init {

struct BootOptions {
  std::optional<Argv> exec;  // imagefs.exec="PROG ARG...": replaces Entrypoint and Cmd
  Argv args;                 // the words after "--": appended to exec, or replacing Cmd
  Argv env;                  // imagefs.env=KEY=VALUE, repeatable, in order
  friend bool operator==(const BootOptions&, const BootOptions&) = default;
};

// The words of a kernel command line (/proc/cmdline) as the kernel's parser splits them
// (lib/cmdline.c next_arg): at spaces outside double quotes; in "param=value" a quoted value
// loses its quotes, and a word that starts with a quote loses it and its closing one.
Argv kernel_words(std::string_view cmdline);

// imagefs.exec= (its value split at spaces; the last one counts; an empty value is ignored),
// imagefs.env=, and everything after the first "--". Other words are the kernel's business.
BootOptions parse_boot_options(std::string_view cmdline);

}  // namespace imagefs::init
