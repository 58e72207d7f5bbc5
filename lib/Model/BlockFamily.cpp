//===- BlockFamily.cpp - the registry of block families -------------------===//

#include "shardline/Model/BlockFamily.h"

#include "llvm/ADT/STLExtras.h"

#include <vector>

using namespace shardline;

namespace shardline {
#define SHARDLINE_BLOCK_FAMILY(Name) const BlockFamily &get##Name##Family();
#include "BlockFamilies.inc"
#undef SHARDLINE_BLOCK_FAMILY
} // namespace shardline

llvm::ArrayRef<const BlockFamily *> shardline::blockFamilies() {
  // BlockFamilies.inc lists lib/Model/Families/*.cpp, one line per file.
  static const std::vector<const BlockFamily *> all = [] {
    std::vector<const BlockFamily *> families = {
#define SHARDLINE_BLOCK_FAMILY(Name) &get##Name##Family(),
#include "BlockFamilies.inc"
#undef SHARDLINE_BLOCK_FAMILY
    };
    llvm::sort(families, [](const BlockFamily *a, const BlockFamily *b) {
      return a->letter() < b->letter();
    });
    return families;
  }();
  return all;
}

const BlockFamily *shardline::lookupBlockFamily(char letter) {
  for (const BlockFamily *f : blockFamilies())
    if (f->letter() == letter)
      return f;
  return nullptr;
}

std::string shardline::blockLetterList() {
  llvm::ArrayRef<const BlockFamily *> all = blockFamilies();
  std::string s;
  for (size_t i = 0; i < all.size(); ++i)
    s += (i == 0 ? "" : i + 1 == all.size() ? " or " : ", ") + std::string(1, all[i]->letter());
  return s;
}
