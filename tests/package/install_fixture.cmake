# ctest fixture for the find_package consumer: installs the build tree's package into a fresh
# prefix inside the build dir and drops the consumers' old builds.
#   cmake -DATTNKIT_BUILD=<attnkit build> -DPREFIX=<tmp prefix> -DCONSUMER_BUILD=<dir>
#         [-DDISPATCH_CONSUMER_BUILD=<dir>] [-DEXPECT_DISPATCH=ON] -P this
foreach(_v ATTNKIT_BUILD PREFIX CONSUMER_BUILD)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "install_fixture.cmake: -D${_v}=... is required")
  endif()
endforeach()
file(REMOVE_RECURSE "${PREFIX}" "${CONSUMER_BUILD}")
if(DISPATCH_CONSUMER_BUILD)
  file(REMOVE_RECURSE "${DISPATCH_CONSUMER_BUILD}")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${ATTNKIT_BUILD}" --prefix "${PREFIX}"
                RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "cmake --install ${ATTNKIT_BUILD} --prefix ${PREFIX} failed (${_rc})")
endif()
foreach(_f include/attnkit/attnkit.hpp share/cmake/attnkit/attnkitConfig.cmake
           share/cmake/attnkit/attnkitConfigVersion.cmake share/cmake/attnkit/attnkitTargets.cmake
           share/cmake/attnkit/attnkitDependencies.cmake share/pkgconfig/attnkit.pc)
  if(NOT EXISTS "${PREFIX}/${_f}")
    message(FATAL_ERROR "the install is missing ${_f}")
  endif()
endforeach()
# attnkit::dispatch (library and header) is installed exactly when it was built
file(GLOB_RECURSE _lib "${PREFIX}/*libattnkit_dispatch.a")
set(_hdr "${PREFIX}/include/attnkit/dispatch.hpp")
if(EXPECT_DISPATCH AND (NOT _lib OR NOT EXISTS "${_hdr}"))
  message(FATAL_ERROR "ATTNKIT_DISPATCH=ON but the install lacks libattnkit_dispatch.a or ${_hdr}")
elseif(NOT EXPECT_DISPATCH AND (_lib OR EXISTS "${_hdr}"))
  message(FATAL_ERROR "ATTNKIT_DISPATCH=OFF but the install has attnkit::dispatch files")
endif()
message(STATUS "attnkit installed into ${PREFIX}")
