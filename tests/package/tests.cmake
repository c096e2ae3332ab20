# Packaging tests (fmt / nlohmann_json style): two consumer projects, each built and run with
# `ctest --build-and-test`, and a pkg-config consumer. Included from tests/CMakeLists.txt.
#   package/install           fixture: `cmake --install <build> --prefix <build>/package/prefix`
#   package/find_package      find_package(attnkit CONFIG REQUIRED) against that prefix
#   package/pkg_config        the compiler + `pkg-config --cflags --libs attnkit` against that
#                             prefix (only if pkg-config is found)
#   package/find_package_dispatch  (ATTNKIT_DISPATCH=ON) find_package(attnkit COMPONENTS dispatch)
#                             against that prefix, attnkit::dispatch on every ISA of the machine
#   package/add_subdirectory  add_subdirectory(<attnkit source>) + attnkit::native
# The consumers are plain Debug builds of one small file (fast to compile); attnkit is not the
# top-level project there, so none of its tests, benchmarks or examples are built.
set(_attnkit_pkg_src "${CMAKE_CURRENT_LIST_DIR}")
set(_attnkit_pkg_bin "${CMAKE_BINARY_DIR}/package")
set(_attnkit_pkg_common
  --build-generator "${CMAKE_GENERATOR}"
  --build-makeprogram "${CMAKE_MAKE_PROGRAM}")
set(_attnkit_pkg_options
  "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}"
  -DCMAKE_BUILD_TYPE=Debug)

if(ATTNKIT_INSTALL)
  set(_attnkit_prefix "${_attnkit_pkg_bin}/prefix")
  add_test(NAME package/install
    COMMAND "${CMAKE_COMMAND}" "-DATTNKIT_BUILD=${CMAKE_BINARY_DIR}" "-DPREFIX=${_attnkit_prefix}"
            "-DCONSUMER_BUILD=${_attnkit_pkg_bin}/find_package"
            "-DDISPATCH_CONSUMER_BUILD=${_attnkit_pkg_bin}/find_package_dispatch"
            "-DEXPECT_DISPATCH=${ATTNKIT_DISPATCH}" -P "${_attnkit_pkg_src}/install_fixture.cmake")
  set_tests_properties(package/install PROPERTIES
    FIXTURES_SETUP attnkit_installed LABELS package TIMEOUT 120)

  add_test(NAME package/find_package
    COMMAND "${CMAKE_CTEST_COMMAND}"
      --build-and-test "${_attnkit_pkg_src}/find_package" "${_attnkit_pkg_bin}/find_package"
      ${_attnkit_pkg_common}
      --build-options ${_attnkit_pkg_options}
        "-DCMAKE_PREFIX_PATH=${_attnkit_prefix}" "-DATTNKIT_EXPECTED_PREFIX=${_attnkit_prefix}"
      --test-command consumer)
  set_tests_properties(package/find_package PROPERTIES
    FIXTURES_REQUIRED attnkit_installed LABELS package TIMEOUT 600)

  if(ATTNKIT_DISPATCH)
    add_test(NAME package/find_package_dispatch
      COMMAND "${CMAKE_CTEST_COMMAND}"
        --build-and-test "${_attnkit_pkg_src}/find_package_dispatch"
                         "${_attnkit_pkg_bin}/find_package_dispatch"
        ${_attnkit_pkg_common}
        --build-options ${_attnkit_pkg_options}
          "-DCMAKE_PREFIX_PATH=${_attnkit_prefix}" "-DATTNKIT_EXPECTED_PREFIX=${_attnkit_prefix}"
        --test-command dispatch_consumer)
    set_tests_properties(package/find_package_dispatch PROPERTIES
      FIXTURES_REQUIRED attnkit_installed LABELS package TIMEOUT 600)
  endif()

  find_program(ATTNKIT_PKG_CONFIG NAMES pkg-config pkgconf)
  if(ATTNKIT_PKG_CONFIG)
    add_test(NAME package/pkg_config
      COMMAND "${CMAKE_COMMAND}" "-DPKG_CONFIG=${ATTNKIT_PKG_CONFIG}"
              "-DCXX=${CMAKE_CXX_COMPILER}" "-DPREFIX=${_attnkit_prefix}"
              "-DSOURCE=${_attnkit_pkg_src}/consumer.cpp" "-DWORK=${_attnkit_pkg_bin}/pkg_config"
              "-DVERSION=${attnkit_VERSION}" -P "${_attnkit_pkg_src}/pkg_config_consumer.cmake")
    set_tests_properties(package/pkg_config PROPERTIES
      FIXTURES_REQUIRED attnkit_installed LABELS package TIMEOUT 600)
  else()
    message(STATUS "attnkit: pkg-config not found, test package/pkg_config not registered")
  endif()
endif()

add_test(NAME package/add_subdirectory
  COMMAND "${CMAKE_CTEST_COMMAND}"
    --build-and-test "${_attnkit_pkg_src}/add_subdirectory" "${_attnkit_pkg_bin}/add_subdirectory"
    ${_attnkit_pkg_common}
    --build-options ${_attnkit_pkg_options} "-DATTNKIT_SOURCE_DIR=${attnkit_SOURCE_DIR}"
    --test-command consumer)
set_tests_properties(package/add_subdirectory PROPERTIES LABELS package TIMEOUT 600)
