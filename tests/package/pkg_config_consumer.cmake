# ctest: the pkg-config consumer. After the install fixture, compiles consumer.cpp with the
# compiler alone and `pkg-config --cflags --libs attnkit` (PKG_CONFIG_PATH = the prefix's
# share/pkgconfig), then runs it.
#   cmake -DPKG_CONFIG=<exe> -DCXX=<compiler> -DPREFIX=<install prefix> -DSOURCE=<consumer.cpp>
#         -DWORK=<scratch dir> -DVERSION=<attnkit version> -P this
cmake_minimum_required(VERSION 3.23)
foreach(_v PKG_CONFIG CXX PREFIX SOURCE WORK VERSION)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "pkg_config_consumer.cmake: -D${_v}=... is required")
  endif()
endforeach()
set(ENV{PKG_CONFIG_PATH} "${PREFIX}/share/pkgconfig")

function(_pkg_config out)
  execute_process(COMMAND "${PKG_CONFIG}" ${ARGN} attnkit RESULT_VARIABLE _rc
                  OUTPUT_VARIABLE _out ERROR_VARIABLE _err OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "pkg-config ${ARGN} attnkit failed (${_rc}): ${_err}")
  endif()
  set(${out} "${_out}" PARENT_SCOPE)
endfunction()

_pkg_config(_version --modversion)
if(NOT _version STREQUAL VERSION)
  message(FATAL_ERROR "pkg-config reports attnkit ${_version}, the project is ${VERSION}")
endif()
_pkg_config(_flags --cflags --libs)
message(STATUS "pkg-config --cflags --libs attnkit: ${_flags}")
# The include dir must be the install prefix's, not the source tree's.
file(REAL_PATH "${PREFIX}/include" _want)
separate_arguments(_flags UNIX_COMMAND "${_flags}")
set(_found OFF)
foreach(_f IN LISTS _flags)
  if(_f MATCHES "^-I(.+)$")
    file(REAL_PATH "${CMAKE_MATCH_1}" _got)
    if(_got STREQUAL _want)
      set(_found ON)
    endif()
  endif()
endforeach()
if(NOT _found OR NOT "-pthread" IN_LIST _flags)
  message(FATAL_ERROR "expected -I${_want} and -pthread in: ${_flags}")
endif()

file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
set(_exe "${WORK}/consumer")
set(_cmd "${CXX}" -std=c++17 -O1 -Wall -Wextra -Wpedantic -Werror
    "-DATTNKIT_CONSUMER_VIA=\"pkg-config\"" -DATTNKIT_CONSUMER_POOL
    "${SOURCE}" -o "${_exe}" ${_flags})
list(JOIN _cmd " " _shown)
message(STATUS "${_shown}")
execute_process(COMMAND ${_cmd} RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "compiling the pkg-config consumer failed (${_rc})")
endif()
execute_process(COMMAND "${_exe}" RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "the pkg-config consumer failed (${_rc})")
endif()
