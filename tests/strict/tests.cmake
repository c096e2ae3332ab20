# Strict-warnings check of the public headers. Included from tests/CMakeLists.txt.
# strict_warnings.cpp instantiates every public entry point for the usual element types (template
# code warns only where it is instantiated); it is compiled, never linked or run, with the flags
# below and -Werror whatever ATTNKIT_WERROR says, once as C++17 and once as C++20, so the build
# fails when a header regresses. GCC and Clang only.
option(ATTNKIT_STRICT_CHECK "Compile the strict-warnings check of the headers with the tests" ON)
if(NOT ATTNKIT_STRICT_CHECK OR NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  return()
endif()

# The headers must reach the compiler through a plain -I: from a SYSTEM include directory their
# warnings would be silenced. attnkit is not IMPORTED, so CMake gives its in-project consumers a
# plain -I unless someone marks it SYSTEM; refuse that here rather than check nothing.
get_target_property(_attnkit_system_dirs attnkit INTERFACE_SYSTEM_INCLUDE_DIRECTORIES)
get_target_property(_attnkit_system attnkit SYSTEM)
if(_attnkit_system_dirs OR _attnkit_system)
  message(FATAL_ERROR "tests/strict: the attnkit target's include directory is SYSTEM, which "
                      "would hide the warnings the strict check is for")
endif()

# -fsyntax-only: the strict warnings are front-end ones, raised while templates are instantiated,
# so no code is generated (about 10 s a copy instead of 50 s at -Og; the object is never written,
# so the check reruns on every build). -Og defines __OPTIMIZE__ (with GCC at -O0, xsimd 8.1's
# AVX-512BW integer select does not compile). Eigen and xsimd are IMPORTED targets, so their
# directories are SYSTEM ones and only attnkit's own warnings count.
foreach(std 17 20)
  set(tgt attnkit_strict_warnings_cxx${std})
  add_library(${tgt} OBJECT "${CMAKE_CURRENT_LIST_DIR}/strict_warnings.cpp")
  set_target_properties(${tgt} PROPERTIES
    CXX_STANDARD ${std} CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF)
  target_compile_options(${tgt} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Werror
    -Og -fno-sanitize=all -fsyntax-only)
  target_link_libraries(${tgt} PRIVATE attnkit::attnkit
    $<$<BOOL:${ATTNKIT_NATIVE}>:attnkit::native>)
endforeach()
