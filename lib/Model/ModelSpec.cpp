//===- ModelSpec.cpp - parsing and validating the model spec --------------===//

#include "shardline/Model/ModelSpec.h"
#include "shardline/Model/BlockFamily.h"

#include "core/layout.h"

#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <map>
#include <numeric>
#include <set>

using namespace shardline;
using llvm::json::Object;
using llvm::json::Value;

namespace {

using shardline::checkedProduct;
using shardline::kMaxMeshRanks;
using shardline::spec_limits::kMaxBlocks;
using shardline::spec_limits::kMaxDepth;
using shardline::spec_limits::kMaxErrors;
using shardline::spec_limits::kMaxSize;
using shardline::spec_limits::kMaxTextBytes;

/// "LINE:COL" (both 1-based) of byte `pos` of the text.
std::string lineCol(llvm::StringRef text, size_t pos) {
  size_t line = 1 + text.take_front(pos).count('\n');
  size_t lineStart = text.take_front(pos).rfind('\n');
  size_t col = pos - (lineStart == llvm::StringRef::npos ? 0 : lineStart + 1) + 1;
  return std::to_string(line) + ":" + std::to_string(col);
}

/// Finds the line and column of a key path ("attention.heads") in the text by
/// following the keys in order; good enough for messages, never for parsing.
std::string locate(llvm::StringRef text, llvm::StringRef file, llvm::StringRef path) {
  size_t pos = 0;
  llvm::SmallVector<llvm::StringRef> keys;
  path.split(keys, '.');
  bool found = true;
  for (llvm::StringRef key : keys) {
    size_t at = text.find(("\"" + key + "\"").str(), pos);
    if (at == llvm::StringRef::npos) {
      found = false;
      break;
    }
    pos = at;
  }
  if (!found || path.empty())
    return file.str() + ": ";
  return (file + ":" + lineCol(text, pos) + ": ").str();
}

/// Locating a problem scans the text, so a spec with thousands of them would
/// take quadratic time: the first kMaxErrors are reported, then one line
/// saying so. Returns whether another message may be added.
bool roomForError(llvm::StringRef file, std::vector<std::string> &errors) {
  if (errors.size() < (size_t)kMaxErrors)
    return true;
  if (errors.size() == (size_t)kMaxErrors)
    errors.push_back(
        (file + ": more problems; only the first " + llvm::Twine(kMaxErrors) + " are reported")
            .str());
  return false;
}

/// Keys that appear twice in one object, which the JSON parser would
/// silently resolve to one of them. Runs on text that parsed, so a plain scan
/// of strings and brackets suffices.
void findDuplicateKeys(llvm::StringRef text, llvm::StringRef file,
                       std::vector<std::string> &errors) {
  // One frame per open bracket: for objects, the keys seen so far.
  std::vector<std::pair<bool, std::map<std::string, size_t>>> frames;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '{' || c == '[') {
      frames.push_back({c == '{', {}});
    } else if (c == '}' || c == ']') {
      if (!frames.empty())
        frames.pop_back();
    } else if (c == '"') {
      size_t start = i;
      std::string value;
      for (++i; i < text.size() && text[i] != '"'; ++i) {
        if (text[i] == '\\' && i + 1 < text.size())
          value += text[i++];
        value += text[i];
      }
      size_t next = text.find_first_not_of(" \t\r\n", i + 1);
      bool isKey = !frames.empty() && frames.back().first && next != llvm::StringRef::npos &&
                   text[next] == ':';
      if (!isKey)
        continue;
      auto [it, inserted] = frames.back().second.emplace(value, start);
      if (!inserted && roomForError(file, errors))
        errors.push_back((file + ":" + lineCol(text, start) + ": duplicate key \"" + value +
                          "\" (first at " + lineCol(text, it->second) + ")")
                             .str());
    }
  }
}

/// The JSON parser recurses once per nested array or object, so deep nesting
/// overflows the stack before it reports anything. Scans strings and brackets
/// first (linear, no recursion) and names the first bracket past the limit.
bool checkNesting(llvm::StringRef text, llvm::StringRef file, std::vector<std::string> &errors) {
  int64_t depth = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '"') {
      for (++i; i < text.size() && text[i] != '"'; ++i)
        if (text[i] == '\\')
          ++i;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) {
        errors.push_back((file + ":" + lineCol(text, i) + ": nesting deeper than " +
                          llvm::Twine(kMaxDepth) +
                          " levels (the limit on nested objects and arrays)")
                             .str());
        return false;
      }
    } else if (c == '}' || c == ']') {
      // Unbalanced closers are the parser's to report.
      depth = std::max<int64_t>(0, depth - 1);
    }
  }
  return true;
}

std::string describe(const Value &v) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << v;
  // A message quotes the value, not a megabyte of it.
  if (s.size() > 80)
    s = s.substr(0, 77) + "...";
  return s;
}

std::string join(llvm::StringRef prefix, llvm::StringRef key) {
  return prefix.empty() ? key.str() : (prefix + "." + key).str();
}

std::string list(llvm::ArrayRef<llvm::StringRef> keys) {
  std::string s;
  for (auto k : keys)
    s += (s.empty() ? "" : ", ") + k.str();
  return s;
}

} // namespace

std::string shardline::specKeyLocation(const ModelSpec &spec, llvm::StringRef path) {
  return locate(spec.text, spec.file, path);
}

void SpecReader::error(llvm::StringRef path, const llvm::Twine &msg) {
  if (!roomForError(spec.file, errors))
    return;
  std::string where = locate(spec.text, spec.file, path);
  for (const auto &[key, flag] : spec.fromFlags)
    if (key == path)
      where = "command line: --" + flag + ": ";
  errors.push_back(where + (path.empty() ? "" : path.str() + ": ") + msg.str());
}

int64_t SpecReader::positive(const Object &o, llvm::StringRef prefix, llvm::StringRef key,
                             bool required, int64_t fallback) {
  std::string path = join(prefix, key);
  const Value *v = o.get(key);
  if (!v) {
    if (required)
      error(prefix.empty() ? "" : prefix, "missing required key '" + key + "'");
    return fallback;
  }
  std::optional<int64_t> i = v->getAsInteger();
  if (!i) {
    error(path, "expected a positive integer, got " + describe(*v));
    return fallback;
  }
  if (*i <= 0) {
    error(path, "must be positive, got " + llvm::Twine(*i));
    return fallback;
  }
  // Larger sizes would overflow element counts of the tensors built from them.
  if (*i > kMaxSize) {
    error(path, "is too large: " + llvm::Twine(*i) + " (at most " + llvm::Twine(kMaxSize) + ")");
    return fallback;
  }
  return *i;
}

std::string SpecReader::string(const Object &o, llvm::StringRef prefix, llvm::StringRef key,
                               bool required, std::string fallback) {
  const Value *v = o.get(key);
  if (!v) {
    if (required)
      error(prefix, "missing required key '" + key + "'");
    return fallback;
  }
  if (auto s = v->getAsString())
    return s->str();
  error(join(prefix, key), "expected a string, got " + describe(*v));
  return fallback;
}

double SpecReader::number(const Object &o, llvm::StringRef prefix, llvm::StringRef key,
                          double fallback) {
  const Value *v = o.get(key);
  if (!v)
    return fallback;
  std::optional<double> d = v->getAsNumber();
  if (!d || *d <= 0) {
    error(join(prefix, key), "expected a positive number, got " + describe(*v));
    return fallback;
  }
  return *d;
}

bool SpecReader::boolean(const Object &o, llvm::StringRef prefix, llvm::StringRef key,
                         bool fallback) {
  const Value *v = o.get(key);
  if (!v)
    return fallback;
  if (auto b = v->getAsBoolean())
    return *b;
  error(join(prefix, key), "expected true or false, got " + describe(*v));
  return fallback;
}

const Object *SpecReader::section(const Object &o, llvm::StringRef key) {
  const Value *v = o.get(key);
  if (!v)
    return nullptr;
  if (const Object *s = v->getAsObject())
    return s;
  error(key, "expected an object, got " + describe(*v));
  return nullptr;
}

void SpecReader::unknownKeys(const Object &o, llvm::StringRef prefix,
                             llvm::ArrayRef<llvm::StringRef> known) {
  for (const auto &kv : o) {
    llvm::StringRef k = kv.first;
    if (!llvm::is_contained(known, k))
      error(join(prefix, k), "unknown key (expected one of: " + list(known) + ")");
  }
}

void SpecReader::divisible(llvm::StringRef key, int64_t value, int64_t by,
                           const llvm::Twine &byWhat) {
  if (value % by != 0)
    error(key, llvm::Twine(value) + " is not divisible by " + byWhat + " = " + llvm::Twine(by));
}

std::optional<ModelSpec> shardline::parseModelSpec(llvm::StringRef text, llvm::StringRef file,
                                                   const ParallelOverrides &ov,
                                                   std::vector<std::string> &errors) {
  ModelSpec spec;
  spec.file = file.str();
  spec.text = text.str();
  if (text.size() > kMaxTextBytes) {
    errors.push_back((file + ": the spec is " + llvm::Twine(text.size()) + " bytes; at most " +
                      llvm::Twine(kMaxTextBytes) + " are read")
                         .str());
    return std::nullopt;
  }
  if (!checkNesting(text, file, errors))
    return std::nullopt;
  llvm::Expected<Value> parsed = llvm::json::parse(text);
  if (!parsed) {
    // The JSON parser reports "[LINE:COL, byte=N]: message".
    std::string msg = llvm::toString(parsed.takeError());
    llvm::StringRef rest(msg);
    std::string where = file.str() + ": ";
    if (rest.consume_front("[")) {
      auto [pos, tail] = rest.split("]: ");
      auto [lc, byte] = pos.split(", ");
      auto [line, col] = lc.split(':');
      unsigned c = 0;
      col.getAsInteger(10, c);
      // The parser's column is already 1-based.
      where = (file + ":" + line + ":" + llvm::Twine(c) + ": ").str();
      msg = tail.str();
    }
    errors.push_back(where + "malformed JSON: " + msg);
    return std::nullopt;
  }
  size_t parsedErrors = errors.size();
  findDuplicateKeys(text, file, errors);
  if (errors.size() != parsedErrors)
    return std::nullopt;
  Object *root = parsed->getAsObject();
  if (!root) {
    errors.push_back(file.str() + ": the model spec must be a JSON object");
    return std::nullopt;
  }
  size_t before = errors.size();
  SpecReader r(spec, errors);
  // Flags that set keys of a family's section write them into the section
  // before the family reads it, so the family checks them like the spec's own
  // keys and its messages name the flag.
  auto setKey = [&](llvm::StringRef section, llvm::StringRef key, auto value, const char *flag) {
    if (!value)
      return;
    std::string path = (section + "." + key).str();
    spec.fromFlags.emplace_back(path, flag);
    Object *o = root->getObject(section);
    if (!o) {
      r.error(path, "the spec has no \"" + section + "\" section for --" + flag + " to set");
      return;
    }
    (*o)[key] = *value;
  };
  setKey("moe", "capacity_factor", ov.moeCapacityFactor, "moe-expert-capacity-factor");
  setKey("moe", "token_drop_policy", ov.moeTokenDropPolicy, "moe-token-drop-policy");
  // The root's keys: the model's own, one section per family, the strategy.
  llvm::SmallVector<llvm::StringRef> rootKeys{"name", "pattern", "vocab", "hidden",
                                              "seq",  "batch",   "dtype", "norm_eps"};
  for (const BlockFamily *f : blockFamilies())
    rootKeys.push_back(f->section());
  rootKeys.push_back("parallel");
  r.unknownKeys(*root, "", rootKeys);
  spec.name = r.string(*root, "", "name", true, "model");
  spec.pattern = r.string(*root, "", "pattern", true);
  spec.vocab = r.positive(*root, "", "vocab", true);
  spec.hidden = r.positive(*root, "", "hidden", true);
  spec.seq = r.positive(*root, "", "seq", true);
  spec.batch = r.positive(*root, "", "batch", true);
  spec.dtype = r.string(*root, "", "dtype", false, "f32");
  spec.normEps = r.number(*root, "", "norm_eps", 1e-5);

  for (const BlockFamily *f : blockFamilies())
    if (const Object *o = r.section(*root, f->section()))
      spec.sections[f->letter()] = f->parse(r, *o);
  if (const Object *p = r.section(*root, "parallel")) {
    r.unknownKeys(*p, "parallel", {"dp", "tp", "sp", "cp", "cp_comm", "cp_order", "ep", "etp"});
    ParallelSpec &s = spec.parallel;
    s.dp = r.positive(*p, "parallel", "dp", false, 1);
    s.tp = r.positive(*p, "parallel", "tp", false, 1);
    s.cp = r.positive(*p, "parallel", "cp", false, 1);
    s.ep = r.positive(*p, "parallel", "ep", false, 1);
    s.etp = r.positive(*p, "parallel", "etp", false, 1);
    s.sp = r.boolean(*p, "parallel", "sp", false);
    s.cpComm = r.string(*p, "parallel", "cp_comm", false, "ring");
    s.cpOrder = r.string(*p, "parallel", "cp_order", false, "zigzag");
  }
  ParallelSpec &p = spec.parallel;
  auto apply = [&](auto &field, const auto &value, const char *key, const char *flag) {
    if (!value)
      return;
    field = *value;
    spec.fromFlags.emplace_back(key, flag);
  };
  apply(p.dp, ov.dp, "parallel.dp", "dp");
  apply(p.tp, ov.tp, "parallel.tp", "tp");
  apply(p.cp, ov.cp, "parallel.cp", "cp");
  apply(p.ep, ov.ep, "parallel.ep", "ep");
  apply(p.etp, ov.etp, "parallel.etp", "etp");
  apply(p.sp, ov.sp, "parallel.sp", "sp");
  apply(p.cpComm, ov.cpComm, "parallel.cp_comm", "cp-comm");
  apply(p.cpOrder, ov.cpOrder, "parallel.cp_order", "cp-order");
  if (errors.size() != before)
    return std::nullopt;
  validateModelSpec(spec, errors);
  if (errors.size() != before)
    return std::nullopt;
  return spec;
}

void shardline::validateModelSpec(const ModelSpec &spec, std::vector<std::string> &errors) {
  SpecReader r(spec, errors);
  const ParallelSpec &p = spec.parallel;
  if (spec.pattern.empty())
    r.error("pattern", "must name at least one block");
  // A longer pattern is refused before one message per letter could be.
  bool tooLong = (int64_t)spec.pattern.size() > kMaxBlocks;
  if (tooLong)
    r.error("pattern", "has " + llvm::Twine(spec.pattern.size()) + " blocks; at most " +
                           llvm::Twine(kMaxBlocks) + " are supported");
  std::set<char> letters;
  for (size_t i = 0; i < spec.pattern.size() && !tooLong; ++i) {
    char c = spec.pattern[i];
    if (!lookupBlockFamily(c)) {
      r.error("pattern", "unknown block letter '" + std::string(1, c) + "' at position " +
                             llvm::Twine(i) + " (expected " + blockLetterList() + ")");
      continue;
    }
    letters.insert(c);
  }
  if (spec.dtype != "f32" && spec.dtype != "bf16" && spec.dtype != "f16")
    r.error("dtype", "must be f32, bf16 or f16, got \"" + spec.dtype + "\"");
  for (const BlockFamily *f : blockFamilies())
    if (letters.count(f->letter()) && !spec.section(f->letter()))
      r.error("pattern", "block letter '" + std::string(1, f->letter()) + "' needs a \"" +
                             f->section() + "\" section");

  for (auto [name, v] : {std::pair{"dp", p.dp}, std::pair{"tp", p.tp}, std::pair{"cp", p.cp},
                         std::pair{"ep", p.ep}, std::pair{"etp", p.etp}})
    if (v < 1)
      r.error(std::string("parallel.") + name, "must be positive, got " + llvm::Twine(v));
  // The mesh is dp x cp x tp (ep folds onto it); its rank count is the
  // dialect's limit.
  if (auto ranks = checkedProduct({p.dp, p.tp, p.cp});
      p.dp >= 1 && p.tp >= 1 && p.cp >= 1 && (!ranks || *ranks > kMaxMeshRanks)) {
    std::string count = ranks ? std::to_string(*ranks) : "more than 2^63";
    r.error("parallel",
            "dp*cp*tp = " + count + " ranks; a mesh has at most " + llvm::Twine(kMaxMeshRanks));
    return;
  }
  if (p.cpComm != "ring" && p.cpComm != "allgather" && p.cpComm != "a2a" && p.cpComm != "auto")
    r.error("parallel.cp_comm", "must be ring, allgather, a2a or auto, got \"" + p.cpComm + "\"");
  if (p.cpOrder != "zigzag" && p.cpOrder != "contiguous")
    r.error("parallel.cp_order", "must be zigzag or contiguous, got \"" + p.cpOrder + "\"");
  if (p.dp < 1 || p.tp < 1 || p.cp < 1 || p.ep < 1 || p.etp < 1)
    return;

  std::string foldError;
  if (!foldStrategyMesh(p, foldError))
    r.error(p.etp > 1 ? "parallel.etp" : "parallel.ep", foldError);

  int64_t t = p.tp;
  if (t > 1)
    r.divisible("vocab", spec.vocab, t, "tp (vocab-parallel embedding and LM head)");
  for (const BlockFamily *f : blockFamilies())
    if (const FamilySection *s = spec.section(f->letter()); s && letters.count(f->letter()))
      f->validate(r, *s, spec);
  r.divisible("batch", spec.batch, p.dp, "dp (batch is split over dp)");

  // The largest tensors (logits, dispatched MoE tokens) must keep element
  // counts far from int64 overflow.
  double tokens = (double)spec.batch * (double)spec.seq;
  double largest = tokens * (double)std::max(spec.vocab, spec.hidden);
  for (const auto &[letter, section] : spec.sections)
    if (const BlockFamily *f = lookupBlockFamily(letter); f && section)
      largest = std::max(largest, f->largestTensor(*section, spec));
  if (largest > (double)spec_limits::kMaxElements)
    r.error("", "the model's largest tensor would hold " + llvm::Twine((int64_t)largest) +
                    " elements; at most 9e15 are supported");

  // Sequence: split over cp (2*cp chunks in zigzag order), and again over tp
  // under sequence parallelism.
  int64_t seqSplit = p.cp * (p.sp ? t : 1);
  bool zigzag = p.cp > 1 && p.cpOrder == "zigzag";
  int64_t need = zigzag ? 2 * seqSplit : seqSplit;
  if (need > 1 && spec.seq % need != 0) {
    std::string why = zigzag ? "2*cp" : "cp";
    if (p.sp && t > 1)
      why += "*tp";
    r.error("seq", llvm::Twine(spec.seq) + " is not divisible by " + why + " = " +
                       llvm::Twine(need) +
                       (zigzag ? " (zigzag order cuts the sequence into 2*cp chunks)" : ""));
  }
}

namespace {
/// How much of each token axis a group of `n` consecutive ranks takes,
/// innermost first, starting `skip[axis]` ranks into each axis (the part an
/// inner group took). Returns false when the group would reach past an axis
/// it cuts.
bool foldGroup(int64_t n, const std::vector<std::string> &tokenAxes,
               const std::map<std::string, int64_t> &size, std::map<std::string, int64_t> &skip,
               std::map<std::string, int64_t> &take) {
  int64_t rest = n;
  for (const std::string &axis : tokenAxes) {
    int64_t left = size.at(axis) / skip[axis];
    if (rest == 1 || left == 1)
      continue;
    int64_t t = std::gcd(rest, left);
    // Past a cut axis the group cannot reach further out: its ranks would not
    // be consecutive.
    if (t != left && t != rest)
      return false;
    take[axis] = t;
    skip[axis] *= t;
    rest /= t;
  }
  return rest == 1;
}

/// The sizes a group of consecutive ranks folds for, innermost first: the
/// whole innermost axes times a divisor of the next one, and the axes it
/// takes them from ("tp (2), then cp (4)"). Axis sizes are mesh sizes, so the
/// divisor search is bounded by the rank limit, never by a tensor.
std::string foldingSizes(const std::vector<std::string> &tokenAxes,
                         const std::map<std::string, int64_t> &size, std::string &over) {
  std::vector<int64_t> fits;
  int64_t whole = 1;
  for (const std::string &axis : tokenAxes) {
    int64_t n = size.at(axis);
    if (n == 1)
      continue;
    over += (over.empty() ? "" : ", then ") + axis + " (" + std::to_string(n) + ")";
    for (int64_t d = 2; d <= n; ++d)
      if (n % d == 0)
        fits.push_back(whole * d);
    whole *= n;
  }
  std::string list;
  for (size_t i = 0; i < fits.size(); ++i)
    list += (i == 0 ? "" : i + 1 == fits.size() ? " or " : ", ") + std::to_string(fits[i]);
  return list;
}
} // namespace

std::optional<StrategyMesh> shardline::foldStrategyMesh(const ParallelSpec &p, std::string &error) {
  StrategyMesh mesh;
  std::map<std::string, int64_t> size{{"dp", p.dp}, {"cp", p.cp}, {"tp", p.tp}};
  // The axes whose ranks hold different tokens in an MoE layer, innermost
  // first; without sequence parallelism the tp ranks hold the same tokens.
  std::vector<std::string> tokenAxes;
  if (p.sp)
    tokenAxes.push_back("tp");
  tokenAxes.insert(tokenAxes.end(), {"cp", "dp"});

  if ((p.ep > 1 || p.etp > 1) && p.tp > 1 && !p.sp) {
    bool ep = p.ep > 1;
    error = (ep ? "ep = " + std::to_string(p.ep) : "etp = " + std::to_string(p.etp)) +
            " with tp = " + std::to_string(p.tp) +
            " needs sequence parallelism (--sp), as in Megatron Core: the expert" +
            (ep ? "" : "-tensor") +
            " group takes the innermost ranks, the tp ranks first, and only under sequence "
            "parallelism do they hold different tokens";
    return std::nullopt;
  }
  // The expert-tensor group is the innermost etp ranks, the expert group the
  // ep ranks outside it: etp folds first, ep continues where it stopped,
  // which is the same as folding etp*ep as one group with etp folding too.
  std::map<std::string, int64_t> skip{{"dp", 1}, {"cp", 1}, {"tp", 1}}, etpTake, epTake;
  bool etpFolds = p.etp >= 1 && foldGroup(p.etp, tokenAxes, size, skip, etpTake);
  bool folds = etpFolds && p.ep >= 1 && foldGroup(p.ep, tokenAxes, size, skip, epTake);
  if (!folds) {
    std::string over, list = foldingSizes(tokenAxes, size, over);
    std::string what = !etpFolds ? "etp = " + std::to_string(p.etp)
                       : p.etp > 1
                           ? "etp*ep = " + std::to_string(p.etp) + "*" + std::to_string(p.ep)
                           : "ep = " + std::to_string(p.ep);
    std::string name = !etpFolds ? "etp" : p.etp > 1 ? "etp*ep" : "ep";
    error = what + " does not fold onto the ranks that hold different tokens in the MoE layers";
    // Without sp, tp > 1 was refused above: no axis left means all are 1.
    if (over.empty()) {
      error += ": there are none (dp = cp = tp = 1), so " + name + " must be 1";
      return std::nullopt;
    }
    error += ": " + name + " takes them innermost first, " + over +
             ", whole axes and then a divisor of the next one, so " + name + " must be 1, " + list;
    return std::nullopt;
  }

  // Each axis, major to minor: the part outside both groups, the part in the
  // expert group, the part in the expert-tensor group. A cut axis becomes
  // one mesh axis per part, which together hold the same ranks in the same
  // order.
  for (const char *axis : {"dp", "cp", "tp"}) {
    int64_t e = epTake.count(axis) ? epTake[axis] : 1, t = etpTake.count(axis) ? etpTake[axis] : 1;
    int64_t outer = size[axis] / (e * t);
    std::vector<std::pair<int64_t, std::string>> cut;
    for (auto [n, group] : {std::pair{outer, ""}, std::pair{e, "ep"}, std::pair{t, "etp"}})
      if (n > 1)
        cut.emplace_back(n, group);
    if (cut.size() <= 1) {
      mesh.axes.emplace_back(axis, size[axis]);
      mesh.parts[axis] = {axis};
      if (!cut.empty() && !cut[0].second.empty())
        mesh.parts[cut[0].second].push_back(axis);
      continue;
    }
    static const char *const two[] = {"_outer", "_inner"}, *const three[] = {"_outer", "_mid",
                                                                             "_inner"};
    for (size_t i = 0; i < cut.size(); ++i) {
      std::string name = std::string(axis) + (cut.size() == 2 ? two[i] : three[i]);
      mesh.axes.emplace_back(name, cut[i].first);
      mesh.parts[axis].push_back(name);
      if (!cut[i].second.empty())
        mesh.parts[cut[i].second].push_back(name);
    }
  }
  return mesh;
}
