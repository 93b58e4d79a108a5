// CPU kernels of 2-D neighbourhood attention with NATTEN 0.14 semantics (dense.ops.reference.na2d_qk,
// na2d_av), and the schemas of the four ops.
//
// The ops reduce to four primitives over maps [B * heads, H, W, .] (key(y, x, ab) = the ab-th key of the
// window of query (y, x), row-major):
//   window_dot    out[y, x, ab] = <A[y, x], B[key(y, x, ab)]> (+ rpb)           qk forward, av grad_attn
//   window_sum    out[y, x]     = sum_ab P[y, x, ab] B[key(y, x, ab)]           av forward, qk grad_query
//   inverse_sum   out[r, c]     = sum_{key(y, x, ab) = (r, c)} P[y, x, ab] A[y, x]  qk grad_key, av grad_value
//   rpb_grad      grad_rpb[h, e] = sum of P[b, h, y, x, ab] over the (b, y, x, ab) whose bias entry is e
// Each is parallel over map rows (batch, head, y) and every output element is written by exactly one task
// in a fixed order, so results are deterministic and do not depend on the thread count: the scatters
// (grad_key, grad_value) are gathers over each key's inverse neighbourhood, and grad_rpb is per-row partial
// sums reduced in a fixed order. ops/cuda/neighborhood_attn_cuda.cu mirrors these primitives.
#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "neighborhood_attn.h"

namespace dense {
namespace {

using na::Geometry;

// Window geometry of every index along one axis, computed once per op call.
struct Axis {
  std::vector<int64_t> start;             // first key of each query's window
  std::vector<int64_t> bias;              // rpb index of that first key
  std::vector<na::InverseRange> inverse;  // queries whose window holds each key
};

Axis make_axis(int64_t length, int64_t kernel_size, int64_t dilation) {
  Axis axis;
  axis.start.resize(length);
  axis.bias.resize(length);
  axis.inverse.resize(length);
  for (int64_t i = 0; i < length; ++i) {
    axis.start[i] = na::window_start(i, length, kernel_size, dilation);
    axis.bias[i] = na::bias_start(i, axis.start[i], kernel_size, dilation);
    axis.inverse[i] = na::inverse_window(i, length, kernel_size, dilation);
  }
  return axis;
}

// Map rows per task: enough multiply-adds per task (~64k) to amortise scheduling on small maps.
int64_t row_grain(const Geometry& g) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, g.width * g.window() * g.dim));
}

// <a, b> over n elements. Independent lane sums let the compiler vectorise without reassociating one
// running sum; they are combined in a fixed order.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
inline acc_t dot(const scalar_t* a, const scalar_t* b, int64_t n) {
  constexpr int64_t kLanes = 8;
  acc_t lanes[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      lanes[l] += static_cast<acc_t>(a[k + l]) * static_cast<acc_t>(b[k + l]);
    }
  }
  acc_t sum = 0;
  for (; k < n; ++k) {
    sum += static_cast<acc_t>(a[k]) * static_cast<acc_t>(b[k]);
  }
  for (int64_t l = 0; l < kLanes; ++l) {
    sum += lanes[l];
  }
  return sum;
}

// acc += w * x over n elements.
template <typename scalar_t, typename acc_t>
inline void axpy(acc_t w, const scalar_t* __restrict__ x, acc_t* __restrict__ acc, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    acc[k] += w * static_cast<acc_t>(x[k]);
  }
}

template <typename scalar_t, typename acc_t>
inline void store(const acc_t* __restrict__ acc, scalar_t* __restrict__ out, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    out[k] = static_cast<scalar_t>(acc[k]);
  }
}

// out[bh, y, x, ab] = <a[bh, y, x], b[bh, key(y, x, ab)]> + rpb[head, bias(y, x, ab)] (rpb may be null).
template <typename scalar_t>
void window_dot(const scalar_t* a, const scalar_t* b, const scalar_t* rpb, scalar_t* out, const Geometry& g,
                const Axis& rows, const Axis& cols) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_size, W = g.width, D = g.dim, side = g.bias_side();
  at::parallel_for(0, g.rows(), row_grain(g), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t bh = row / g.height, y = row % g.height;
      const scalar_t* map = b + bh * g.height * W * D;
      const scalar_t* bias = rpb == nullptr ? nullptr : rpb + (bh % g.heads) * side * side;
      for (int64_t x = 0; x < W; ++x) {
        const scalar_t* query = a + (row * W + x) * D;
        scalar_t* logits = out + (row * W + x) * g.window();
        for (int64_t i = 0; i < K; ++i) {
          const int64_t r = rows.start[y] + i * g.dilation;
          for (int64_t j = 0; j < K; ++j) {
            const int64_t c = cols.start[x] + j * g.dilation;
            acc_t logit = dot(query, map + (r * W + c) * D, D);
            if (bias != nullptr) {
              logit += static_cast<acc_t>(bias[(rows.bias[y] + i) * side + cols.bias[x] + j]);
            }
            logits[i * K + j] = static_cast<scalar_t>(logit);
          }
        }
      }
    }
  });
}

// out[bh, y, x] = sum_ab p[bh, y, x, ab] * b[bh, key(y, x, ab)].
template <typename scalar_t>
void window_sum(const scalar_t* p, const scalar_t* b, scalar_t* out, const Geometry& g, const Axis& rows,
                const Axis& cols) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_size, W = g.width, D = g.dim;
  at::parallel_for(0, g.rows(), row_grain(g), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(D);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t bh = row / g.height, y = row % g.height;
      const scalar_t* map = b + bh * g.height * W * D;
      for (int64_t x = 0; x < W; ++x) {
        const scalar_t* weights = p + (row * W + x) * g.window();
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t i = 0; i < K; ++i) {
          const int64_t r = rows.start[y] + i * g.dilation;
          for (int64_t j = 0; j < K; ++j) {
            const int64_t c = cols.start[x] + j * g.dilation;
            axpy(static_cast<acc_t>(weights[i * K + j]), map + (r * W + c) * D, acc.data(), D);
          }
        }
        store(acc.data(), out + (row * W + x) * D, D);
      }
    }
  });
}

// out[bh, r, c] = sum over the queries (y, x) whose window holds key (r, c) at position ab of
// p[bh, y, x, ab] * a[bh, y, x]: the transpose of window_sum, as a gather so each key has one writer.
template <typename scalar_t>
void inverse_sum(const scalar_t* p, const scalar_t* a, scalar_t* out, const Geometry& g, const Axis& rows,
                 const Axis& cols) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t K = g.kernel_size, W = g.width, D = g.dim;
  at::parallel_for(0, g.rows(), row_grain(g), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(D);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t bh = row / g.height, r = row % g.height;
      const int64_t map_row = bh * g.height;  // row index of (bh, y = 0)
      const na::InverseRange ys = rows.inverse[r];
      for (int64_t c = 0; c < W; ++c) {
        const na::InverseRange xs = cols.inverse[c];
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t m = 0; m < ys.count; ++m) {
          const int64_t y = ys.first + m * g.dilation;
          const int64_t i = (r - rows.start[y]) / g.dilation;
          for (int64_t n = 0; n < xs.count; ++n) {
            const int64_t x = xs.first + n * g.dilation;
            const int64_t j = (c - cols.start[x]) / g.dilation;
            const int64_t query = (map_row + y) * W + x;
            axpy(static_cast<acc_t>(p[query * g.window() + i * K + j]), a + query * D, acc.data(), D);
          }
        }
        store(acc.data(), out + (row * W + c) * D, D);
      }
    }
  });
}

// partial[row, e] = sum over the queries x of map row (bh, y) of p[bh, y, x, ab] with bias entry
// e = (rows.bias[y] + i, cols.bias[x] + j), ab = i * K + j; zero for entries the row never uses.
template <typename scalar_t, typename acc_t>
void rpb_row_partials(const scalar_t* p, acc_t* partial, const Geometry& g, const Axis& rows, const Axis& cols) {
  const int64_t K = g.kernel_size, W = g.width, side = g.bias_side();
  at::parallel_for(0, g.rows(), row_grain(g), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t y = row % g.height;
      for (int64_t er = 0; er < side; ++er) {
        acc_t* entries = partial + (row * side + er) * side;
        const int64_t i = er - rows.bias[y];
        if (i < 0 || i >= K) {
          std::fill(entries, entries + side, acc_t(0));
          continue;
        }
        for (int64_t ec = 0; ec < side; ++ec) {
          acc_t sum = 0;
          for (int64_t x = 0; x < W; ++x) {
            const int64_t j = ec - cols.bias[x];
            if (j >= 0 && j < K) {
              sum += static_cast<acc_t>(p[(row * W + x) * g.window() + i * K + j]);
            }
          }
          entries[ec] = sum;
        }
      }
    }
  });
}

// grad_rpb[h, e] = sum over batch b and rows y (in that order) of partial[(b, h, y), e].
template <typename scalar_t, typename acc_t>
void rpb_reduce(const acc_t* partial, scalar_t* grad_rpb, const Geometry& g) {
  const int64_t entries = g.bias_side() * g.bias_side();
  at::parallel_for(0, g.heads * entries, 1, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t h = index / entries, e = index % entries;
      acc_t sum = 0;
      for (int64_t b = 0; b < g.batch; ++b) {
        for (int64_t y = 0; y < g.height; ++y) {
          sum += partial[((b * g.heads + h) * g.height + y) * entries + e];
        }
      }
      grad_rpb[index] = static_cast<scalar_t>(sum);
    }
  });
}

template <typename scalar_t>
void rpb_grad(const scalar_t* p, scalar_t* grad_rpb, const Geometry& g, const Axis& rows, const Axis& cols) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<acc_t> partial(g.rows() * g.bias_side() * g.bias_side());
  rpb_row_partials(p, partial.data(), g, rows, cols);
  rpb_reduce(partial.data(), grad_rpb, g);
}

// ------------------------------------------------------------------------------------------------ ops
at::Tensor na2d_qk_forward_cpu(const at::Tensor& query, const at::Tensor& key, const std::optional<at::Tensor>& rpb,
                               int64_t kernel_size, int64_t dilation) {
  const Geometry g = na::make_geometry(query, "query", kernel_size, dilation);
  na::check_like(key, "key", query, "query");
  const bool has_rpb = rpb.has_value() && rpb->defined();
  if (has_rpb) {
    na::check_rpb(*rpb, g, query);
  }
  const Axis rows = make_axis(g.height, kernel_size, dilation), cols = make_axis(g.width, kernel_size, dilation);
  at::Tensor attn = at::empty({g.batch, g.heads, g.height, g.width, g.window()}, query.options());
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "na2d_qk_forward_cpu", [&] {
    window_dot(query.data_ptr<scalar_t>(), key.data_ptr<scalar_t>(), has_rpb ? rpb->data_ptr<scalar_t>() : nullptr,
               attn.data_ptr<scalar_t>(), g, rows, cols);
  });
  return attn;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> na2d_qk_backward_cpu(const at::Tensor& grad_attn,
                                                                    const at::Tensor& query, const at::Tensor& key,
                                                                    bool has_rpb, int64_t kernel_size,
                                                                    int64_t dilation) {
  const Geometry g = na::make_geometry(query, "query", kernel_size, dilation);
  na::check_like(key, "key", query, "query");
  na::check_attn(grad_attn, "grad_attn", g, query, "query");
  const Axis rows = make_axis(g.height, kernel_size, dilation), cols = make_axis(g.width, kernel_size, dilation);
  at::Tensor grad_query = at::empty_like(query);
  at::Tensor grad_key = at::empty_like(key);
  at::Tensor grad_rpb = has_rpb ? at::empty({g.heads, g.bias_side(), g.bias_side()}, query.options())
                                : at::empty({0}, query.options());
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "na2d_qk_backward_cpu", [&] {
    const scalar_t* grad = grad_attn.data_ptr<scalar_t>();
    window_sum(grad, key.data_ptr<scalar_t>(), grad_query.data_ptr<scalar_t>(), g, rows, cols);
    inverse_sum(grad, query.data_ptr<scalar_t>(), grad_key.data_ptr<scalar_t>(), g, rows, cols);
    if (has_rpb) {
      rpb_grad(grad, grad_rpb.data_ptr<scalar_t>(), g, rows, cols);
    }
  });
  return {grad_query, grad_key, grad_rpb};
}

at::Tensor na2d_av_forward_cpu(const at::Tensor& attn, const at::Tensor& value, int64_t kernel_size,
                               int64_t dilation) {
  const Geometry g = na::make_geometry(value, "value", kernel_size, dilation);
  na::check_attn(attn, "attn", g, value, "value");
  const Axis rows = make_axis(g.height, kernel_size, dilation), cols = make_axis(g.width, kernel_size, dilation);
  at::Tensor out = at::empty_like(value);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "na2d_av_forward_cpu", [&] {
    window_sum(attn.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), g, rows, cols);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> na2d_av_backward_cpu(const at::Tensor& grad_out, const at::Tensor& attn,
                                                        const at::Tensor& value, int64_t kernel_size,
                                                        int64_t dilation) {
  const Geometry g = na::make_geometry(value, "value", kernel_size, dilation);
  na::check_like(grad_out, "grad_out", value, "value");
  na::check_attn(attn, "attn", g, value, "value");
  const Axis rows = make_axis(g.height, kernel_size, dilation), cols = make_axis(g.width, kernel_size, dilation);
  at::Tensor grad_attn = at::empty_like(attn);
  at::Tensor grad_value = at::empty_like(value);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "na2d_av_backward_cpu", [&] {
    const scalar_t* grad = grad_out.data_ptr<scalar_t>();
    window_dot(grad, value.data_ptr<scalar_t>(), static_cast<const scalar_t*>(nullptr),
               grad_attn.data_ptr<scalar_t>(), g, rows, cols);
    inverse_sum(attn.data_ptr<scalar_t>(), grad, grad_value.data_ptr<scalar_t>(), g, rows, cols);
  });
  return {grad_attn, grad_value};
}

}  // namespace
}  // namespace dense

TORCH_LIBRARY_FRAGMENT(dense, m) {
  m.def("na2d_qk_forward(Tensor query, Tensor key, Tensor? rpb, int kernel_size, int dilation) -> Tensor");
  m.def(
      "na2d_qk_backward(Tensor grad_attn, Tensor query, Tensor key, bool has_rpb, int kernel_size, int dilation) "
      "-> (Tensor, Tensor, Tensor)");
  m.def("na2d_av_forward(Tensor attn, Tensor value, int kernel_size, int dilation) -> Tensor");
  m.def(
      "na2d_av_backward(Tensor grad_out, Tensor attn, Tensor value, int kernel_size, int dilation) "
      "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dense, CPU, m) {
  m.impl("na2d_qk_forward", &dense::na2d_qk_forward_cpu);
  m.impl("na2d_qk_backward", &dense::na2d_qk_backward_cpu);
  m.impl("na2d_av_forward", &dense::na2d_av_forward_cpu);
  m.impl("na2d_av_backward", &dense::na2d_av_backward_cpu);
}
