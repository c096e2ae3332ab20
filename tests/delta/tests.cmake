# attnkit-run end-to-end tests of the delta-rule family (cli_delta.cpp); only when the examples
# are built. Included from tests/CMakeLists.txt (see tests/linear/tests.cmake).
if(ATTNKIT_BUILD_EXAMPLES)
  add_executable(delta_cli_tests "${CMAKE_CURRENT_LIST_DIR}/cli_delta.cpp")
  target_link_libraries(delta_cli_tests PRIVATE attnkit_test_support)
  target_compile_definitions(delta_cli_tests PRIVATE ATTNKIT_RUN_EXE="$<TARGET_FILE:attnkit-run>")
  add_dependencies(delta_cli_tests attnkit-run)
  catch_discover_tests(delta_cli_tests TEST_PREFIX "delta/cli: "
                       PROPERTIES TIMEOUT ${ATTNKIT_TEST_TIMEOUT})
endif()
