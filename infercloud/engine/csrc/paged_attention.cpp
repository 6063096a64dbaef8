// Paged attention on the CPU: the step's new keys and values are written into their cache slots, then every
// query row of the step (decode tokens and prefill chunks alike) attends to its sequence's keys 0..position
// read in place from the paged KV cache, with no gathered copy.
//
// Algorithm: one work item is (sequence, tile of up to TILE query rows), all heads; the G query heads of a
// KV head share it (GQA). The item walks the sequence's cache blocks in order from block 0; each block's
// keys are stored transposed in pairs ([D/2][block_size][2] per KV head), so the scores of a query against
// a block's keys come out W keys per vector instruction (in bf16, by AVX512_BF16 dot products). Every query vector of the tile does an online softmax step
// over the block's keys it may see (causal: keys <= its position): scores, new running max, rescale of
// its running sum and accumulator, add exp(score - max) * value. Loads convert bf16 to fp32 in registers;
// all arithmetic is fp32. Each row's arithmetic depends only on
// its own query, its keys and the fixed block order, never on the tile or the batch it is computed in: a
// sequence gets bitwise the same output however the scheduler batches or chunks it.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>
#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t TILE = 16;   // query rows per work item
constexpr int64_t PREFETCH = 3;   // blocks read ahead
constexpr int64_t W = Vec::size();

inline Vec load(const float* p) { return Vec::loadu(p); }
inline Vec load(const at::BFloat16* p) { Vec v; at::vec::load_to_float(p, v); return v; }
inline Vec load(const at::Half* p) { Vec v; at::vec::load_to_float(p, v); return v; }

// scores[i][j] = q_i . k_j for QG query vectors against one block's keys. kt = the block's keys of one KV
// head in pairs along d: [D/2][BS][2] (key j's d = 2e and 2e + 1 side by side), the layout the bf16 dot
// product instruction reads. W keys per vector; a key vector is loaded once for all QG queries; each
// query's arithmetic is the same with any QG.
//  - bf16 on CPUs with AVX512_BF16: one vdpbf16ps per pair of d (bf16 products summed in fp32), two
//    partial sums (even and odd pairs) added at the end, then times the scale;
//  - otherwise: fp32 FMAs of the (scaled) fp32 query, two partial sums over d (even, odd) added at the end.
template <int QG, typename T>
inline void block_scores(const float* const* q, const T* const* /*qraw*/, float /*scale*/, const T* kt,
                         int64_t D, int64_t BS, float* scores) {
  for (int64_t j = 0; j < BS; j += W) {
    Vec a[QG][2];
    for (int i = 0; i < QG; ++i) a[i][0] = a[i][1] = Vec(0.f);
    for (int64_t e = 0; e < D / 2; ++e) {
      Vec lo = load(kt + (e * BS + j) * 2), hi = load(kt + (e * BS + j) * 2 + W);
      auto [even, odd] = at::vec::deinterleave2(lo, hi);   // d = 2e and 2e + 1 of keys j .. j + W - 1
      for (int i = 0; i < QG; ++i) {
        a[i][0] = at::vec::fmadd(Vec(q[i][2 * e]), even, a[i][0]);
        a[i][1] = at::vec::fmadd(Vec(q[i][2 * e + 1]), odd, a[i][1]);
      }
    }
    for (int i = 0; i < QG; ++i) (a[i][0] + a[i][1]).store(scores + i * BS + j);
  }
}

#if defined(__AVX512BF16__) && defined(CPU_CAPABILITY_AVX512)
template <int QG>
inline void block_scores(const float* const* /*q*/, const at::BFloat16* const* qraw, float scale,
                         const at::BFloat16* kt, int64_t D, int64_t BS, float* scores) {
  static_assert(W == 16, "one vector of fp32 lanes per 16 keys");
  for (int64_t j = 0; j < BS; j += W) {
    __m512 a[QG][2];
    for (int i = 0; i < QG; ++i) a[i][0] = a[i][1] = _mm512_setzero_ps();
    for (int64_t e = 0; e < D / 2; e += 2) {
      const __m512bh k0 = (__m512bh)_mm512_loadu_si512(kt + (e * BS + j) * 2);
      const __m512bh k1 = (__m512bh)_mm512_loadu_si512(kt + ((e + 1) * BS + j) * 2);
      for (int i = 0; i < QG; ++i) {
        int32_t p0, p1;
        std::memcpy(&p0, qraw[i] + 2 * e, 4);
        std::memcpy(&p1, qraw[i] + 2 * e + 2, 4);
        a[i][0] = _mm512_dpbf16_ps(a[i][0], (__m512bh)_mm512_set1_epi32(p0), k0);
        a[i][1] = _mm512_dpbf16_ps(a[i][1], (__m512bh)_mm512_set1_epi32(p1), k1);
      }
    }
    for (int i = 0; i < QG; ++i)
      _mm512_storeu_ps(scores + i * BS + j, _mm512_mul_ps(_mm512_add_ps(a[i][0], a[i][1]), _mm512_set1_ps(scale)));
  }
}
#endif

// acc_i = acc_i * alpha_i + sum_{j < visible_i} p_i[j] * v_j for the first n of QG queries, value j at
// v + j * stride
template <int QG, typename T>
inline void rescale_add(float* const* acc, const float* alpha, const float* p, const int64_t* visible, int64_t n,
                        int64_t BS, const T* v, int64_t stride, int64_t D) {
  int64_t most = 0;
  bool uniform = true;   // the n real queries all see `most` keys (past n: unused copies, never stored)
  for (int i = 0; i < QG; ++i) most = std::max(most, visible[i]);
  for (int i = 0; i < n; ++i) uniform = uniform && visible[i] == most;
  for (int64_t d = 0; d < D; d += W) {
    Vec x[QG];
    for (int i = 0; i < QG; ++i) x[i] = visible[i] > 0 ? Vec::loadu(acc[i] + d) * Vec(alpha[i]) : Vec(0.f);
    if (uniform) {   // every query sees the same keys (all but the diagonal block): no per-key test
      for (int64_t j = 0; j < most; ++j) {
        const Vec vj = load(v + j * stride + d);
        for (int i = 0; i < QG; ++i) x[i] = at::vec::fmadd(Vec(p[i * BS + j]), vj, x[i]);
      }
    } else {
      for (int64_t j = 0; j < most; ++j) {
        const Vec vj = load(v + j * stride + d);
        for (int i = 0; i < QG; ++i)
          if (j < visible[i]) x[i] = at::vec::fmadd(Vec(p[i * BS + j]), vj, x[i]);
      }
    }
    for (int i = 0; i < QG; ++i)
      if (visible[i] > 0) x[i].store(acc[i] + d);
  }
}

// One online-softmax step of QG query vectors (from query i0 of the tile) over one block's keys.
template <int QG, typename T>
inline void step_block(int64_t i0, int64_t n, int64_t D, int64_t BS, int64_t block_start, int64_t nkeys,
                       const T* kt, const T* vb, int64_t key_stride, float* qf, const T* const* qraw, float scale,
                       float* acc, float* m, float* l, const int64_t* pos, float* sc) {
  const float* qv[QG];
  const T* qr[QG];
  float* av[QG];
  int64_t visible[QG];
  float alpha[QG];
  bool any = false;
  for (int i = 0; i < QG; ++i) {   // past n: a copy of the first query, its result unused
    const int64_t k = i < n ? i0 + i : i0;
    qv[i] = qf + k * D;
    qr[i] = qraw[k];
    av[i] = acc + k * D;
    visible[i] = i < n ? std::max<int64_t>(0, std::min(nkeys, pos[k] - block_start + 1)) : 0;
    any = any || visible[i] > 0;
  }
  if (!any) return;
  block_scores<QG>(qv, qr, scale, kt, D, BS, sc);
  const Vec lane = Vec::arange(0.f, 1.f), minus_inf(-std::numeric_limits<float>::infinity());
  for (int i = 0; i < QG; ++i) {
    if (visible[i] == 0) continue;
    float* row = sc + i * BS;
    Vec mv(m[i0 + i]);
    for (int64_t j = 0; j < BS; j += W) {
      const Vec seen = lane + Vec(static_cast<float>(j)) < Vec(static_cast<float>(visible[i]));
      mv = at::vec::maximum(mv, Vec::blendv(minus_inf, Vec::loadu(row + j), seen));
    }
    const float mx = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return at::vec::maximum(x, y); }, mv);
    Vec sv(0.f);
    for (int64_t j = 0; j < BS; j += W) {
      const Vec seen = lane + Vec(static_cast<float>(j)) < Vec(static_cast<float>(visible[i]));
      const Vec e = Vec::blendv(Vec(0.f), (Vec::loadu(row + j) - Vec(mx)).exp_u20(), seen);
      e.store(row + j);
      sv = sv + e;
    }
    const float sum = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, sv);
    alpha[i] = std::exp(m[i0 + i] - mx);
    m[i0 + i] = mx;
    l[i0 + i] = l[i0 + i] * alpha[i] + sum;
  }
  rescale_add<QG>(av, alpha, sc, visible, n, BS, vb, key_stride, D);
}

template <typename T>
void attend(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& tables,
            const at::Tensor& query_start, const at::Tensor& seq_lens, double scale, at::Tensor& out) {
  // q [T, H, D]; k_cache [blocks, Hkv, D/2, BS, 2] (keys in d-pairs within a block); v_cache [blocks, BS, Hkv, D]
  const int64_t H = q.size(1), D = q.size(2);
  const int64_t Hkv = k_cache.size(1), BS = k_cache.size(3), G = H / Hkv;
  const int64_t num_seqs = seq_lens.size(0), max_blocks = tables.size(1);
  const T* qp = q.data_ptr<T>();
  const T* kp = k_cache.data_ptr<T>();
  const T* vp = v_cache.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const int64_t* table = tables.data_ptr<int64_t>();
  const int64_t* qs = query_start.data_ptr<int64_t>();
  const int64_t* lens = seq_lens.data_ptr<int64_t>();
  const int64_t block_stride = BS * Hkv * D, key_stride = Hkv * D;

  std::vector<std::pair<int64_t, int64_t>> items;   // (sequence, first row of the tile)
  for (int64_t s = 0; s < num_seqs; ++s)
    for (int64_t r = qs[s]; r < qs[s + 1]; r += TILE) items.emplace_back(s, r);
  const int64_t num_work = static_cast<int64_t>(items.size());
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), num_work));
  const int64_t block_bytes = block_stride * static_cast<int64_t>(sizeof(T));

  // thread t takes work t, t + threads, ...: tiles late in a prompt (more keys) spread over all threads
  at::parallel_for(0, threads, 1, [&](int64_t t_begin, int64_t t_end) {
    const int64_t nq_max = TILE * G, all = Hkv * nq_max;   // query vectors of one KV head, of all
    std::vector<float> qf(all * D), acc(all * D), m(all), l(all), sc(8 * BS);
    std::vector<int64_t> pos(all);
    std::vector<const T*> qraw(all);
    for (int64_t t = t_begin; t < t_end; ++t)
    for (int64_t w = t; w < num_work; w += threads) {
      const auto [s, row0] = items[w];
      const int64_t rows = std::min(TILE, qs[s + 1] - row0), nq = rows * G;
      const int64_t first_pos = lens[s] - (qs[s + 1] - row0);   // position of row0
      for (int64_t kvh = 0; kvh < Hkv; ++kvh)
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t r = i / G, h = kvh * G + i % G, x = kvh * nq_max + i;
          const T* src = qp + ((row0 + r) * H + h) * D;
          for (int64_t d = 0; d < D; ++d) qf[x * D + d] = static_cast<float>(src[d]) * static_cast<float>(scale);
          qraw[x] = src;
          pos[x] = first_pos + r;
          m[x] = -std::numeric_limits<float>::infinity();
          l[x] = 0.f;
          std::fill(acc.begin() + x * D, acc.begin() + (x + 1) * D, 0.f);
        }
      const int64_t last_pos = first_pos + rows - 1;
      for (int64_t b = 0; b * BS <= last_pos; ++b) {
        const int64_t phys = table[s * max_blocks + b];
        const int64_t nkeys = std::min(BS, last_pos + 1 - b * BS);
        // blocks come from anywhere in memory: ask for the ones PREFETCH ahead now (a block's keys, all heads,
        // are one contiguous run, and so are its values), or a decode (little work per block) waits on
        // memory at every block
        for (int64_t ahead = b == 0 ? 1 : PREFETCH; ahead <= PREFETCH; ++ahead) {
          if ((b + ahead) * BS > last_pos) break;
          const int64_t next = table[s * max_blocks + b + ahead];
          const char* kn = reinterpret_cast<const char*>(kp + next * block_stride);
          const char* vn = reinterpret_cast<const char*>(vp + next * block_stride);
          for (int64_t off = 0; off < block_bytes; off += 64) {
            __builtin_prefetch(kn + off);
            __builtin_prefetch(vn + off);
          }
        }
        for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
          const T* kt = kp + phys * block_stride + kvh * D * BS;
          const T* vb = vp + phys * block_stride + kvh * D;
          const int64_t x0 = kvh * nq_max;
          for (int64_t i0 = 0; i0 < nq; i0 += 8) {
            const int64_t n = std::min<int64_t>(8, nq - i0);
            if (n > 4)
              step_block<8>(x0 + i0, n, D, BS, b * BS, nkeys, kt, vb, key_stride, qf.data(), qraw.data(),
                            static_cast<float>(scale), acc.data(), m.data(), l.data(), pos.data(), sc.data());
            else
              step_block<4>(x0 + i0, n, D, BS, b * BS, nkeys, kt, vb, key_stride, qf.data(), qraw.data(),
                            static_cast<float>(scale), acc.data(), m.data(), l.data(), pos.data(), sc.data());
          }
        }
      }
      for (int64_t kvh = 0; kvh < Hkv; ++kvh)
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t r = i / G, h = kvh * G + i % G, x = kvh * nq_max + i;
          T* dst = op + ((row0 + r) * H + h) * D;
          const float inv = 1.f / l[x];
          for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<T>(acc[x * D + d] * inv);
        }
    }
  });
}

// the step's new keys and values into their cache slots (keys in d-pairs within a block)
template <typename T>
void write_cache(const at::Tensor& k, const at::Tensor& v, at::Tensor& k_cache, at::Tensor& v_cache,
                 const at::Tensor& slots) {
  const int64_t num_tokens = k.size(0), Hkv = k.size(1), D = k.size(2), BS = k_cache.size(3);
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  T* kc = k_cache.data_ptr<T>();
  T* vc = v_cache.data_ptr<T>();
  const int64_t* sp = slots.data_ptr<int64_t>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t block = sp[t] / BS, offset = sp[t] % BS;
    for (int64_t h = 0; h < Hkv; ++h) {
      const T* ksrc = kp + (t * Hkv + h) * D;
      T* kdst = kc + ((block * Hkv + h) * D) * BS + offset * 2;   // [D/2][BS][2]
      for (int64_t d = 0; d < D; ++d) kdst[(d / 2) * BS * 2 + d % 2] = ksrc[d];
    }
    std::copy(vp + t * Hkv * D, vp + (t + 1) * Hkv * D, vc + (block * BS + offset) * Hkv * D);
  }
}

at::Tensor paged_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& k_cache,
                           at::Tensor& v_cache, const at::Tensor& slot_mapping, const at::Tensor& block_tables,
                           const at::Tensor& query_start, const at::Tensor& seq_lens, double scale) {
  TORCH_CHECK(k.is_contiguous() && v.is_contiguous() && slot_mapping.scalar_type() == at::kLong &&
              k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type() &&
              k.size(0) == slot_mapping.size(0) && v.size(0) == slot_mapping.size(0),
              "k and v [T, kv_heads, D] contiguous in q's dtype, one int64 slot per token");
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 5 && v_cache.dim() == 4 && q.is_contiguous() &&
              k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.size(4) == 2,
              "q [T, H, D], k_cache [blocks, kv_heads, D/2, block_size, 2], v_cache [blocks, block_size, kv_heads, D]");
  TORCH_CHECK(k_cache.size(3) % at::vec::Vectorized<float>::size() == 0 &&
              q.size(2) % at::vec::Vectorized<float>::size() == 0 && q.size(2) % 4 == 0,
              "block_size and head_dim must be multiples of the vector width");
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type() && k_cache.scalar_type() == v_cache.scalar_type(),
              "q and the caches must share a dtype");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && query_start.scalar_type() == at::kLong &&
              seq_lens.scalar_type() == at::kLong, "block tables, query starts and lengths are int64");
  auto out = at::empty_like(q);
  auto tables = block_tables.contiguous();
  auto slots = slot_mapping.contiguous();
  switch (q.scalar_type()) {
    case at::kFloat: write_cache<float>(k, v, k_cache, v_cache, slots); break;
    case at::kBFloat16: write_cache<at::BFloat16>(k, v, k_cache, v_cache, slots); break;
    case at::kHalf: write_cache<at::Half>(k, v, k_cache, v_cache, slots); break;
    default: break;   // refused below
  }
  switch (q.scalar_type()) {
    case at::kFloat: attend<float>(q, k_cache, v_cache, tables, query_start, seq_lens, scale, out); break;
    case at::kBFloat16: attend<at::BFloat16>(q, k_cache, v_cache, tables, query_start, seq_lens, scale, out); break;
    case at::kHalf: attend<at::Half>(q, k_cache, v_cache, tables, query_start, seq_lens, scale, out); break;
    default: TORCH_CHECK(false, "paged_attention: float32, bfloat16 or float16, got ", q.scalar_type());
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(infercloud, m) {
  m.def("paged_attention(Tensor q, Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping, "
        "Tensor block_tables, Tensor query_start, Tensor seq_lens, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(infercloud, CPU, m) { m.impl("paged_attention", &paged_attention); }
