// int8 linear layers for small batches on CPUs with AVX512-VNNI: y = x @ (q * scale).T with int8 weights q and
// activations quantized to int8 on the fly, multiplied by VNNI's 4-way int8 dot products (vpdpbusd).
//
// Algorithm (per call, x [M, K] with M small: decode):
//   1. Each row of x is quantized in groups of GROUP = 64 values along K: s = max|x_g| / 127,
//      xq = round(x_g / s) + 128 (unsigned bytes, as vpdpbusd takes them).
//   2. For each block of 16 output channels and each row: per group, an int32 sum of xq . q over the group's
//      64 values (16 vpdpbusd, each 4 values of K for the 16 channels), minus 128 * sum(q over the group)
//      (precomputed at load: `comp`), converted to fp32 and added times s into an fp32 accumulator;
//      finally times the channel's scale. So y = sum_g s_g * (xq_g - 128) . q_g * scale.
// Weights are packed at load as [N/16][K/4][16][4] (16 channels x 4 values of K per 64-byte line: one load per
// vpdpbusd), so a block of channels streams its weights in order; blocks are split over the threads.
// Activation groups of 64 keep quantization error near llama.cpp's Q8_0 (groups of 32); measured against
// fp32 by bench/quality.py. A decode step reads each weight byte once for all M rows (up to 6 rows at a time).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define INFERCLOUD_VNNI 1
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t GROUP = 64;   // activation values per quantization scale
constexpr int64_t NB = 16;      // output channels per block (one vector of int32/fp32 lanes)
constexpr int MR = 6;           // rows computed together (each weight line loaded once for them)
constexpr int64_t NBLK = 2;     // blocks computed together (each activation broadcast used for them)

#ifdef INFERCLOUD_VNNI
template <typename T>
inline __m512 load16(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return _mm512_loadu_ps(p);
  } else {   // bf16: the upper half of an fp32
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// step 1 for one row: xq [K] unsigned bytes, xs [K / GROUP] scales
template <typename T>
void quantize_row(const T* x, int64_t K, uint8_t* xq, float* xs) {
  for (int64_t g = 0; g < K / GROUP; ++g) {
    __m512 v[GROUP / 16];
    __m512 amax = _mm512_setzero_ps();
    for (int j = 0; j < GROUP / 16; ++j) {
      v[j] = load16(x + g * GROUP + j * 16);
      amax = _mm512_max_ps(amax, _mm512_abs_ps(v[j]));
    }
    const float m = _mm512_reduce_max_ps(amax);
    const float s = m > 0.f ? m / 127.f : 1.f;
    xs[g] = s;
    const __m512 inv = _mm512_set1_ps(m > 0.f ? 127.f / m : 0.f);
    for (int j = 0; j < GROUP / 16; ++j) {
      const __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(v[j], inv));   // round to nearest even, |r| <= 127
      _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + g * GROUP + j * 16),
                       _mm512_cvtepi32_epi8(_mm512_add_epi32(r, _mm512_set1_epi32(128))));
    }
  }
}

template <typename T>
inline void store16(T* y, __m512 v) {
  if constexpr (std::is_same_v<T, float>) {
    _mm512_storeu_ps(y, v);
  } else {   // fp32 -> bf16, round to nearest even (as PyTorch converts)
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y), _mm512_cvtepi32_epi16(rounded));
  }
}

// step 2 for R rows and B blocks of 16 channels (block b's weights at w + b * wstride): each weight line is
// loaded once for the R rows, each broadcast of 4 activations used for the B blocks; C int32 chains per
// (row, block) so that at least 8 dot products are in flight
template <int R, int B, typename T>
void block_rows(const uint8_t* xq, const float* xs, int64_t K, const int8_t* w, int64_t wstride, const int32_t* comp,
                int64_t N, const float* scale, T* y) {
  constexpr int C = R * B >= 8 ? 1 : 2;
  const int64_t groups = K / GROUP;
  __m512 acc[R][B];
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < B; ++b) acc[r][b] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512i part[R][B][C];
    for (int r = 0; r < R; ++r)
      for (int b = 0; b < B; ++b)
        for (int c = 0; c < C; ++c) part[r][b][c] = _mm512_setzero_si512();
    const int8_t* wg = w + g * GROUP * NB;   // GROUP / 4 lines of 64 bytes per block
    for (int64_t k4 = 0; k4 < GROUP / 4; k4 += C) {
      for (int c = 0; c < C; ++c) {
        __m512i wv[B];
        for (int b = 0; b < B; ++b) wv[b] = _mm512_loadu_si512(wg + b * wstride + (k4 + c) * 64);
        for (int r = 0; r < R; ++r) {
          int32_t a;
          std::memcpy(&a, xq + r * K + g * GROUP + (k4 + c) * 4, 4);
          const __m512i av = _mm512_set1_epi32(a);
          for (int b = 0; b < B; ++b) part[r][b][c] = _mm512_dpbusd_epi32(part[r][b][c], av, wv[b]);
        }
      }
    }
    for (int b = 0; b < B; ++b) {
      const __m512i cb = _mm512_loadu_si512(comp + g * N + b * NB);
      for (int r = 0; r < R; ++r) {
        __m512i sum = part[r][b][0];
        if constexpr (C == 2) sum = _mm512_add_epi32(sum, part[r][b][1]);
        acc[r][b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sum, cb)), _mm512_set1_ps(xs[r * groups + g]),
                                    acc[r][b]);
      }
    }
  }
  for (int b = 0; b < B; ++b) {
    const __m512 s = _mm512_loadu_ps(scale + b * NB);
    for (int r = 0; r < R; ++r) store16(y + r * N + b * NB, _mm512_mul_ps(acc[r][b], s));
  }
}

template <int B, typename T>
void rows_of_blocks(int64_t M, const uint8_t* xq, const float* xs, int64_t K, const int8_t* w, const int32_t* comp,
                    int64_t N, const float* scale, T* y) {
  const int64_t groups = K / GROUP, ws = K * NB;
  for (int64_t m = 0; m < M; m += MR) {
    const uint8_t* xr = xq + m * K;
    const float* sr = xs + m * groups;
    T* yr = y + m * N;
    switch (std::min<int64_t>(MR, M - m)) {
      case 1: block_rows<1, B>(xr, sr, K, w, ws, comp, N, scale, yr); break;
      case 2: block_rows<2, B>(xr, sr, K, w, ws, comp, N, scale, yr); break;
      case 3: block_rows<3, B>(xr, sr, K, w, ws, comp, N, scale, yr); break;
      case 4: block_rows<4, B>(xr, sr, K, w, ws, comp, N, scale, yr); break;
      case 5: block_rows<5, B>(xr, sr, K, w, ws, comp, N, scale, yr); break;
      default: block_rows<6, B>(xr, sr, K, w, ws, comp, N, scale, yr); break;
    }
  }
}

template <typename T>
void int8_linear_impl(const at::Tensor& x, const at::Tensor& w, const at::Tensor& comp, const at::Tensor& scale,
                      at::Tensor& y) {
  const int64_t M = x.size(0), K = x.size(1), N = y.size(1), groups = K / GROUP;
  std::vector<uint8_t> xq(M * K);
  std::vector<float> xs(M * groups);
  const T* xp = x.data_ptr<T>();
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) quantize_row(xp + m * K, K, xq.data() + m * K, xs.data() + m * groups);
  });
  const int8_t* wp = w.data_ptr<int8_t>();
  const int32_t* cp = comp.data_ptr<int32_t>();
  const float* sp = scale.data_ptr<float>();
  T* yp = y.data_ptr<T>();
  // threads take pairs of blocks (a weight line per row is reused for two blocks' activations broadcast)
  const int64_t blocks = N / NB;
  at::parallel_for(0, (blocks + NBLK - 1) / NBLK, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t nb = p * NBLK;
      const int8_t* wb = wp + nb * K * NB;
      if (nb + NBLK <= blocks)
        rows_of_blocks<NBLK>(M, xq.data(), xs.data(), K, wb, cp + nb * NB, N, sp + nb * NB, yp + nb * NB);
      else
        for (int64_t b = nb; b < blocks; ++b)
          rows_of_blocks<1>(M, xq.data(), xs.data(), K, wp + b * K * NB, cp + b * NB, N, sp + b * NB, yp + b * NB);
    }
  });
}
#endif

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& comp, const at::Tensor& scale) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat),
              "int8_linear: x [M, K] contiguous, bfloat16 or float32");
  TORCH_CHECK(w.dim() == 4 && w.is_contiguous() && w.scalar_type() == at::kChar && w.size(2) == NB && w.size(3) == 4 &&
              w.size(1) * 4 == x.size(1) && x.size(1) % GROUP == 0,
              "int8_linear: w int8 [N/16, K/4, 16, 4], K a multiple of 64");
  const int64_t N = w.size(0) * NB;
  TORCH_CHECK(comp.scalar_type() == at::kInt && comp.is_contiguous() && comp.size(0) * GROUP == x.size(1) &&
              comp.size(1) == N && scale.scalar_type() == at::kFloat && scale.numel() == N,
              "int8_linear: comp int32 [K/64, N], scale float32 [N]");
  auto y = at::empty({x.size(0), N}, x.options());
#ifdef INFERCLOUD_VNNI
  if (x.scalar_type() == at::kFloat)
    int8_linear_impl<float>(x, w, comp, scale, y);
  else
    int8_linear_impl<at::BFloat16>(x, w, comp, scale, y);
#else
  TORCH_CHECK(false, "int8_linear: built for a CPU without AVX512-VNNI");
#endif
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(infercloud, m) {
  m.def("int8_linear(Tensor x, Tensor w, Tensor comp, Tensor scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(infercloud, CPU, m) { m.impl("int8_linear", &int8_linear); }
