//===- moe_routes.cpp - dropless MoE's exchange by count -------------------===//

#include "comm/moe_routes.h"

#include <cstddef>
#include <numeric>

namespace shardline::rt {

namespace {

int64_t sum(const std::vector<int32_t> &v) {
  return std::accumulate(v.begin(), v.end(), int64_t{0});
}

/// offsets[m El + l]: where member m's rows for l start when the rows are
/// grouped by l, then by member.
std::vector<int64_t> byExpertThenMember(const std::vector<std::vector<int32_t>> &rows, int64_t El) {
  std::vector<int64_t> offsets(rows.size() * El);
  int64_t next = 0;
  for (int64_t l = 0; l < El; ++l)
    for (std::size_t m = 0; m < rows.size(); ++m) {
      offsets[m * El + l] = next;
      next += rows[m][l];
    }
  return offsets;
}

/// Member m's rows for each local expert l, rows[m][l], from its first row
/// to offsets[m El + l].
std::vector<RowRun> runs(const std::vector<std::vector<int32_t>> &rows,
                         const std::vector<int64_t> &offsets, int64_t El, int64_t m) {
  std::vector<RowRun> out;
  int64_t from = 0;
  for (int64_t l = 0; l < El; ++l) {
    if (rows[m][l] > 0)
      out.push_back({from, offsets[m * El + l], rows[m][l]});
    from += rows[m][l];
  }
  return out;
}

/// Where member m's rows start among the rows received from every member
/// but `me`, one member after another.
int64_t arrivalOf(const std::vector<std::vector<int32_t>> &rows, int64_t me, int64_t m) {
  int64_t at = 0;
  for (int64_t i = 0; i < m; ++i)
    at += i == me ? 0 : sum(rows[i]);
  return m == me ? 0 : at;
}

} // namespace

std::vector<RowRun> DroplessRoutes::runsOf(int64_t m) const { return runs(from, grouped, El, m); }

int64_t DroplessRoutes::arrival(int64_t m) const { return arrivalOf(from, me, m); }

std::vector<RowRun> TensorRoutes::runsOf(int64_t t) const { return runs(rows, gathered, El, t); }

int64_t TensorRoutes::arrival(int64_t t) const { return arrivalOf(rows, me, t); }

int64_t DroplessRoutes::rowsFrom(int64_t m) const { return sum(from[m]); }

int64_t DroplessRoutes::rowsOut() const {
  int64_t n = 0;
  for (int64_t m = 0; m < ep(); ++m)
    n += m == me ? 0 : rowsTo[m];
  return n;
}

int64_t DroplessRoutes::rowsIn() const {
  int64_t n = 0;
  for (int64_t m = 0; m < ep(); ++m)
    n += m == me ? 0 : rowsFrom(m);
  return n;
}

int64_t DroplessRoutes::total() const {
  return std::accumulate(local.begin(), local.end(), int64_t{0});
}

DroplessRoutes droplessRoutes(const std::vector<int64_t> &members, int64_t me,
                              const std::vector<int32_t> &counts,
                              const std::vector<std::vector<int32_t>> &received) {
  DroplessRoutes r;
  r.members = members;
  r.me = me;
  int64_t ep = (int64_t)members.size();
  r.El = (int64_t)counts.size() / ep;
  r.from.assign(ep, std::vector<int32_t>(r.El, 0));
  r.firstRow.assign(ep, 0);
  r.rowsTo.assign(ep, 0);
  int64_t row = 0;
  for (int64_t m = 0; m < ep; ++m) {
    r.firstRow[m] = row;
    for (int64_t l = 0; l < r.El; ++l)
      r.rowsTo[m] += counts[m * r.El + l];
    row += r.rowsTo[m];
    r.from[m] =
        m == me ? std::vector<int32_t>(counts.begin() + me * r.El, counts.begin() + (me + 1) * r.El)
                : received[m];
  }
  r.local.assign(r.El, 0);
  for (int64_t m = 0; m < ep; ++m)
    for (int64_t l = 0; l < r.El; ++l)
      r.local[l] += r.from[m][l];
  r.grouped = byExpertThenMember(r.from, r.El);
  return r;
}

int64_t TensorRoutes::rowsOf(int64_t t) const { return sum(rows[t]); }

DroplessRows droplessRows(const TensorRoutes &tg) {
  DroplessRows r;
  r.own = tg.rowsOf(tg.me);
  for (int64_t t = 0; t < tg.etp(); ++t)
    r.computed += tg.rowsOf(t);
  r.raw = r.computed + tg.etp() * r.own;
  return r;
}

int64_t TensorRoutes::gatherRowsSent() const { return (etp() - 1) * rowsOf(me); }

int64_t TensorRoutes::scatterRowsSent() const {
  int64_t n = 0;
  for (int64_t t = 0; t < etp(); ++t)
    n += t == me ? 0 : rowsOf(t);
  return n;
}

TensorRoutes tensorRoutes(const std::vector<int64_t> &members, int64_t me,
                          const std::vector<std::vector<int32_t>> &rows) {
  TensorRoutes tg;
  tg.members = members;
  tg.me = me;
  tg.rows = rows;
  tg.El = rows.empty() ? 0 : (int64_t)rows[0].size();
  tg.total.assign(tg.El, 0);
  for (const std::vector<int32_t> &r : rows)
    for (int64_t l = 0; l < tg.El; ++l)
      tg.total[l] += r[l];
  tg.gathered = byExpertThenMember(rows, tg.El);
  return tg;
}

int64_t droplessRowBytes(bool grad, int64_t T, int64_t k, int64_t H, int64_t eb, int64_t wb) {
  return grad ? T * k * (3 * H * eb + 2 * wb) : 2 * T * k * H * eb;
}

int64_t droplessBalancedBytes(int64_t ep, int64_t etp, int64_t El, bool grad, int64_t T, int64_t k,
                              int64_t H, int64_t eb, int64_t wb) {
  if (ep <= 1 && etp <= 1)
    return 0;
  int64_t counts = (ep - 1 + etp - 1) * El * 4;
  int64_t rowBytes = droplessRowBytes(grad, T, k, H, eb, wb);
  return counts + rowBytes * (ep - 1) / ep + rowBytes * (etp - 1);
}

DroplessBytes droplessBytes(const DroplessRoutes &ex, const TensorRoutes &tg, bool grad, int64_t T,
                            int64_t k, int64_t H, int64_t eb, int64_t wb) {
  DroplessBytes b;
  if (ex.ep() <= 1 && tg.etp() <= 1)
    return b;
  int64_t counts = (ex.ep() - 1 + tg.etp() - 1) * ex.El * 4;
  int64_t gathered = tg.gatherRowsSent(), scattered = tg.scatterRowsSent();
  if (grad)
    b.implied = ex.rowsOut() * (2 * H * eb + wb) + ex.rowsIn() * (H * eb + wb) +
                gathered * (2 * H * eb + wb) + scattered * (H * eb + wb);
  else
    b.implied = (ex.rowsOut() + ex.rowsIn() + gathered + scattered) * H * eb;
  b.implied += counts;
  b.balanced = droplessBalancedBytes(ex.ep(), tg.etp(), ex.El, grad, T, k, H, eb, wb);
  return b;
}

} // namespace shardline::rt
