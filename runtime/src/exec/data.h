//===- data.h - token ids and labels from a dataset file ------------------===//
//
// A run's tokens and labels come from the seed, or from a file (--data):
//
// - a flat binary of token ids (uint16 or uint32, little-endian), as
//   Megatron's and nanoGPT's preprocessed datasets are: batch row r of
//   forward pass k reads the window of S + 1 ids that starts at
//   (k·B + r)·S, wrapping around the end of the file; its first S ids are
//   the tokens, its last S the labels (the next token of each);
// - a safetensors file (".safetensors") with `tokens` and `labels`, each
//   [N, S] of I32, U16 or U32: pass k reads rows k·B ... k·B + B − 1,
//   wrapping around N.
//
// A rank reads only the positions its layout of an input holds, from a
// mapping of the file, so a dataset of any size costs a rank its own tokens.
//
//===----------------------------------------------------------------------===//

#ifndef SHARDLINE_RUNTIME_EXEC_DATA_H
#define SHARDLINE_RUNTIME_EXEC_DATA_H

#include "core/safetensors.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shardline::rt {

class DataFile {
public:
  /// Opens `path` for a model of [batch, seq] inputs and `vocab` ids;
  /// `dtype` ("u16" or "u32") is the element type of a flat binary. A file
  /// shorter than one sequence, or of the wrong shape, is an error naming it.
  static std::optional<DataFile> open(const std::string &path, const std::string &dtype,
                                      int64_t batch, int64_t seq, int64_t vocab,
                                      std::string &error);

  /// The ids of forward pass `pass` at the global [batch, seq] element
  /// indices `positions` (the tokens, or the labels when `labels`), as f32
  /// (the executor's staging type for inputs; ids stay below 2^24). An id
  /// outside [0, vocab) is an error naming the file, where it is and the
  /// vocabulary.
  bool read(int64_t pass, bool labels, const std::vector<int64_t> &positions,
            std::vector<float> &out, std::string &error) const;

private:
  std::string path;
  int64_t batch = 0, seq = 0, vocab = 0;
  /// A flat binary: its mapping, element size and length in ids.
  std::optional<MappedFile> flat;
  int64_t elementBytes = 2, length = 0;
  /// A safetensors file: its tensors and their row count.
  std::optional<SafeTensorsFile> tensors;
  SafeTensor tokens, labelRows;
  int64_t rows = 0;
};

} // namespace shardline::rt

#endif
