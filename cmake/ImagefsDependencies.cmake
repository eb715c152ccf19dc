# Every third-party dependency is a Debian package found as an imported target (scripts/setup
# installs them). No vendored copies.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(CURL REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(LibArchive REQUIRED)
find_package(ZLIB REQUIRED)
find_package(OpenSSL REQUIRED)
pkg_check_modules(FUSE3 REQUIRED IMPORTED_TARGET fuse3>=3.10)
pkg_check_modules(LMDB REQUIRED IMPORTED_TARGET lmdb)
pkg_check_modules(LIBDEFLATE REQUIRED IMPORTED_TARGET libdeflate)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
# Intel's ISA-L (libisal-dev): gzip layers inflate about twice as fast as with zlib
# (overlay/layer_stream.cpp).
pkg_check_modules(ISAL REQUIRED IMPORTED_TARGET libisal)
# hosts.toml (registry/hosts.cpp); Debian's libtomlplusplus-dev is the compiled library
# (TOML_HEADER_ONLY=0), its flags come with the pkg-config target.
pkg_check_modules(TOMLPLUSPLUS REQUIRED IMPORTED_TARGET tomlplusplus>=3)
pkg_check_modules(LIBSYSTEMD REQUIRED IMPORTED_TARGET libsystemd)
# cpp-httplib (libcpp-httplib-dev): `imagefs mount --metrics-listen` serves /metrics with it.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
if(IMAGEFS_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
endif()
