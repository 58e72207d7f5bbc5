# SHARDLINE_SANITIZE: the whole build under AddressSanitizer and UndefinedBehaviorSanitizer, for
# scripts/sanitize.sh. Included by the top CMakeLists.txt before runtime/ and by runtime/ when it is
# built on its own, so every target of either project is instrumented the same way.
include_guard(GLOBAL)

option(SHARDLINE_SANITIZE
       "Build with -fsanitize=address,undefined (clang; Debian: libclang-rt-22-dev)" OFF)

if(SHARDLINE_SANITIZE)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SHARDLINE_SANITIZE needs clang (scripts/sanitize.sh uses clang-22)")
  endif()
  # Any UB report fails the test that hit it instead of scrolling past in its log.
  set(SHARDLINE_SANITIZE_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined
                               -fno-omit-frame-pointer)
  add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX>:${SHARDLINE_SANITIZE_FLAGS}>")
  add_link_options(-fsanitize=address,undefined)
  # OpenMPI's mpi.h pulls in its C++ bindings unless told not to, and the instrumented build does
  # not build without this; the runtime uses MPI's C API alone and links no libmpi_cxx.
  add_compile_definitions(OMPI_SKIP_MPICXX=1)
  # The CUDA test links a second ASan runtime; the sanitizer build covers the CPU code and leaves
  # CUDA out.
  set(SHARDLINE_ENABLE_CUDA OFF)
  message(STATUS "SHARDLINE_SANITIZE: ASan + UBSan; the CUDA kernels are not built in this "
                 "configuration (their test links a second ASan runtime)")
endif()
