# Finds attnkit's dependencies; shared by the build tree and the installed package config
# (which sets ATTNKIT_FROM_PACKAGE_CONFIG so a missing dependency makes find_package(attnkit) fail
# cleanly instead of aborting the configure).
include(CMakeFindDependencyMacro)
macro(_attnkit_find)
  if(ATTNKIT_FROM_PACKAGE_CONFIG)
    find_dependency(${ARGN})
  else()
    find_package(${ARGN} REQUIRED)
  endif()
endmacro()
_attnkit_find(Eigen3 3.4 NO_MODULE)
_attnkit_find(xsimd 8.1)
set(THREADS_PREFER_PTHREAD_FLAG ON)
_attnkit_find(Threads)
# Debian's xsimd 8.1 package lists an "xtl" link item that no package provides (upstream
# xtensor-stack/xsimd#869, fixed in 9.0). The headers need xtl only with XSIMD_ENABLE_XTL_COMPLEX,
# which attnkit never defines, so drop the item when no xtl target exists.
if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_attnkit_xsimd_libs xsimd INTERFACE_LINK_LIBRARIES)
  if(_attnkit_xsimd_libs)
    list(REMOVE_ITEM _attnkit_xsimd_libs xtl)
    set_property(TARGET xsimd PROPERTY INTERFACE_LINK_LIBRARIES "${_attnkit_xsimd_libs}")
  endif()
endif()
