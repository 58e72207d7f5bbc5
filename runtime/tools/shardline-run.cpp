//===- shardline-run.cpp - run a plan on CPU ranks -------------------------===//

#include "backends/registry.h"
#include "comm/mpi.h"
#include "core/plan.h"
#include "exec/executor.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

using namespace shardline::rt;

namespace {
void usage(FILE *out) {
  std::fprintf(out,
               "usage: shardline-run PLAN.slp [--ranks N] [--comm threads|mpi|nccl|mpi+nccl]\n"
               "                     [--seed S]\n"
               "                     [--device cpu|cuda]\n"
               "                     [--weights W.safetensors [--no-load-optim | --finetune]]\n"
               "                     [--save-weights W.safetensors]\n"
               "                     [--data FILE [--data-dtype u16|u32]]\n"
               "                     [--save-outputs FILE.safetensors]\n"
               "                     [--steps N] [--profile] [--report FILE.json]\n"
               "                     [--verify [--rtol X] [--verify-routing replay|own]]\n"
               "                     [--timeout SECONDS]\n"
               "                     [--train [--lr X] [--adam-beta1 X] [--adam-beta2 X]\n"
               "                      [--adam-eps X] [--weight-decay X] [--clip-grad X]\n"
               "                      [--lr-warmup-iters N] [--lr-warmup-init X]\n"
               "                      [--lr-decay-style S] [--lr-decay-iters N] [--min-lr X]]\n"
               "       MODEL [same options]   (an executable from shardline-compile -o MODEL,\n"
               "                               which carries its plan)\n\n"
               "Runs a plan from shardline-compile --emit plan on CPU ranks: threads of this\n"
               "process, or one MPI process per rank under mpirun; or, with --device cuda, on\n"
               "a GPU.\n\n"
               "  --ranks N   number of ranks; must equal the plan's mesh size (default: that\n"
               "              size; under mpirun, the number of processes)\n"
               "  --comm C    threads (default): every rank a thread of this process;\n"
               "              mpi: this process is one rank, started by e.g.\n"
               "              mpirun -np N shardline-run PLAN.slp --comm mpi\n"
               "              nccl (with --device cuda): the ranks are threads of this\n"
               "              process, one GPU each (rank r on GPU r mod the GPU count), and\n"
               "              values cross between GPUs over NCCL; mpi+nccl: one MPI process\n"
               "              per rank, one GPU each, values over NCCL (mpirun -np N\n"
               "              shardline-run PLAN.slp --device cuda --comm mpi+nccl). Sequence\n"
               "              parallelism's gathers and reduce-scatters run in pieces with\n"
               "              the linears that read or make them; SHARDLINE_NCCL_OVERLAP=0\n"
               "              (alike on every rank) runs them whole\n"
               "  --device D  cpu (default): the reference kernels on the host; cuda: the\n"
               "              CUDA backend (libshardline-backend-cuda.so beside this binary, in\n"
               "              its ../lib, or at $SHARDLINE_CUDA_BACKEND); a plan of several\n"
               "              ranks needs --comm nccl or mpi+nccl; --verify's single-device\n"
               "              run stays on the CPU. f32 GEMMs run in f32; SHARDLINE_CUDA_TF32=1\n"
               "              runs them as TF32 on the tensor cores (products within about\n"
               "              1e-3: --verify then needs a looser --rtol)\n"
               "  --seed S    seed of the weights, tokens and labels (default 1)\n"
               "  --weights W load the weights from a safetensors file (by name; shapes must\n"
               "              match) instead of generating them from the seed; a bf16\n"
               "              weight's f32 main copy (<name>.main) the file lacks is copied\n"
               "              from the weight. A training plan resumes after the steps the\n"
               "              file records (the step numbers, the dataset's pass, AdamW's\n"
               "              bias correction and the schedule go on) with the file's AdamW\n"
               "              moments and main copies\n"
               "  --no-load-optim  with --weights: load the weights only, as Megatron's flag\n"
               "              does: the moments start at zero and the main copies from the\n"
               "              weights; AdamW's bias correction and the learning-rate schedule\n"
               "              start at step 1 while the step numbers and the dataset's pass go\n"
               "              on (the schedule's length stays --lr-decay-iters, by default\n"
               "              the last step's number). A forward run's weights train this way\n"
               "  --finetune  with --weights: load the weights only and start over, as\n"
               "              Megatron's flag does: step 1, the dataset's first pass, a fresh\n"
               "              optimizer\n"
               "  --save-weights W  write the run's weights (whole, f32; with a training\n"
               "              plan's AdamW moments and main copies) to a safetensors file,\n"
               "              with the steps trained and the optimizer's in its metadata\n"
               "  --data FILE read the tokens and labels from FILE instead of the seed: a flat\n"
               "              binary of token ids (Megatron's and nanoGPT's .bin; batch row r\n"
               "              of forward pass k reads the S + 1 ids from (k*B + r)*S on,\n"
               "              wrapping; labels are the next tokens), or a .safetensors file\n"
               "              with 'tokens' and 'labels' [N, S] (pass k reads rows k*B on,\n"
               "              wrapping). Ids outside the vocabulary are refused\n"
               "  --data-dtype T  u16 (default) or u32: the ids of a flat binary --data file\n"
               "  --save-outputs F  write the last forward pass's outputs (logits, loss: whole,\n"
               "              f32) and its inputs (tokens, labels: i32) to a safetensors file\n"
               "  --profile   with --steps: also print the time per step of each op kind on\n"
               "              the first rank (exchanges include waiting for the others) and\n"
               "              how many collectives a step ran on groups of each size; and\n"
               "              each MoE layer's expert load: per expert and rank, the routed\n"
               "              rows the expert received from the rank's tokens (kept) and, in\n"
               "              capacity mode, dropped; per rank, the rows its tokens sent and\n"
               "              the rows the experts it holds received\n"
               "  --report FILE.json  write the report of the run: one JSON document with\n"
               "              the plan, mesh, device and options, each step's time (and loss),\n"
               "              the bytes sent and arena peak measured beside the plan's, each MoE\n"
               "              layer's load per expert and rank, --profile's table and --verify's\n"
               "              figures (docs/report.md). The first rank writes it, every rank's\n"
               "              figures gathered; a path that cannot be written fails before the\n"
               "              run starts\n"
               "  --steps N   run N forward passes and print the time per step, tokens/s and\n"
               "              the time per op (default 1); with N > 1 one more, untimed step\n"
               "              runs first\n"
               "  --verify    also run the single-device program of the same model and seed,\n"
               "              compare the outputs (logits and loss), print the largest absolute\n"
               "              and relative errors and PASS or FAIL; PASS needs a relative error\n"
               "              of at most 1e-4 (f32 outputs), 0.5 (bf16) or 0.35 (f16: a 16-bit\n"
               "              router may pick other experts; a 16-bit model's f32 loss is held\n"
               "              to its model's type), i32 outputs equal, the\n"
               "              measured bytes per rank and arena peak equal to the report's\n"
               "              (dropless MoE's exchanges: exactly the bytes their counts imply,\n"
               "              the rest of the report exact),\n"
               "              and, where it replayed the routing, as many routed rows dropped\n"
               "              (capacity-mode MoE) as the single-device run; exit 0 only on PASS\n"
               "  --verify-routing replay|own  with --verify: how the single-device run\n"
               "              routes tokens to experts. replay (default): with the partitioned\n"
               "              run's choices (a training run's every step, a forward run's last\n"
               "              pass), its weights from its own logits, and it prints for how\n"
               "              many tokens its own choices would differ: top-k is discontinuous,\n"
               "              so the rounding of another summation order flips near-ties, which\n"
               "              sends tokens to other experts (and in capacity mode drops other\n"
               "              rows), and from the first flip the two runs train on different\n"
               "              tokens per expert; in capacity mode it also keeps and drops the\n"
               "              choices the partitioned run did (the \"probs\" policy ranks by\n"
               "              weight, where near-ties flip too) and prints how many it would\n"
               "              not. own: it chooses for itself, and the dropped rows are\n"
               "              printed but need not match\n"
               "  --rtol X    with --verify: the largest relative error accepted for every\n"
               "              float output instead of its type's (e.g. 0.03 for a 16-bit model\n"
               "              without routers, whose outputs agree to a few roundings); with\n"
               "              --train also for the losses, weights and AdamW moments (e.g.\n"
               "              0.05 for a bf16 model's training: docs/training.md)\n"
               "  --train     train: each of the --steps steps runs the forward, the backward\n"
               "              and the AdamW update of every weight (a plan compiled with\n"
               "              shardline-compile --train) and prints its loss; with --verify\n"
               "              the single-device run trains beside it, and PASS also needs\n"
               "              every step's loss and every final weight within the tolerance\n"
               "              (a weight's error: the norm of its difference over its norm).\n"
               "              A bf16 plan's AdamW updates the f32 main copies of its weights\n"
               "              (<name>.main) and rounds the bf16 weights from them\n"
               "              Without --train such a plan computes the loss and the gradients\n"
               "              (outputs grad.<name>) and leaves the weights as they are\n"
               "  --lr X, --adam-beta1 X, --adam-beta2 X, --adam-eps X, --weight-decay X,\n"
               "  --clip-grad X  AdamW as Megatron's flags mean them (defaults 1e-3, 0.9,\n"
               "              0.999, 1e-8, 0.01, 1.0; weight decay skips 1-D weights, clipping\n"
               "              is by the global gradient norm, 0 turns it off)\n"
               "  --lr-warmup-iters N, --lr-warmup-init X, --lr-decay-style S,\n"
               "  --lr-decay-iters N, --min-lr X  the learning-rate schedule as Megatron's\n"
               "              flags mean it: a linear warmup over N steps from X (default 0\n"
               "              steps, from 0) to --lr, then a decay (constant, linear or cosine;\n"
               "              default linear, as Megatron's) to --min-lr (default 0) over the\n"
               "              steps up to --lr-decay-iters (default: the last step of this run,\n"
               "              as Megatron's --train-iters; give it when a run resumes)\n"
               "  --loss-curve FILE.svg  with --train: draw every step's loss (and, with\n"
               "              --verify, the single-device run's) as an SVG chart\n"
               "  --timeout SECONDS  how long a rank waits for the others in any one\n"
               "              collective (default 60): a rank that has not arrived by then\n"
               "              stalled, died or runs another program, and the run stops with an\n"
               "              error naming it. A working run's ranks wait only as long as\n"
               "              they are out of step, far below the default\n\n"
               "Exit status: 0 on success (and PASS), 3 when a rank was lost (it stalled past\n"
               "the timeout or died; under mpirun a rank that dies outright may leave mpirun's\n"
               "own status), 1 on any other error.\n");
}

bool parseInt(const char *text, int64_t &out) {
  char *end = nullptr;
  long long v = std::strtoll(text, &end, 10);
  if (!end || *end || v < 0 || end == text)
    return false;
  out = v;
  return true;
}

bool parsePositive(const char *text, double &out) {
  char *end = nullptr;
  double v = std::strtod(text, &end);
  if (!end || *end || end == text || !(v > 0) || !std::isfinite(v))
    return false;
  out = v;
  return true;
}

/// The weights of a training plan that are AdamW moments of another: the
/// operands `m` and `v` of its sl.adamw ops.
std::set<std::string> adamMoments(const shardline::plan::Plan &plan) {
  std::set<std::string> moments;
  for (const auto *op : *plan.ops())
    if (op->kind()->str() == "adamw" && op->operand_names())
      for (flatbuffers::uoffset_t o = 0;
           o < op->operand_names()->size() && o < op->operands()->size(); ++o)
        if (std::string name = op->operand_names()->Get(o)->str(); name == "m" || name == "v")
          moments.insert(plan.tensors()->Get(op->operands()->Get(o))->name()->str());
  return moments;
}

/// The largest relative error --verify accepts for an output held in
/// `dtype` (docs/runtime.md has the measurements). Both runs round every
/// 16-bit value at op boundaries, but sums formed in another order (partial
/// sums of a row-parallel GEMM, a ring's online softmax) can land on the other
/// side of a rounding: a few units in the last place per block, which stay
/// within 2e-2 over nam56r-tiny's twelve blocks without MoE. A router that
/// sees such a difference may pick another expert for a token, and that
/// token's output then differs by what the expert contributes, whatever the
/// precision: up to 0.32 (bf16) and 0.22 (f16) on nam56r-tiny over twelve
/// seeds. Integer outputs (token ids, expert indices) are only moved, never
/// computed in another order: they match exactly.
double verifyTolerance(DType dtype) {
  switch (dtype) {
  case DType::I32:
    return 0;
  case DType::BF16:
    return 0.5;
  case DType::F16:
    return 0.35;
  default:
    return 1e-4;
  }
}

/// An SVG line chart of the loss per step (and of the single-device run's,
/// dashed, when there is one): the training curve a reader checks at a glance.
bool writeLossCurve(const std::string &path, const std::string &model,
                    const std::vector<double> &losses, const std::vector<double> &reference) {
  if (losses.empty())
    return true;
  double lo = losses[0], hi = losses[0];
  for (const auto *curve : {&losses, &reference})
    for (double l : *curve) {
      lo = std::min(lo, l);
      hi = std::max(hi, l);
    }
  lo = std::floor(lo), hi = std::ceil(hi);
  if (hi <= lo)
    hi = lo + 1;
  const double left = 60, top = 30, width = 560, height = 300;
  auto x = [&](size_t k) {
    return left + width * (losses.size() > 1 ? (double)k / (double)(losses.size() - 1) : 0.5);
  };
  auto y = [&](double l) { return top + height * (hi - l) / (hi - lo); };
  FILE *f = std::fopen(path.c_str(), "w");
  if (!f)
    return false;
  std::fprintf(f,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n",
               left + width + 20, top + height + 50);
  std::fprintf(f, "<text x=\"%g\" y=\"18\">%s: training loss per step</text>\n", left,
               model.c_str());
  std::fprintf(f,
               "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#888\"/>\n"
               "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"#888\"/>\n",
               left, top + height, left + width, top + height, left, top, left, top + height);
  for (int i = 0; i <= 4; ++i) {
    double l = lo + (hi - lo) * i / 4;
    std::fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%.2f</text>\n", left - 6, y(l) + 4,
                 l);
  }
  std::fprintf(f, "<text x=\"%g\" y=\"%g\">step 1</text>\n", left, top + height + 18);
  std::fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"end\">step %zu</text>\n", left + width,
               top + height + 18, losses.size());
  auto line = [&](const std::vector<double> &curve, const char *style) {
    std::fprintf(f, "<polyline fill=\"none\" %s points=\"", style);
    for (size_t k = 0; k < curve.size(); ++k)
      std::fprintf(f, "%.1f,%.1f ", x(k), y(curve[k]));
    std::fprintf(f, "\"/>\n");
  };
  line(losses, "stroke=\"#4a78b5\" stroke-width=\"2\"");
  if (!reference.empty())
    line(reference, "stroke=\"#c2703d\" stroke-width=\"1.5\" stroke-dasharray=\"5,4\"");
  std::fprintf(f, "<text x=\"%g\" y=\"%g\" fill=\"#4a78b5\">partitioned run</text>\n", left,
               top + height + 38);
  if (!reference.empty())
    std::fprintf(f, "<text x=\"%g\" y=\"%g\" fill=\"#c2703d\">single-device run (dashed)</text>\n",
                 left + 160, top + height + 38);
  std::fprintf(f, "</svg>\n");
  return std::fclose(f) == 0;
}

/// "block 3" or, for a layer outside the pattern, "layer 2".
std::string layerName(const LayerLoad &layer, size_t i) {
  return layer.block >= 0 ? "block " + std::to_string(layer.block) : "layer " + std::to_string(i);
}

/// The routed choices of the run's MoE layers summed over the ranks: in all
/// and, in capacity mode, the dropped ones per layer.
void printRoutedRows(const std::vector<LayerLoad> &layers, const std::string &span) {
  if (layers.empty())
    return;
  int64_t routed = 0, dropped = 0;
  std::string perLayer;
  for (size_t i = 0; i < layers.size(); ++i) {
    int64_t d = layers[i].total(layers[i].dropped), r = layers[i].total(layers[i].kept) + d;
    routed += r, dropped += d;
    perLayer += (i ? ", " : "") + layerName(layers[i], i) + ": " + std::to_string(d) + " of " +
                std::to_string(r);
  }
  bool capacity =
      std::any_of(layers.begin(), layers.end(), [](const LayerLoad &l) { return l.capacity; });
  std::printf("moe routed rows (%s, all ranks): %lld, dropped %lld%s%s%s\n", span.c_str(),
              (long long)routed, (long long)dropped, capacity ? " (" : " (dropless)",
              capacity ? perLayer.c_str() : "", capacity ? ")" : "");
}

/// The load-imbalance readout of one layer: per expert the rows it received
/// from each rank's tokens (kept, and dropped in capacity mode), the experts
/// as rows, of many experts the most loaded and the least; then per rank the
/// rows its tokens sent and the rows its experts received.
void printLoadTable(const LayerLoad &layer, size_t i, const std::string &span) {
  const size_t experts = layer.kept.size(), ranks = experts ? layer.kept[0].size() : 0;
  std::vector<int64_t> total = LayerLoad::perExpert(layer.kept),
                       droppedOf = LayerLoad::perExpert(layer.dropped);
  std::vector<size_t> order(experts);
  for (size_t e = 0; e < experts; ++e)
    order[e] = e;
  const size_t kShown = 16;
  if (experts > kShown)
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return total[a] > total[b] || (total[a] == total[b] && a < b);
    });
  int64_t sum = 0, most = 0;
  for (int64_t n : total)
    sum += n, most = std::max(most, n);
  double mean = experts ? (double)sum / (double)experts : 0;
  std::printf("expert load, %s (%s): rows each expert received from each rank's tokens%s; most "
              "loaded %.2fx the mean\n",
              layerName(layer, i).c_str(), span.c_str(), layer.capacity ? ", kept/dropped" : "",
              mean > 0 ? (double)most / mean : 0.0);
  std::printf("%8s %11s", "expert", "total");
  for (size_t r = 0; r < ranks; ++r)
    std::printf(" %9s", ("rank " + std::to_string(r)).c_str());
  std::printf("\n");
  auto cell = [&](int64_t kept, int64_t dropped) {
    return layer.capacity ? std::to_string(kept) + "/" + std::to_string(dropped)
                          : std::to_string(kept);
  };
  auto row = [&](size_t e) {
    std::printf("%8zu %11s", e, cell(total[e], droppedOf[e]).c_str());
    for (size_t r = 0; r < ranks; ++r)
      std::printf(" %9s", cell(layer.kept[e][r], layer.dropped[e][r]).c_str());
    std::printf("\n");
  };
  for (size_t n = 0; n < std::min(experts, kShown); ++n)
    row(order[n]);
  if (experts > kShown) {
    std::printf("%8s (%zu more experts; the least loaded:)\n", "...", experts - kShown - 1);
    row(order.back());
  }
  // Per rank: what its tokens sent (kept/dropped in capacity mode), and what
  // the experts it holds received from the ranks of its expert group.
  std::vector<int64_t> sent = layer.sentByRank(), received = layer.receivedByRank();
  std::vector<int64_t> droppedBy = LayerLoad::perRank(layer.dropped);
  int64_t allDropped = layer.total(layer.dropped);
  std::printf("%8s %11s", "sent", cell(sum, allDropped).c_str());
  for (size_t r = 0; r < ranks; ++r)
    std::printf(" %9s", cell(sent[r], droppedBy[r]).c_str());
  std::printf("\n%8s %11lld", "received", (long long)sum);
  for (size_t r = 0; r < ranks; ++r)
    std::printf(" %9lld", (long long)received[r]);
  std::printf("\n");
  if (layer.expertTensorRanks > 1)
    std::printf(
        "(received: over the expert group, each row once; the %lld ranks of an expert-tensor "
        "group then gather their rows, and each runs its ffn shard on all of them)\n",
        (long long)layer.expertTensorRanks);
}

using Json = nlohmann::ordered_json;

/// The version of the report of a run's document: a reader checks it before
/// reading fields (docs/report.md, "The report of a run").
constexpr const char *kRunReportSchema = "shardline-run-report/1";

/// The file of --report. Before the run, a check that it can be written:
/// an existing file is opened for writing (and left as it is), a new one
/// created and removed again, so that a path that cannot be written fails
/// before any step runs and a run that stops writes nothing. The document is
/// written once the run ends.
class ReportFile {
public:
  bool check(const std::string &name, std::string &error) {
    path = name;
    int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (fd >= 0) {
      ::close(fd);
      ::unlink(name.c_str());
    } else if (errno == EEXIST && (fd = ::open(name.c_str(), O_WRONLY)) >= 0) {
      ::close(fd);
    } else {
      error = "cannot write the report of the run to '" + name + "': " + std::strerror(errno);
      return false;
    }
    checked = true;
    return true;
  }
  bool isChecked() const { return checked; }
  bool write(const Json &doc, std::string &error) {
    std::string text = doc.dump(1) + "\n";
    FILE *file = std::fopen(path.c_str(), "w");
    bool ok = file && std::fwrite(text.data(), 1, text.size(), file) == text.size();
    ok = file && std::fclose(file) == 0 && ok;
    if (!ok)
      error = "cannot write the report of the run to '" + path + "'";
    return ok;
  }

private:
  std::string path;
  bool checked = false;
};

/// The MoE load of a run for its report: per layer, per expert the rows
/// received from each rank's tokens (kept) and dropped, per rank the rows its
/// tokens sent and its experts received.
Json loadJson(const std::vector<LayerLoad> &layers, const std::string &span) {
  Json layersJson = Json::array();
  int64_t routed = 0, dropped = 0;
  for (const LayerLoad &layer : layers) {
    const size_t experts = layer.kept.size(), ranks = experts ? layer.kept[0].size() : 0;
    int64_t kept = layer.total(layer.kept), lost = layer.total(layer.dropped), most = 0;
    Json expertsJson = Json::array();
    std::vector<int64_t> receivedOf = LayerLoad::perExpert(layer.kept),
                         droppedOf = LayerLoad::perExpert(layer.dropped);
    for (size_t e = 0; e < experts; ++e) {
      most = std::max(most, receivedOf[e]);
      Json entry = {{"expert", e}, {"received", receivedOf[e]}};
      if (layer.capacity)
        entry["dropped"] = droppedOf[e];
      entry["received_from_rank"] = layer.kept[e];
      if (layer.capacity)
        entry["dropped_from_rank"] = layer.dropped[e];
      expertsJson.push_back(std::move(entry));
    }
    std::vector<int64_t> sent = layer.sentByRank(), sentOff = layer.sentByRank(true),
                         received = layer.receivedByRank(),
                         receivedOff = layer.receivedByRank(true),
                         droppedBy = LayerLoad::perRank(layer.dropped);
    Json ranksJson = Json::array();
    for (size_t r = 0; r < ranks; ++r) {
      Json entry = {{"rank", r}, {"sent", sent[r]}, {"sent_to_other_ranks", sentOff[r]}};
      if (layer.capacity)
        entry["dropped"] = droppedBy[r];
      entry["received"] = received[r];
      entry["received_from_other_ranks"] = receivedOff[r];
      ranksJson.push_back(std::move(entry));
    }
    double mean = experts ? (double)kept / (double)experts : 0;
    Json layerJson = {{"block", layer.block},
                      {"mode", layer.capacity ? "capacity" : "dropless"},
                      {"routed", kept + lost},
                      {"dropped", lost},
                      {"experts", experts},
                      {"expert_tensor_ranks", layer.expertTensorRanks},
                      {"most_loaded_over_mean", mean > 0 ? most / mean : 0},
                      {"per_expert", std::move(expertsJson)},
                      {"per_rank", std::move(ranksJson)}};
    layersJson.push_back(std::move(layerJson));
    routed += kept + lost, dropped += lost;
  }
  return {
      {"span", span}, {"routed", routed}, {"dropped", dropped}, {"layers", std::move(layersJson)}};
}

int fail(const std::string &message, int status = 1) {
  std::fprintf(stderr, "shardline-run: error: %s\n", message.c_str());
  finalizeMpi();
  return status;
}
} // namespace

int main(int argc, char **argv) {
  std::string planPath, commName = "threads", deviceName = "cpu";
  int64_t ranks = -1, seed = 1, steps = 1;
  bool verify = false, profile = false, replayRouting = true, routingGiven = false;
  double rtol = -1, timeout = kDefaultTimeoutSeconds;
  std::string weightsFile, saveWeightsFile, dataFile, dataDType = "u16", saveOutputsFile,
                                                      lossCurveFile, reportFile;
  bool train = false;
  // Megatron's --no-load-optim and --finetune: what --weights loads.
  LoadOptimizer loadOptimizer = LoadOptimizer::Yes;
  std::string loadFlag;
  TrainOptions hyper;
  std::map<std::string, double *> hyperFlags = {{"--lr", &hyper.lr},
                                                {"--adam-beta1", &hyper.beta1},
                                                {"--adam-beta2", &hyper.beta2},
                                                {"--adam-eps", &hyper.eps},
                                                {"--weight-decay", &hyper.weightDecay},
                                                {"--clip-grad", &hyper.clipGrad},
                                                {"--min-lr", &hyper.minLr},
                                                {"--lr-warmup-init", &hyper.warmupInit}};
  bool hyperGiven = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (a == "--ranks" || a == "--seed" || a == "--steps") {
      if (i + 1 >= argc)
        return fail(a + " needs a value");
      int64_t &target = a == "--ranks" ? ranks : a == "--seed" ? seed : steps;
      if (!parseInt(argv[++i], target))
        return fail(a + " needs a non-negative integer, got '" + argv[i] + "'");
    } else if (a == "--verify") {
      verify = true;
    } else if (a == "--verify-routing") {
      if (i + 1 >= argc)
        return fail(a + " needs a value");
      std::string v = argv[++i];
      if (v != "replay" && v != "own")
        return fail("--verify-routing is replay or own, got '" + v + "'");
      replayRouting = v == "replay";
      routingGiven = true;
    } else if (a == "--rtol" || a == "--timeout") {
      if (i + 1 >= argc)
        return fail(a + " needs a value");
      double &target = a == "--rtol" ? rtol : timeout;
      if (!parsePositive(argv[++i], target))
        return fail(a + " needs a positive number" + (a == "--timeout" ? " of seconds" : "") +
                    ", got '" + argv[i] + "'");
    } else if (a == "--profile") {
      profile = true;
    } else if (a == "--train") {
      train = true;
    } else if (a == "--no-load-optim" || a == "--finetune") {
      if (!loadFlag.empty() && loadFlag != a)
        return fail("--no-load-optim and --finetune are two ways to start the optimizer afresh: "
                    "give one");
      loadFlag = a;
      loadOptimizer = a == "--finetune" ? LoadOptimizer::Finetune : LoadOptimizer::No;
    } else if (auto h = hyperFlags.find(a); h != hyperFlags.end()) {
      if (i + 1 >= argc)
        return fail(a + " needs a value");
      char *end = nullptr;
      double v = std::strtod(argv[++i], &end);
      bool beta = a == "--adam-beta1" || a == "--adam-beta2";
      if (!end || *end || end == argv[i] || !std::isfinite(v) || v < 0 || (beta && v >= 1) ||
          ((a == "--lr" || a == "--adam-eps") && v <= 0))
        return fail(a +
                    (beta                               ? " needs a number in [0, 1)"
                     : a == "--lr" || a == "--adam-eps" ? " needs a positive number"
                                                        : " needs a number >= 0") +
                    ", got '" + argv[i] + "'");
      *h->second = v;
      hyperGiven = true;
    } else if (a == "--lr-warmup-iters" || a == "--lr-decay-iters") {
      if (i + 1 >= argc)
        return fail(a + " needs a number of steps");
      int64_t &target = a == "--lr-warmup-iters" ? hyper.warmupSteps : hyper.decaySteps;
      if (!parseInt(argv[++i], target) || (a == "--lr-decay-iters" && target == 0))
        return fail(a + " needs a " + (a == "--lr-decay-iters" ? "positive" : "non-negative") +
                    " integer, got '" + argv[i] + "'");
      hyperGiven = true;
    } else if (a == "--lr-decay-style") {
      if (i + 1 >= argc)
        return fail("--lr-decay-style needs constant, linear or cosine");
      std::string style = argv[++i];
      if (style == "constant")
        hyper.decay = TrainOptions::Decay::Constant;
      else if (style == "linear")
        hyper.decay = TrainOptions::Decay::Linear;
      else if (style == "cosine")
        hyper.decay = TrainOptions::Decay::Cosine;
      else
        return fail("--lr-decay-style must be constant, linear or cosine, got '" + style + "'");
      hyperGiven = true;
    } else if (a == "--comm") {
      if (i + 1 >= argc)
        return fail("--comm needs threads, mpi, nccl or mpi+nccl");
      commName = argv[++i];
      if (commName != "threads" && commName != "mpi" && commName != "nccl" &&
          commName != "mpi+nccl")
        return fail("--comm must be threads, mpi, nccl or mpi+nccl, got '" + commName + "'");
    } else if (a == "--weights" || a == "--save-weights" || a == "--data" ||
               a == "--save-outputs" || a == "--loss-curve" || a == "--report") {
      if (i + 1 >= argc)
        return fail(a + " needs a file");
      (a == "--weights"        ? weightsFile
       : a == "--save-weights" ? saveWeightsFile
       : a == "--data"         ? dataFile
       : a == "--loss-curve"   ? lossCurveFile
       : a == "--report"       ? reportFile
                               : saveOutputsFile) = argv[++i];
    } else if (a == "--device") {
      if (i + 1 >= argc)
        return fail(std::string("--device needs ") + kDeviceNames);
      deviceName = argv[++i];
    } else if (a == "--data-dtype") {
      if (i + 1 >= argc)
        return fail("--data-dtype needs u16 or u32");
      dataDType = argv[++i];
      if (dataDType != "u16" && dataDType != "u32")
        return fail("--data-dtype must be u16 or u32, got '" + dataDType + "'");
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "shardline-run: error: unknown option '%s'\n", a.c_str());
      usage(stderr);
      return 1;
    } else if (planPath.empty()) {
      planPath = a;
    } else {
      return fail("one plan at a time ('" + planPath + "' and '" + a + "')");
    }
  }
  // NCCL moves values between GPUs; the host comm (threads or MPI) starts
  // the ranks and shares NCCL's id.
  bool nccl = commName == "nccl" || commName == "mpi+nccl";
  if (nccl && deviceName != "cuda")
    return fail("--comm " + commName + " moves values between GPUs: give --device cuda too (the " +
                deviceName + " device's ranks exchange through --comm threads or mpi)");
  if (rtol > 0 && !verify)
    return fail("--rtol sets what --verify accepts: give --verify too");
  if (routingGiven && !verify)
    return fail("--verify-routing says how --verify's single-device run routes tokens to experts: "
                "give --verify too");
  if (hyperGiven && !train)
    return fail("the optimizer flags set how --train updates the weights: give --train too");
  if (hyper.minLr > hyper.lr)
    return fail("--min-lr (" + std::to_string(hyper.minLr) + ") exceeds --lr (" +
                std::to_string(hyper.lr) + "): the schedule decays from --lr to --min-lr");
  if (!loadFlag.empty() && weightsFile.empty())
    return fail(loadFlag + " says what --weights loads of the optimizer's state: give --weights "
                           "too");
  if (!lossCurveFile.empty() && !train)
    return fail("--loss-curve draws the losses of --train: give --train too");
  if (dataDType != "u16" && dataFile.empty())
    return fail("--data-dtype sets how --data is read: give --data too");
  std::string error;
  std::optional<LoadedPlan> plan;
  if (planPath.empty()) {
    // A standalone executable carries its plan.
    std::vector<uint8_t> embedded = embeddedPlan("/proc/self/exe");
    if (embedded.empty()) {
      usage(stderr);
      return 1;
    }
    plan = loadPlan(std::move(embedded), error);
    if (!plan)
      error = "the embedded plan: " + error;
  } else {
    plan = loadPlanFile(planPath, error);
  }
  std::unique_ptr<Comm> mpi;
  if (commName == "mpi" || commName == "mpi+nccl") {
    mpi = makeMpiComm(&argc, &argv, error);
    if (!mpi)
      return fail(error);
  }
  // Under MPI a failing rank ends the whole job: the others may be waiting
  // for it in a collective.
  auto rankError = [&](const std::string &message) {
    if (mpi)
      mpi->abort(message);
    return fail(message);
  };
  if (!plan)
    return rankError(error);
  // The first rank writes the report of the run; a path it cannot write
  // stops every rank before the run starts.
  ReportFile reportOut;
  if (!reportFile.empty() && (!mpi || mpi->rank() == 0) && !reportOut.check(reportFile, error))
    return rankError(error);
  const Backend *backend = findBackend(deviceName, error);
  if (!backend)
    return rankError(error);
  if (std::string why = checkProgram(*plan, *backend); !why.empty())
    return rankError(why);
  if (train && !isTrainingPlan(*plan->root()))
    return rankError("--train needs a plan compiled with shardline-compile --train (this plan "
                     "has no sl.adamw: it computes the forward only)");
  if (!loadFlag.empty() && !isTrainingPlan(*plan->root()))
    return rankError(loadFlag + " starts a training plan's optimizer afresh, and this plan has "
                                "no sl.adamw (compile it with shardline-compile --train)");
  if (ranks >= 0 && ranks != plan->ranks())
    return rankError("the plan is for " + std::to_string(plan->ranks()) + " ranks, --ranks says " +
                     std::to_string(ranks));
  if (mpi && mpi->size() != plan->ranks())
    return rankError("the plan is for " + std::to_string(plan->ranks()) +
                     " ranks, mpirun started " + std::to_string(mpi->size()) +
                     (mpi->size() == 1 ? " process" : " processes") + " (mpirun -np " +
                     std::to_string(plan->ranks()) + " ... --comm " + commName + ")");
  // The executor's test hook (docs/runtime.md) is never set by accident
  // unseen: a rank it kills, stalls or falsifies is its doing.
  if (const char *fault = std::getenv("SHARDLINE_FAULT");
      fault && *fault && (!mpi || mpi->rank() == 0))
    std::fprintf(stderr,
                 "shardline-run: note: SHARDLINE_FAULT=%s is set: a test hook that kills, stalls "
                 "or falsifies a rank of this run\n",
                 fault);
  RunOptions options;
  options.seed = (uint64_t)seed;
  options.device = deviceName;
  if (nccl)
    options.deviceComm = "nccl";
  options.weightsFile = weightsFile;
  options.loadOptimizer = loadOptimizer;
  options.steps = std::max<int64_t>(1, steps);
  options.saveWeightsFile = saveWeightsFile;
  options.dataFile = dataFile;
  options.dataDType = dataDType;
  options.saveOutputsFile = saveOutputsFile;
  options.timeoutSeconds = timeout;
  // The number of each step the run trained (from 1, or on from the steps
  // the loaded weights had).
  std::vector<int64_t> stepNumbers;
  if (train) {
    options.train = hyper;
    // Each step's loss as it ends (rank 0 prints; under MPI the first process).
    options.onLoss = [&stepNumbers](int64_t step, double loss) {
      stepNumbers.push_back(step);
      std::printf("step %lld: loss %.6f\n", (long long)step, loss);
      std::fflush(stdout);
    };
  }
  options.returnWeights = train && verify;
  options.verify = verify;
  Routing routing;
  if (verify && replayRouting) {
    options.routing = &routing;
    options.routingUse = RoutingUse::Record;
  }
  RunResult run = mpi ? runPlanOnRank(*plan, options, *mpi) : runPlan(*plan, options);
  if (!run.error.empty() && !mpi)
    return fail(run.error, run.rankLost ? kExitRankLost : 1);
  if (!run.error.empty())
    return rankError(run.error);
  if (mpi && mpi->rank() != 0) {
    finalizeMpi();
    return 0;
  }
  const shardline::plan::Plan &root = *plan->root();
  // The report of the run: what ran and on what, then the figures as they
  // are printed.
  Json report;
  if (reportOut.isChecked()) {
    Json mesh = Json::object();
    for (const auto *axis : *root.mesh())
      mesh[axis->name()->str()] = axis->size();
    Json opts = {{"seed", seed},
                 {"steps", options.steps},
                 {"train", train},
                 {"data", dataFile.empty() ? Json() : Json(dataFile)},
                 {"data_dtype", dataFile.empty() ? Json() : Json(dataDType)},
                 {"weights", weightsFile.empty() ? Json() : Json(weightsFile)},
                 {"load_optimizer", loadOptimizer == LoadOptimizer::Yes  ? "yes"
                                    : loadOptimizer == LoadOptimizer::No ? "no"
                                                                         : "finetune"},
                 {"profile", profile},
                 {"verify", verify},
                 {"timeout_seconds", timeout}};
    if (train) {
      const char *decay = hyper.decay == TrainOptions::Decay::Constant ? "constant"
                          : hyper.decay == TrainOptions::Decay::Linear ? "linear"
                                                                       : "cosine";
      opts["optimizer"] = {
          {"lr", hyper.lr},
          {"adam_beta1", hyper.beta1},
          {"adam_beta2", hyper.beta2},
          {"adam_eps", hyper.eps},
          {"weight_decay", hyper.weightDecay},
          {"clip_grad", hyper.clipGrad},
          {"lr_warmup_iters", hyper.warmupSteps},
          {"lr_warmup_init", hyper.warmupInit},
          {"lr_decay_style", decay},
          {"lr_decay_iters", hyper.decaySteps > 0 ? Json(hyper.decaySteps) : Json()},
          {"min_lr", hyper.minLr}};
    }
    report = {{"schema", kRunReportSchema},
              {"plan", planPath.empty() ? Json(argv[0]) : Json(planPath)},
              {"plan_embedded", planPath.empty()},
              {"model", root.model()->str()},
              {"ranks", run.ranks},
              {"mesh", std::move(mesh)},
              {"device", deviceName},
              {"comm", commName},
              {"options", std::move(opts)}};
    Json stepsJson = Json::array();
    for (size_t k = 0; k < run.stepTimes.size(); ++k) {
      Json step = {{"step", k < stepNumbers.size() ? stepNumbers[k] : (int64_t)k + 1},
                   {"seconds", run.stepTimes[k]}};
      if (k < run.losses.size())
        step["loss"] = run.losses[k];
      stepsJson.push_back(std::move(step));
    }
    report["seconds"] = run.seconds;
    report["steps"] = std::move(stepsJson);
    Json outputs = Json::array();
    for (size_t i = 0; i < run.outputs.size(); ++i) {
      Json output = {{"name", run.outputNames[i]},
                     {"dtype", dtypeName(run.outputTypes[i])},
                     {"shape", run.outputShapes[i]}};
      if (run.outputs[i].size() == 1)
        output["value"] = run.outputs[i][0];
      outputs.push_back(std::move(output));
    }
    report["outputs"] = std::move(outputs);
  }
  std::printf("model %s on %lld ranks (%s%s%s), seed %lld\n", root.model()->c_str(),
              (long long)run.ranks, commName.c_str(), deviceName == "cpu" ? "" : ", ",
              deviceName == "cpu" ? "" : deviceName.c_str(), (long long)seed);
  for (size_t i = 0; i < run.outputs.size(); ++i)
    if (run.outputs[i].size() == 1)
      std::printf("output %zu: %.6f\n", i, run.outputs[i][0]);
  if (steps > 1) {
    const auto *tokensTensor = root.tensors()->Get(root.inputs()->Get(0));
    int64_t tokens = tokensTensor->shape()->Get(0) * tokensTensor->shape()->Get(1);
    double perStep = run.seconds / (double)options.steps;
    std::printf("%lld steps: %.3f ms per step, %.0f tokens/s, %.2f us per op\n",
                (long long)options.steps, perStep * 1e3, (double)tokens / perStep,
                perStep * 1e6 / (double)root.ops()->size());
    if (profile) {
      std::map<std::string, int64_t> counts;
      for (const auto *op : *root.ops())
        ++counts[op->kind()->str()];
      auto kinds = run.opSeconds;
      std::sort(kinds.begin(), kinds.end(),
                [](const auto &a, const auto &b) { return a.second > b.second; });
      std::printf("%-22s %6s %12s %7s\n", "op", "count", "ms per step", "share");
      for (const auto &[kind, secs] : kinds)
        std::printf("%-22s %6lld %12.3f %6.1f%%\n", kind.c_str(), (long long)counts[kind],
                    secs * 1e3, 100.0 * secs / perStep);
      for (const auto &[size, calls] : run.collectivesByGroupSize)
        std::printf("collectives per step on groups of %lld ranks: %lld\n", (long long)size,
                    (long long)calls);
      if (reportOut.isChecked()) {
        Json ops = Json::array(), groups = Json::array();
        for (const auto &[kind, secs] : kinds)
          ops.push_back({{"op", kind},
                         {"count", counts[kind]},
                         {"seconds_per_step", secs},
                         {"share", secs / perStep}});
        for (const auto &[size, calls] : run.collectivesByGroupSize)
          groups.push_back({{"ranks", size}, {"calls_per_step", calls}});
        report["profile"] = {
            {"rank", 0}, {"ops", std::move(ops)}, {"collectives_by_group_size", std::move(groups)}};
      }
    }
  } else if (profile) {
    std::fprintf(stderr,
                 "shardline-run: note: --profile times the ops only with --steps N, N > 1\n");
  }
  const std::string span =
      train ? "over " + std::to_string(options.steps) + " training steps" : "last forward pass";
  printRoutedRows(run.expertLoad, span);
  if (profile)
    for (size_t i = 0; i < run.expertLoad.size(); ++i)
      printLoadTable(run.expertLoad[i], i, span);
  // Dropless MoE sends what its routing sends; the report states it at
  // balanced routing, and the rest of the report is exact.
  bool variable = run.variableBytesBalanced > 0 || run.variableBytesMeasured > 0;
  bool restEqual = run.bytesSentPerRank - run.variableBytesMeasured ==
                   root.comm_bytes_per_rank() - run.variableBytesBalanced;
  std::printf("bytes sent per rank: %lld measured, %lld in the report%s\n",
              (long long)run.bytesSentPerRank, (long long)root.comm_bytes_per_rank(),
              !variable   ? ""
              : restEqual ? " (MoE rows at balanced routing; the rest equal)"
                          : " (MoE rows at balanced routing; the rest DIFFER)");
  if (reportOut.isChecked()) {
    Json bytes = {{"measured", run.bytesSentPerRank},
                  {"report", root.comm_bytes_per_rank()},
                  {"measured_by_rank", run.bytesSentByRank}};
    if (variable)
      bytes["moe_rows"] = {{"measured", run.variableBytesMeasured},
                           {"balanced_routing", run.variableBytesBalanced},
                           {"exact", run.variableBytesExact},
                           {"mismatch", run.variableBytesMismatch.empty()
                                            ? Json()
                                            : Json(run.variableBytesMismatch)},
                           {"rest_equal", restEqual}};
    report["bytes_sent_per_rank"] = std::move(bytes);
    report["arena_bytes_per_rank"] = {{"measured_peak", run.arenaPeak},
                                      {"planned", root.arena_bytes()},
                                      {"live_peak", run.liveBytesPeak}};
    if (!run.expertLoad.empty())
      report["moe"] = loadJson(run.expertLoad, span);
  }
  if (variable)
    std::printf("MoE rows: %lld bytes per rank measured, %lld at balanced routing; every rank "
                "sent %s its counts imply%s%s\n",
                (long long)run.variableBytesMeasured, (long long)run.variableBytesBalanced,
                run.variableBytesExact ? "exactly what" : "NOT what",
                run.variableBytesMismatch.empty() ? "" : ": ", run.variableBytesMismatch.c_str());
  std::printf("arena peak per rank: %lld measured, %lld in the report (%lld bytes live at most)\n",
              (long long)run.arenaPeak, (long long)root.arena_bytes(),
              (long long)run.liveBytesPeak);
  if (!verify) {
    if (!lossCurveFile.empty() &&
        !writeLossCurve(lossCurveFile, root.model()->str(), run.losses, {}))
      return fail("cannot write " + lossCurveFile);
    if (reportOut.isChecked() && !reportOut.write(report, error))
      return fail(error);
    finalizeMpi();
    return 0;
  }
  // The reference is the CPU's, whatever device the run was on.
  options.singleDevice = true;
  options.device = "cpu";
  options.deviceComm.clear();
  options.onLoss = nullptr;
  options.saveWeightsFile.clear();
  options.saveOutputsFile.clear();
  if (options.routing)
    options.routingUse = RoutingUse::Replay;
  if (!train) {
    // The outputs compared are the last forward pass's: with --steps N > 1
    // the untimed pass 0 and the timed passes 1 ... N ran, and the
    // single-device pass reads pass N's data.
    options.dataFirstPass = options.steps > 1 ? options.steps : 0;
    options.steps = 1;
  }
  // A training run is compared step by step: the single-device run trains
  // as long, on the same data passes.
  RunResult ref = runPlan(*plan, options);
  if (!ref.error.empty())
    return fail("single-device run: " + ref.error);
  Json verified = Json::object();
  // Relative error of an output: its largest absolute error over its largest
  // reference magnitude (elementwise ratios blow up on values near zero),
  // within the tolerance of the type the output is held in.
  double maxAbs = 0, maxRel = 0;
  bool withinTolerance = true;
  std::map<DType, double> tolerances;
  // The model's 16-bit type where its tensors hold one, else f32.
  DType modelType = DType::F32;
  for (const auto *t : *root.tensors())
    if (t->dtype() == shardline::plan::DType::BF16 || t->dtype() == shardline::plan::DType::F16)
      modelType = t->dtype() == shardline::plan::DType::BF16 ? DType::BF16 : DType::F16;
  for (size_t i = 0; i < run.outputs.size(); ++i) {
    double abs = 0, scale = 0;
    for (size_t k = 0; k < run.outputs[i].size(); ++k) {
      abs = std::max(abs, (double)std::fabs(run.outputs[i][k] - ref.outputs[i][k]));
      scale = std::max(scale, (double)std::fabs(ref.outputs[i][k]));
    }
    double rel = scale > 0 ? abs / scale : abs;
    // An f32 output of a 16-bit model (its loss) is computed from 16-bit
    // values and carries their rounding: it is held to their tolerance.
    DType type = run.outputTypes[i] == DType::F32 ? modelType : run.outputTypes[i];
    double tolerance = rtol > 0 && type != DType::I32 ? rtol : verifyTolerance(type);
    tolerances[type] = tolerance;
    withinTolerance = withinTolerance && rel <= tolerance;
    maxAbs = std::max(maxAbs, abs);
    maxRel = std::max(maxRel, rel);
  }
  std::string allowed;
  for (const auto &[dtype, tolerance] : tolerances) {
    char text[48];
    std::snprintf(text, sizeof text, "%s%g for %s", allowed.empty() ? "" : ", ", tolerance,
                  dtypeName(dtype));
    allowed += text;
  }
  if (train) {
    // Every step's loss, and every weight after the last step. A weight is
    // compared as a whole (the norm of its error over its norm): AdamW
    // normalises each element's gradient by its own history, so an element
    // that a few tokens update (the embedding row of a rare token) follows
    // the rounding of those few sums; its elementwise error (largest
    // absolute error over largest magnitude) is printed beside it.
    double lossRel = 0, weightRel = 0, elementRel = 0, momentRel = 0;
    std::string worstWeight, worstElement, worstMoment;
    const std::set<std::string> moments = adamMoments(root);
    for (size_t k = 0; k < run.losses.size() && k < ref.losses.size(); ++k)
      lossRel = std::max(lossRel, std::fabs(run.losses[k] - ref.losses[k]) /
                                      std::max(std::fabs(ref.losses[k]), 1e-30));
    for (const auto &[name, mine] : run.weights) {
      const auto &theirs = ref.weights.at(name).second;
      double abs = 0, scale = 0, err2 = 0, norm2 = 0;
      for (size_t k = 0; k < mine.second.size(); ++k) {
        double d = (double)mine.second[k] - (double)theirs[k];
        abs = std::max(abs, std::fabs(d));
        scale = std::max(scale, (double)std::fabs(theirs[k]));
        err2 += d * d;
        norm2 += (double)theirs[k] * (double)theirs[k];
      }
      double rel = norm2 > 0 ? std::sqrt(err2 / norm2) : std::sqrt(err2);
      double element = scale > 0 ? abs / scale : abs;
      // AdamW's moments (the plan's sl.adamw operands m and v) are printed
      // apart from the weights they update.
      if (moments.count(name)) {
        if (rel >= momentRel) {
          momentRel = rel;
          worstMoment = name;
        }
        continue;
      }
      if (rel >= weightRel) {
        weightRel = rel;
        worstWeight = name;
      }
      if (element >= elementRel) {
        elementRel = element;
        worstElement = name;
      }
    }
    double tolerance = rtol > 0 ? rtol : 1e-4;
    bool trained = run.losses.size() == ref.losses.size() && lossRel <= tolerance &&
                   weightRel <= tolerance && momentRel <= tolerance;
    std::printf("training against the single-device run: %zu steps, loss max rel error %.3g, "
                "weights max rel error %.3g (%s; elementwise %.3g, %s), AdamW moments %.3g "
                "(%s); at most %g\n",
                run.losses.size(), lossRel, weightRel, worstWeight.c_str(), elementRel,
                worstElement.c_str(), momentRel, worstMoment.empty() ? "none" : worstMoment.c_str(),
                tolerance);
    withinTolerance = withinTolerance && trained;
    verified["training"] = {{"steps", run.losses.size()},
                            {"loss_max_rel_error", lossRel},
                            {"weights_max_rel_error", weightRel},
                            {"worst_weight", worstWeight},
                            {"weights_elementwise_max_rel_error", elementRel},
                            {"worst_element", worstElement},
                            {"moments_max_rel_error", momentRel},
                            {"worst_moment", worstMoment.empty() ? Json() : Json(worstMoment)},
                            {"tolerance", tolerance},
                            {"single_device_losses", ref.losses}};
  }
  // Routers: whether the single-device run took the partitioned run's
  // choices, and how often its own would have differed.
  bool routers = std::any_of(root.ops()->begin(), root.ops()->end(),
                             [](const auto *op) { return op->kind()->str() == "router_topk"; });
  if (routers) {
    verified["routing"] = {{"mode", replayRouting ? "replay" : "own"}};
    if (routing.tokens > 0) {
      verified["routing"]["differing"] = routing.differing;
      verified["routing"]["tokens"] = routing.tokens;
      std::printf("routing: the single-device run took the partitioned run's expert choices; on "
                  "its own it would have chosen differently for %lld of %lld tokens over all "
                  "routers%s (--verify-routing own: let it choose)\n",
                  (long long)routing.differing, (long long)routing.tokens,
                  train ? " and steps" : " of the last forward pass");
    }
    if (routing.slotsChoices > 0) {
      verified["routing"]["slots_differing"] = routing.slotsDiffering;
      verified["routing"]["slots_choices"] = routing.slotsChoices;
      std::printf("capacity: the single-device run kept and dropped the choices the partitioned "
                  "run did; with its own weights it would have kept or dropped otherwise %lld of "
                  "%lld routed choices\n",
                  (long long)routing.slotsDiffering, (long long)routing.slotsChoices);
    }
  }
  // Every other op sends exactly what the report says.
  bool bytesMatch = run.variableBytesExact && restEqual;
  bool peakMatch = run.arenaPeak == root.arena_bytes();
  // Groups are a property of the program, so two runs that route alike drop
  // as many choices of every layer: required where the single-device run
  // replayed the partitioned run's choices. Routing on its own, a near-tie
  // its rounding flips moves a choice to another expert, which may keep or
  // drop it.
  bool dropsMatch = run.expertLoad.size() == ref.expertLoad.size();
  for (size_t i = 0; dropsMatch && i < run.expertLoad.size(); ++i)
    dropsMatch = run.expertLoad[i].total(run.expertLoad[i].dropped) ==
                 ref.expertLoad[i].total(ref.expertLoad[i].dropped);
  if (std::any_of(run.expertLoad.begin(), run.expertLoad.end(),
                  [](const LayerLoad &l) { return l.capacity; })) {
    std::string perLayer;
    int64_t mine = 0, theirs = 0;
    for (size_t i = 0; i < run.expertLoad.size() && i < ref.expertLoad.size(); ++i) {
      int64_t a = run.expertLoad[i].total(run.expertLoad[i].dropped),
              b = ref.expertLoad[i].total(ref.expertLoad[i].dropped);
      mine += a, theirs += b;
      if (a != b)
        perLayer += "; " + layerName(run.expertLoad[i], i) + ": " + std::to_string(a) + " and " +
                    std::to_string(b);
    }
    std::printf("dropped routed rows: %lld partitioned, %lld single-device: %s%s%s\n",
                (long long)mine, (long long)theirs, dropsMatch ? "match" : "DO NOT match",
                perLayer.c_str(),
                replayRouting ? "" : " (not required: each run routed on its own)");
    Json layers = Json::array();
    for (size_t i = 0; i < run.expertLoad.size() && i < ref.expertLoad.size(); ++i)
      layers.push_back({{"block", run.expertLoad[i].block},
                        {"partitioned", run.expertLoad[i].total(run.expertLoad[i].dropped)},
                        {"single_device", ref.expertLoad[i].total(ref.expertLoad[i].dropped)}});
    verified["dropped"] = {{"partitioned", mine},
                           {"single_device", theirs},
                           {"match", dropsMatch},
                           {"required", replayRouting},
                           {"layers", std::move(layers)}};
  }
  bool pass = withinTolerance && bytesMatch && peakMatch && (dropsMatch || !replayRouting);
  std::printf("verify against the single-device run: max abs error %.3g, max rel error %.3g; "
              "relative error at most %s; bytes %s the report; arena peak %s the report\n",
              maxAbs, maxRel, allowed.c_str(), bytesMatch ? "match" : "DO NOT match",
              peakMatch ? "matches" : "DOES NOT match");
  if (!lossCurveFile.empty() &&
      !writeLossCurve(lossCurveFile, root.model()->str(), run.losses, ref.losses))
    return fail("cannot write " + lossCurveFile);
  if (reportOut.isChecked()) {
    Json tolerance = Json::object();
    for (const auto &[dtype, t] : tolerances)
      tolerance[dtypeName(dtype)] = t;
    Json head = {{"max_abs_error", maxAbs},           {"max_rel_error", maxRel},
                 {"tolerance", std::move(tolerance)}, {"within_tolerance", withinTolerance},
                 {"bytes_match", bytesMatch},         {"arena_peak_matches", peakMatch}};
    head.update(verified);
    head["result"] = pass ? "PASS" : "FAIL";
    report["verify"] = std::move(head);
    if (!reportOut.write(report, error))
      return fail(error);
  }
  std::printf("%s\n", pass ? "PASS" : "FAIL");
  finalizeMpi();
  return pass ? 0 : 1;
}
