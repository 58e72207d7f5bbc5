//===- BlockFamily.cpp - the registry of block families -------------------===//

#include "shardline/Model/BlockFamily.h"

using namespace shardline;

llvm::ArrayRef<const BlockFamily *> shardline::blockFamilies() {
  static const BlockFamily *const all[] = {
#define SHARDLINE_BLOCK_FAMILY(Name) &get##Name##Family(),
#include "shardline/Model/BlockFamilies.def"
  };
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
