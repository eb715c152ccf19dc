# Shared compile settings (imagefs_settings) and warnings (imagefs_warnings), as INTERFACE targets
# every imagefs target links, plus the sanitizer and clang-tidy switches.
set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)
if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE RelWithDebInfo CACHE STRING "Build type" FORCE)
endif()

add_library(imagefs_settings INTERFACE)
target_compile_definitions(imagefs_settings INTERFACE _FILE_OFFSET_BITS=64)
target_include_directories(imagefs_settings INTERFACE ${PROJECT_SOURCE_DIR})
if(IMAGEFS_SANITIZE)
  target_compile_options(imagefs_settings INTERFACE -fsanitize=${IMAGEFS_SANITIZE}
                                                    -fno-omit-frame-pointer)
  target_link_options(imagefs_settings INTERFACE -fsanitize=${IMAGEFS_SANITIZE})
endif()

add_library(imagefs_warnings INTERFACE)
target_compile_options(imagefs_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                                                  -Wno-sign-conversion -Wnon-virtual-dtor)
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  # GUARDED_BY and friends (common/mutex.h) are checked only by clang; scripts/test builds
  # build-tsan with clang and IMAGEFS_WERROR, so a lock mistake fails CI.
  # -Wno-c99-extensions: libfuse's FUSE_BUFVEC_INIT (fuse_common.h) is a compound literal, which
  # clang's -Wpedantic flags in C++; nothing of ours uses them otherwise.
  target_compile_options(imagefs_warnings INTERFACE -Wthread-safety -Wno-c99-extensions)
endif()
if(IMAGEFS_WERROR)
  target_compile_options(imagefs_warnings INTERFACE -Werror)
endif()

if(IMAGEFS_CLANG_TIDY)
  find_program(CLANG_TIDY_EXE NAMES clang-tidy REQUIRED)
  set(CMAKE_CXX_CLANG_TIDY ${CLANG_TIDY_EXE})
endif()

# imagefs_module(NAME SOURCES... [DEPS targets...]): the static library of one module folder.
function(imagefs_module name)
  cmake_parse_arguments(arg "" "" "SOURCES;DEPS" ${ARGN})
  add_library(imagefs_${name} STATIC ${arg_SOURCES})
  target_link_libraries(imagefs_${name} PUBLIC imagefs_settings ${arg_DEPS}
                                        PRIVATE imagefs_warnings)
endfunction()
