// Fused elementwise steps of a decoder layer on the CPU, one pass over memory each instead of the 5-8 PyTorch
// ops (and their intermediate tensors) they replace; the arithmetic is HF's, in fp32:
//   rms_norm(x, w, eps):          w * to_dtype(x * rsqrt(mean(x^2) + eps))
//   add_rms_norm(x, r, w, eps):   x += r (in place, in x's dtype), then rms_norm(x, w, eps)
//   silu_and_mul(gu):             silu(g) * u for gu = [g | u] along the last dim
//   rope_(x, cos, sin):           x = x * cos + rotate_half(x) * sin, in place; x [T, heads, D], cos/sin [T, D]
// Rows are independent, so a row's result never depends on the batch.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <type_traits>
#include <vector>

// no multiply-add fused behind the code's back (GCC contracts by default): fp32 rounds as PyTorch's ops do
#pragma GCC optimize("fp-contract=off")

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t W = Vec::size();

// Two fp32 vectors (2W values) from / to T, and rounded to T and back (what storing in T and loading does):
// the vector loops below keep the unfused ops' roundings.
template <typename T>
inline void load2(const T* p, Vec& a, Vec& b) {
  if constexpr (std::is_same_v<T, float>) {
    a = Vec::loadu(p);
    b = Vec::loadu(p + W);
  } else {
    std::tie(a, b) = at::vec::convert_to_float<T>(at::vec::Vectorized<T>::loadu(p));
  }
}

template <typename T>
inline void store2(T* p, const Vec& a, const Vec& b) {
  if constexpr (std::is_same_v<T, float>) {
    a.store(p);
    b.store(p + W);
  } else {
    at::vec::convert_from_float<T>(a, b).store(p);
  }
}

template <typename T>
inline void round2(Vec& a, Vec& b) {
  if constexpr (!std::is_same_v<T, float>) std::tie(a, b) = at::vec::convert_to_float<T>(at::vec::convert_from_float<T>(a, b));
}

template <typename T>
inline float as_t(float x) { return static_cast<float>(static_cast<T>(x)); }

template <typename T>
void norm_rows(const T* x, const T* w, T* out, int64_t rows, int64_t n, double eps) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * n;
      T* o = out + r * n;
      Vec acc(0.f);
      int64_t i = 0;
      for (; i + 2 * W <= n; i += 2 * W) {
        Vec a, b;
        load2(xr + i, a, b);
        acc = at::vec::fmadd(a, a, acc);
        acc = at::vec::fmadd(b, b, acc);
      }
      float sum = at::vec::vec_reduce_all<float>([](Vec& p, Vec& q) { return p + q; }, acc);
      for (; i < n; ++i) sum += static_cast<float>(xr[i]) * static_cast<float>(xr[i]);
      const float inv = 1.f / std::sqrt(sum / static_cast<float>(n) + static_cast<float>(eps));
      for (i = 0; i + 2 * W <= n; i += 2 * W) {   // w * to_dtype(x * inv)
        Vec a, b, wa, wb;
        load2(xr + i, a, b);
        load2(w + i, wa, wb);
        a = a * Vec(inv);
        b = b * Vec(inv);
        round2<T>(a, b);
        store2(o + i, wa * a, wb * b);
      }
      for (; i < n; ++i) o[i] = static_cast<T>(static_cast<float>(w[i]) * as_t<T>(static_cast<float>(xr[i]) * inv));
    }
  });
}

template <typename F>
void dispatch(at::ScalarType t, const char* name, F&& f) {
  switch (t) {
    case at::kFloat: f(float{}); break;
    case at::kBFloat16: f(at::BFloat16{}); break;
    case at::kHalf: f(at::Half{}); break;
    default: TORCH_CHECK(false, name, ": float32, bfloat16 or float16, got ", t);
  }
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous() && x.scalar_type() == w.scalar_type() &&
              x.size(-1) == w.numel(), "rms_norm: contiguous x [.., n] and weight [n] of one dtype");
  auto out = at::empty_like(x);
  const int64_t n = x.size(-1);
  dispatch(x.scalar_type(), "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    norm_rows<T>(x.data_ptr<T>(), w.data_ptr<T>(), out.data_ptr<T>(), x.numel() / n, n, eps);
  });
  return out;
}

at::Tensor add_rms_norm(at::Tensor& x, const at::Tensor& residual, const at::Tensor& w, double eps) {
  TORCH_CHECK(x.is_contiguous() && residual.is_contiguous() && x.sizes() == residual.sizes() &&
              x.scalar_type() == residual.scalar_type(), "add_rms_norm: x and residual alike, contiguous");
  dispatch(x.scalar_type(), "add_rms_norm", [&](auto tag) {
    using T = decltype(tag);
    T* xp = x.data_ptr<T>();
    const T* rp = residual.data_ptr<T>();
    at::parallel_for(0, x.numel(), 4096, [&](int64_t begin, int64_t end) {
      int64_t i = begin;
      for (; i + 2 * W <= end; i += 2 * W) {
        Vec a, b, ra, rb;
        load2(xp + i, a, b);
        load2(rp + i, ra, rb);
        store2(xp + i, a + ra, b + rb);
      }
      for (; i < end; ++i) xp[i] = static_cast<T>(static_cast<float>(xp[i]) + static_cast<float>(rp[i]));
    });
  });
  return rms_norm(x, w, eps);
}

at::Tensor silu_and_mul(const at::Tensor& gu) {
  TORCH_CHECK(gu.is_contiguous() && gu.size(-1) % 2 == 0, "silu_and_mul: contiguous [.., 2n]");
  const int64_t n = gu.size(-1) / 2, rows = gu.numel() / (2 * n);
  auto sizes = gu.sizes().vec();
  sizes.back() = n;
  auto out = at::empty(sizes, gu.options());
  dispatch(gu.scalar_type(), "silu_and_mul", [&](auto tag) {
    using T = decltype(tag);
    const T* g = gu.data_ptr<T>();
    T* o = out.data_ptr<T>();
    at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* gate = g + r * 2 * n;
        const T* up = gate + n;
        T* orow = o + r * n;
        int64_t i = 0;
        // silu in fp32 lanes (as PyTorch's kernel does), rounded to the dtype, then the product rounded
        for (; i + 2 * W <= n; i += 2 * W) {
          Vec a, b, ua, ub;
          load2(gate + i, a, b);
          load2(up + i, ua, ub);
          a = a / (Vec(1.f) + a.neg().exp());
          b = b / (Vec(1.f) + b.neg().exp());
          round2<T>(a, b);
          store2(orow + i, a * ua, b * ub);
        }
        for (; i < n; ++i) {
          const float x = static_cast<float>(gate[i]);
          orow[i] = static_cast<T>(as_t<T>(x / (1.f + std::exp(-x))) * static_cast<float>(up[i]));
        }
      }
    });
  });
  return out;
}

at::Tensor& rope_(at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1 && cos.is_contiguous() && sin.is_contiguous() &&
              cos.size(0) == x.size(0) && cos.size(-1) == x.size(2) && x.scalar_type() == cos.scalar_type(),
              "rope_: x [T, heads, D] (rows may be strided), cos/sin [T, D] in x's dtype");
  const int64_t T_ = x.size(0), H = x.size(1), D = x.size(2), half = D / 2;
  const int64_t s0 = x.stride(0), s1 = x.stride(1);
  dispatch(x.scalar_type(), "rope_", [&](auto tag) {
    using T = decltype(tag);
    T* xp = x.data_ptr<T>();
    const T* cp = cos.data_ptr<T>();
    const T* sp = sin.data_ptr<T>();
    at::parallel_for(0, T_, 4, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t)
        for (int64_t h = 0; h < H; ++h) {
          T* v = xp + t * s0 + h * s1;
          const T* c = cp + t * D;
          const T* s = sp + t * D;
          int64_t i = 0;
          // x*cos and rotated*sin each rounded to the dtype, then their sum, as the unfused ops do
          for (; i + 2 * W <= half; i += 2 * W) {
            Vec a0, a1, b0, b1, cl0, cl1, ch0, ch1, sl0, sl1, sh0, sh1;
            load2(v + i, a0, a1);
            load2(v + i + half, b0, b1);
            load2(c + i, cl0, cl1);
            load2(c + i + half, ch0, ch1);
            load2(s + i, sl0, sl1);
            load2(s + i + half, sh0, sh1);
            Vec ac0 = a0 * cl0, ac1 = a1 * cl1, bs0 = b0.neg() * sl0, bs1 = b1.neg() * sl1;
            Vec bc0 = b0 * ch0, bc1 = b1 * ch1, as0 = a0 * sh0, as1 = a1 * sh1;
            round2<T>(ac0, ac1);
            round2<T>(bs0, bs1);
            round2<T>(bc0, bc1);
            round2<T>(as0, as1);
            store2(v + i, ac0 + bs0, ac1 + bs1);
            store2(v + i + half, bc0 + as0, bc1 + as1);
          }
          for (; i < half; ++i) {
            const float a = static_cast<float>(v[i]), b = static_cast<float>(v[i + half]);
            const float a_cos = as_t<T>(a * static_cast<float>(c[i])), b_sin = as_t<T>(-b * static_cast<float>(s[i]));
            const float b_cos = as_t<T>(b * static_cast<float>(c[i + half]));
            const float a_sin = as_t<T>(a * static_cast<float>(s[i + half]));
            v[i] = static_cast<T>(a_cos + b_sin);
            v[i + half] = static_cast<T>(b_cos + a_sin);
          }
        }
    });
  });
  return x;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(infercloud, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("add_rms_norm(Tensor(a!) x, Tensor residual, Tensor weight, float eps) -> Tensor");
  m.def("silu_and_mul(Tensor gate_up) -> Tensor");
  m.def("rope_(Tensor(a!) x, Tensor cos, Tensor sin) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(infercloud, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("silu_and_mul", &silu_and_mul);
  m.impl("rope_", &rope_);
}
