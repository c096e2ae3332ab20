# attnkit-run end-to-end tests of the linear family (cli_linear.cpp); only when the examples are
# built. Included from tests/CMakeLists.txt; the attnkit-run target is referenced through a
# generator expression and add_dependencies (the examples are added after the tests).
if(ATTNKIT_BUILD_EXAMPLES)
  add_executable(linear_cli_tests "${CMAKE_CURRENT_LIST_DIR}/cli_linear.cpp")
  target_link_libraries(linear_cli_tests PRIVATE attnkit_test_support)
  target_compile_definitions(linear_cli_tests PRIVATE ATTNKIT_RUN_EXE="$<TARGET_FILE:attnkit-run>")
  add_dependencies(linear_cli_tests attnkit-run)
  catch_discover_tests(linear_cli_tests TEST_PREFIX "linear/cli: "
                       PROPERTIES TIMEOUT ${ATTNKIT_TEST_TIMEOUT})
endif()
