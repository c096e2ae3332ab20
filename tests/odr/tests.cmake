# ODR and language-standard test. Included from tests/CMakeLists.txt.
# odr_a.cpp and odr_b.cpp both include the umbrella header and instantiate the same kernels, so a
# header that defines a non-inline function or variable fails to link ("multiple definition").
# odr_a.cpp (and the driver) are C++17 and odr_b.cpp is C++20, which proves the public headers
# under both standards -- and that objects of both standards mix in one binary -- while compiling
# the heavy kernel instantiations only twice. Always -Wall -Wextra -Wpedantic -Werror (whatever
# ATTNKIT_WERROR says): the public headers must be warning-free.
add_executable(odr_test
  "${CMAKE_CURRENT_LIST_DIR}/odr_main.cpp"
  "${CMAKE_CURRENT_LIST_DIR}/odr_a.cpp"
  "${CMAKE_CURRENT_LIST_DIR}/odr_b.cpp")
set_target_properties(odr_test PROPERTIES
  CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF)
# Source options come after the target's -std=c++17 on the command line, so the last one wins
# (GCC and Clang); odr_main.cpp checks each TU's __cplusplus.
set_source_files_properties("${CMAKE_CURRENT_LIST_DIR}/odr_b.cpp" TARGET_DIRECTORY odr_test
  PROPERTIES COMPILE_OPTIONS -std=c++20)
target_compile_options(odr_test PRIVATE -Wall -Wextra -Wpedantic -Werror)
target_link_libraries(odr_test PRIVATE attnkit_dev)
add_test(NAME odr/cxx17_and_cxx20 COMMAND odr_test)
set_tests_properties(odr/cxx17_and_cxx20 PROPERTIES LABELS odr TIMEOUT 60)
