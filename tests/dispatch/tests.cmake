# attnkit::dispatch tests, registered only with ATTNKIT_DISPATCH=ON. Included from
# tests/CMakeLists.txt.
#   dispatch: ...                 dispatch_kernels.cpp: every kernel on every ISA this machine
#                                 runs against the header-only build of the test, ISA selection
#   dispatch/env_*                ATTNKIT_ISA read at the first call (one process per value)
#   dispatch/isa_<isa>            objcheck: the SSE2 unit has no AVX / AVX-512 / SSE3+ code, the
#                                 AVX2 unit no AVX-512 code, the AVX-512 unit does use zmm
#   dispatch/private_copies       objcheck: in dispatch_tests, each unit calls only its own code
if(NOT ATTNKIT_DISPATCH)
  return()
endif()

add_executable(dispatch_tests "${CMAKE_CURRENT_LIST_DIR}/dispatch_kernels.cpp")
target_link_libraries(dispatch_tests PRIVATE attnkit_test_support attnkit::dispatch)
# the link map tells objcheck which addresses hold which unit's code
target_link_options(dispatch_tests PRIVATE "LINKER:-Map=$<TARGET_FILE:dispatch_tests>.map")
catch_discover_tests(dispatch_tests TEST_PREFIX "dispatch: "
                     PROPERTIES TIMEOUT ${ATTNKIT_TEST_TIMEOUT})

add_executable(dispatch_objcheck "${CMAKE_CURRENT_LIST_DIR}/objcheck.cpp")
target_compile_features(dispatch_objcheck PRIVATE cxx_std_17)
if(CMAKE_OBJDUMP AND CMAKE_NM)
  foreach(isa IN LISTS ATTNKIT_DISPATCH_ISAS)
    if(isa STREQUAL "generic")
      continue()
    endif()
    add_test(NAME dispatch/isa_${isa}
      COMMAND dispatch_objcheck isa "${CMAKE_OBJDUMP}"
              "${ATTNKIT_DISPATCH_OBJECT_DIR}/attnkit_dispatch_${isa}.o" ${isa})
    set_tests_properties(dispatch/isa_${isa} PROPERTIES LABELS dispatch TIMEOUT 120)
  endforeach()
  add_test(NAME dispatch/private_copies
    COMMAND dispatch_objcheck private "${CMAKE_OBJDUMP}" "${CMAKE_NM}"
            "$<TARGET_FILE:dispatch_tests>" "$<TARGET_FILE:dispatch_tests>.map")
  set_tests_properties(dispatch/private_copies PROPERTIES LABELS dispatch TIMEOUT 300)
else()
  message(STATUS "attnkit: objdump or nm not found, the dispatch machine-code checks are skipped")
endif()

# ATTNKIT_ISA is read at the first call: one process per value. An ISA this machine cannot run,
# or a name that is no ISA, makes every call throw (the [.env] case checks which applies).
foreach(value sse2 avx2 avx512 generic bogus "")
  set(name "dispatch/env_ATTNKIT_ISA=${value}")
  add_test(NAME "${name}" COMMAND dispatch_tests "[.env]")
  set_tests_properties("${name}" PROPERTIES ENVIRONMENT "ATTNKIT_ISA=${value}"
                       LABELS dispatch TIMEOUT 60)
endforeach()
