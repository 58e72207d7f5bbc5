//===- registry.h - backends by name ----------------------------*- C++ -*-===//
//
// The backend a run asks for by name (shardline-run --device): the CPU
// reference backend, built in, or a backend in a shared library that is
// loaded the first time a run asks for it, so the runtime and every tool
// start, and run CPU plans, on a machine without the library, its CUDA
// toolkit, a driver or a GPU. The CUDA backend is
// libshardline-backend-cuda.so, looked for in $SHARDLINE_CUDA_BACKEND when
// that is set, else beside the running binary and in its ../lib.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_BACKENDS_REGISTRY_H
#define SHARDLINE_RUNTIME_BACKENDS_REGISTRY_H

#include "exec/program.h"

#include <string>

namespace shardline::rt {

/// The names findBackend knows, for messages: "cpu|cuda".
inline constexpr const char *kDeviceNames = "cpu|cuda";

/// The backend called `name`, or nullptr with the reason in `error`, which
/// starts with "--device <name>: " (an unknown name, a library that is not
/// there or not loadable, a machine without the device). A library is
/// loaded once per process; a failed load is retried by the next call.
const Backend *findBackend(const std::string &name, std::string &error);

} // namespace shardline::rt

#endif
