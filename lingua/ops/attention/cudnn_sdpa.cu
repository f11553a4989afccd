// Causal GQA attention through cuDNN's fused flash-attention engines, built with the cuDNN 9
// backend (graph) C API: no cudnn-frontend. The attention is written as the operation graph that
// cudnn-frontend's composite SDPA nodes lower to, and the backend fuses it into one flash kernel
// (forward) or its backward kernels. Only API present in every cuDNN 9.x is used (no SDPA_FWD /
// SDPA_BWD nodes, 9.13 / 9.17, whose causal masks need the 9.20 diagonal-band node).
//
// Tensors (cuDNN dims [b, h, s, d], our memory [B, T, H, hd], so strides {T H hd, hd, H hd, 1}):
//   Q, O, dO, dQ [B, H, T, hd]; K, V, dK, dV [B, KV, T, hd]; Stats [B, H, T, 1] f32 = our lse.
// Forward graph:
//   S = Q K^T (K read transposed through its strides); S *= scale;
//   causal: S = (row >= col) ? S : -inf, with GEN_INDEX rows / cols and CMP_GE;
//   M = max_s S; E = exp(S - M); Z = sum_s E; Stats = M + log Z; P = E / Z (bf16); O = P V.
// Stats is then exactly our lse (natural log of the sum of exp of the scaled scores), so either
// path's backward can take either path's forward output.
// Backward graph (S == T):
//   Dsum = sum_d dO * O (f32, in the workspace);
//   P = exp(causal(scale Q K^T - Stats));
//   dV = P^T dO; dP = dO V^T; dS = P (dP - Dsum) scale; dK = dS^T Q; dQ = dS K,
//   GQA: dK, dV are computed per query head and summed over the group by a reduction node.
// Determinism: with dQ written straight from its matmul (no fp32 dQ accumulator in the graph), cuDNN 9
// runs its deterministic backward, which keeps dP in the workspace: about B H T^2 2 bytes (512 MiB
// at B 4, H 16, T 2048; it grows with T^2), so cudnn_backward runs a large batch as several calls on
// slices of it, each within a budget (1 GiB, LINGUA_ATTENTION_WORKSPACE_MB). LINGUA_ATTENTION_DETERMINISTIC=0 builds the graph with a
// non-virtual fp32 dQ accumulator instead (as cudnn-frontend does by default), which cuDNN may fill
// with float atomics, in O(T) workspace. Engine configs whose numerical notes say NONDETERMINISTIC
// are skipped in deterministic mode (none seen so far). Seen on an H100 with cuDNN 9.14 and 9.19:
// the default backward gave the same bits over five runs (B 2, T 1024, H 8, KV 2 and 8).
//
// Plans are chosen by heuristics (mode A, then FALLBACK), cached per shape with their failure
// (then the fallback kernels run); workspace comes from attention_internal::scratch().
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "lingua/core/cuda_utils.cuh"
#include "lingua/ops/attention/cuda_internal.h"

#if __has_include(<cudnn_graph.h>)
#include "lingua/ops/attention/cudnn_backend.h"
#define LINGUA_HAVE_CUDNN 1
#else
#define LINGUA_HAVE_CUDNN 0
#endif

namespace lingua::attention_internal {

#if LINGUA_HAVE_CUDNN

namespace {

struct Shape {
  int64_t B, T, H, KV, D;
};

// Strides of our [B, T, NH, D] memory seen as cuDNN's [B, NH, T, D].
A4 bshd_strides(const Shape& s, int64_t nh) { return {s.T * nh * s.D, s.D, nh * s.D, 1}; }
// The same memory seen transposed, [B, NH, D, T].
A4 bshd_strides_t(const Shape& s, int64_t nh) { return {s.T * nh * s.D, s.D, 1, nh * s.D}; }

void build_forward(GraphBuilder& g, const Shape& s) {
  const A4 q_dims{s.B, s.H, s.T, s.D}, kt_dims{s.B, s.KV, s.D, s.T}, v_dims{s.B, s.KV, s.T, s.D};
  const A4 s_dims{s.B, s.H, s.T, s.T}, s_str{s.H * s.T * s.T, s.T * s.T, s.T, 1};
  const A4 r_dims{s.B, s.H, s.T, 1}, r_str{s.H * s.T, s.T, 1, 1};
  DescP Q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, q_dims, bshd_strides(s, s.H), false);
  DescP KT = g.tensor(kK, CUDNN_DATA_BFLOAT16, kt_dims, bshd_strides_t(s, s.KV), false);
  DescP V = g.tensor(kV, CUDNN_DATA_BFLOAT16, v_dims, bshd_strides(s, s.KV), false);
  DescP O = g.tensor(kO, CUDNN_DATA_BFLOAT16, q_dims, bshd_strides(s, s.H), false);
  DescP stats = g.tensor(kStats, CUDNN_DATA_FLOAT, r_dims, r_str, false);
  DescP scale = g.scalar(kScale), neg_inf = g.scalar(kNegInf);

  DescP scores = g.virt(CUDNN_DATA_FLOAT, s_dims, s_str);
  g.matmul(Q, KT, scores);
  scores = g.pointwise(CUDNN_POINTWISE_MUL, scores, scale, nullptr, g.virt(CUDNN_DATA_FLOAT, s_dims, s_str));
  scores = g.causal(scores, neg_inf, s_dims, s_str);
  DescP mx = g.virt(CUDNN_DATA_FLOAT, r_dims, r_str);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, scores, mx);
  DescP centered =
      g.pointwise(CUDNN_POINTWISE_SUB, scores, mx, nullptr, g.virt(CUDNN_DATA_FLOAT, s_dims, s_str));
  DescP e = g.pointwise(CUDNN_POINTWISE_EXP, centered, nullptr, nullptr, g.virt(CUDNN_DATA_FLOAT, s_dims, s_str));
  DescP z = g.virt(CUDNN_DATA_FLOAT, r_dims, r_str);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, z);
  DescP log_z = g.pointwise(CUDNN_POINTWISE_LOG, z, nullptr, nullptr, g.virt(CUDNN_DATA_FLOAT, r_dims, r_str));
  g.pointwise(CUDNN_POINTWISE_ADD, mx, log_z, nullptr, stats);
  DescP p = g.pointwise(CUDNN_POINTWISE_DIV, e, z, nullptr, g.virt(CUDNN_DATA_BFLOAT16, s_dims, s_str));
  g.matmul(p, V, O);
}

void build_backward(GraphBuilder& g, const Shape& s, bool dq_accum) {
  const A4 q_dims{s.B, s.H, s.T, s.D}, kt_dims{s.B, s.KV, s.D, s.T}, kv_dims{s.B, s.KV, s.T, s.D};
  const A4 packed_q{s.H * s.T * s.D, s.T * s.D, s.D, 1};
  const A4 s_dims{s.B, s.H, s.T, s.T}, s_str{s.H * s.T * s.T, s.T * s.T, s.T, 1};
  const A4 s_str_t{s.H * s.T * s.T, s.T * s.T, 1, s.T};  // [b, h, key, query] view of [b, h, query, key]
  const A4 r_dims{s.B, s.H, s.T, 1}, r_str{s.H * s.T, s.T, 1, 1};
  DescP Q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, q_dims, bshd_strides(s, s.H), false);
  DescP KT = g.tensor(kK, CUDNN_DATA_BFLOAT16, kt_dims, bshd_strides_t(s, s.KV), false);
  DescP VT = g.tensor(kV, CUDNN_DATA_BFLOAT16, kt_dims, bshd_strides_t(s, s.KV), false);
  DescP O = g.tensor(kO, CUDNN_DATA_BFLOAT16, q_dims, bshd_strides(s, s.H), false);
  DescP dO = g.tensor(kDO, CUDNN_DATA_BFLOAT16, q_dims, bshd_strides(s, s.H), false);
  DescP stats = g.tensor(kStats, CUDNN_DATA_FLOAT, r_dims, r_str, false);
  DescP dQ = g.tensor(kDQ, CUDNN_DATA_BFLOAT16, q_dims, bshd_strides(s, s.H), false);
  DescP dK = g.tensor(kDK, CUDNN_DATA_BFLOAT16, kv_dims, bshd_strides(s, s.KV), false);
  DescP dV = g.tensor(kDV, CUDNN_DATA_BFLOAT16, kv_dims, bshd_strides(s, s.KV), false);
  DescP scale = g.scalar(kScale), neg_inf = g.scalar(kNegInf), one = g.scalar(kOne);
  DescP dsum = g.tensor(kSoftmaxSum, CUDNN_DATA_FLOAT, r_dims, r_str, false);  // in the workspace

  // Dsum = sum_d dO * O
  DescP prod = g.pointwise(CUDNN_POINTWISE_MUL, dO, O, nullptr, g.virt(CUDNN_DATA_FLOAT, q_dims, packed_q));
  DescP rowsum = g.virt(CUDNN_DATA_FLOAT, r_dims, r_str);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, prod, rowsum);
  g.pointwise(CUDNN_POINTWISE_MUL, rowsum, one, nullptr, dsum);

  // P = exp(causal(scale Q K^T - Stats))
  DescP scores = g.virt(CUDNN_DATA_FLOAT, s_dims, s_str);
  g.matmul(Q, KT, scores);
  scores = g.pointwise(CUDNN_POINTWISE_MUL, scores, scale, nullptr, g.virt(CUDNN_DATA_FLOAT, s_dims, s_str));
  scores = g.pointwise(CUDNN_POINTWISE_SUB, scores, stats, nullptr, g.virt(CUDNN_DATA_FLOAT, s_dims, s_str));
  scores = g.causal(scores, neg_inf, s_dims, s_str);
  DescP P = g.pointwise(CUDNN_POINTWISE_EXP, scores, nullptr, nullptr, g.virt(CUDNN_DATA_FLOAT, s_dims, s_str));

  // dV = P^T dO (summed over the query heads of a group)
  DescP PT = g.virt(CUDNN_DATA_BFLOAT16, s_dims, s_str_t);
  g.reshape(P, PT);
  if (s.H == s.KV) {
    g.matmul(PT, dO, dV);
  } else {
    DescP full = g.virt(CUDNN_DATA_BFLOAT16, q_dims, packed_q);
    g.matmul(PT, dO, full);
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, full, dV);
  }

  // dS = P (dO V^T - Dsum) scale
  DescP dP = g.virt(CUDNN_DATA_FLOAT, s_dims, s_str);
  g.matmul(dO, VT, dP);
  DescP dS = g.pointwise(CUDNN_POINTWISE_SUB, dP, dsum, nullptr, g.virt(CUDNN_DATA_FLOAT, s_dims, s_str));
  dS = g.pointwise(CUDNN_POINTWISE_MUL, dS, P, nullptr, g.virt(CUDNN_DATA_FLOAT, s_dims, s_str));
  dS = g.pointwise(CUDNN_POINTWISE_MUL, dS, scale, nullptr, g.virt(CUDNN_DATA_FLOAT, s_dims, s_str));

  // dK = dS^T Q (summed over the group)
  DescP dST = g.virt(CUDNN_DATA_BFLOAT16, s_dims, s_str_t);
  g.reshape(dS, dST);
  if (s.H == s.KV) {
    g.matmul(dST, Q, dK);
  } else {
    DescP full = g.virt(CUDNN_DATA_BFLOAT16, q_dims, packed_q);
    g.matmul(dST, Q, full);
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, full, dK);
  }

  // dQ = dS K
  DescP K = g.virt(CUDNN_DATA_BFLOAT16, kv_dims, bshd_strides(s, s.KV));
  g.reshape(KT, K);
  if (dq_accum) {
    DescP acc = g.tensor(kDQAccum, CUDNN_DATA_FLOAT, q_dims, packed_q, false);  // in the workspace
    g.matmul(dS, K, acc);
    g.pointwise(CUDNN_POINTWISE_IDENTITY, acc, nullptr, nullptr, dQ);
  } else {
    g.matmul(dS, K, dQ);
  }
}

// A finalized execution plan with the descriptors it came from, and its workspace layout.
struct Plan {
  std::vector<DescP> keep;
  DescP plan;
  size_t engine_ws = 0;    // what the engine needs, at offset 0
  size_t extra_offset = 0;  // forward: stats when lse is not wanted; backward: Dsum
  size_t accum_offset = 0;  // backward with dq_accum: the fp32 dQ accumulator
  size_t total_ws = 0;
  std::string info;
};

size_t align256(size_t n) { return (n + 255) & ~size_t(255); }

std::string engine_notes(const Desc& cfg, bool* nondeterministic) {
  *nondeterministic = false;
  std::ostringstream os;
  try {
    Desc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    cudnnBackendDescriptor_t raw = engine.get();
    int64_t n = 0;
    check(cudnnBackendGetAttribute(cfg.get(), CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &raw),
          "engine of config");
    os << "engine " << engine.get_int64(CUDNN_ATTR_ENGINE_GLOBAL_INDEX);
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    check(cudnnBackendGetAttribute(raw, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                   CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, notes),
          "numerical notes");
    os << " notes [";
    for (int64_t i = 0; i < n && i < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; ++i) {
      os << (i ? " " : "") << (int)notes[i];
      if (notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) *nondeterministic = true;
    }
    os << "]";
  } catch (const BackendError& e) {
    os << " (" << e.what() << ")";
  }
  return os.str();
}

// The first engine config of the heuristics (mode A, then FALLBACK) that finalizes into a plan,
// skipping nondeterministic engines when asked.
void choose_plan(Plan& p, const DescP& graph, cudnnHandle_t handle, bool deterministic) {
  std::ostringstream tried;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    try {
      DescP heur = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
      heur->set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, *graph);
      heur->set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
      heur->finalize("engine heuristics");
      int64_t count = 0;
      check(cudnnBackendGetAttribute(heur->get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                     &count, nullptr),
            "heuristics count");
      std::vector<DescP> cfgs;
      std::vector<cudnnBackendDescriptor_t> raw;
      for (int64_t i = 0; i < count; ++i) {
        cfgs.push_back(make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
        raw.push_back(cfgs.back()->get());
      }
      int64_t got = 0;
      if (count > 0)
        check(cudnnBackendGetAttribute(heur->get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                       count, &got, raw.data()),
              "heuristics results");
      tried << " mode " << (mode == CUDNN_HEUR_MODE_A ? "A" : "FALLBACK") << ": " << got << " configs";
      for (int64_t i = 0; i < got && i < count; ++i) {
        bool nondet = false;
        const std::string notes = engine_notes(*cfgs[i], &nondet);
        if (deterministic && nondet) {
          tried << "; config " << i << " skipped (nondeterministic, " << notes << ")";
          continue;
        }
        try {
          DescP plan = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
          plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
          plan->set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, *cfgs[i]);
          plan->finalize("execution plan");
          const int64_t ws = plan->get_int64(CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE);
          p.plan = plan;
          p.engine_ws = (size_t)std::max<int64_t>(ws, 0);
          p.keep.push_back(heur);
          p.keep.insert(p.keep.end(), cfgs.begin(), cfgs.end());
          std::ostringstream info;
          info << "heuristics " << (mode == CUDNN_HEUR_MODE_A ? "A" : "FALLBACK") << " config " << i << " of "
               << got << ", " << notes << (nondet ? " NONDETERMINISTIC" : "") << ", engine workspace " << ws << " B";
          p.info = info.str();
          return;
        } catch (const BackendError& e) {
          tried << "; config " << i << " (" << notes << "): " << e.what();
        }
      }
    } catch (const BackendError& e) {
      tried << "; " << e.what();
    }
  }
  throw BackendError("no engine config gives an execution plan:" + tried.str());
}

// Plan cache: (kind, B, T, H, KV, hd) -> plan, or the reason there is none.
enum Kind : int { kForward = 0, kBackwardDeterministic = 1, kBackwardAtomic = 2 };
using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t>;
struct Entry {
  std::shared_ptr<Plan> plan;
  std::string error;
};
std::mutex g_mutex;
std::map<Key, Entry> g_plans;

std::string key_str(const Key& k) {
  static const char* kinds[] = {"forward", "backward", "backward (atomic dQ)"};
  std::ostringstream os;
  os << kinds[std::get<0>(k)] << " B" << std::get<1>(k) << " T" << std::get<2>(k) << " H" << std::get<3>(k) << " KV"
     << std::get<4>(k) << " hd" << std::get<5>(k);
  return os.str();
}

// Reasons outside any graph why cuDNN does not take the shape; empty when it may.
std::string static_refusal(int64_t T, int64_t S, int64_t hd, bool backward) {
  const Library& lib = library();
  if (!lib.ok) return lib.why;
  if (S != T) return "cuDNN path needs S == T (the KV-cache forward runs the fallback)";
  if (hd != 64 && hd != 128) return "cuDNN path takes head_dim 64 or 128";
  // cudnn-frontend adds a padding mask to the backward of cuDNN <= 9.15 when T is not a multiple
  // of 128 (cudnn-frontend issue 160: NaN gradients otherwise). Our causal graph passed the odd-T
  // tests on 9.14 without it, but we keep to NVIDIA's rule and run the fallback there.
  if (backward && lib.version <= 91500 && T % 128 != 0)
    return "cuDNN " + std::to_string(lib.version) + " backward needs T % 128 == 0 (T = " + std::to_string(T) + ")";
  return "";
}

bool deterministic_requested() {
  const char* e = std::getenv("LINGUA_ATTENTION_DETERMINISTIC");
  return !(e && !std::strcmp(e, "0"));
}

// The cached plan for the shape, building it on first use; nullptr (with *why) when none.
std::shared_ptr<Plan> get_plan(Kind kind, const Shape& s, std::string* why) {
  const Key key{kind, s.B, s.T, s.H, s.KV, s.D};
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_plans.find(key);
  if (it == g_plans.end()) {
    Entry e;
    try {
      const Library& lib = library();
      GraphBuilder g;
      if (kind == kForward)
        build_forward(g, s);
      else
        build_backward(g, s, kind == kBackwardAtomic);
      DescP graph = g.finalize(lib.handle);
      auto p = std::make_shared<Plan>();
      choose_plan(*p, graph, lib.handle, kind == kBackwardDeterministic);
      p->keep.insert(p->keep.end(), g.kept().begin(), g.kept().end());
      const size_t rows = sizeof(float) * s.B * s.H * s.T;
      p->extra_offset = align256(p->engine_ws);
      p->accum_offset = align256(p->extra_offset + rows);
      p->total_ws = p->accum_offset + (kind == kBackwardAtomic ? rows * s.D : 0);
      e.plan = p;
    } catch (const BackendError& err) {
      e.error = err.what();
    }
    if (std::getenv("LINGUA_ATTENTION_VERBOSE"))
      std::fprintf(stderr, "[attention] cuDNN %s: %s\n", key_str(key).c_str(),
                   e.plan ? e.plan->info.c_str() : ("no plan: " + e.error).c_str());
    it = g_plans.emplace(key, std::move(e)).first;
  }
  if (!it->second.plan && why) *why = "no cuDNN plan: " + it->second.error;
  return it->second.plan;
}

void forget_plan(Kind kind, const Shape& s, const std::string& error) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Entry& e = g_plans[Key{kind, s.B, s.T, s.H, s.KV, s.D}];
  e.plan.reset();
  e.error = error;
}

void execute(const Plan& p, std::vector<int64_t> uids, std::vector<void*> ptrs, void* workspace) {
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, (int64_t)uids.size(), uids.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, (int64_t)ptrs.size(), ptrs.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  pack.finalize("variant pack");
  check(cudnnBackendExecute(library().handle, p.plan->get(), pack.get()), "execute");
}

bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data) % 16 == 0; }

bool refuse(std::string* why, std::string reason) {
  *why = std::move(reason);
  return false;
}

Shape shape_of(const Tensor& q, const Tensor& k) { return {q.size(0), q.size(1), q.size(2), k.size(2), q.size(3)}; }

// -inf masks on cuDNN >= 9.10, the lowest float before (as cudnn-frontend does).
float mask_value() {
  return library().version >= 91000 ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::lowest();
}

}  // namespace

bool cudnn_supported(int64_t B, int64_t T, int64_t S, int64_t H, int64_t KV, int64_t hd, bool backward,
                     std::string* why) {
  std::string refusal = static_refusal(T, S, hd, backward);
  if (!refusal.empty()) {
    if (why) *why = refusal;
    return false;
  }
  const Kind kind = !backward ? kForward : deterministic_requested() ? kBackwardDeterministic : kBackwardAtomic;
  return get_plan(kind, Shape{B, T, H, KV, hd}, why) != nullptr;
}

int64_t cudnn_version() { return library().ok ? library().version : 0; }

std::string cudnn_plans_report() {
  std::ostringstream os;
  const Library& lib = library();
  os << "cuDNN runtime " << lib.version << " (headers " << CUDNN_VERSION << ")" << (lib.ok ? "" : ": " + lib.why)
     << "\n";
  std::lock_guard<std::mutex> lock(g_mutex);
  for (const auto& [key, e] : g_plans)
    os << "  " << key_str(key) << ": " << (e.plan ? e.plan->info : "no plan: " + e.error) << "\n";
  return os.str();
}

bool cudnn_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                   std::string* why) {
  if (q.dtype != DType::bf16) return refuse(why, "cuDNN path takes bf16 tensors");
  std::string refusal = static_refusal(q.size(1), k.size(1), q.size(3), false);
  if (!refusal.empty()) return refuse(why, refusal);
  for (const Tensor* t : {&q, &k, &v, &out, &lse})
    if (t->data && !aligned16(*t)) return refuse(why, "cuDNN path needs 16-byte aligned tensors");
  const Shape s = shape_of(q, k);
  if (s.B * s.T == 0) return true;
  std::shared_ptr<Plan> p = get_plan(kForward, s, why);
  if (!p) return false;
  char* ws = static_cast<char*>(scratch(p->total_ws));
  float scale = 1.0f / std::sqrt((float)s.D), neg_inf = mask_value();
  void* stats = lse.data ? lse.data : ws + p->extra_offset;
  try {
    execute(*p, {kQ, kK, kV, kO, kStats, kScale, kNegInf}, {q.data, k.data, v.data, out.data, stats, &scale, &neg_inf},
            ws);
  } catch (const BackendError& e) {
    forget_plan(kForward, s, e.what());
    return refuse(why, std::string("cuDNN execution failed: ") + e.what());
  }
  return true;
}

namespace {
// Batch entries [b0, b0 + nb) of a tensor whose first dimension is the batch.
Tensor batch_slice(const Tensor& t, int64_t b0, int64_t nb) {
  Tensor r = t;
  const int64_t per = t.numel() / t.shape[0];
  r.data = static_cast<char*>(t.data) + b0 * per * (int64_t)dtype_size(t.dtype);
  r.shape[0] = nb;
  return r;
}

// The deterministic backward's workspace grows as B H T^2 (it keeps dP): batches above the budget
// run as several calls on equal slices of the batch. Smaller slices cost speed (fewer blocks per
// call: 4 slices of B 8, H 16, T 2048 took 24 ms per step instead of 19 on an H100), so the
// default budget is 1 GiB; LINGUA_ATTENTION_WORKSPACE_MB sets another.
size_t max_deterministic_workspace() {
  const char* e = std::getenv("LINGUA_ATTENTION_WORKSPACE_MB");
  if (!e || !*e) return size_t(1024) << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(e, &end, 10);
  LINGUA_CHECK(end && *end == 0 && mb > 0, "LINGUA_ATTENTION_WORKSPACE_MB must be a positive integer, not '", e, "'");
  return size_t(mb) << 20;
}

bool cudnn_backward_one(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv, std::string* why);
}  // namespace

bool cudnn_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                    const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv, std::string* why) {
  if (q.dtype != DType::bf16) return refuse(why, "cuDNN path takes bf16 tensors");
  std::string refusal = static_refusal(q.size(1), k.size(1), q.size(3), true);
  if (!refusal.empty()) return refuse(why, refusal);
  for (const Tensor* t : {&q, &k, &v, &out, &lse, &dout, &dq, &dk, &dv})
    if (!aligned16(*t)) return refuse(why, "cuDNN path needs 16-byte aligned tensors");
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2);
  if (B * T == 0) return true;
  int64_t chunk = B;
  if (deterministic_requested()) {
    const size_t per_batch = (size_t)H * T * T * 2, budget = max_deterministic_workspace();
    // The largest divisor of B within the budget (all slices share one plan).
    while (chunk > 1 && (B % chunk != 0 || per_batch * chunk > budget)) --chunk;
  }
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    auto sl = [&](const Tensor& t) { return batch_slice(t, b0, chunk); };
    if (!cudnn_backward_one(sl(q), sl(k), sl(v), sl(out), sl(lse), sl(dout), sl(dq), sl(dk), sl(dv), why)) {
      LINGUA_CHECK(b0 == 0, "attention_backward: cuDNN failed on batch slice ", b0, " after earlier slices ran: ",
                   why ? *why : std::string());
      return false;
    }
  }
  return true;
}

namespace {
bool cudnn_backward_one(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv, std::string* why) {
  const Shape s = shape_of(q, k);
  const Kind kind = deterministic_requested() ? kBackwardDeterministic : kBackwardAtomic;
  std::shared_ptr<Plan> p = get_plan(kind, s, why);
  if (!p) return false;
  char* ws = static_cast<char*>(scratch(p->total_ws));
  float scale = 1.0f / std::sqrt((float)s.D), neg_inf = mask_value(), one = 1.0f;
  std::vector<int64_t> uids{kQ, kK, kV, kO, kDO, kStats, kDQ, kDK, kDV, kScale, kNegInf, kOne, kSoftmaxSum};
  std::vector<void*> ptrs{q.data, k.data,  v.data,   out.data, dout.data, lse.data,          dq.data,
                          dk.data, dv.data, &scale, &neg_inf, &one,      ws + p->extra_offset};
  if (kind == kBackwardAtomic) {
    // The accumulator must start at zero (cuDNN >= 9.6 clears it itself; earlier ones do not).
    CUDA_CHECK(cudaMemsetAsync(ws + p->accum_offset, 0, p->total_ws - p->accum_offset, cuda_stream()));
    uids.push_back(kDQAccum);
    ptrs.push_back(ws + p->accum_offset);
  }
  try {
    execute(*p, uids, ptrs, ws);
  } catch (const BackendError& e) {
    forget_plan(kind, s, e.what());
    return refuse(why, std::string("cuDNN execution failed: ") + e.what());
  }
  return true;
}
}  // namespace

#else  // no cuDNN headers: the fallback kernels run everywhere

bool cudnn_supported(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, std::string* why) {
  if (why) *why = "built without cuDNN";
  return false;
}
int64_t cudnn_version() { return 0; }
std::string cudnn_plans_report() { return "built without cuDNN\n"; }
bool cudnn_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, std::string* why) {
  *why = "built without cuDNN";
  return false;
}
bool cudnn_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                    const Tensor&, const Tensor&, const Tensor&, std::string* why) {
  *why = "built without cuDNN";
  return false;
}

#endif

}  // namespace lingua::attention_internal
