// CUDA kernels of 2-D neighbourhood attention with NATTEN 0.14 semantics (dense.ops.reference.na2d_qk,
// na2d_av). The schemas are defined in ops/cpu/neighborhood_attn_cpu.cpp.
//
// Mirrors the CPU file primitive by primitive (window_dot, window_sum, inverse_sum, rpb_row_partials,
// rpb_reduce) with the same index math from ops/neighborhood_attn.h; where a CPU task handles one map row
// (batch, head, y), a CUDA thread handles one output element. Every output element has exactly one writer
// (grad_key / grad_value gather over each key's inverse neighbourhood, grad_rpb is per-row partial sums
// reduced in a fixed order), so no atomics are needed and results are deterministic. Sums are kept in the
// op-math type (float for half / bfloat16) and cast once when stored.
#include <algorithm>
#include <optional>
#include <tuple>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "neighborhood_attn.h"

namespace dense {
namespace {

using na::Geometry;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t{1} << 16;  // larger problems are covered by the grid-stride loops

int64_t blocks_for(int64_t n) {
  return std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks);
}

// Grid-stride loop over [0, n) with 64-bit indices (maps can exceed 2^31 elements).
#define NA_CUDA_LOOP(index, n)                                                                  \
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < (n); \
       index += static_cast<int64_t>(blockDim.x) * gridDim.x)

// out[bh, y, x, ab] = <a[bh, y, x], b[bh, key(y, x, ab)]> + rpb[head, bias(y, x, ab)] (rpb may be null).
// One thread per output logit.
template <typename scalar_t>
__global__ void window_dot_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                                  const scalar_t* __restrict__ rpb, scalar_t* __restrict__ out, Geometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_size, W = g.width, D = g.dim, side = g.bias_side();
  NA_CUDA_LOOP(index, g.rows() * W * g.window()) {
    const int64_t ab = index % g.window(), query = index / g.window();  // query = row * W + x
    const int64_t i = ab / K, j = ab % K;
    const int64_t x = query % W, row = query / W;
    const int64_t bh = row / g.height, y = row % g.height;
    const int64_t y_start = na::window_start(y, g.height, K, g.dilation);
    const int64_t x_start = na::window_start(x, W, K, g.dilation);
    const int64_t r = y_start + i * g.dilation, c = x_start + j * g.dilation;
    const scalar_t* features = a + query * D;
    const scalar_t* key = b + ((bh * g.height + r) * W + c) * D;
    acc_t logit = 0;
    for (int64_t k = 0; k < D; ++k) {
      logit += static_cast<acc_t>(features[k]) * static_cast<acc_t>(key[k]);
    }
    if (rpb != nullptr) {
      const int64_t er = na::bias_start(y, y_start, K, g.dilation) + i;
      const int64_t ec = na::bias_start(x, x_start, K, g.dilation) + j;
      logit += static_cast<acc_t>(rpb[((bh % g.heads) * side + er) * side + ec]);
    }
    out[index] = static_cast<scalar_t>(logit);
  }
}

// out[bh, y, x] = sum_ab p[bh, y, x, ab] * b[bh, key(y, x, ab)]. One thread per output element (query, d),
// so neighbouring threads read neighbouring channels of each key.
template <typename scalar_t>
__global__ void window_sum_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ b,
                                  scalar_t* __restrict__ out, Geometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_size, W = g.width, D = g.dim;
  NA_CUDA_LOOP(index, g.rows() * W * D) {
    const int64_t d = index % D, query = index / D;  // query = row * W + x
    const int64_t x = query % W, row = query / W;
    const int64_t bh = row / g.height, y = row % g.height;
    const int64_t y_start = na::window_start(y, g.height, K, g.dilation);
    const int64_t x_start = na::window_start(x, W, K, g.dilation);
    const scalar_t* weights = p + query * g.window();
    const scalar_t* map = b + bh * g.height * W * D + d;
    acc_t acc = 0;
    for (int64_t i = 0; i < K; ++i) {
      const int64_t r = y_start + i * g.dilation;
      for (int64_t j = 0; j < K; ++j) {
        const int64_t c = x_start + j * g.dilation;
        acc += static_cast<acc_t>(weights[i * K + j]) * static_cast<acc_t>(map[(r * W + c) * D]);
      }
    }
    out[index] = static_cast<scalar_t>(acc);
  }
}

// out[bh, r, c] = sum over the queries (y, x) whose window holds key (r, c) at position ab of
// p[bh, y, x, ab] * a[bh, y, x]: the transpose of window_sum, as a gather so each key has one writer.
// One thread per output element (key, d).
template <typename scalar_t>
__global__ void inverse_sum_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ a,
                                   scalar_t* __restrict__ out, Geometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_size, W = g.width, D = g.dim;
  NA_CUDA_LOOP(index, g.rows() * W * D) {
    const int64_t d = index % D, key = index / D;  // key = row * W + c
    const int64_t c = key % W, row = key / W;
    const int64_t bh = row / g.height, r = row % g.height;
    const int64_t map_row = bh * g.height;  // row index of (bh, y = 0)
    const na::InverseRange ys = na::inverse_window(r, g.height, K, g.dilation);
    const na::InverseRange xs = na::inverse_window(c, W, K, g.dilation);
    acc_t acc = 0;
    for (int64_t m = 0; m < ys.count; ++m) {
      const int64_t y = ys.first + m * g.dilation;
      const int64_t i = (r - na::window_start(y, g.height, K, g.dilation)) / g.dilation;
      for (int64_t n = 0; n < xs.count; ++n) {
        const int64_t x = xs.first + n * g.dilation;
        const int64_t j = (c - na::window_start(x, W, K, g.dilation)) / g.dilation;
        const int64_t query = (map_row + y) * W + x;
        acc += static_cast<acc_t>(p[query * g.window() + i * K + j]) * static_cast<acc_t>(a[query * D + d]);
      }
    }
    out[index] = static_cast<scalar_t>(acc);
  }
}

// partial[row, er, ec] = sum over the queries x of map row (bh, y) of p[bh, y, x, i * K + j] with bias entry
// (er, ec) = (bias(y) + i, bias(x) + j); zero for entries the row never uses. One thread per partial entry.
template <typename scalar_t, typename acc_t>
__global__ void rpb_row_partials_kernel(const scalar_t* __restrict__ p, acc_t* __restrict__ partial, Geometry g) {
  const int64_t K = g.kernel_size, W = g.width, side = g.bias_side();
  NA_CUDA_LOOP(index, g.rows() * side * side) {
    const int64_t ec = index % side, er = (index / side) % side, row = index / (side * side);
    const int64_t y = row % g.height;
    const int64_t i = er - na::bias_start(y, na::window_start(y, g.height, K, g.dilation), K, g.dilation);
    acc_t sum = 0;
    if (i >= 0 && i < K) {
      for (int64_t x = 0; x < W; ++x) {
        const int64_t j = ec - na::bias_start(x, na::window_start(x, W, K, g.dilation), K, g.dilation);
        if (j >= 0 && j < K) {
          sum += static_cast<acc_t>(p[(row * W + x) * g.window() + i * K + j]);
        }
      }
    }
    partial[index] = sum;
  }
}

// grad_rpb[h, e] = sum over batch b and rows y (in that order) of partial[(b, h, y), e]. One thread per entry.
template <typename scalar_t, typename acc_t>
__global__ void rpb_reduce_kernel(const acc_t* __restrict__ partial, scalar_t* __restrict__ grad_rpb, Geometry g) {
  const int64_t entries = g.bias_side() * g.bias_side();
  NA_CUDA_LOOP(index, g.heads * entries) {
    const int64_t h = index / entries, e = index % entries;
    acc_t sum = 0;
    for (int64_t b = 0; b < g.batch; ++b) {
      for (int64_t y = 0; y < g.height; ++y) {
        sum += partial[((b * g.heads + h) * g.height + y) * entries + e];
      }
    }
    grad_rpb[index] = static_cast<scalar_t>(sum);
  }
}

// ------------------------------------------------------------------------------------------ launchers
// Runs `kernel` over n grid-stride elements on the current stream; nothing to do when n == 0.
template <typename Kernel, typename... Args>
void launch(Kernel kernel, int64_t n, Args... args) {
  if (n == 0) {
    return;
  }
  kernel<<<blocks_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void window_dot(const scalar_t* a, const scalar_t* b, const scalar_t* rpb, scalar_t* out, const Geometry& g) {
  launch(window_dot_kernel<scalar_t>, g.rows() * g.width * g.window(), a, b, rpb, out, g);
}

template <typename scalar_t>
void window_sum(const scalar_t* p, const scalar_t* b, scalar_t* out, const Geometry& g) {
  launch(window_sum_kernel<scalar_t>, g.rows() * g.width * g.dim, p, b, out, g);
}

template <typename scalar_t>
void inverse_sum(const scalar_t* p, const scalar_t* a, scalar_t* out, const Geometry& g) {
  launch(inverse_sum_kernel<scalar_t>, g.rows() * g.width * g.dim, p, a, out, g);
}

// grad_rpb from the upstream gradient p of the logits; `options` places the op-math partial buffer.
template <typename scalar_t>
void rpb_grad(const scalar_t* p, scalar_t* grad_rpb, const Geometry& g, const at::TensorOptions& options) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t entries = g.bias_side() * g.bias_side();
  at::Tensor partial = at::empty({g.rows() * entries}, options.dtype(c10::CppTypeToScalarType<acc_t>::value));
  acc_t* partial_ptr = partial.data_ptr<acc_t>();
  launch(rpb_row_partials_kernel<scalar_t, acc_t>, g.rows() * entries, p, partial_ptr, g);
  launch(rpb_reduce_kernel<scalar_t, acc_t>, g.heads * entries, static_cast<const acc_t*>(partial_ptr), grad_rpb, g);
}

// ------------------------------------------------------------------------------------------------ ops
at::Tensor na2d_qk_forward_cuda(const at::Tensor& query, const at::Tensor& key, const std::optional<at::Tensor>& rpb,
                                int64_t kernel_size, int64_t dilation) {
  const Geometry g = na::make_geometry(query, "query", kernel_size, dilation);
  na::check_like(key, "key", query, "query");
  const bool has_rpb = rpb.has_value() && rpb->defined();
  if (has_rpb) {
    na::check_rpb(*rpb, g, query);
  }
  const c10::cuda::OptionalCUDAGuard guard(query.device());
  at::Tensor attn = at::empty({g.batch, g.heads, g.height, g.width, g.window()}, query.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "na2d_qk_forward_cuda", [&] {
    window_dot(query.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), has_rpb ? rpb->data_ptr<scalar_t>() : nullptr,
               attn.data_ptr<scalar_t>(), g);
  });
  return attn;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> na2d_qk_backward_cuda(const at::Tensor& grad_attn,
                                                                     const at::Tensor& query, const at::Tensor& key,
                                                                     bool has_rpb, int64_t kernel_size,
                                                                     int64_t dilation) {
  const Geometry g = na::make_geometry(query, "query", kernel_size, dilation);
  na::check_like(key, "key", query, "query");
  na::check_attn(grad_attn, "grad_attn", g, query, "query");
  const c10::cuda::OptionalCUDAGuard guard(query.device());
  at::Tensor grad_query = at::empty_like(query);
  at::Tensor grad_key = at::empty_like(key);
  at::Tensor grad_rpb = has_rpb ? at::empty({g.heads, g.bias_side(), g.bias_side()}, query.options())
                                : at::empty({0}, query.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(), "na2d_qk_backward_cuda", [&] {
    const scalar_t* grad = grad_attn.data_ptr<scalar_t>();
    window_sum(grad, key.data_ptr<scalar_t>(), grad_query.data_ptr<scalar_t>(), g);
    inverse_sum(grad, query.data_ptr<scalar_t>(), grad_key.data_ptr<scalar_t>(), g);
    if (has_rpb) {
      rpb_grad(grad, grad_rpb.data_ptr<scalar_t>(), g, query.options());
    }
  });
  return {grad_query, grad_key, grad_rpb};
}

at::Tensor na2d_av_forward_cuda(const at::Tensor& attn, const at::Tensor& value, int64_t kernel_size,
                                int64_t dilation) {
  const Geometry g = na::make_geometry(value, "value", kernel_size, dilation);
  na::check_attn(attn, "attn", g, value, "value");
  const c10::cuda::OptionalCUDAGuard guard(value.device());
  at::Tensor out = at::empty_like(value);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "na2d_av_forward_cuda", [&] {
    window_sum(attn.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), g);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> na2d_av_backward_cuda(const at::Tensor& grad_out, const at::Tensor& attn,
                                                         const at::Tensor& value, int64_t kernel_size,
                                                         int64_t dilation) {
  const Geometry g = na::make_geometry(value, "value", kernel_size, dilation);
  na::check_like(grad_out, "grad_out", value, "value");
  na::check_attn(attn, "attn", g, value, "value");
  const c10::cuda::OptionalCUDAGuard guard(value.device());
  at::Tensor grad_attn = at::empty_like(attn);
  at::Tensor grad_value = at::empty_like(value);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "na2d_av_backward_cuda", [&] {
    const scalar_t* grad = grad_out.data_ptr<scalar_t>();
    window_dot(grad, value.data_ptr<scalar_t>(), static_cast<const scalar_t*>(nullptr),
               grad_attn.data_ptr<scalar_t>(), g);
    inverse_sum(attn.data_ptr<scalar_t>(), grad, grad_value.data_ptr<scalar_t>(), g);
  });
  return {grad_attn, grad_value};
}

}  // namespace
}  // namespace dense

TORCH_LIBRARY_IMPL(dense, CUDA, m) {
  m.impl("na2d_qk_forward", &dense::na2d_qk_forward_cuda);
  m.impl("na2d_qk_backward", &dense::na2d_qk_backward_cuda);
  m.impl("na2d_av_forward", &dense::na2d_av_forward_cuda);
  m.impl("na2d_av_backward", &dense::na2d_av_backward_cuda);
}
