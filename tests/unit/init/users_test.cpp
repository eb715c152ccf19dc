// User resolution against an image's /etc/passwd and /etc/group, with runc's rules (the cases of
// moby/sys/user's GetExecUser tests).
#include "init/users.h"

#include <gtest/gtest.h>

namespace imagefs::init {
namespace {

const std::string kPasswd =
    "# comment\n"
    "root:x:0:0:root:/root:/bin/sh\n"
    "\n"
    "app:x:1000:1000:App:/home/app:/bin/sh\n"
    "svc:x:1001:1001::/srv:/sbin/nologin\n"
    "broken:x:notanumber:1:::\n"
    "dup:x:1002:1002::/first:\n"
    "dup:x:1003:1003::/second:\n"
    "nohome:x:1004:1004:::\n"
    "short:x:1005\n";
const std::string kGroup =
    "root:x:0:\n"
    "app:x:1000:\n"
    "staff:x:2000:app,svc\n"
    "audio:x:29:app\n"
    "wheel:x:10:root\n"
    "svc:x:1001:\n";

ExecUser user(uid_t uid, gid_t gid, std::vector<gid_t> groups, std::string home) {
  return ExecUser{uid, gid, std::move(groups), std::move(home)};
}

Result<ExecUser> resolve(std::string_view spec) { return resolve_user(spec, kPasswd, kGroup); }

TEST(ResolveUser, EmptyIsRoot) {
  EXPECT_EQ(*resolve(""), user(0, 0, {10}, "/root"));
  EXPECT_EQ(*resolve_user("", std::nullopt, std::nullopt), user(0, 0, {}, "/"));
}

TEST(ResolveUser, ByName) {
  EXPECT_EQ(*resolve("app"), user(1000, 1000, {2000, 29}, "/home/app"));
  EXPECT_EQ(*resolve("svc"), user(1001, 1001, {2000}, "/srv"));
  EXPECT_EQ(*resolve("nohome"), user(1004, 1004, {}, "/"));
  EXPECT_EQ(*resolve("dup"), user(1002, 1002, {}, "/first"));  // the first entry wins
}

TEST(ResolveUser, ByUidWithAndWithoutAnEntry) {
  EXPECT_EQ(*resolve("1000"), user(1000, 1000, {2000, 29}, "/home/app"));
  EXPECT_EQ(*resolve("4242"), user(4242, 0, {}, "/"));
  EXPECT_EQ(*resolve_user("4242", std::nullopt, std::nullopt), user(4242, 0, {}, "/"));
}

TEST(ResolveUser, ExplicitGroupReplacesGidAndSupplementaryGroups) {
  EXPECT_EQ(*resolve("app:staff"), user(1000, 2000, {}, "/home/app"));
  EXPECT_EQ(*resolve("app:29"), user(1000, 29, {}, "/home/app"));
  EXPECT_EQ(*resolve("1000:2000"), user(1000, 2000, {}, "/home/app"));
  EXPECT_EQ(*resolve("4242:4343"), user(4242, 4343, {}, "/"));
  EXPECT_EQ(*resolve("4242:staff"), user(4242, 2000, {}, "/"));
  EXPECT_EQ(*resolve_user("4242:4343", std::nullopt, std::nullopt), user(4242, 4343, {}, "/"));
}

TEST(ResolveUser, UnknownNamesAreErrors) {
  Result<ExecUser> r = resolve("ghost");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_EQ(r.error().message, "unable to find user ghost: no entry in the image's /etc/passwd");
  r = resolve_user("ghost", std::nullopt, kGroup);
  EXPECT_EQ(r.error().message, "unable to find user ghost: the image has no /etc/passwd");
  r = resolve("app:ghosts");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_EQ(r.error().message, "unable to find group ghosts: no entry in the image's /etc/group");
  r = resolve_user("app:ghosts", kPasswd, std::nullopt);
  EXPECT_EQ(r.error().message, "unable to find group ghosts: the image has no /etc/group");
  EXPECT_FALSE(resolve("broken").ok());  // its entry cannot be used
}

TEST(ResolveUser, IdsOutOfRange) {
  EXPECT_EQ(resolve("2147483648").error().code, EINVAL);
  EXPECT_EQ(resolve("1:2147483648").error().code, EINVAL);
  EXPECT_EQ(*resolve("2147483647"), user(2147483647, 0, {}, "/"));
  EXPECT_EQ(resolve("99999999999999999999").error().code, ENOENT);  // not a number: a name
  EXPECT_EQ(resolve("-1").error().code, ENOENT);
}

TEST(ResolveUser, CarriageReturnsAndTrailingBlanks) {
  EXPECT_EQ(*resolve_user("app", "app:x:7:8::/h:/bin/sh\r\n", "g:x:9:app\r\n"),
            user(7, 8, {9}, "/h"));
}

}  // namespace
}  // namespace imagefs::init
