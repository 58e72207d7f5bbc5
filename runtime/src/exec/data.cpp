//===- data.cpp - token ids and labels from a dataset file ----------------===//

#include "exec/data.h"

#include <cstring>

namespace shardline::rt {

namespace {
std::string shapeOf(const std::vector<int64_t> &shape) {
  std::string text = "[";
  for (size_t d = 0; d < shape.size(); ++d)
    text += (d ? ", " : "") + std::to_string(shape[d]);
  return text + "]";
}

bool endsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}
} // namespace

std::optional<DataFile> DataFile::open(const std::string &path, const std::string &dtype,
                                       int64_t batch, int64_t seq, int64_t vocab,
                                       std::string &error) {
  DataFile data;
  data.path = path;
  data.batch = batch;
  data.seq = seq;
  data.vocab = vocab;
  auto bad = [&](const std::string &why) {
    error = path + ": " + why;
    return std::nullopt;
  };
  if (endsWith(path, ".safetensors")) {
    // MappedFile names a missing file as a data file; the safetensors reader
    // would call it a weight file.
    if (!MappedFile::open(path, error))
      return std::nullopt;
    data.tensors = SafeTensorsFile::open(path, error);
    if (!data.tensors)
      return std::nullopt;
    for (const char *name : {"tokens", "labels"}) {
      const SafeTensor *t = data.tensors->find(name);
      if (!t)
        return bad(std::string("has no tensor '") + name + "' (a dataset holds tokens and labels)");
      if (!SafeTensorsFile::isInteger(*t))
        return bad(std::string("'") + name + "' is " + t->dtype +
                   "; token ids are I32, U16 or U32");
      if (t->shape.size() != 2 || t->shape[1] != seq)
        return bad(std::string("'") + name + "' has shape " + shapeOf(t->shape) +
                   ", the model needs [N, " + std::to_string(seq) + "]");
      (name[0] == 't' ? data.tokens : data.labelRows) = *t;
    }
    if (data.tokens.shape[0] != data.labelRows.shape[0])
      return bad("'tokens' has " + std::to_string(data.tokens.shape[0]) + " rows, 'labels' " +
                 std::to_string(data.labelRows.shape[0]));
    data.rows = data.tokens.shape[0];
    if (data.rows == 0)
      return bad("holds no sequence");
    return data;
  }
  if (dtype != "u16" && dtype != "u32") {
    error = "the data type of a token file must be u16 or u32, not '" + dtype + "'";
    return std::nullopt;
  }
  data.flat = MappedFile::open(path, error);
  if (!data.flat) {
    error = "cannot open data file '" + path + "'";
    return std::nullopt;
  }
  data.elementBytes = dtype == "u16" ? 2 : 4;
  if (data.flat->size() % data.elementBytes)
    return bad(std::to_string(data.flat->size()) + " bytes are not a whole number of " + dtype +
               " token ids");
  data.length = (int64_t)(data.flat->size() / data.elementBytes);
  if (data.length < seq + 1)
    return bad("holds " + std::to_string(data.length) + " token ids, fewer than one sequence of " +
               std::to_string(seq) + " and its next token");
  return data;
}

bool DataFile::read(int64_t pass, bool labels, const std::vector<int64_t> &positions,
                    std::vector<float> &out, std::string &error) const {
  out.resize(positions.size());
  for (size_t i = 0; i < positions.size(); ++i) {
    int64_t b = positions[i] / seq, s = positions[i] % seq;
    // The window of batch row b of this pass, wrapping around the file.
    int64_t row = pass * batch + b, id = 0;
    std::string where;
    if (flat) {
      int64_t at =
          (int64_t)(((unsigned __int128)row * (uint64_t)seq + (uint64_t)s + (labels ? 1 : 0)) %
                    (uint64_t)length);
      const uint8_t *p = flat->data() + at * elementBytes;
      if (elementBytes == 2) {
        id = (uint16_t)(p[0] | p[1] << 8);
      } else {
        uint32_t u;
        std::memcpy(&u, p, 4);
        id = u;
      }
      where = "token id " + std::to_string(id) + " at position " + std::to_string(at);
    } else {
      const SafeTensor &t = labels ? labelRows : tokens;
      int64_t r = row % rows;
      id = tensors->intAt(t, (uint64_t)(r * seq + s));
      where = std::string(labels ? "labels" : "tokens") + "[" + std::to_string(r) + ", " +
              std::to_string(s) + "] is " + std::to_string(id) + ",";
    }
    if (id < 0 || id >= vocab) {
      error = path + ": " + where + " outside the model's vocabulary [0, " + std::to_string(vocab) +
              ")";
      return false;
    }
    out[i] = (float)id;
  }
  return true;
}

} // namespace shardline::rt
