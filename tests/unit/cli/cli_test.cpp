// The command line's dispatch, usage errors and version report.
#include "cli/cli.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "cli/commands.h"

namespace imagefs::cli {
namespace {

struct CliRun {
  int status;
  std::string out, err;
};

CliRun run_cli(const std::vector<std::string>& args) {
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
  EXPECT_EQ(r.status, 2) << "a usage error";
  EXPECT_NE(r.err.find("--allow-registry HOST"), std::string::npos) << r.err;
}

TEST(MountOptions, AllowRegistryIsForAllowOther) {
  CliRun r = run_cli({"mount", "/nonexistent/imagefs-mnt", "--cache-dir", "/nonexistent/cache",
                      "--allow-registry", "ghcr.io"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("are for --allow-other"), std::string::npos) << r.err;
}

TEST(MountOptions, AllowRegistryTakesHostsAsReferencesWriteThem) {
  for (std::string bad : {"myreg", "ghcr.io/org", "", "bad\x1b[31m.io"}) {
    CliRun r = run_cli({"mount", "/nonexistent/imagefs-mnt", "--cache-dir", "/nonexistent/cache",
                        "--allow-other", "--allow-registry", bad});
    EXPECT_EQ(r.status, 2) << bad;
    EXPECT_NE(r.err.find("is not a registry host"), std::string::npos) << r.err;
    // What reaches the terminal is printable: no escape sequence from an argument.
    EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << r.err;
  }
  CliRun r = run_cli({"mount", "/nonexistent/imagefs-mnt", "--cache-dir", "/nonexistent/cache",
                      "--allow-other", "--allow-registry-file", "/nonexistent/allowed"});
  EXPECT_EQ(r.status, 1) << "a file that cannot be read is not a usage error";
  EXPECT_NE(r.err.find("--allow-registry-file"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace imagefs::cli

namespace imagefs::cli {
namespace {

// Every usage error exits 2, before the store, a registry or a mount is touched (the store
// named cannot be created, even by root: a check that let a usage error through would fail
// with 1 on opening it); failures of the work itself exit 1.
TEST(ExitStatus, UsageErrorsAreTwo) {
  const std::string store = "--cache-dir=/proc/imagefs-store";
  const std::string agent = ::testing::TempDir() + "/imagefs-cli-agent";
  { std::ofstream(agent) << "#!/bin/sh\n"; }
  struct Case {
    std::vector<std::string> args;
    std::string says;  // part of the message
  };
  const std::vector<Case> cases = {
      {{"build", "alpine", "-o", "x.gz", "--level", "13"}, "--level must be a number from 1 to 12"},
      {{"build", "alpine", "-o", "x.zst", "--format", "zst", "--level", "20"}, "1 to 19"},
      {{"build", "alpine", "-o", "x", "--format", "bz2"}, "bz2"},
      {{"build", "alpine", "-o", "x", "--inject", "./agent"}, "expected HOST:GUEST"},
      {{"build", "alpine", "-o", "x", "--inject", agent + ":relative"}, "not absolute"},
      {{"build", "alpine", "-o", "x", "--init", "x", "--exec", "y"}, "--init x"},
      {{"build", "alpine", "-o", "x", "--init", agent, "--exec", "y"}, "cannot be used with"},
      {{"build", "alpine", "-o", "x", "--exec", "[1]"}, "--exec"},
      {{"build", "alpine"}, "-o FILE"},
      {{"build", "Alpine", "-o", "x"}, "invalid reference"},
      {{"build", "alpine", "-o", "x", "--platform", "foo"}, "foo"},
      {{"gc", "--max-size", "20X"}, "invalid size \"20X\""},
      {{"gc"}, "--max-size SIZE is required"},
      {{"gc", "--max-size", "1G", "extra"}, "unexpected argument \"extra\""},
      {{"pull", "--platform", "foo", "alpine"}, "foo"},
      {{"pull", "--max-parallel", "0", "alpine"}, "--max-parallel"},
      {{"pull", "alpine", "Upper"}, "invalid reference"},
      {{"pull", "alpine@sha256:123"}, "invalid reference"},
      {{"pull"}, "at least one image reference"},
      {{"pull", "--bogus", "alpine"}, "unknown option --bogus"},
      {{"pull", "alpine", "--platform"}, "needs a value"},
      {{"pull", "-x", "alpine"}, "unknown option -x"},
      {{"pull", "--registry-timeout", "soon", "alpine"}, "--registry-timeout"},
      {{"rm", "--platform", "linux/"}, "at least one image reference"},
      {{"rm", "--platform", "foo", "alpine"}, "foo"},
      {{"mount", "/mnt/x", "--platform", "foo"}, "foo"},
      {{"mount", "/mnt/x", "--ttl", "abc"}, "--ttl must be a number"},
      {{"mount", "/mnt/x", "--negative-ttl", "-1"}, "--negative-ttl"},
      {{"mount", "/mnt/x", "--idle", "soon"}, "--idle soon"},
      {{"mount", "/mnt/x", "--threads", "0"}, "--threads must be a number from 1 to 256"},
      {{"mount", "/mnt/x", "--level", "13"}, "--level"},
      {{"mount", "/mnt/x", "--format", "gz"}, "unknown option --format"},
      {{"mount", "/mnt/x", "--inject", "./agent"}, "HOST:GUEST"},
      {{"mount"}, "give one mount point"},
      {{"mount", "/mnt/x", "/mnt/y"}, "give one mount point"},
      {{"mount", "/mnt/x", "--foreground=yes"}, "takes no value"},
      {{"export", "alpine"}, "give an image and a directory"},
      {{"export", "--tar", "x.tar", "bad//ref"}, "invalid reference"},
      {{"images", "extra"}, "unexpected argument"},
      {{"verify", "extra"}, "unexpected argument"},
      {{"status", "--bogus"}, "unknown option --bogus"},
      {{"version", "extra"}, "unexpected argument"},
      {{"help", "nosuchcommand"}, "no command \"nosuchcommand\""},
      {{"nosuchcommand"}, "unknown command"},
      {{}, "usage: imagefs"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = c.args;
    if (!args.empty() && args[0] != "help" && args[0] != "version" && args[0] != "status" &&
        args[0] != "nosuchcommand")
      args.insert(args.begin() + 1, store);
    CliRun r = run_cli(args);
    std::string line;
    for (const std::string& a : args) line += a + " ";
    EXPECT_EQ(r.status, 2) << line << "\n" << r.err;
    EXPECT_NE(r.err.find(c.says), std::string::npos)
        << line << ": expected \"" << c.says << "\" in:\n"
        << r.err;
    EXPECT_EQ(r.err.find("/proc/imagefs-store"), std::string::npos)
        << line << ": the store was reached:\n"
        << r.err;
  }
}

TEST(ExitStatus, FailuresOfTheWorkAreOne) {
  // A store that cannot be made, an unreadable allow-list: not the command line's fault.
  CliRun r = run_cli({"images", "--cache-dir", "/proc/imagefs-store"});
  EXPECT_EQ(r.status, 1) << r.err;
  r = run_cli({"status", "/proc"});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("/proc is not an imagefs mount"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
  r = run_cli({"status", "--json", "/proc", "/nonexistent/dir"});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("/proc is not an imagefs mount"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/dir: no such directory"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "") << "no JSON for what is not a mount";
}

TEST(ExitStatus, DocumentedInHelp) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--help"}, std::vector<std::string>{"help", "pull"},
        std::vector<std::string>{"build", "--help"}}) {
    CliRun r = run_cli(args);
    EXPECT_EQ(r.status, 0);
    EXPECT_NE(r.out.find("Exit status: 0 success; 1 the command failed"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("2 bad usage"), std::string::npos) << r.out;
  }
  CliRun r = run_cli({"help", "pull"});
  EXPECT_NE(r.out.find("~/.cache/imagefs"), std::string::npos) << "--cache-dir's default:\n"
                                                               << r.out;
}

}  // namespace
}  // namespace imagefs::cli

namespace imagefs::cli {
namespace {

// The puller's messages name the image (for the daemon's log); the command's context names it
// too: a reader sees it once.
TEST(Report, TheReferenceOnce) {
  std::ostringstream out, err;
  Io io{out, err, false};
  EXPECT_EQ(report(io, "pull 127.0.0.1:5000/multiarch",
                   make_error(ENOENT,
                              "127.0.0.1:5000/multiarch:latest: no image for platform "
                              "linux/s390x; the image has: linux/amd64")),
            kExitFailed);
  EXPECT_EQ(err.str(),
            "imagefs: pull: 127.0.0.1:5000/multiarch:latest: no image for platform linux/s390x; "
            "the image has: linux/amd64\n");
  err.str("");
  (void)report(io, "build alpine",
               make_error(EIO, "docker.io/library/alpine:latest (linux/arm64): manifest unknown"));
  EXPECT_EQ(err.str(),
            "imagefs: build: docker.io/library/alpine:latest (linux/arm64): manifest "
            "unknown\n");
  err.str("");
  (void)report(io, "pull alpine", make_error(EIO, "layer 1 of 2 sha256:12: connection reset"));
  EXPECT_EQ(err.str(), "imagefs: pull alpine: layer 1 of 2 sha256:12: connection reset\n");
  err.str("");
  (void)report(io, "pull alpine", make_error(EIO, "docker.io/library/busybox:latest: not found"));
  EXPECT_EQ(err.str(), "imagefs: pull alpine: docker.io/library/busybox:latest: not found\n")
      << "another image is not the same reference";
}

}  // namespace
}  // namespace imagefs::cli
