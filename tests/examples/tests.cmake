# attnkit-run end-to-end tests and the demo run; only when the examples are built. The examples
# are added after the tests (top-level CMakeLists), so the targets are referenced through
# generator expressions and add_dependencies, which resolve at generate time.
if(ATTNKIT_BUILD_EXAMPLES)
  add_executable(examples_cli_tests "${CMAKE_CURRENT_LIST_DIR}/cli_tests.cpp")
  target_link_libraries(examples_cli_tests PRIVATE attnkit_test_support)
  target_compile_definitions(examples_cli_tests PRIVATE
    ATTNKIT_RUN_EXE="$<TARGET_FILE:attnkit-run>")
  add_dependencies(examples_cli_tests attnkit-run)
  catch_discover_tests(examples_cli_tests TEST_PREFIX "examples/cli: "
                       PROPERTIES TIMEOUT ${ATTNKIT_TEST_TIMEOUT})

  add_test(NAME "examples/standard_attention_example"
           COMMAND "$<TARGET_FILE:standard_attention_example>")
  add_test(NAME "examples/gated_deltanet_example"
           COMMAND "$<TARGET_FILE:gated_deltanet_example>")
  add_test(NAME "examples/linear_attention_example"
           COMMAND "$<TARGET_FILE:linear_attention_example>")
endif()
