//===- ShardingRule.cpp - checking layouts against sharding rules ---------===//

#include "shardline/Dialect/SL/IR/ShardingRule.h"

#include <algorithm>
#include <sstream>

namespace shardline {

int ShardingRule::addFactor(std::string name, FactorKind kind, int64_t granule, bool isSequence) {
  Factor f;
  f.name = std::move(name);
  f.kind = kind;
  f.granule = granule;
  f.isSequence = isSequence;
  factors.push_back(std::move(f));
  return (int)factors.size() - 1;
}

int ShardingRule::findFactor(const std::string &name) const {
  for (size_t i = 0; i < factors.size(); ++i)
    if (factors[i].name == name)
      return (int)i;
  return -1;
}

static const char *kindName(FactorKind k) {
  switch (k) {
  case FactorKind::Free:
    return "free";
  case FactorKind::Contracted:
    return "contracted";
  case FactorKind::Whole:
    return "whole";
  case FactorKind::SequenceMixing:
    return "sequence-mixing";
  }
  return "?";
}

static const char *remedyHint(Remedy r) {
  switch (r) {
  case Remedy::KVExchange:
    return "exchange keys and values (sl.ring_attention over these axes, an all-gather of K and V, "
           "or an all-to-all sequence<->heads)";
  case Remedy::Halo:
    return "pass the preceding tokens as a halo operand (sl.halo over these axes)";
  case Remedy::StatePassing:
    return "scan chunks from zero with chunk_axes and pass states (sl.scan_state_exchange)";
  case Remedy::VocabParallel:
    return "name the axes in vocab_axes (vocab-parallel cross-entropy)";
  case Remedy::ExpertExchange:
    return "name them in expert_axes (sl.moe_dropless exchanges rows with the experts' owners "
           "over these axes), or gather the experts first";
  case Remedy::None:
    break;
  }
  return "gather it first";
}

static const char *remedyName(Remedy r) {
  switch (r) {
  case Remedy::KVExchange:
    return "kv exchange";
  case Remedy::Halo:
    return "halo";
  case Remedy::StatePassing:
    return "state passing";
  case Remedy::VocabParallel:
    return "vocab parallel";
  case Remedy::ExpertExchange:
    return "expert exchange";
  case Remedy::None:
    break;
  }
  return "no remedy";
}

std::string ShardingRule::describe() const {
  std::ostringstream os;
  auto side = [&](const std::vector<std::vector<int>> &values,
                  const std::vector<std::string> &names) {
    for (size_t i = 0; i < values.size(); ++i) {
      os << (i ? " " : "") << (i < names.size() ? names[i] : "v" + std::to_string(i)) << '[';
      for (size_t d = 0; d < values[i].size(); ++d)
        os << (d ? "," : "") << (values[i][d] < 0 ? "1" : factors[values[i][d]].name);
      os << ']';
    }
  };
  side(operands, operandNames);
  os << " -> ";
  side(results, resultNames);
  for (FactorKind k :
       {FactorKind::Free, FactorKind::Contracted, FactorKind::Whole, FactorKind::SequenceMixing}) {
    std::string list;
    for (const auto &f : factors) {
      if (f.kind != k)
        continue;
      list += (list.empty() ? "" : ",") + f.name;
      if (f.granule > 0)
        list += " (granule " + std::to_string(f.granule) +
                (f.granuleName.empty() ? "" : " " + f.granuleName) + ")";
      if (k == FactorKind::SequenceMixing)
        list += std::string(" (") + remedyName(f.remedy) +
                (f.remedyAxes.empty() ? "" : " over " + formatAxes(f.remedyAxes)) + ")";
    }
    if (!list.empty())
      os << "; " << kindName(k) << ": " << list;
  }
  for (size_t r = 0; r < resultSums.size(); ++r) {
    if (resultSums[r].empty())
      continue;
    os << "; " << (r < resultNames.size() ? resultNames[r] : "v" + std::to_string(r)) << " sums ";
    for (size_t i = 0; i < resultSums[r].size(); ++i)
      os << (i ? "," : "") << factors[resultSums[r][i]].name;
    os << " (not over the axes of an expert exchange)";
  }
  if (partial != PartialRule::None)
    os << "; partial: " << (partial == PartialRule::Same ? "same" : "one");
  if (reducesToScalar)
    os << "; reduces to a scalar";
  if (primarySequence >= 0) {
    os << "; sequence: " << factors[primarySequence].name;
    std::string others;
    for (size_t f = 0; f < factors.size(); ++f)
      if (factors[f].isSequence && (int)f != primarySequence)
        others += (others.empty() ? "" : ",") + factors[f].name;
    if (!others.empty())
      os << " (also " << others << ")";
  }
  return os.str();
}

RuleCheck checkRule(const ShardingRule &rule, const Mesh &mesh,
                    const std::vector<std::vector<int64_t>> &operandShapes,
                    const std::vector<std::optional<Layout>> &operandLayouts,
                    const std::vector<std::vector<int64_t>> &resultShapes) {
  RuleCheck out;
  size_t nf = rule.factors.size();
  out.factorAxes.assign(nf, {});
  out.factorOrder.assign(nf, ChunkOrder::Contiguous);
  std::vector<std::string> source(nf);
  auto name = [&](size_t i) {
    return "operand #" + std::to_string(i) +
           (i < rule.operandNames.size() ? " (" + rule.operandNames[i] + ")" : std::string());
  };

  for (size_t i = 0; i < operandLayouts.size() && i < rule.operands.size(); ++i) {
    if (!operandLayouts[i])
      continue;
    const Layout &l = *operandLayouts[i];
    const auto &dims = rule.operands[i];
    if (l.dims.size() != dims.size()) {
      out.error = name(i) + " has a rank-" + std::to_string(l.dims.size()) +
                  " layout but the rule expects rank " + std::to_string(dims.size());
      return out;
    }
    for (size_t d = 0; d < dims.size(); ++d) {
      int f = dims[d];
      std::string where = name(i) + " dimension " + std::to_string(d);
      if (f < 0) {
        if (!l.dims[d].empty()) {
          out.error = where + " is split over " + formatAxes(l.dims[d]) + " but must not be split";
          return out;
        }
        continue;
      }
      const Factor &factor = rule.factors[f];
      where += " (" + factor.name + ")";
      if ((int64_t)d == l.orderDim && !factor.isSequence) {
        out.error = where + " carries a chunk order but is not a sequence dimension";
        return out;
      }
      if (source[f].empty()) {
        source[f] = where;
        out.factorAxes[f] = l.dims[d];
        out.factorOrder[f] = l.dimOrder(d);
        continue;
      }
      if (out.factorAxes[f] != l.dims[d]) {
        out.error = where + " is split over " + formatAxes(l.dims[d]) + " but " + source[f] +
                    " is split over " + formatAxes(out.factorAxes[f]);
        return out;
      }
      if (out.factorOrder[f] != l.dimOrder(d)) {
        out.error = where + " and " + source[f] + " have different chunk orders";
        return out;
      }
    }
  }

  for (size_t f = 0; f < nf; ++f) {
    const Factor &factor = rule.factors[f];
    const auto &axes = out.factorAxes[f];
    if (axes.empty())
      continue;
    if (factor.kind == FactorKind::Whole) {
      out.error = source[f] + " is split over " + formatAxes(axes) +
                  " but the op needs it whole; gather it first";
      return out;
    }
    if (factor.kind == FactorKind::SequenceMixing) {
      for (const auto &a : axes)
        if (std::find(factor.remedyAxes.begin(), factor.remedyAxes.end(), a) ==
            factor.remedyAxes.end()) {
          out.error = source[f] +
                      (factor.remedy == Remedy::ExpertExchange ? " is exchanged by count"
                                                               : " is sequence-mixing") +
                      " and split over " + formatAxes(axes) + " without a remedy for '" + a +
                      "': " + remedyHint(factor.remedy);
          return out;
        }
    }
    if (factor.granule > 0 && factor.granule % mesh.product(axes) != 0) {
      out.error = source[f] + " is split " + std::to_string(mesh.product(axes)) + " ways over " +
                  formatAxes(axes) + ", which does not divide its " +
                  std::to_string(factor.granule) + " " +
                  (factor.granuleName.empty() ? factor.name : factor.granuleName);
      return out;
    }
  }

  // Pending sums.
  int partialOperand = -1;
  for (size_t i = 0; i < operandLayouts.size(); ++i) {
    if (!operandLayouts[i] || operandLayouts[i]->partial.empty())
      continue;
    const auto &p = operandLayouts[i]->partial;
    if (rule.partial == PartialRule::None) {
      out.error = name(i) + " is a pending sum over " + formatAxes(p) +
                  " but the op is not linear in it; all-reduce or reduce-scatter it first";
      return out;
    }
    if (rule.partial == PartialRule::One && partialOperand >= 0) {
      out.error = name(i) + " and " + name(partialOperand) +
                  " are both pending sums; the op is linear in each operand separately, so at "
                  "most one may be";
      return out;
    }
    partialOperand = (int)i;
    out.resultPartial = p;
  }
  if (rule.partial == PartialRule::Same && partialOperand >= 0) {
    for (size_t i = 0; i < operandLayouts.size(); ++i)
      if (operandLayouts[i] && operandLayouts[i]->partial != out.resultPartial) {
        out.error = name(i) +
                    (operandLayouts[i]->partial.empty()
                         ? " is not a pending sum"
                         : " is a pending sum over " + formatAxes(operandLayouts[i]->partial)) +
                    " but " + name(partialOperand) + " is one over " +
                    formatAxes(out.resultPartial) +
                    "; a sum needs the same pending sum in every operand";
        return out;
      }
  }
  auto addPartial = [&](const std::vector<std::string> &axes) {
    for (const auto &a : axes)
      if (std::find(out.resultPartial.begin(), out.resultPartial.end(), a) ==
          out.resultPartial.end())
        out.resultPartial.push_back(a);
  };
  for (size_t f = 0; f < nf; ++f)
    if (rule.factors[f].kind == FactorKind::Contracted ||
        (rule.reducesToScalar && rule.factors[f].kind != FactorKind::Whole &&
         rule.factors[f].remedy != Remedy::VocabParallel))
      addPartial(out.factorAxes[f]);

  for (size_t r = 0; r < rule.results.size(); ++r) {
    Layout l;
    const auto &dims = rule.results[r];
    l.dims.resize(dims.size());
    for (size_t d = 0; d < dims.size(); ++d) {
      int f = dims[d];
      if (f < 0)
        continue;
      l.dims[d] = out.factorAxes[f];
      if (out.factorOrder[f] == ChunkOrder::Zigzag && l.orderDim < 0) {
        l.orderDim = (int64_t)d;
        l.order = ChunkOrder::Zigzag;
      }
    }
    l.partial = out.resultPartial;
    if (r < rule.resultSums.size()) {
      std::vector<std::string> exchanged;
      for (size_t g = 0; g < nf; ++g)
        if (rule.factors[g].remedy == Remedy::ExpertExchange)
          exchanged.insert(exchanged.end(), out.factorAxes[g].begin(), out.factorAxes[g].end());
      for (int g : rule.resultSums[r])
        for (const auto &a : out.factorAxes[g])
          if (std::find(exchanged.begin(), exchanged.end(), a) == exchanged.end() &&
              std::find(l.partial.begin(), l.partial.end(), a) == l.partial.end())
            l.partial.push_back(a);
    }
    std::string err = verifyLayout(l, &mesh, r < resultShapes.size() ? &resultShapes[r] : nullptr);
    if (!err.empty()) {
      out.error = "the layout derived for result #" + std::to_string(r) + " is invalid: " + err;
      return out;
    }
    out.results.push_back(std::move(l));
  }
  (void)operandShapes;
  return out;
}

} // namespace shardline
