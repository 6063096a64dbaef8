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
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;

template <typename T>
void norm_rows(const T* x, const T* w, T* out, int64_t rows, int64_t n, double eps) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * n;
      float sum = 0.f;
      for (int64_t i = 0; i < n; ++i) {
        const float v = static_cast<float>(xr[i]);
        sum += v * v;
      }
      const float inv = 1.f / std::sqrt(sum / static_cast<float>(n) + static_cast<float>(eps));
      T* o = out + r * n;
      for (int64_t i = 0; i < n; ++i)
        o[i] = static_cast<T>(static_cast<float>(w[i]) * static_cast<float>(static_cast<T>(static_cast<float>(xr[i]) * inv)));
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
      for (int64_t i = begin; i < end; ++i) xp[i] = static_cast<T>(static_cast<float>(xp[i]) + static_cast<float>(rp[i]));
    });
  });
  return rms_norm(x, w, eps);
}

inline Vec load(const float* p) { return Vec::loadu(p); }
inline Vec load(const at::BFloat16* p) { Vec v; at::vec::load_to_float(p, v); return v; }
inline Vec load(const at::Half* p) { Vec v; at::vec::load_to_float(p, v); return v; }

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
      std::vector<float> s(n);
      for (int64_t r = begin; r < end; ++r) {
        const T* gate = g + r * 2 * n;
        const T* up = gate + n;
        int64_t i = 0;
        for (; i + Vec::size() <= n; i += Vec::size()) {   // silu in fp32 lanes, as PyTorch's kernel does
          const Vec a = load(gate + i);
          (a / (Vec(1.f) + a.neg().exp())).store(s.data() + i);
        }
        for (; i < n; ++i) s[i] = static_cast<float>(gate[i]) / (1.f + std::exp(-static_cast<float>(gate[i])));
        // silu rounded to the dtype, then the product rounded, as the unfused ops do
        for (i = 0; i < n; ++i)
          o[r * n + i] = static_cast<T>(static_cast<float>(static_cast<T>(s[i])) * static_cast<float>(up[i]));
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
          for (int64_t i = 0; i < half; ++i) {
            // x*cos and rotated*sin each rounded to the dtype, then their sum, as the unfused ops do
            const T a = v[i], b = v[i + half];
            const T a_cos = static_cast<T>(static_cast<float>(a) * static_cast<float>(c[i]));
            const T b_sin = static_cast<T>(-static_cast<float>(b) * static_cast<float>(s[i]));
            const T b_cos = static_cast<T>(static_cast<float>(b) * static_cast<float>(c[i + half]));
            const T a_sin = static_cast<T>(static_cast<float>(a) * static_cast<float>(s[i + half]));
            v[i] = static_cast<T>(static_cast<float>(a_cos) + static_cast<float>(b_sin));
            v[i + half] = static_cast<T>(static_cast<float>(b_cos) + static_cast<float>(a_sin));
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
