//===- gpu_bench.cpp - the CUDA backend's kernels against the GPU's peak --===//
//
// Times each kernel the CUDA backend runs on the shapes of one realistic
// hybrid layer and prints, per kernel, the median time, the achieved TFLOP/s
// (GEMMs, attention) or GB/s (everything else) and its share of the device's
// peak, beside the target of docs/benchmarks.md ("GPU figures"): bf16
// kernels (the GEMMs, attention and MoE's grouped GEMM on the tensor cores)
// against the bf16 tensor-core peak, f32 kernels (the f32 GEMM,
// attention, MoE's grouped GEMMs) against the f32 peak without tensor cores,
// with no target. The GEMMs
// go through the backend's own cuBLASLt path (backends/cuda/lt_gemm.h), the
// other kernels are those of kernels/cuda/kernels.h, launched as the backend
// launches them.
//
// Shapes: batch 1, sequence 4096, hidden 4096; attention with 32 query heads,
// 8 kv heads, head dim 128, causal; SwiGLU MLP of 14336; Mamba-2 with 128
// heads of 64 (inner width 8192), state 128, 8 groups, conv 4; RG-LRU of
// width 4096; MoE of 8 experts, top 2 (dropless: the routed choices' sort,
// the gate GEMM and the weight gradient as grouped GEMMs over the 8192
// sorted rows, the gate GEMM again on the tensor cores in bf16 and with f32
// rows split in two bf16 parts, the combine); vocabulary 32000; a tp 8
// reduce-scatter's sums over bf16 (sum_pieces) and a zigzag reorder's
// placement in runs of 512 rows (copy_runs).
//
// Counting: a GEMM is 2·M·N·K FLOPs; causal attention 4·D·HQ·B·S(S+1)/2
// (QK^T and PV over the pairs the mask keeps). Bytes are each kernel's
// compulsory traffic: every input element read once and every output element
// written once, in the type the kernel stores it (f32 for all but the bf16
// GEMMs, attention and SSD scan), no re-reads counted. Peaks: bf16 dense tensor FLOPs from the SM
// count and the SM clock (cudaDeviceGetAttribute) times a table of bf16
// FLOPs per clock per SM by compute capability, f32 the same with the f32
// FMA lanes' 2 FLOPs a clock each (table); memory bandwidth from the
// memory clock and bus width (2 transfers a clock). Each time is the median
// of --reps runs after --warmup runs, between CUDA events on one stream; no
// cache is flushed between runs (most operands here exceed the L2).
//
// Without a CUDA device it prints why and exits 77.
//
//===----------------------------------------------------------------------===//

#include "backends/cuda/lt_gemm.h"
#include "exec/program.h"
#include "kernels/cuda/exchange.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/kernels_grad.h"
#include "kernels/cuda/kernels_moe.h"
#include "kernels/cuda/moe_routed.h"
#include "kernels/cuda/probe.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

namespace rt = shardline::rt;
namespace gpu = shardline::rt::cuda;

namespace {

void check(cudaError_t status, const char *what) {
  if (status != cudaSuccess)
    throw rt::Stop{std::string("CUDA: ") + what + ": " + cudaGetErrorString(status), false};
}

/// Dense bf16 tensor-core FLOPs per clock per SM with f32 accumulation, by
/// compute capability (major * 10 + minor); 0 where the table has no entry.
/// A100 (8.0): 312 TFLOP/s at 108 SMs and 1410 MHz; H100/H200 (9.0): 989
/// TFLOP/s at 132 SMs and 1830 MHz; B200 (10.0): 2250 TFLOP/s at 148 SMs and
/// 1860 MHz (the vendors' dense figures).
/// f32 FLOPs per clock per SM without tensor cores: 2 (an FMA) per f32 lane,
/// 64 lanes an SM on 8.0, 128 on 9.0 and 10.0 (H100 SXM: 67 TFLOP/s f32).
double f32FlopsPerClockPerSm(int capability) {
  switch (capability) {
  case 80:
    return 128;
  case 90:
  case 100:
    return 256;
  default:
    return 0;
  }
}

double bf16FlopsPerClockPerSm(int capability) {
  switch (capability) {
  case 80:
    return 2048;
  case 90:
    return 4096;
  case 100:
    return 8192;
  default:
    return 0;
  }
}

struct Peaks {
  std::string name;
  int capability = 0, sms = 0;
  double smClockKHz = 0, memClockKHz = 0, busBits = 0;
  double flops = 0, f32Flops = 0, bytesPerSecond = 0;
  std::string flopsFrom, bytesFrom;
};

Peaks devicePeaks(int device) {
  Peaks p;
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  p.name = prop.name;
  int major = 0, minor = 0, sms = 0, clock = 0, memClock = 0, bus = 0;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "attribute");
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "attribute");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "attribute");
  check(cudaDeviceGetAttribute(&clock, cudaDevAttrClockRate, device), "attribute");
  check(cudaDeviceGetAttribute(&memClock, cudaDevAttrMemoryClockRate, device), "attribute");
  check(cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, device), "attribute");
  p.capability = major * 10 + minor;
  p.sms = sms;
  p.smClockKHz = clock;
  p.memClockKHz = memClock;
  p.busBits = bus;
  double perClock = bf16FlopsPerClockPerSm(p.capability);
  char line[256];
  if (perClock > 0) {
    p.flops = perClock * sms * clock * 1e3;
    std::snprintf(line, sizeof line,
                  "%d SMs x %.0f MHz (cudaDevAttrClockRate) x %.0f bf16 FLOPs/clock/SM (table, "
                  "compute capability %d.%d)",
                  sms, clock / 1e3, perClock, major, minor);
  } else {
    std::snprintf(line, sizeof line,
                  "no bf16 FLOPs/clock/SM entry for compute capability %d.%d: no %% of peak", major,
                  minor);
  }
  p.flopsFrom = line;
  p.f32Flops = f32FlopsPerClockPerSm(p.capability) * sms * clock * 1e3;
  p.bytesPerSecond = 2.0 * memClock * 1e3 * bus / 8.0;
  std::snprintf(line, sizeof line,
                "2 x %.0f MHz (cudaDevAttrMemoryClockRate) x %d bits "
                "(cudaDevAttrGlobalMemoryBusWidth) / 8",
                memClock / 1e3, bus);
  p.bytesFrom = line;
  return p;
}

/// Device memory of `count` elements of `type`, filled with pseudo-random
/// values in [-scale/2, scale/2) so that no kernel runs on zeros or
/// overflows, or zeros where `scale` is 0 (results).
struct Buffer {
  void *ptr = nullptr;
  int64_t bytes = 0;
  Buffer(int64_t count, gpu::arith::Type type, float scale, unsigned seed) {
    int64_t size = type == gpu::arith::Type::F32 || type == gpu::arith::Type::I32 ? 4 : 2;
    bytes = std::max<int64_t>(1, count) * size;
    check(cudaMalloc(&ptr, (size_t)bytes), "cudaMalloc");
    if (scale == 0.0f) {
      check(cudaMemset(ptr, 0, (size_t)bytes), "cudaMemset");
      return;
    }
    std::vector<float> host((size_t)std::max<int64_t>(1, count));
    uint32_t state = seed * 2654435761u + 1;
    for (float &v : host) {
      state = state * 1664525u + 1013904223u;
      v = scale * ((float)(state >> 8) / 16777216.0f - 0.5f);
    }
    if (type == gpu::arith::Type::F32) {
      check(cudaMemcpy(ptr, host.data(), (size_t)bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
      return;
    }
    void *wide = nullptr;
    check(cudaMalloc(&wide, host.size() * 4), "cudaMalloc");
    check(cudaMemcpy(wide, host.data(), host.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    check(gpu::convert(wide, gpu::arith::Type::F32, ptr, type, (int64_t)host.size(), nullptr),
          "convert");
    check(cudaDeviceSynchronize(), "convert");
    cudaFree(wide);
  }
  ~Buffer() { cudaFree(ptr); }
  Buffer(const Buffer &) = delete;
  Buffer &operator=(const Buffer &) = delete;
  float *f() const { return static_cast<float *>(ptr); }
};

struct Figure {
  std::string kernel, shape, unit;                           // unit: "TFLOP/s" or "GB/s"
  double ms = 0, achieved = 0, peakPercent = -1, target = 0; // target < 0: none
  bool f32 = false; // of the f32 peak, not the bf16 tensor-core one
};

struct Bench {
  cudaStream_t stream = nullptr;
  int warmup = 3, reps = 10;
  Peaks peaks;
  std::vector<Figure> figures;

  /// The median milliseconds of `launch` over the reps.
  double time(const std::function<void()> &launch) {
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    for (int i = 0; i < warmup; ++i)
      launch();
    check(cudaStreamSynchronize(stream), "warm-up");
    std::vector<float> ms;
    for (int i = 0; i < reps; ++i) {
      check(cudaEventRecord(start, stream), "cudaEventRecord");
      launch();
      check(cudaEventRecord(stop, stream), "cudaEventRecord");
      check(cudaEventSynchronize(stop), "a kernel failed");
      float t = 0;
      check(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
      ms.push_back(t);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::sort(ms.begin(), ms.end());
    return ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  }

  /// A bf16 tensor-core kernel: its share of the bf16 peak against `target`.
  void flops(const std::string &kernel, const std::string &shape, double count, double target,
             const std::function<void()> &launch) {
    counted(kernel, shape, count, peaks.flops, target, false, launch);
  }

  /// An f32 kernel: its share of the f32 peak (no tensor cores), no target.
  void f32Flops(const std::string &kernel, const std::string &shape, double count,
                const std::function<void()> &launch) {
    counted(kernel, shape, count, peaks.f32Flops, -1, true, launch);
  }

  void counted(const std::string &kernel, const std::string &shape, double count, double peak,
               double target, bool f32, const std::function<void()> &launch) {
    Figure f{kernel, shape, "TFLOP/s"};
    f.ms = time(launch);
    f.achieved = count / (f.ms * 1e-3) / 1e12;
    if (peak > 0)
      f.peakPercent = 100.0 * count / (f.ms * 1e-3) / peak;
    f.target = target;
    f.f32 = f32;
    print(f);
  }

  void bytes(const std::string &kernel, const std::string &shape, double count,
             const std::function<void()> &launch) {
    Figure f{kernel, shape, "GB/s"};
    f.ms = time(launch);
    f.achieved = count / (f.ms * 1e-3) / 1e9;
    f.peakPercent = 100.0 * count / (f.ms * 1e-3) / peaks.bytesPerSecond;
    f.target = 60;
    print(f);
  }

  void print(Figure &f) {
    char percent[64] = "n/a";
    if (f.peakPercent >= 0)
      std::snprintf(percent, sizeof percent, "%5.1f%%", f.peakPercent);
    const char *verdict = f.peakPercent < 0 || f.target < 0 ? ""
                          : f.peakPercent >= f.target       ? "meets"
                                                            : "below";
    char target[32] = "no target";
    if (f.target >= 0)
      std::snprintf(target, sizeof target, "target %2.0f%%", f.target);
    std::printf("%-24s %-34s %9.3f ms %10.1f %-7s %7s of %s peak (%s) %s\n", f.kernel.c_str(),
                f.shape.c_str(), f.ms, f.achieved, f.unit.c_str(), percent,
                f.f32              ? "f32"
                : f.unit == "GB/s" ? "memory"
                                   : "bf16",
                target, verdict);
    std::fflush(stdout);
    figures.push_back(f);
  }
};

void writeJson(const std::string &path, const Bench &b) {
  FILE *out = std::fopen(path.c_str(), "w");
  if (!out)
    throw rt::Stop{"cannot write " + path + ": " + std::strerror(errno), false};
  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  std::fprintf(
      out,
      "{\"date\": \"%s\", \"device\": \"%s\", \"compute_capability\": %d, \"sms\": %d,\n"
      " \"sm_clock_mhz\": %.0f, \"memory_clock_mhz\": %.0f, \"bus_bits\": %.0f,\n"
      " \"peak_bf16_tflops\": %.1f, \"peak_bf16_from\": \"%s\", \"peak_f32_tflops\": %.1f,\n"
      " \"peak_gbps\": %.1f, \"peak_gbps_from\": \"%s\",\n"
      " \"warmup\": %d, \"reps\": %d, \"kernels\": [\n",
      date, b.peaks.name.c_str(), b.peaks.capability, b.peaks.sms, b.peaks.smClockKHz / 1e3,
      b.peaks.memClockKHz / 1e3, b.peaks.busBits, b.peaks.flops / 1e12, b.peaks.flopsFrom.c_str(),
      b.peaks.f32Flops / 1e12, b.peaks.bytesPerSecond / 1e9, b.peaks.bytesFrom.c_str(), b.warmup,
      b.reps);
  for (size_t i = 0; i < b.figures.size(); ++i) {
    const Figure &f = b.figures[i];
    std::fprintf(out,
                 "  {\"kernel\": \"%s\", \"shape\": \"%s\", \"ms\": %.4f, \"achieved\": %.2f, "
                 "\"unit\": \"%s\", \"peak\": \"%s\", \"percent_of_peak\": %s, "
                 "\"target_percent\": %s}%s\n",
                 f.kernel.c_str(), f.shape.c_str(), f.ms, f.achieved, f.unit.c_str(),
                 f.f32              ? "f32"
                 : f.unit == "GB/s" ? "memory"
                                    : "bf16",
                 f.peakPercent >= 0 ? std::to_string(f.peakPercent).c_str() : "null",
                 f.target >= 0 ? std::to_string((int)f.target).c_str() : "null",
                 i + 1 < b.figures.size() ? "," : "");
  }
  std::fprintf(out, "]}\n");
  std::fclose(out);
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s = "[";
  for (int64_t v : d)
    s += (s.size() > 1 ? ", " : "") + std::to_string(v);
  return s + "]";
}

void run(Bench &b) {
  using T = gpu::arith::Type;
  using E = gpu::GemmElement;
  const int64_t B = 1, S = 4096, Tok = B * S, H = 4096, HQ = 32, HKV = 8, D = 128, F = 14336,
                V = 32000;
  cudaStream_t st = b.stream;

  // -- GEMMs (linear and lm_head through cuBLASLt, as the backend runs them)
  rt::LtGemm lt;
  struct Shape {
    const char *name;
    int64_t M, K, N;
  };
  const Shape shapes[] = {{"linear qkv", Tok, H, (HQ + 2 * HKV) * D},
                          {"linear attn out", Tok, HQ * D, H},
                          {"linear mlp gate/up", Tok, H, F},
                          {"linear mlp down", Tok, F, H},
                          {"linear mamba in", Tok, H, 2 * 8192 + 2 * 8 * 128 + 128},
                          {"lm_head", Tok, H, V}};
  for (const Shape &s : shapes) {
    Buffer x(s.M * s.K, T::BF16, 1.0f, 1), w(s.K * s.N, T::BF16, 0.05f, 2),
        y(s.M * s.N, T::BF16, 0.0f, 3);
    b.flops(std::string(s.name) + " bf16", dims({s.M, s.K}) + "x" + dims({s.K, s.N}),
            2.0 * s.M * s.N * s.K, 70, [&] {
              lt.run(st, false, false, x.ptr, w.ptr, E::BF16, s.M, s.N, s.K, y.ptr, E::BF16);
            });
  }
  {
    // linear's backward GEMMs on the MLP's up shape, bf16.
    const int64_t M = Tok, K = H, N = F;
    Buffer x(M * K, T::BF16, 1.0f, 4), w(K * N, T::BF16, 0.05f, 5), dy(M * N, T::BF16, 1.0f, 6),
        dx(M * K, T::BF16, 0.0f, 7), dw(K * N, T::BF16, 0.0f, 8);
    b.flops("linear_grad bf16", dims({M, N}) + "x" + dims({K, N}) + "^T", 2.0 * M * N * K, 70,
            [&] { lt.run(st, false, true, dy.ptr, w.ptr, E::BF16, M, K, N, dx.ptr, E::BF16); });
    b.flops("linear_grad_weight bf16", dims({M, K}) + "^Tx" + dims({M, N}), 2.0 * M * N * K, 70,
            [&] { lt.run(st, true, false, x.ptr, dy.ptr, E::BF16, K, N, M, dw.ptr, E::BF16); });
    // The f32 path f32 plans take, for comparison: no tensor cores
    // (CUBLAS_COMPUTE_32F), so against the f32 peak.
    Buffer xf(M * K, T::F32, 1.0f, 9), wf(K * N, T::F32, 0.05f, 10), yf(M * N, T::F32, 0.0f, 11);
    b.f32Flops("linear mlp gate/up f32", dims({M, K}) + "x" + dims({K, N}), 2.0 * M * N * K,
               [&] { lt.run(st, false, false, xf.ptr, wf.ptr, E::F32, M, N, K, yf.ptr, E::F32); });
    // The same with SHARDLINE_CUDA_TF32=1: TF32 factors on the tensor cores,
    // against the bf16 peak (the dense TF32 peak is half of it), no target.
    b.flops("linear gate/up tf32", dims({M, K}) + "x" + dims({K, N}), 2.0 * M * N * K, -1, [&] {
      lt.run(st, false, false, xf.ptr, wf.ptr, E::F32, M, N, K, yf.ptr, E::F32, true);
    });
  }

  // -- attention (f32: one query a thread, keys tiled in shared memory; bf16:
  // the tensor cores)
  {
    Buffer q(Tok * HQ * D, T::F32, 1.0f, 12), k(Tok * HKV * D, T::F32, 1.0f, 13),
        v(Tok * HKV * D, T::F32, 1.0f, 14), out(Tok * HQ * D, T::F32, 0.0f, 15),
        lse(B * HQ * S, T::F32, 0.0f, 16);
    std::vector<int64_t> positions(S);
    for (int64_t i = 0; i < S; ++i)
      positions[i] = i;
    int64_t *pos = nullptr;
    check(cudaMalloc(reinterpret_cast<void **>(&pos), S * 8), "cudaMalloc");
    check(cudaMemcpy(pos, positions.data(), S * 8, cudaMemcpyHostToDevice), "cudaMemcpy");
    gpu::AttentionTiling tiling;
    std::string error;
    if (!gpu::attentionTiling(B, HQ, S, D, tiling, error))
      throw rt::Stop{error, false};
    double pairs = (double)S * (S + 1) / 2.0;
    b.f32Flops("attention causal f32",
               "q" + dims({B, S, HQ * D}) + " kv" + dims({B, S, HKV * D}) + " d128",
               4.0 * D * HQ * B * pairs, [&] {
                 check(gpu::attention(q.f(), k.f(), v.f(), pos, pos, B, S, S, HQ, HKV, D, true,
                                      1.0f / std::sqrt((float)D), 0, tiling, out.f(), lse.f(), st),
                       "attention");
               });
    // The same attention over bf16 on the tensor cores (attention_tc.h), the
    // path bf16 plans take: against the bf16 peak, target 50%.
    Buffer qh(Tok * HQ * D, T::BF16, 1.0f, 18), kh(Tok * HKV * D, T::BF16, 1.0f, 19),
        vh(Tok * HKV * D, T::BF16, 1.0f, 26), outh(Tok * HQ * D, T::BF16, 0.0f, 27);
    // The same q, k, v at head dim 128 and at 256 (Gemma's: half the heads,
    // the 256 layout of attention_tc.h, one block an SM).
    auto tensorCores = [&](const char *name, int64_t heads, int64_t kvHeads, int64_t d) {
      gpu::AttentionTcTiling tiling;
      if (!gpu::attentionTcTiling(B, heads, S, d, tiling, error))
        throw rt::Stop{error, false};
      b.flops(name,
              "q" + dims({B, S, heads * d}) + " kv" + dims({B, S, kvHeads * d}) + " d" +
                  std::to_string(d),
              4.0 * d * heads * B * pairs, 50, [&] {
                check(gpu::attention_tc({qh.ptr, T::BF16}, {kh.ptr, T::BF16}, {vh.ptr, T::BF16},
                                        pos, pos, B, S, S, heads, kvHeads, d, true,
                                        1.0f / std::sqrt((float)d), 0, tiling, {outh.ptr, T::BF16},
                                        lse.f(), st),
                      "attention_tc");
              });
    };
    tensorCores("attention causal bf16", HQ, HKV, D);
    tensorCores("attention causal bf16 d256", HQ * D / 256, HKV * D / 256, 256);
    Buffer rq(Tok * HQ * D, T::F32, 1.0f, 17);
    b.bytes("rope f32", dims({B, S, HQ * D}), 2.0 * Tok * HQ * D * 4 + S * 8,
            [&] { check(gpu::rope(q.f(), pos, B, S, HQ, D, 10000.0f, rq.f(), st), "rope"); });
    cudaFree(pos);
  }

  // -- norms and elementwise (f32)
  {
    Buffer x(Tok * H, T::F32, 1.0f, 20), w(H, T::F32, 1.0f, 21), y(Tok * H, T::F32, 0.0f, 22);
    b.bytes("rms_norm f32", dims({Tok, H}), (2.0 * Tok * H + H) * 4,
            [&] { check(gpu::rms_norm(x.f(), w.f(), Tok, H, 1e-5f, y.f(), st), "rms_norm"); });
    b.bytes("add f32", dims({Tok, H}), 3.0 * Tok * H * 4,
            [&] { check(gpu::add(x.f(), y.f(), Tok * H, y.f(), st), "add"); });
    Buffer g(Tok * F, T::F32, 1.0f, 23), u(Tok * F, T::F32, 1.0f, 24), o(Tok * F, T::F32, 0.0f, 25);
    b.bytes("swiglu f32", dims({Tok, F}), 3.0 * Tok * F * 4,
            [&] { check(gpu::swiglu(g.f(), u.f(), Tok * F, o.f(), st), "swiglu"); });
    const int64_t C = 8192, groups = 8;
    Buffer gy(Tok * C, T::F32, 1.0f, 26), gz(Tok * C, T::F32, 1.0f, 27), gw(C, T::F32, 1.0f, 28),
        go(Tok * C, T::F32, 0.0f, 29);
    b.bytes("gated_rms_norm f32", dims({Tok, C}) + " 8 groups", (3.0 * Tok * C + C) * 4, [&] {
      check(gpu::gated_rms_norm(gy.f(), gz.f(), gw.f(), Tok, C, groups, 1e-5f, go.f(), st),
            "gated_rms_norm");
    });
    Buffer wide(Tok * H, T::F32, 1.0f, 30), narrow(Tok * H, T::BF16, 0.0f, 31);
    b.bytes("convert f32->bf16", dims({Tok, H}), 6.0 * Tok * H, [&] {
      check(gpu::convert(wide.ptr, T::F32, narrow.ptr, T::BF16, Tok * H, st), "convert");
    });
    // A tp 8 reduce-scatter's last half over bf16 (sequence parallelism's,
    // 16-bit or paired with its linear): 8 pieces of [Tok/8, H] summed in
    // group order into one.
    const int64_t tp = 8, piece = Tok / tp * H;
    Buffer pieces(tp * piece, T::BF16, 1.0f, 32), summed(piece, T::BF16, 0.0f, 33);
    b.bytes("sum_pieces bf16", "8 x " + dims({Tok / tp, H}), (tp + 1) * piece * 2.0, [&] {
      check(gpu::sum_pieces({pieces.ptr, T::BF16}, tp, piece, {summed.ptr, T::BF16}, st),
            "sum_pieces");
    });
    // A general transition's placement (copy_runs): [Tok, H] bf16 in chunks
    // of 512 rows, the chunks in reverse order, as a zigzag reorder places
    // what arrived.
    const int64_t chunk = 512, chunks = Tok / chunk;
    std::vector<int64_t> runs;
    for (int64_t c = 0; c < chunks; ++c)
      runs.insert(runs.end(), {c * chunk * H, (chunks - 1 - c) * chunk * H, chunk * H});
    Buffer runList((int64_t)runs.size() * 2, T::I32, 0.0f, 34);
    check(cudaMemcpy(runList.ptr, runs.data(), runs.size() * 8, cudaMemcpyHostToDevice),
          "cudaMemcpy");
    b.bytes("copy_runs bf16", dims({Tok, H}) + " in " + std::to_string(chunks) + " runs",
            4.0 * Tok * H, [&] {
              check(gpu::copy_runs(narrow.ptr, Tok * H, nullptr,
                                   static_cast<const int64_t *>(runList.ptr), chunks, chunk * H, 2,
                                   pieces.ptr, st),
                    "copy_runs");
            });
  }

  // -- embedding and the loss (f32)
  {
    std::vector<int32_t> ids(Tok);
    for (int64_t t = 0; t < Tok; ++t)
      ids[t] = (int32_t)((t * 7919) % V);
    int32_t *dids = nullptr, *bad = nullptr;
    check(cudaMalloc(reinterpret_cast<void **>(&dids), Tok * 4), "cudaMalloc");
    check(cudaMalloc(reinterpret_cast<void **>(&bad), 4), "cudaMalloc");
    check(cudaMemcpy(dids, ids.data(), Tok * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    Buffer table(V * H, T::F32, 1.0f, 40), out(Tok * H, T::F32, 0.0f, 41);
    b.bytes("embedding f32", dims({Tok}) + " of " + dims({V, H}), 2.0 * Tok * H * 4 + Tok * 4, [&] {
      check(gpu::embedding(dids, Tok, table.f(), V, H, 0, V, out.f(), bad, st), "embedding");
    });
    Buffer logits(Tok * V, T::F32, 4.0f, 42), terms(Tok * 2, T::F32, 0.0f, 43),
        loss(1, T::F32, 0.0f, 44);
    b.bytes("cross_entropy f32", dims({Tok, V}), Tok * V * 4.0 + Tok * 4, [&] {
      check(gpu::cross_entropy(logits.f(), dids, Tok, V, (double)Tok,
                               static_cast<double *>(terms.ptr), bad, loss.f(), st),
            "cross_entropy");
    });
    cudaFree(dids);
    cudaFree(bad);
  }

  // -- Mamba-2: conv and the SSD scan (f32)
  {
    const int64_t NH = 128, P = 64, G = 8, N = 128, W = 4, C = NH * P + 2 * G * N;
    gpu::Sequences seq{B, S, 1};
    Buffer x(Tok * C, T::F32, 1.0f, 50), w(C * W, T::F32, 0.5f, 51), bias(C, T::F32, 0.1f, 52),
        y(Tok * C, T::F32, 0.0f, 53);
    b.bytes("causal_conv1d f32", dims({Tok, C}) + " w4", (2.0 * Tok * C + C * W + C) * 4, [&] {
      check(gpu::causal_conv1d(x.f(), w.f(), bias.f(), nullptr, seq, C, W, y.f(), st),
            "causal_conv1d");
    });
    Buffer sx(Tok * NH * P, T::F32, 1.0f, 54), dt(Tok * NH, T::F32, 1.0f, 55),
        dtBias(NH, T::F32, 0.5f, 56), aLog(NH, T::F32, 0.5f, 57), Bm(Tok * G * N, T::F32, 1.0f, 58),
        Cm(Tok * G * N, T::F32, 1.0f, 59), Dskip(NH, T::F32, 1.0f, 60),
        sy(Tok * NH * P, T::F32, 0.0f, 61), state(B * NH * P * N, T::F32, 0.0f, 62),
        decay(B * NH, T::F32, 0.0f, 63);
    gpu::SsdLaunch launch;
    std::string error;
    if (!gpu::ssdLaunch(B, S, NH, P, N, launch, error))
      throw rt::Stop{error, false};
    Buffer scratch(launch.scratchBytes / 4, T::F32, 0.0f, 64);
    double bytes = (2.0 * Tok * NH * P + Tok * NH + 2.0 * Tok * G * N + B * NH * P * N) * 4;
    b.bytes("ssd_scan f32",
            "x" + dims({Tok, NH * P}) + " B,C" + dims({Tok, G * N}) + " state " + std::to_string(N),
            bytes, [&] {
              check(gpu::ssd_scan(sx.f(), dt.f(), dtBias.f(), aLog.f(), Bm.f(), Cm.f(), Dskip.f(),
                                  nullptr, seq, NH, P, G, N, sy.f(), state.f(), decay.f(), launch,
                                  scratch.ptr, st),
                    "ssd_scan");
            });
    // The same scan over bf16 x, dt, B, C and y, the parameters and the
    // state f32 (a bf16 plan's step), y's f32 share in the scratch.
    Buffer hx(Tok * NH * P, T::BF16, 1.0f, 84), hdt(Tok * NH, T::BF16, 1.0f, 85),
        hB(Tok * G * N, T::BF16, 1.0f, 86), hC(Tok * G * N, T::BF16, 1.0f, 87),
        hy(Tok * NH * P, T::BF16, 0.0f, 88),
        hscratch(launch.bytesFor(T::BF16) / 4, T::F32, 0.0f, 89);
    double hbytes = (2.0 * Tok * NH * P + Tok * NH + 2.0 * Tok * G * N) * 2 + B * NH * P * N * 4.0;
    b.bytes("ssd_scan bf16",
            "x" + dims({Tok, NH * P}) + " B,C" + dims({Tok, G * N}) + " state " + std::to_string(N),
            hbytes, [&] {
              check(gpu::ssd_scan({hx.ptr, T::BF16}, {hdt.ptr, T::BF16}, {dtBias.ptr, T::F32},
                                  {aLog.ptr, T::F32}, {hB.ptr, T::BF16}, {hC.ptr, T::BF16},
                                  {Dskip.ptr, T::F32}, {nullptr, T::F32}, seq, NH, P, G, N,
                                  {hy.ptr, T::BF16}, {state.ptr, T::F32}, {decay.ptr, T::F32},
                                  launch, hscratch.ptr, st),
                    "ssd_scan");
            });
    // The backward, chunked as the forward: x, dy, dt, B, C read, dx, ddt,
    // dB, dC written (the per-head dB and dC of its scratch not counted).
    gpu::SsdGradLaunch gradLaunch;
    if (!gpu::ssdGradLaunch(B, S, NH, P, G, N, gradLaunch, error))
      throw rt::Stop{error, false};
    Buffer gradScratch(gradLaunch.scratchBytes / 4, T::F32, 0.0f, 65),
        dy(Tok * NH * P, T::F32, 1.0f, 66), dx(Tok * NH * P, T::F32, 0.0f, 67),
        ddtv(Tok * NH, T::F32, 0.0f, 68), ddt(Tok * NH, T::F32, 0.0f, 69),
        dB(Tok * G * N, T::F32, 0.0f, 80), dC(Tok * G * N, T::F32, 0.0f, 81),
        dA(NH, T::F32, 0.0f, 82), dD(NH, T::F32, 0.0f, 83);
    gpu::arith::SsdGradArgs g{};
    g.fwd = gpu::arith::SsdArgs{sx.f(),  dt.f(),  dtBias.f(), aLog.f(), Bm.f(),  Cm.f(),  Dskip.f(),
                                nullptr, B,       S,          1,        NH,      P,       G,
                                N,       nullptr, nullptr,    nullptr,  nullptr, nullptr, nullptr};
    g.dy = dy.f();
    g.dx = dx.f();
    g.ddt = ddtv.f();
    g.dA = dA.f();
    g.dB = dB.f();
    g.dC = dC.f();
    g.dD = dD.f();
    double gradBytes = (3.0 * Tok * NH * P + 3.0 * Tok * NH + 4.0 * Tok * G * N) * 4;
    b.bytes("ssd_scan_grad f32",
            "x" + dims({Tok, NH * P}) + " B,C" + dims({Tok, G * N}) + " state " + std::to_string(N),
            gradBytes, [&] {
              check(
                  gpu::ssd_scan_grad(g, gradLaunch, gradScratch.ptr, ddt.f(), nullptr, nullptr, st),
                  "ssd_scan_grad");
            });
  }

  // -- RG-LRU (f32)
  {
    const int64_t W = 4096;
    gpu::Sequences seq{B, S, 1};
    Buffer x(Tok * W, T::F32, 1.0f, 70), wa(W, T::F32, 0.5f, 71), ba(W, T::F32, 0.5f, 72),
        wx(W, T::F32, 0.5f, 73), bx(W, T::F32, 0.5f, 74), lambda(W, T::F32, 1.0f, 75),
        y(Tok * W, T::F32, 0.0f, 76), state(B * W, T::F32, 0.0f, 77),
        decay(B * W, T::F32, 0.0f, 78);
    b.bytes("rglru_scan f32", dims({Tok, W}), (2.0 * Tok * W + 7.0 * W) * 4, [&] {
      check(gpu::rglru_scan(x.f(), wa.f(), ba.f(), wx.f(), bx.f(), lambda.f(), nullptr, seq, W,
                            y.f(), state.f(), decay.f(), st),
            "rglru_scan");
    });
  }

  // -- MoE routing and the dropless path (f32): the choices' sort by expert,
  // the gate GEMM and the gate weights' gradient as grouped GEMMs over the
  // T·k sorted rows, the weighted combine
  {
    const int64_t Ex = 8, k = 2, R = Tok * k, chunks = gpu::arith::sortChunks(R);
    Buffer logits(Tok * Ex, T::F32, 2.0f, 80), weights(Tok * k, T::F32, 0.0f, 81),
        rows(R * H, T::F32, 1.0f, 82), wGate(Ex * H * F, T::F32, 0.05f, 83),
        g(R * F, T::F32, 0.0f, 84), dGate(Ex * H * F, T::F32, 0.0f, 85),
        y(Tok * H, T::F32, 0.0f, 86), ints(3 * R + chunks * Ex + Ex, T::I32, 0.0f, 87),
        longs(2 * (chunks * Ex + 2 * (Ex + 1)), T::I32, 0.0f, 88), bad(1, T::I32, 0.0f, 89);
    int32_t *idx = static_cast<int32_t *>(ints.ptr);
    gpu::RoutedSort sort;
    sort.perm = idx + R;
    sort.rowOf = sort.perm + R;
    sort.chunkCounts = sort.rowOf + R;
    sort.counts = sort.chunkCounts + chunks * Ex;
    // The int64 buffers: two 32-bit values each.
    sort.offsets = static_cast<int64_t *>(longs.ptr);
    sort.tileOffsets = sort.offsets + Ex + 1;
    sort.first = sort.tileOffsets + Ex + 1;
    int32_t *badIds = static_cast<int32_t *>(bad.ptr);
    b.bytes("router_topk f32", dims({Tok, Ex}) + " top 2", Tok * Ex * 4.0 + Tok * k * 8.0, [&] {
      check(gpu::router_topk({logits.f(), gpu::arith::Type::F32}, Tok, Ex, k,
                             {weights.f(), gpu::arith::Type::F32}, idx, st),
            "router_topk");
    });
    // The choices read; perm and rowOf written (the counts and offsets are
    // small beside them).
    b.bytes("moe_sort", dims({Tok, k}) + " over 8 experts", R * 4.0 + 2.0 * R * 4,
            [&] { check(gpu::moe_sort(idx, R, Ex, sort, badIds, st), "moe_sort"); });
    b.f32Flops("grouped_rows f32", dims({R, H}) + "x8 " + dims({H, F}), 2.0 * R * H * F, [&] {
      check(gpu::grouped_rows({rows.f(), gpu::arith::Type::F32}, {wGate.f(), gpu::arith::Type::F32},
                              false, R, H, F, sort.offsets, sort.tileOffsets, Ex, g.f(), st),
            "grouped_rows");
    });
    // The same gate product on the tensor cores (grouped_tc.h): bf16 rows
    // against bf16 weights (x's rows), and the down product's f32 rows split
    // in two bf16 parts (twice the tensor-core work for the same product).
    Buffer rows16(R * H, T::BF16, 1.0f, 90), wGate16(Ex * H * F, T::BF16, 0.05f, 91);
    b.flops("grouped_rows_tc bf16", dims({R, H}) + "x8 " + dims({H, F}), 2.0 * R * H * F, 0.70,
            [&] {
              check(gpu::grouped_rows_tc({rows16.ptr, T::BF16}, {wGate16.ptr, T::BF16}, R, H, F,
                                         sort.offsets, sort.tileOffsets, Ex, g.f(), st),
                    "grouped_rows_tc");
            });
    b.flops("grouped_rows_tc f32 rows split", dims({R, H}) + "x8 " + dims({H, F}), 2.0 * R * H * F,
            -1, [&] {
              check(gpu::grouped_rows_tc({rows.f(), T::F32}, {wGate16.ptr, T::BF16}, R, H, F,
                                         sort.offsets, sort.tileOffsets, Ex, g.f(), st),
                    "grouped_rows_tc");
            });
    b.f32Flops("grouped_outer f32", "8 x " + dims({R, H}) + "^Tx" + dims({R, F}), 2.0 * R * H * F,
               [&] {
                 check(gpu::grouped_outer(rows.f(), H, g.f(), F, sort.offsets, Ex, dGate.f(), st),
                       "grouped_outer");
               });
    b.bytes("moe_routed_combine f32", dims({R, H}) + " to " + dims({Tok, H}),
            (R + Tok) * H * 4.0 + R * 8.0, [&] {
              check(gpu::moe_routed_combine(rows.f(), sort.rowOf,
                                            {weights.f(), gpu::arith::Type::F32}, Tok, H, k,
                                            {y.f(), gpu::arith::Type::F32}, st),
                    "moe_routed_combine");
            });
  }
}

int usage(const char *why) {
  std::fprintf(stderr,
               "%s\nusage: shardline-bench-gpu [--json FILE] [--warmup N] [--reps N]\n"
               "Times the CUDA backend's kernels on one hybrid layer's shapes and prints each "
               "against the device's peak (docs/benchmarks.md, \"GPU figures\").\n",
               why);
  return 2;
}

} // namespace

int main(int argc, char **argv) {
  std::string json;
  Bench bench;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char *flag) -> const char * {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "shardline-bench-gpu: %s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    auto count = [&](const char *flag) {
      const char *text = value(flag);
      char *end = nullptr;
      long n = std::strtol(text, &end, 10);
      if (*end != '\0' || n < 1 || n > 100000) {
        std::fprintf(stderr, "shardline-bench-gpu: %s takes a count from 1 to 100000, not '%s'\n",
                     flag, text);
        std::exit(2);
      }
      return (int)n;
    };
    if (arg == "--json")
      json = value("--json");
    else if (arg == "--warmup")
      bench.warmup = count("--warmup");
    else if (arg == "--reps")
      bench.reps = count("--reps");
    else if (arg == "--help" || arg == "-h") {
      std::printf("usage: shardline-bench-gpu [--json FILE] [--warmup N] [--reps N]\n");
      return 0;
    } else
      return usage(("shardline-bench-gpu: unknown argument '" + arg + "'").c_str());
  }
  if (std::string why = gpu::noCudaDevice(); !why.empty()) {
    std::printf("skipped: %s\n", why.c_str());
    return 77;
  }
  try {
    check(cudaSetDevice(0), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&bench.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    bench.peaks = devicePeaks(0);
    std::printf("device: %s, compute capability %d.%d\n", bench.peaks.name.c_str(),
                bench.peaks.capability / 10, bench.peaks.capability % 10);
    if (bench.peaks.flops > 0)
      std::printf("bf16 dense peak: %.1f TFLOP/s = %s\n", bench.peaks.flops / 1e12,
                  bench.peaks.flopsFrom.c_str());
    else
      std::printf("bf16 dense peak: unknown, %s\n", bench.peaks.flopsFrom.c_str());
    std::printf("memory bandwidth peak: %.1f GB/s = %s\n", bench.peaks.bytesPerSecond / 1e9,
                bench.peaks.bytesFrom.c_str());
    std::printf("median of %d runs after %d warm-up runs; targets: GEMMs 70%% of bf16 peak, "
                "attention 50%%, the rest 60%% of memory bandwidth\n",
                bench.reps, bench.warmup);
    run(bench);
    if (!json.empty())
      writeJson(json, bench);
  } catch (const rt::Stop &stop) {
    std::fprintf(stderr, "shardline-bench-gpu: %s\n", stop.error.c_str());
    return 1;
  }
  return 0;
}
