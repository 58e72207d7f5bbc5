//===- safetensors.cpp - weights from and to safetensors files ------------===//

#include "core/safetensors.h"

#include "core/buffer.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace shardline::rt {

namespace {
int64_t dtypeBytes(const std::string &dtype) {
  if (dtype == "F32" || dtype == "I32" || dtype == "U32")
    return 4;
  if (dtype == "BF16" || dtype == "F16" || dtype == "U16")
    return 2;
  return 0;
}

} // namespace

std::optional<MappedFile> MappedFile::open(const std::string &path, std::string &error) {
  int fd = ::open(path.c_str(), O_RDONLY);
  struct stat info;
  if (fd < 0 || ::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    if (fd >= 0)
      ::close(fd);
    error = "cannot open '" + path + "'";
    return std::nullopt;
  }
  MappedFile file;
  file.length = (uint64_t)info.st_size;
  if (file.length > 0) {
    void *p = ::mmap(nullptr, file.length, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      error = "cannot map '" + path + "' into memory";
      return std::nullopt;
    }
    uint64_t length = file.length;
    file.mapping = std::shared_ptr<void>(p, [length](void *q) { ::munmap(q, length); });
    file.bytes = static_cast<const uint8_t *>(p);
  }
  ::close(fd);
  return file;
}

std::optional<SafeTensorsFile> SafeTensorsFile::open(const std::string &path, std::string &error) {
  std::optional<MappedFile> mapped = MappedFile::open(path, error);
  if (!mapped) {
    error = "cannot open weight file '" + path + "'";
    return std::nullopt;
  }
  const uint8_t *bytes = mapped->data();
  uint64_t size = mapped->size();
  auto bad = [&](const std::string &why) {
    error = path + ": " + why;
    return std::nullopt;
  };
  if (size < 8)
    return bad("not a safetensors file (shorter than its header size)");
  uint64_t headerSize = 0;
  for (int i = 7; i >= 0; --i)
    headerSize = (headerSize << 8) | bytes[i];
  if (headerSize > size - 8)
    return bad("the header size " + std::to_string(headerSize) + " exceeds the file");
  nlohmann::json header = nlohmann::json::parse(bytes + 8, bytes + 8 + headerSize, nullptr,
                                                /*allow_exceptions=*/false);
  if (!header.is_object())
    return bad("the header is not a JSON object");
  SafeTensorsFile file;
  uint64_t dataSize = size - 8 - headerSize;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object())
        return bad("__metadata__ is not a JSON object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m)
        if (m.value().is_string())
          file.meta[m.key()] = m.value().get<std::string>();
      continue;
    }
    const auto &v = it.value();
    SafeTensor t;
    if (!v.is_object() || !v.contains("dtype") || !v["dtype"].is_string() || !v.contains("shape") ||
        !v["shape"].is_array() || !v.contains("data_offsets") || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2)
      return bad("tensor '" + it.key() + "' has a malformed entry");
    t.dtype = v["dtype"].get<std::string>();
    int64_t elementBytes = dtypeBytes(t.dtype);
    if (!elementBytes)
      return bad("tensor '" + it.key() + "' has dtype " + t.dtype +
                 "; F32, BF16, F16, I32, U16 and U32 are read");
    uint64_t count = 1;
    for (const auto &d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        return bad("tensor '" + it.key() + "' has a malformed shape");
      t.shape.push_back(d.get<int64_t>());
      count *= (uint64_t)t.shape.back();
    }
    t.begin = v["data_offsets"][0].get<uint64_t>();
    t.end = v["data_offsets"][1].get<uint64_t>();
    if (t.end < t.begin || t.end > dataSize || t.end - t.begin != count * elementBytes)
      return bad("tensor '" + it.key() +
                 "' has data offsets that do not match its shape or "
                 "lie outside the file");
    file.tensors[it.key()] = t;
  }
  file.file = std::move(*mapped);
  file.data = bytes + 8 + headerSize;
  return file;
}

const SafeTensor *SafeTensorsFile::find(const std::string &name) const {
  auto it = tensors.find(name);
  return it == tensors.end() ? nullptr : &it->second;
}

bool SafeTensorsFile::isInteger(const SafeTensor &t) {
  return t.dtype == "I32" || t.dtype == "U16" || t.dtype == "U32";
}

int64_t SafeTensorsFile::intAt(const SafeTensor &t, uint64_t index) const {
  const uint8_t *p = data + t.begin;
  if (t.dtype == "U16")
    return (uint16_t)(p[2 * index] | p[2 * index + 1] << 8);
  uint32_t u;
  std::memcpy(&u, p + 4 * index, 4);
  return t.dtype == "I32" ? (int64_t)(int32_t)u : (int64_t)u;
}

float SafeTensorsFile::at(const SafeTensor &t, uint64_t index) const {
  if (isInteger(t))
    return (float)intAt(t, index);
  const uint8_t *p = data + t.begin;
  if (t.dtype == "F32") {
    float f;
    std::memcpy(&f, p + 4 * index, 4);
    return f;
  }
  uint16_t h = (uint16_t)(p[2 * index] | p[2 * index + 1] << 8);
  return t.dtype == "BF16" ? bf16ToFloat(h) : f16ToFloat(h);
}

bool writeSafeTensors(const std::string &path, const std::map<std::string, TensorToWrite> &tensors,
                      std::string &error, const std::map<std::string, std::string> &metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty())
    header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto &[name, t] : tensors) {
    uint64_t size = t.values.size() * 4;
    header[name] = {{"dtype", t.i32 ? "I32" : "F32"},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string text = header.dump();
  while (text.size() % 8)
    text += ' ';
  std::ofstream out(path, std::ios::binary);
  if (!out) {
    error = "cannot write '" + path + "'";
    return false;
  }
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i)
    out.put((char)(n >> (8 * i)));
  out << text;
  for (const auto &[name, t] : tensors) {
    if (!t.i32) {
      out.write(reinterpret_cast<const char *>(t.values.data()),
                (std::streamsize)(t.values.size() * 4));
      continue;
    }
    std::vector<int32_t> ints(t.values.begin(), t.values.end());
    out.write(reinterpret_cast<const char *>(ints.data()), (std::streamsize)(ints.size() * 4));
  }
  if (!out) {
    error = "cannot write '" + path + "'";
    return false;
  }
  return true;
}

} // namespace shardline::rt
