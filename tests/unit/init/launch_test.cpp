// The launch decisions of the default /init over a fake root filesystem.
#include "init/launch.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace imagefs::init {
namespace {

class FakeRoot final : public RootFs {
 public:
  std::map<std::string, std::string> files;  // path -> contents (regular, not executable)
  std::set<std::string> executables;
  std::set<std::string> dirs = {"/"};
  std::set<std::string> symlinks;  // also in dirs/files when they point at one

  [[nodiscard]] std::optional<std::string> read_file(const std::string& path) const override {
    auto it = files.find(path);
    if (it == files.end()) return std::nullopt;
    return it->second;
  }
  [[nodiscard]] Kind kind(const std::string& path) const override {
    if (dirs.count(path) != 0) return Kind::directory;
    if (executables.count(path) != 0) return Kind::executable_file;
    if (files.count(path) != 0) return Kind::other;
    return Kind::missing;
  }
  [[nodiscard]] bool is_symlink(const std::string& path) const override {
    return symlinks.count(path) != 0;
  }
};

FakeRoot image() {
  FakeRoot root;
  root.files["/etc/passwd"] = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
  root.files["/etc/group"] = "root:x:0:\napp:x:1000:\nextra:x:2000:app\n";
  root.files["/etc/motd"] = "hello\n";
  root.executables = {"/usr/bin/python3", "/bin/sh", "/srv/run.sh"};
  root.dirs.insert({"/srv", "/home/app"});
  return root;
}

TEST(PlanLaunch, DockerRunOfTheImage) {
  InitConfig c;
  c.entrypoint = {"python3"};
  c.cmd = {"-m", "http.server"};
  c.env = {"PATH=/usr/local/bin:/usr/bin", "LANG=C.UTF-8"};
  c.working_dir = "/srv";
  c.user = "app";
  Result<Launch> l = plan_launch(c, {}, "vm", image());
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_EQ(l->program, "/usr/bin/python3");
  EXPECT_EQ(l->argv, (Argv{"python3", "-m", "http.server"}));
  EXPECT_EQ(l->env, (Argv{"HOSTNAME=vm", "PATH=/usr/local/bin:/usr/bin", "LANG=C.UTF-8",
                          "HOME=/home/app"}));
  EXPECT_EQ(l->user, (ExecUser{1000, 1000, {2000}, "/home/app"}));
  EXPECT_EQ(l->working_dir, "/srv");
}

TEST(PlanLaunch, DefaultsAreRootInSlash) {
  InitConfig c;
  c.cmd = {"/bin/sh"};
  Result<Launch> l = plan_launch(c, {}, "vm", image());
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_EQ(l->program, "/bin/sh");
  EXPECT_EQ(l->working_dir, "/");
  EXPECT_EQ(l->user, (ExecUser{0, 0, {}, "/root"}));
  EXPECT_EQ(l->env.back(), "HOME=/root");
}

TEST(PlanLaunch, OverridesFromTheBuildAndTheKernel) {
  InitConfig c;
  c.entrypoint = {"/usr/bin/python3"};
  c.cmd = {"app.py"};
  c.exec = Argv{"/bin/sh", "-c", "echo build"};
  BootOptions boot;
  EXPECT_EQ(plan_launch(c, boot, "vm", image())->argv, (Argv{"/bin/sh", "-c", "echo build"}));
  boot.args = {"-c", "echo args"};
  EXPECT_EQ(plan_launch(c, boot, "vm", image())->argv,
            (Argv{"/bin/sh", "-c", "echo build", "-c", "echo args"}));
  boot.exec = Argv{"/srv/run.sh"};
  EXPECT_EQ(plan_launch(c, boot, "vm", image())->argv, (Argv{"/srv/run.sh", "-c", "echo args"}));
  c.exec.reset();
  boot.exec.reset();
  boot.args = {"other.py"};
  EXPECT_EQ(plan_launch(c, boot, "vm", image())->argv, (Argv{"/usr/bin/python3", "other.py"}));
  boot.env = {"LANG=C"};
  EXPECT_EQ(plan_launch(c, boot, "vm", image())->env.back(), "LANG=C");
}

TEST(PlanLaunch, RelativeProgramsAreFoundFromTheWorkingDirectory) {
  InitConfig c;
  c.cmd = {"./run.sh"};
  c.working_dir = "/srv";
  Result<Launch> l = plan_launch(c, {}, "vm", image());
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_EQ(l->program, "./run.sh");
  c.working_dir = "srv";  // relative: from /
  EXPECT_EQ(plan_launch(c, {}, "vm", image())->working_dir, "/srv");
}

struct Failure {
  const char* what;
  InitConfig config;
  int code;
  int status;
  const char* message;
};

TEST(PlanLaunch, ClearErrors) {
  auto with = [](auto change) {
    InitConfig c;
    c.cmd = {"/bin/sh"};
    change(c);
    return c;
  };
  const Failure failures[] = {
      {"nothing", with([](InitConfig& c) { c.cmd.clear(); }), ENOEXEC, 126,
       "the image has neither Entrypoint nor Cmd: nothing to run (give one with imagefs build "
       "--exec, or imagefs.exec= at boot)"},
      {"missing", with([](InitConfig& c) { c.cmd = {"/usr/bin/node"}; }), ENOENT, 127,
       "cannot start the command: /usr/bin/node does not exist in the image"},
      {"not in PATH", with([](InitConfig& c) { c.cmd = {"node"}; }), ENOENT, 127,
       "cannot start the command: \"node\": executable file not found in PATH="
       "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
      {"not executable", with([](InitConfig& c) { c.cmd = {"/etc/motd"}; }), EACCES, 126,
       "cannot start the command: /etc/motd is not an executable file"},
      {"a directory", with([](InitConfig& c) { c.cmd = {"/srv"}; }), EACCES, 126,
       "cannot start the command: /srv is not an executable file"},
      {"user", with([](InitConfig& c) { c.user = "ghost"; }), ESRCH, 126,
       "cannot run as User \"ghost\": unable to find user ghost: no entry in the image's "
       "/etc/passwd"},
      {"group", with([](InitConfig& c) { c.user = "app:ghosts"; }), ESRCH, 126,
       "cannot run as User \"app:ghosts\": unable to find group ghosts: no entry in the image's "
       "/etc/group"},
      {"workdir", with([](InitConfig& c) { c.working_dir = "/nowhere"; }), ENOTDIR, 126,
       "the working directory /nowhere does not exist in the image"},
      {"workdir file", with([](InitConfig& c) { c.working_dir = "/etc/motd"; }), ENOTDIR, 126,
       "the working directory /etc/motd is not a directory"},
  };
  for (const Failure& f : failures) {
    Result<Launch> l = plan_launch(f.config, {}, "vm", image());
    ASSERT_FALSE(l.ok()) << f.what;
    EXPECT_EQ(l.error().code, f.code) << f.what;
    EXPECT_EQ(start_failure_status(l.error()), f.status) << f.what;
    EXPECT_EQ(l.error().message, f.message) << f.what;
  }
}

TEST(ChooseHostname, KernelThenImageThenLocalhost) {
  EXPECT_EQ(choose_hostname("fromkernel", "image\n"), "fromkernel");
  EXPECT_EQ(choose_hostname("(none)", "image\n"), "image");
  EXPECT_EQ(choose_hostname("", "  image-1.example \r\nmore\n"), "image-1.example");
  EXPECT_EQ(choose_hostname("(none)", std::nullopt), "localhost");
  EXPECT_EQ(choose_hostname("(none)", "\n"), "localhost");
  EXPECT_EQ(choose_hostname("(none)", "bad name\n"), "localhost");
}

// --- a read-only root (an EROFS disk) -----------------------------------------------------------

TEST(PlanWritableRoot, OverlayScratchIsTheInitsOwnDirectory) {
  FakeRoot root = image();
  root.dirs.insert({"/.imagefs", "/run", "/tmp", "/var", "/var/tmp"});
  root.dirs.insert("/var/run");
  root.symlinks.insert("/var/run");  // -> /run, as Debian's images have it
  const WritableRoot plan = plan_writable_root(root);
  EXPECT_EQ(plan.scratch, "/.imagefs");
  // The fallback: every usual scratch directory that is a directory, not one through a symlink.
  EXPECT_EQ(plan.fallback,
            (std::vector<TmpfsDir>{{"/tmp", 01777}, {"/var/tmp", 01777}, {"/run", 0755}}));
  EXPECT_EQ(overlay_options(plan.scratch),
            "lowerdir=/,upperdir=/.imagefs/upper,workdir=/.imagefs/work");
  EXPECT_EQ(overlay_root(plan.scratch), "/.imagefs/root");
}

TEST(PlanWritableRoot, AnotherDirectoryWhenTheInitWasCopiedElsewhere) {
  FakeRoot root = image();
  root.dirs.insert({"/tmp", "/mnt"});
  root.dirs.insert("/run");
  root.symlinks.insert("/run");  // a symlink is never a scratch directory
  root.files["/media"] = "a file, not a directory";
  const WritableRoot plan = plan_writable_root(root);
  EXPECT_EQ(plan.scratch, "/tmp");
  EXPECT_EQ(plan.fallback, (std::vector<TmpfsDir>{{"/tmp", 01777}}));
}

TEST(PlanWritableRoot, AnImageOfOneFileHasNeitherOverlayNorTmpfs) {
  FakeRoot root;
  root.executables = {"/app"};
  const WritableRoot plan = plan_writable_root(root);
  EXPECT_EQ(plan.scratch, "");
  EXPECT_TRUE(plan.fallback.empty());
}

}  // namespace
}  // namespace imagefs::init
