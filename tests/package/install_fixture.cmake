# ctest fixture for the find_package consumer: installs the build tree's package into a fresh
# prefix inside the build dir and drops the consumer's old build.
#   cmake -DATTNKIT_BUILD=<attnkit build> -DPREFIX=<tmp prefix> -DCONSUMER_BUILD=<dir> -P this
foreach(_v ATTNKIT_BUILD PREFIX CONSUMER_BUILD)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "install_fixture.cmake: -D${_v}=... is required")
  endif()
endforeach()
file(REMOVE_RECURSE "${PREFIX}" "${CONSUMER_BUILD}")
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
message(STATUS "attnkit installed into ${PREFIX}")
