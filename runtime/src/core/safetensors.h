//===- safetensors.h - weights from and to safetensors files ---------------===//
//
// The format: a little-endian u64 header size, a JSON header mapping each
// tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// into the data that follows), then the data. F32, BF16 and F16 are read
// (as f32); files are written in F32.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_CORE_SAFETENSORS_H
#define SHARDLINE_RUNTIME_CORE_SAFETENSORS_H

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace shardline::rt {

struct SafeTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0; ///< byte range in the data section
};

class SafeTensorsFile {
public:
  /// Reads and checks the header (names, dtypes, shapes, offsets in bounds).
  static std::optional<SafeTensorsFile> open(const std::string &path, std::string &error);

  const SafeTensor *find(const std::string &name) const;
  /// Element `index` (row-major) of tensor `t`, as f32.
  float at(const SafeTensor &t, uint64_t index) const;

private:
  std::vector<uint8_t> data;
  std::map<std::string, SafeTensor> tensors;
};

/// Writes f32 tensors (name -> shape, values).
bool writeSafeTensors(
    const std::string &path,
    const std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> &tensors,
    std::string &error);

} // namespace shardline::rt

#endif
