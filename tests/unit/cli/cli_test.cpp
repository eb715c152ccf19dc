// The command line's dispatch, usage errors and version report.
#include "cli/cli.h"

#include <gtest/gtest.h>

#include <sstream>

namespace imagefs::cli {
namespace {

struct CliRun {
  int status;
  std::string out, err;
};

CliRun run_cli(std::vector<std::string> args) {
  std::ostringstream out, err;
  int status = run(args, out, err);
  return {status, out.str(), err.str()};
}

TEST(Cli, NoArgumentsIsUsageError) {
  CliRun r = run_cli({});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("usage: imagefs"), std::string::npos);
}

TEST(Cli, UnknownCommandIsNamed) {
  CliRun r = run_cli({"frobnicate"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("unknown command \"frobnicate\""), std::string::npos);
}

TEST(Cli, HelpGoesToStdout) {
  CliRun r = run_cli({"--help"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("Commands:"), std::string::npos);
}

TEST(Cli, VersionNamesEveryLibrary) {
  CliRun r = run_cli({"version"});
  EXPECT_EQ(r.status, 0);
  for (const char* lib : {"imagefs ", "libfuse 3.", "libcurl ", "libarchive ", "zlib ",
                          "libdeflate ", "zstd ", "LMDB ", "OpenSSL "})
    EXPECT_NE(r.out.find(lib), std::string::npos) << lib << " missing from:\n" << r.out;
}

}  // namespace
}  // namespace imagefs::cli
