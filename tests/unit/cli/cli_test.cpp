// The command line's dispatch, usage errors and version report.
#include "cli/cli.h"

#include <gtest/gtest.h>

#include <sstream>

#include "cli/commands.h"

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

Result<cpio::ArchiveOptions> options_of(const std::vector<std::string>& argv) {
  auto args = parse_args(argv, archive_option_specs());
  EXPECT_TRUE(args.ok());
  return archive_options(*args);
}

TEST(ArchiveOptions, ExecAsWordsOrAsAJsonArray) {
  auto words = options_of({"--exec", " /usr/bin/agent --port  80 "});
  ASSERT_TRUE(words.ok()) << words.error().message;
  EXPECT_EQ(words->exec, (std::vector<std::string>{"/usr/bin/agent", "--port", "80"}));
  auto json = options_of({"--exec", R"j(["/usr/bin/python3", "-c", "print(1 + 1)"])j"});
  ASSERT_TRUE(json.ok()) << json.error().message;
  EXPECT_EQ(json->exec, (std::vector<std::string>{"/usr/bin/python3", "-c", "print(1 + 1)"}));
  auto none = options_of({});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->exec);
}

TEST(ArchiveOptions, BadExec) {
  for (const char* bad : {"", "   ", "[]", "[1]", "[\"/a\", 2]", "[\"/a\"", "[\"\"]"}) {
    auto r = options_of({"--exec", bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, EINVAL) << bad;
    EXPECT_NE(r.error().message.find("--exec"), std::string::npos) << r.error().message;
  }
  auto with_init = options_of({"--exec", "/agent", "--init", "/proc/self/exe"});
  ASSERT_FALSE(with_init.ok());
  EXPECT_NE(with_init.error().message.find("--init"), std::string::npos);
}

TEST(RegistryOptions, DeadlinesAndStallRule) {
  auto parse = [](const std::vector<std::string>& argv) {
    auto args = parse_args(argv, registry_option_specs());
    EXPECT_TRUE(args.ok());
    return registry_options(*args);
  };
  auto defaults = parse({});
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->request_timeout, std::chrono::seconds(30));
  EXPECT_EQ(defaults->stall_min_rate, 1024u);
  EXPECT_EQ(defaults->stall_window, std::chrono::seconds(30));
  auto set = parse({"--registry-timeout", "5", "--stall-rate", "4096", "--stall-window", "10"});
  ASSERT_TRUE(set.ok()) << set.error().message;
  EXPECT_EQ(set->request_timeout, std::chrono::seconds(5));
  EXPECT_EQ(set->stall_min_rate, 4096u);
  EXPECT_EQ(set->stall_window, std::chrono::seconds(10));
  for (const char* bad : {"0", "-1", "soon"}) {
    auto r = parse({"--registry-timeout", bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("--registry-timeout"), std::string::npos);
  }
}

}  // namespace
}  // namespace imagefs::cli

namespace imagefs::cli {
namespace {

// --allow-other (issue 11): other users may reach only registries the owner names, so the option
// alone is refused, before anything is mounted.
TEST(MountOptions, AllowOtherNeedsAListOfRegistries) {
  CliRun r = run_cli(
      {"mount", "/nonexistent/imagefs-mnt", "--cache-dir", "/nonexistent/cache", "--allow-other"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--allow-registry HOST"), std::string::npos) << r.err;
}

TEST(MountOptions, AllowRegistryIsForAllowOther) {
  CliRun r = run_cli({"mount", "/nonexistent/imagefs-mnt", "--cache-dir", "/nonexistent/cache",
                      "--allow-registry", "ghcr.io"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("are for --allow-other"), std::string::npos) << r.err;
}

TEST(MountOptions, AllowRegistryTakesHostsAsReferencesWriteThem) {
  for (std::string bad : {"myreg", "ghcr.io/org", "", "bad\x1b[31m.io"}) {
    CliRun r = run_cli({"mount", "/nonexistent/imagefs-mnt", "--cache-dir", "/nonexistent/cache",
                        "--allow-other", "--allow-registry", bad});
    EXPECT_EQ(r.status, 1) << bad;
    EXPECT_NE(r.err.find("is not a registry host"), std::string::npos) << r.err;
    // What reaches the terminal is printable: no escape sequence from an argument.
    EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << r.err;
  }
  CliRun r = run_cli({"mount", "/nonexistent/imagefs-mnt", "--cache-dir", "/nonexistent/cache",
                      "--allow-other", "--allow-registry-file", "/nonexistent/allowed"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--allow-registry-file"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace imagefs::cli
