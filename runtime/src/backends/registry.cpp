//===- registry.cpp - backends by name, loaded at run time ------------------===//

#include "backends/registry.h"

#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <vector>

namespace shardline::rt {

namespace {

/// Where to look for a backend library: the environment's path alone when it
/// is set (a test, or an installation elsewhere), else beside the running
/// binary and in its ../lib (the build's bin/ and lib/, an install's prefix).
std::vector<std::string> candidatePaths(const char *variable, const std::string &file) {
  if (const char *given = std::getenv(variable); given && *given)
    return {given};
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0)
    return {file};
  std::string dir(self, (size_t)n);
  dir = dir.substr(0, dir.find_last_of('/'));
  return {dir + "/" + file, dir + "/../lib/" + file};
}

/// Loads the backend `name` from its library: every candidate path in turn,
/// then its entry point, which refuses when the library was built against
/// another interface or the machine lacks the device.
const Backend *loadBackend(const std::string &name, const char *variable, const char *title,
                           std::string &error) {
  std::string file = "libshardline-backend-" + name + ".so";
  std::string tried;
  void *library = nullptr;
  for (const std::string &path : candidatePaths(variable, file)) {
    library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library)
      break;
    const char *why = dlerror();
    tried += (tried.empty() ? "" : "; ") + std::string(why ? why : path + ": not loadable");
  }
  std::string prefix = "--device " + name + ": ";
  if (!library) {
    error = prefix + "the " + title + " backend is not available (" + tried + ")";
    return nullptr;
  }
  std::string symbol = "shardline_backend_" + name;
  auto entry = reinterpret_cast<BackendEntry>(dlsym(library, symbol.c_str()));
  if (!entry) {
    const char *why = dlerror();
    error = prefix + "the " + title + " backend library has no entry point " + symbol + " (" +
            (why ? why : "") + ")";
    dlclose(library);
    return nullptr;
  }
  char reason[512] = "";
  const Backend *backend = entry(kBackendAbiVersion, &cpuBackend().kernels, reason, sizeof reason);
  if (!backend) {
    error = prefix + reason;
    // The library stays loaded: a static runtime inside it (CUDA's) may have
    // registered handlers that an unload would leave dangling.
    return nullptr;
  }
  return backend;
}

} // namespace

const Backend *findBackend(const std::string &name, std::string &error) {
  if (name == "cpu")
    return &cpuBackend();
  if (name != "cuda") {
    error = "--device must be one of " + std::string(kDeviceNames) + ", got '" + name + "'";
    return nullptr;
  }
  static std::mutex mutex;
  static const Backend *cuda = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (!cuda)
    cuda = loadBackend(name, "SHARDLINE_CUDA_BACKEND", "CUDA", error);
  return cuda;
}

} // namespace shardline::rt
