//===- safetensors.h - weights from and to safetensors files ---------------===//
//
// The format: a little-endian u64 header size, a JSON header mapping each
// tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// into the data that follows), then the data. F32, BF16 and F16 are read
// as f32, I32, U16 and U32 (token ids) as integers; files are written in F32
// and I32.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_CORE_SAFETENSORS_H
#define SHARDLINE_RUNTIME_CORE_SAFETENSORS_H

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shardline::rt {

/// A whole file mapped read-only: a rank touches only the pages it reads
/// (its shard of the weights, its tokens of a dataset), however large the
/// file. Copies share the mapping.
class MappedFile {
public:
  /// The file, or nullopt with the error naming it.
  static std::optional<MappedFile> open(const std::string &path, std::string &error);
  const uint8_t *data() const { return bytes; }
  uint64_t size() const { return length; }

private:
  std::shared_ptr<void> mapping;
  const uint8_t *bytes = nullptr;
  uint64_t length = 0;
};

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
  /// The header's `__metadata__` string entries (empty when it has none).
  const std::map<std::string, std::string> &metadata() const { return meta; }
  /// Element `index` (row-major) of tensor `t`, as f32.
  float at(const SafeTensor &t, uint64_t index) const;
  /// Element `index` of an integer tensor (I32, U16, U32).
  int64_t intAt(const SafeTensor &t, uint64_t index) const;
  static bool isInteger(const SafeTensor &t);

private:
  MappedFile file;
  /// The data section, after the header.
  const uint8_t *data = nullptr;
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> meta;
};

/// A tensor to write: its values are held as f32 either way; an I32 tensor's
/// are whole numbers (token ids, labels) below 2^24, exact in f32.
struct TensorToWrite {
  std::vector<int64_t> shape;
  std::vector<float> values;
  bool i32 = false;
};

/// Writes the tensors by name, in F32 or I32.
bool writeSafeTensors(const std::string &path, const std::map<std::string, TensorToWrite> &tensors,
                      std::string &error, const std::map<std::string, std::string> &metadata = {});

} // namespace shardline::rt

#endif
