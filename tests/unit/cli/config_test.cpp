// The configuration file (cli/config.h) and mount(8)'s helper arguments (cli/mount_helper.cpp):
// parsing, precedence of the command line, errors that name the file and line.
#include "cli/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli/cli.h"
#include "cli/commands.h"

namespace imagefs::cli {
namespace {

Result<Config> parse(std::string_view text) {
  return parse_config(text, "/etc/imagefs/imagefs.conf", config_keys());
}

const Command& command(const std::string& name) {
  for (const Command& c : commands())
    if (c.name == name) return c;
  throw std::runtime_error("no command " + name);
}

TEST(Config, KeysAreLongOptionsWithValuesAsTheCommandLineTakesThem) {
  auto config = parse(
      "# a comment\n"
      "\n"
      "  cache-dir = /var/lib/imagefs  \n"
      "cache_dir=/srv/imagefs\n"  // '_' is '-'; the later line of a key wins
      "allow-registry = ghcr.io\n"
      "allow-registry = docker.io\n"
      "allow-other = yes\n"
      "platform = \"linux/arm64\"\n");
  ASSERT_TRUE(config.ok()) << config.error().message;
  ASSERT_EQ(config->entries.size(), 5U);
  EXPECT_EQ(config->entries[0].key, "cache-dir");
  EXPECT_EQ(config->entries[0].value, "/srv/imagefs");
  EXPECT_EQ(config->entries[0].line, 4);
  EXPECT_EQ(config->entries[3].key, "allow-other");
  EXPECT_EQ(config->entries[3].value, "1");
  EXPECT_EQ(config->entries[4].value, "linux/arm64");
}

TEST(Config, ErrorsNameTheFileAndLine) {
  auto unknown = parse("ttl = 300\nfrobnicate = 1\n");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, EINVAL);
  EXPECT_NE(unknown.error().message.find("/etc/imagefs/imagefs.conf:2: unknown key \"frobnicate\""),
            std::string::npos)
      << unknown.error().message;
  auto flag = parse("allow-other = perhaps\n");
  ASSERT_FALSE(flag.ok());
  EXPECT_NE(flag.error().message.find(":1: allow-other is a flag"), std::string::npos);
  auto empty = parse("\n\nttl =\n");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message.find(":3: ttl needs a value"), std::string::npos);
  auto no_key = parse("= 3\n");
  ASSERT_FALSE(no_key.ok());
  // A key that names one run's output is no default.
  auto output = parse("output = /tmp/x\n");
  ASSERT_FALSE(output.ok());
  EXPECT_NE(output.error().message.find("unknown key \"output\""), std::string::npos);
  EXPECT_FALSE(parse("foreground = yes\n").ok());  // mount(8) would wait for ever
}

TEST(Config, TheCommandLineWinsAndACommandTakesOnlyItsOwnKeys) {
  auto config = parse("ttl = 60\nallow-registry = a.io\nallow-registry = b.io\ncache-dir = /c\n");
  ASSERT_TRUE(config.ok());
  const Command& mount = command("mount");
  auto cli = parse_args({"--ttl", "5", "/mnt"}, mount.options);
  ASSERT_TRUE(cli.ok());
  Args merged = with_config(*config, mount.options, *cli);
  EXPECT_EQ(merged.get("ttl"), "5");
  EXPECT_EQ(merged.get("cache-dir"), "/c");
  EXPECT_EQ(merged.all("allow-registry"), (std::vector<std::string>{"a.io", "b.io"}));
  // A repeatable option on the command line replaces the file's list.
  auto cli2 = parse_args({"--allow-registry", "c.io", "/mnt"}, mount.options);
  ASSERT_TRUE(cli2.ok());
  EXPECT_EQ(with_config(*config, mount.options, *cli2).all("allow-registry"),
            (std::vector<std::string>{"c.io"}));
  // `images` has no --ttl: the key is left to the commands that have it.
  const Command& images = command("images");
  auto none = parse_args({}, images.options);
  ASSERT_TRUE(none.ok());
  Args for_images = with_config(*config, images.options, *none);
  EXPECT_FALSE(for_images.has("ttl"));
  EXPECT_EQ(for_images.get("cache-dir"), "/c");
}

TEST(Config, ABadValueIsBlamedOnItsLine) {
  auto config = parse("\nttl = soon\n");
  ASSERT_TRUE(config.ok());
  const Command& mount = command("mount");
  auto cli = parse_args({"/mnt"}, mount.options);
  ASSERT_TRUE(cli.ok());
  Args merged = with_config(*config, mount.options, *cli);
  auto checked = mount.check(merged);
  ASSERT_FALSE(checked.ok());
  Error blamed = blame_config(*config, *cli, checked.error());
  EXPECT_NE(blamed.message.find("/etc/imagefs/imagefs.conf:2: ttl = soon: --ttl must be"),
            std::string::npos)
      << blamed.message;
  // --ttl-something would not be --ttl; a value from the command line is not the file's.
  auto cli_ttl = parse_args({"--ttl", "x", "/mnt"}, mount.options);
  ASSERT_TRUE(cli_ttl.ok());
  Error own = blame_config(*config, *cli_ttl, make_error(EINVAL, "--ttl must be a number"));
  EXPECT_EQ(own.message, "--ttl must be a number");
}

class ConfigFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("imagefs-config-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    ::unsetenv("IMAGEFS_CONFIG");
    std::filesystem::remove_all(dir_);
  }
  std::string write(const std::string& name, const std::string& text) {
    std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    return path;
  }
  std::filesystem::path dir_;
};

TEST_F(ConfigFile, ANamedFileMustExistAndTheEnvironmentNamesOne) {
  auto missing = load_config((dir_ / "none.conf").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_NE(missing.error().message.find("none.conf"), std::string::npos);
  std::string file = write("a.conf", "ttl = 7\n");
  ::setenv("IMAGEFS_CONFIG", file.c_str(), 1);
  auto from_env = load_config(std::nullopt);
  ASSERT_TRUE(from_env.ok());
  ASSERT_EQ(from_env->entries.size(), 1U);
  EXPECT_EQ(from_env->file, file);
  ::setenv("IMAGEFS_CONFIG", "", 1);  // empty: no file at all
  auto none = load_config(std::nullopt);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->entries.empty());
}

TEST_F(ConfigFile, ACommandStopsWithStatus2OnABadFile) {
  std::string file =
      write("bad.conf", "# ok\nplatform = linux/amd64\nttl = 3\nnot-an-option = 1\n");
  std::ostringstream out, err;
  int status = run({"images", "--config", file}, out, err);
  EXPECT_EQ(status, 2);
  EXPECT_NE(err.str().find(file + ":4: unknown key \"not-an-option\""), std::string::npos)
      << err.str();
  std::ostringstream out2, err2;
  EXPECT_EQ(run({"images", "--config", (dir_ / "missing.conf").string()}, out2, err2), 2);
  std::string platform = write("platform.conf", "platform = linux/nowhere/x/y\n");
  std::ostringstream out3, err3;
  EXPECT_EQ(run({"pull", "--config", platform, "alpine"}, out3, err3), 2);
  EXPECT_NE(err3.str().find(platform + ":1: platform = linux/nowhere/x/y: "), std::string::npos)
      << err3.str();
}

TEST(MountHelper, OptionsMapOntoMountOptions) {
  bool fake = false;
  auto args = mount_helper_arguments(
      {"imagefs", "/mnt/images", "-o",
       "rw,nodev,nosuid,noauto,_netdev,x-systemd.automount,defaults,allow_other,cache_dir=/var/"
       "lib/imagefs,ttl=300,allow_registry=ghcr.io,allow-registry=docker.io",
       "-n"},
      &fake);
  ASSERT_TRUE(args.ok()) << args.error().message;
  EXPECT_FALSE(fake);
  EXPECT_EQ(*args,
            (std::vector<std::string>{"mount", "--allow-other", "--cache-dir=/var/lib/imagefs",
                                      "--ttl=300", "--allow-registry=ghcr.io",
                                      "--allow-registry=docker.io", "--", "/mnt/images"}));
  // Every option of `imagefs mount` has an -o spelling.
  for (const Command& c : commands()) {
    if (c.name != "mount") continue;
    for (const OptionSpec& o : c.options) {
      std::string name = o.name;
      for (char& ch : name)
        if (ch == '-') ch = '_';
      auto one =
          mount_helper_arguments({"src", "/m", "-o", o.arity == Arity::flag ? name : name + "=1"});
      EXPECT_TRUE(one.ok()) << o.name;
    }
  }
}

TEST(MountHelper, UnknownOptionsFailUnlessSloppy) {
  auto unknown = mount_helper_arguments({"imagefs", "/m", "-o", "colour=blue"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("unknown mount option \"colour\""), std::string::npos);
  auto sloppy = mount_helper_arguments({"imagefs", "/m", "-s", "-o", "colour=blue,ttl=3"});
  ASSERT_TRUE(sloppy.ok());
  EXPECT_EQ(*sloppy, (std::vector<std::string>{"mount", "--ttl=3", "--", "/m"}));
  EXPECT_FALSE(mount_helper_arguments({"imagefs", "/m", "-o", "ttl"}).ok());
  EXPECT_FALSE(mount_helper_arguments({"imagefs", "/m", "-o", "allow_other=1"}).ok());
  EXPECT_FALSE(mount_helper_arguments({"/m", "-o", "ttl=3"}).ok());
  bool fake = false;
  ASSERT_TRUE(mount_helper_arguments({"imagefs", "/m", "-f"}, &fake).ok());
  EXPECT_TRUE(fake);
}

}  // namespace
}  // namespace imagefs::cli
