// Paged attention on the CPU: the step's new keys and values are written into their cache slots, then every
// query row of the step (decode tokens and prefill chunks alike) attends to its sequence's keys 0..position
// read in place from the paged KV cache, with no gathered copy.
//
// Cache layout, per block: keys [Hkv][D/2][BS][2] (d-pairs: key j's d = 2e and 2e + 1 side by side), values
// [BS/2][Hkv][D][2] (key pairs: keys 2m and 2m + 1 side by side for each d). Both are what the bf16 dot product
// instruction (AVX512_BF16 vdpbf16ps: two bf16 products summed into an fp32 lane) reads: q.k for 16 keys per
// instruction, and p.v for 16 d per instruction.
//
// Algorithm: one work item is (sequence, tile of up to TILE query rows), all heads; the G query heads of a KV
// head share it (GQA), in groups of up to MAXQ query vectors. The item walks its sequence's keys in chunks of
// CHUNK keys (whole blocks) from key 0. Per chunk and group, an online-softmax step (FlashAttention's):
//   1. scores s = scale * q.k for every query of the group against the chunk's keys;
//   2. per query, over the keys it may see (causal: keys <= its position): m' = max(m, max s),
//      p = exp(s - m'), alpha = exp(m - m'), l = l * alpha + sum p;
//   3. acc = acc * alpha + sum p * v (in bf16: p rounded to bf16, products summed in fp32).
// Finally out = acc / l. Chunks of 128 keys rather than single blocks spread each step's reductions and
// rescales over 8x the keys. Loads convert bf16 to fp32 in registers; scores, softmax and sums are fp32.
// Each row's arithmetic depends only on its own query, its keys and the fixed chunk order, never on the tile,
// the group or the batch it is computed in: a sequence gets bitwise the same output however the scheduler
// batches or chunks it. (Keys a query may not see enter a group's sums as p = 0 times a cached value.)
//
// Memory: a decode reads its keys once and does little work per byte, so the next chunk's blocks (or, at the
// end of an item, the next item's first chunk) are prefetched into L2 while this one is computed.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>
#if defined(__AVX512BF16__) && defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#define INFERCLOUD_BF16_DOT 1
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t W = Vec::size();    // fp32 lanes of a vector (16 with AVX-512, 8 with AVX2)
constexpr int64_t KVEC = 16;          // keys per key vector; block_size and head_dim are multiples (kernels.py)
constexpr int64_t TILE = 16;          // query rows per work item
constexpr int64_t CHUNK = 128;        // keys per online-softmax step: whole blocks (one block if it is larger)
constexpr int64_t MAX_BLOCK = 256;    // largest block_size
constexpr int64_t MAXVEC = MAX_BLOCK / KVEC;   // key vectors of a chunk, at most
constexpr int64_t LD = MAXVEC * KVEC;          // a query's row of scores
constexpr int MAXQ = 8;               // query vectors per group

inline Vec load(const float* p) { return Vec::loadu(p); }
inline Vec load(const at::BFloat16* p) { Vec v; at::vec::load_to_float(p, v); return v; }
inline Vec load(const at::Half* p) { Vec v; at::vec::load_to_float(p, v); return v; }

template <typename T>
constexpr bool bf16_dot() {
#ifdef INFERCLOUD_BF16_DOT
  return std::is_same_v<T, at::BFloat16>;
#else
  return false;
#endif
}

// One KV head's keys and values of a chunk, as key vectors of KVEC keys: key vector n's keys at k[n] (its
// d-pair e at k[n] + e * kstride), its key pair P (keys 2P, 2P + 1 of the vector) at v[n] + P * vstride.
template <typename T>
struct Chunk {
  int64_t start = 0, nkeys = 0, nvec = 0;   // first key's position, keys that exist, key vectors
  const T* k[MAXVEC];
  const T* v[MAXVEC];
};

// A work item's query vectors (per thread): the scaled fp32 query (generic path) or the raw one (bf16 dot
// products), the running max m, sum l and accumulator acc of each, its position; a group's scores and p.
template <typename T>
struct Rows {
  std::vector<float> qf, acc, m, l, sc;
  std::vector<int64_t> pos;
  std::vector<const T*> qraw;
  std::vector<int32_t> pb;   // p as bf16 pairs
  explicit Rows(int64_t n, int64_t D)
      : qf(n * D), acc(n * D), m(n), l(n), sc(MAXQ * LD), pos(n), qraw(n), pb(MAXQ * LD / 2) {}
};

#ifdef INFERCLOUD_BF16_DOT
// scores of QG queries against NK key vectors: one fp32 accumulator per (query, key vector), summed over the
// d-pairs in order (so a score does not depend on QG or NK)
template <int QG, int NK>
inline void dot_bf16(const at::BFloat16* const* q, const at::BFloat16* const* kv, int64_t D, int64_t kstride,
                     float scale, float* sc) {
  __m512 a[QG][NK];
  for (int i = 0; i < QG; ++i)
    for (int n = 0; n < NK; ++n) a[i][n] = _mm512_setzero_ps();
  for (int64_t e = 0; e < D / 2; ++e) {
    __m512bh k[NK];
    for (int n = 0; n < NK; ++n) k[n] = (__m512bh)_mm512_loadu_si512(kv[n] + e * kstride);
    for (int i = 0; i < QG; ++i) {
      int32_t pair;
      std::memcpy(&pair, q[i] + 2 * e, 4);
      const __m512bh qb = (__m512bh)_mm512_set1_epi32(pair);
      for (int n = 0; n < NK; ++n) a[i][n] = _mm512_dpbf16_ps(a[i][n], qb, k[n]);
    }
  }
  const __m512 s = _mm512_set1_ps(scale);
  for (int i = 0; i < QG; ++i)
    for (int n = 0; n < NK; ++n) _mm512_storeu_ps(sc + i * LD + n * KVEC, _mm512_mul_ps(a[i][n], s));
}

// acc_i = acc_i * alpha_i + sum over key pairs P < pairs of p_i[P] . v[P] (bf16 pairs, fp32 sums)
template <int QG>
inline void pv_bf16(float* const* acc, const float* alpha, const bool* live, const int32_t* pb,
                    const Chunk<at::BFloat16>& c, int64_t pairs, int64_t vstride, int64_t D) {
  constexpr int64_t PAIRS = KVEC / 2;
  for (int64_t d = 0; d < D; d += 16) {
    __m512 x[QG];
    for (int i = 0; i < QG; ++i) x[i] = _mm512_mul_ps(_mm512_loadu_ps(acc[i] + d), _mm512_set1_ps(alpha[i]));
    for (int64_t P = 0; P < pairs; ++P) {
      const __m512bh vv = (__m512bh)_mm512_loadu_si512(c.v[P / PAIRS] + (P % PAIRS) * vstride + d * 2);
      for (int i = 0; i < QG; ++i)
        x[i] = _mm512_dpbf16_ps(x[i], (__m512bh)_mm512_set1_epi32(pb[i * (LD / 2) + P]), vv);
    }
    for (int i = 0; i < QG; ++i)
      if (live[i]) _mm512_storeu_ps(acc[i] + d, x[i]);
  }
}
#endif

// the same two steps with fp32 FMAs on deinterleaved pairs (no bf16 dot product, or fp32/fp16 caches)
template <int QG, typename T>
inline void dot_generic(const float* const* q, const T* kv, int64_t D, int64_t kstride, float* sc) {
  for (int64_t j = 0; j < KVEC; j += W) {
    Vec a[QG];
    for (int i = 0; i < QG; ++i) a[i] = Vec(0.f);
    for (int64_t e = 0; e < D / 2; ++e) {
      const T* p = kv + e * kstride + 2 * j;
      auto [even, odd] = at::vec::deinterleave2(load(p), load(p + W));   // d = 2e, 2e + 1 of keys j .. j + W - 1
      for (int i = 0; i < QG; ++i) {
        a[i] = at::vec::fmadd(Vec(q[i][2 * e]), even, a[i]);
        a[i] = at::vec::fmadd(Vec(q[i][2 * e + 1]), odd, a[i]);
      }
    }
    for (int i = 0; i < QG; ++i) a[i].store(sc + i * LD + j);
  }
}

template <int QG, typename T>
inline void pv_generic(float* const* acc, const float* alpha, const bool* live, const float* p, const Chunk<T>& c,
                       int64_t pairs, int64_t vstride, int64_t D) {
  constexpr int64_t PAIRS = KVEC / 2;
  for (int64_t d = 0; d < D; d += W) {
    Vec x[QG];
    for (int i = 0; i < QG; ++i) x[i] = Vec::loadu(acc[i] + d) * Vec(alpha[i]);
    for (int64_t P = 0; P < pairs; ++P) {
      const T* vp = c.v[P / PAIRS] + (P % PAIRS) * vstride + d * 2;
      auto [even, odd] = at::vec::deinterleave2(load(vp), load(vp + W));   // keys 2P and 2P + 1 at d .. d + W - 1
      for (int i = 0; i < QG; ++i) {
        x[i] = at::vec::fmadd(Vec(p[i * LD + 2 * P]), even, x[i]);
        x[i] = at::vec::fmadd(Vec(p[i * LD + 2 * P + 1]), odd, x[i]);
      }
    }
    for (int i = 0; i < QG; ++i)
      if (live[i]) x[i].store(acc[i] + d);
  }
}

// step 2 for one query: row = exp(s - m') over its first `visible` scores, 0 past them; returns alpha
inline float softmax_step(float* row, int64_t visible, int64_t width, float& m, float& l) {
  const Vec lane = Vec::arange(0.f, 1.f), minus_inf(-std::numeric_limits<float>::infinity());
  Vec mv(m);
  for (int64_t j = 0; j < width; j += W) {
    const Vec seen = lane + Vec(static_cast<float>(j)) < Vec(static_cast<float>(visible));
    mv = at::vec::maximum(mv, Vec::blendv(minus_inf, Vec::loadu(row + j), seen));
  }
  const float mx = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return at::vec::maximum(x, y); }, mv);
  Vec sv(0.f);
  for (int64_t j = 0; j < width; j += W) {
    const Vec seen = lane + Vec(static_cast<float>(j)) < Vec(static_cast<float>(visible));
    const Vec e = Vec::blendv(Vec(0.f), (Vec::loadu(row + j) - Vec(mx)).exp_u20(), seen);
    e.store(row + j);
    sv = sv + e;
  }
  const float sum = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, sv);
  const float alpha = std::exp(m - mx);
  m = mx;
  l = l * alpha + sum;
  return alpha;
}

// One online-softmax step of n <= QG query vectors (from x0) over one KV head's chunk. Slots past n compute a
// copy of query x0 and store nothing.
template <int QG, typename T>
void group_step(Rows<T>& r, int64_t x0, int64_t n, const Chunk<T>& c, int64_t D, int64_t kstride, int64_t vstride,
                float scale) {
  const float* qv[QG];
  const T* qr[QG];
  float* av[QG];
  int64_t visible[QG];
  float alpha[QG];
  bool live[QG];
  int64_t most = 0;
  for (int i = 0; i < QG; ++i) {
    const int64_t k = i < n ? x0 + i : x0;
    qv[i] = r.qf.data() + k * D;
    qr[i] = r.qraw[k];
    av[i] = r.acc.data() + k * D;
    visible[i] = i < n ? std::clamp<int64_t>(r.pos[k] - c.start + 1, 0, c.nkeys) : 0;
    live[i] = visible[i] > 0;
    most = std::max(most, visible[i]);
  }
  if (most == 0) return;
  float* sc = r.sc.data();
  if constexpr (bf16_dot<T>()) {
#ifdef INFERCLOUD_BF16_DOT
    constexpr int NK = QG > 4 ? 2 : 4;   // accumulators: QG * NK <= 16
    int64_t v = 0;
    for (; v + NK <= c.nvec; v += NK) dot_bf16<QG, NK>(qr, c.k + v, D, kstride, scale, sc + v * KVEC);
    for (; v < c.nvec; ++v) dot_bf16<QG, 1>(qr, c.k + v, D, kstride, scale, sc + v * KVEC);
#endif
  } else {
    for (int64_t v = 0; v < c.nvec; ++v) dot_generic<QG>(qv, c.k[v], D, kstride, sc + v * KVEC);
  }
  const int64_t width = c.nvec * KVEC;
  for (int i = 0; i < QG; ++i)
    alpha[i] = live[i] ? softmax_step(sc + i * LD, visible[i], width, r.m[x0 + i], r.l[x0 + i]) : 0.f;
  const int64_t pairs = (most + 1) / 2;
  if constexpr (bf16_dot<T>()) {
#ifdef INFERCLOUD_BF16_DOT
    for (int i = 0; i < QG; ++i) {
      if (!live[i]) continue;
      for (int64_t j = 0; j < width; j += 16)   // 16 fp32 -> 16 bf16 = 8 pairs, key 2P in the low half
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(r.pb.data() + i * (LD / 2) + j / 2),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(sc + i * LD + j)));
    }
    pv_bf16<QG>(av, alpha, live, r.pb.data(), c, pairs, vstride, D);
#endif
  } else {
    pv_generic<QG>(av, alpha, live, sc, c, pairs, vstride, D);
  }
}

template <typename T>
inline void step(int64_t n, Rows<T>& r, int64_t x0, const Chunk<T>& c, int64_t D, int64_t kstride, int64_t vstride,
                 float scale) {
  switch (n) {
    case 1: group_step<1>(r, x0, n, c, D, kstride, vstride, scale); break;
    case 2: group_step<2>(r, x0, n, c, D, kstride, vstride, scale); break;
    case 3: group_step<3>(r, x0, n, c, D, kstride, vstride, scale); break;
    case 4: group_step<4>(r, x0, n, c, D, kstride, vstride, scale); break;
    case 5: case 6: group_step<6>(r, x0, n, c, D, kstride, vstride, scale); break;
    default: group_step<8>(r, x0, n, c, D, kstride, vstride, scale); break;
  }
}

template <typename T>
void attend(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& tables,
            const at::Tensor& query_start, const at::Tensor& seq_lens, double scale, at::Tensor& out) {
  // q [T, H, D]; k_cache [blocks, Hkv, D/2, BS, 2]; v_cache [blocks, BS/2, Hkv, D, 2]
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
  const int64_t block_stride = BS * Hkv * D, kstride = 2 * BS, vstride = 2 * Hkv * D;
  const int64_t chunk_blocks = std::max<int64_t>(1, CHUNK / BS);
  const int64_t block_bytes = block_stride * static_cast<int64_t>(sizeof(T));

  std::vector<std::pair<int64_t, int64_t>> items;   // (sequence, first row of the tile)
  for (int64_t s = 0; s < num_seqs; ++s)
    for (int64_t r = qs[s]; r < qs[s + 1]; r += TILE) items.emplace_back(s, r);
  const int64_t num_work = static_cast<int64_t>(items.size());
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), num_work));
  auto last_pos = [&](int64_t w) {   // the position of the work item's last row
    const auto [s, row0] = items[w];
    return lens[s] - (qs[s + 1] - std::min(row0 + TILE, qs[s + 1])) - 1;
  };
  // part `part` of `parts` of the bytes of a chunk's blocks (first_block.., up to end_pos), asked for into L2:
  // spread over the current chunk's work so the requests do not all wait for line buffers at once
  auto prefetch = [&](int64_t s, int64_t first_block, int64_t end_pos, int64_t part, int64_t parts) {
    const int64_t lo = block_bytes * part / parts / 64 * 64, hi = block_bytes * (part + 1) / parts;
    for (int64_t b = first_block; b < first_block + chunk_blocks && b * BS <= end_pos; ++b) {
      const int64_t phys = table[s * max_blocks + b];
      const char* kb = reinterpret_cast<const char*>(kp + phys * block_stride);
      const char* vb = reinterpret_cast<const char*>(vp + phys * block_stride);
      for (int64_t off = lo; off < hi; off += 64) {
        __builtin_prefetch(kb + off, 0, 3);
        __builtin_prefetch(vb + off, 0, 3);
      }
    }
  };

  // thread t takes work t, t + threads, ...: tiles late in a prompt (more keys) spread over all threads
  at::parallel_for(0, threads, 1, [&](int64_t t_begin, int64_t t_end) {
    const int64_t nq_max = TILE * G;   // query vectors of one KV head
    Rows<T> r(Hkv * nq_max, D);
    Chunk<T> c;
    for (int64_t t = t_begin; t < t_end; ++t)
    for (int64_t w = t; w < num_work; w += threads) {
      const auto [s, row0] = items[w];
      const int64_t rows = std::min(TILE, qs[s + 1] - row0), nq = rows * G;
      const int64_t first_pos = lens[s] - (qs[s + 1] - row0), end_pos = first_pos + rows - 1;
      for (int64_t kvh = 0; kvh < Hkv; ++kvh)
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t row = i / G, h = kvh * G + i % G, x = kvh * nq_max + i;
          const T* src = qp + ((row0 + row) * H + h) * D;
          if constexpr (!bf16_dot<T>())
            for (int64_t d = 0; d < D; ++d) r.qf[x * D + d] = static_cast<float>(src[d]) * static_cast<float>(scale);
          r.qraw[x] = src;
          r.pos[x] = first_pos + row;
          r.m[x] = -std::numeric_limits<float>::infinity();
          r.l[x] = 0.f;
          std::fill(r.acc.begin() + x * D, r.acc.begin() + (x + 1) * D, 0.f);
        }
      if (w < threads) prefetch(s, 0, end_pos, 0, 1);   // the thread's first item; later ones were asked for earlier
      for (int64_t b0 = 0; b0 * BS <= end_pos; b0 += chunk_blocks) {
        // what comes after this chunk: the next chunk, or the thread's next item's first chunk
        int64_t next_s = s, next_block = b0 + chunk_blocks, next_end = end_pos;
        if (next_block * BS > end_pos) {
          next_s = w + threads < num_work ? items[w + threads].first : -1;
          next_block = 0;
          next_end = next_s < 0 ? -1 : last_pos(w + threads);
        }
        c.start = b0 * BS;
        c.nkeys = std::min(chunk_blocks * BS, end_pos + 1 - c.start);
        c.nvec = (c.nkeys + KVEC - 1) / KVEC;
        for (int64_t kvh = 0; kvh < Hkv; ++kvh) {
          if (next_s >= 0) prefetch(next_s, next_block, next_end, kvh, Hkv);
          for (int64_t v = 0; v < c.nvec; ++v) {
            const int64_t key = v * KVEC, phys = table[s * max_blocks + b0 + key / BS], j0 = key % BS;
            c.k[v] = kp + phys * block_stride + kvh * D * BS + j0 * 2;
            c.v[v] = vp + phys * block_stride + (j0 / 2) * vstride + kvh * D * 2;
          }
          const int64_t x0 = kvh * nq_max;
          for (int64_t i0 = 0; i0 < nq; i0 += MAXQ)
            step<T>(std::min<int64_t>(MAXQ, nq - i0), r, x0 + i0, c, D, kstride, vstride, static_cast<float>(scale));
        }
      }
      for (int64_t kvh = 0; kvh < Hkv; ++kvh)
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t row = i / G, h = kvh * G + i % G, x = kvh * nq_max + i;
          T* dst = op + ((row0 + row) * H + h) * D;
          const float inv = 1.f / r.l[x];
          for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<T>(r.acc[x * D + d] * inv);
        }
    }
  });
}

// the step's new keys and values into their cache slots (keys in d-pairs, values in key pairs)
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
      const T* vsrc = vp + (t * Hkv + h) * D;
      T* kdst = kc + ((block * Hkv + h) * D) * BS + offset * 2;                        // [D/2][BS][2]
      T* vdst = vc + block * BS * Hkv * D + (((offset / 2) * Hkv + h) * D) * 2 + offset % 2;   // [BS/2][Hkv][D][2]
      for (int64_t d = 0; d < D; ++d) {
        kdst[(d / 2) * BS * 2 + d % 2] = ksrc[d];
        vdst[d * 2] = vsrc[d];
      }
    }
  }
}

at::Tensor paged_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& k_cache,
                           at::Tensor& v_cache, const at::Tensor& slot_mapping, const at::Tensor& block_tables,
                           const at::Tensor& query_start, const at::Tensor& seq_lens, double scale) {
  TORCH_CHECK(k.is_contiguous() && v.is_contiguous() && slot_mapping.scalar_type() == at::kLong &&
              k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type() &&
              k.size(0) == slot_mapping.size(0) && v.size(0) == slot_mapping.size(0),
              "k and v [T, kv_heads, D] contiguous in q's dtype, one int64 slot per token");
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 5 && v_cache.dim() == 5 && q.is_contiguous() &&
              k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.size(4) == 2 && v_cache.size(4) == 2 &&
              v_cache.size(1) * 2 == k_cache.size(3),
              "q [T, H, D], k_cache [blocks, kv_heads, D/2, block_size, 2], "
              "v_cache [blocks, block_size/2, kv_heads, D, 2]");
  TORCH_CHECK(k_cache.size(3) % KVEC == 0 && k_cache.size(3) <= MAX_BLOCK && q.size(2) % KVEC == 0,
              "block_size must be a multiple of 16 up to 256, head_dim a multiple of 16");
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
