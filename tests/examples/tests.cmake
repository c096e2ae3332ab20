# The example programs run as tests (each checks its own result and exits 1 on a mismatch); only
# when the examples are built. Their targets are referenced through generator expressions (the
# examples are added after the tests).
if(ATTNKIT_BUILD_EXAMPLES)
  foreach(example standard_attention gated_deltanet linear_attention sliding_window)
    add_test(NAME "examples/${example}_example" COMMAND "$<TARGET_FILE:${example}_example>")
  endforeach()
endif()
