// 2-D neighbourhood attention (NATTEN 0.14 semantics): window and bias index math shared by the CPU and
// CUDA kernels, plus the host-side input checks of the four ops.
//
// Along each spatial axis of length L, query i attends to keys window_start(i) + a * dilation,
// a = 0..K-1; a 2-D window is the product of a row window and a column window, keys row-major.
// The relative position bias of window position a is rpb index bias_start(i) + a.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#ifdef __CUDACC__
#define NA_HOST_DEVICE __host__ __device__
#else
#define NA_HOST_DEVICE
#endif

namespace dense {
namespace na {

// NATTEN's get_window_start. Each residue class mod dilation is its own sequence of keys; windows are
// centred on the query and shifted to stay inside the map near its ends (needs length >= K * dilation).
// With dilation 1 this is clamp(i - K/2, 0, length - K).
NA_HOST_DEVICE inline int64_t window_start(int64_t i, int64_t length, int64_t kernel_size, int64_t dilation) {
  const int64_t half = (kernel_size / 2) * dilation;
  if (i < half) {
    return i % dilation;  // first key of i's residue class
  }
  if (i + half >= length) {
    // The last window of i's residue class: its last key is full + residue when that is inside the map
    // (residue < length % dilation), else one step of dilation earlier.
    const int64_t full = (length / dilation) * dilation;
    const int64_t residue = i % dilation;
    const int64_t steps_back = residue < length - full ? kernel_size - 1 : kernel_size;
    return full + residue - steps_back * dilation;
  }
  return i - half;
}

// rpb index (along one axis, 0..2K-2) of query i's first window key: (start - i) / dilation + K - 1.
// The division is exact because the start shares i's residue mod dilation.
NA_HOST_DEVICE inline int64_t bias_start(int64_t i, int64_t start, int64_t kernel_size, int64_t dilation) {
  return (start - i) / dilation + kernel_size - 1;
}

// Queries (along one axis) whose window holds key j: first, first + dilation, ..., count of them.
struct InverseRange {
  int64_t first;
  int64_t count;
};

// A query whose window holds key j has j's residue mod dilation and lies within (K-1) * dilation of j.
// Window starts never decrease along a residue class, so those queries form one run of stride dilation
// (at least one query, at most 2K-1 near the ends of the axis).
NA_HOST_DEVICE inline InverseRange inverse_window(int64_t j, int64_t length, int64_t kernel_size, int64_t dilation) {
  InverseRange range{0, 0};
  const int64_t span = (kernel_size - 1) * dilation;
  for (int64_t i = j - span; i <= j + span; i += dilation) {
    if (i < 0 || i >= length) {
      continue;
    }
    const int64_t start = window_start(i, length, kernel_size, dilation);
    if (start <= j && j <= start + span) {
      if (range.count == 0) {
        range.first = i;
      }
      ++range.count;
    }
  }
  return range;
}

// Sizes of one op call: maps [batch, heads, height, width, dim], windows kernel_size^2.
struct Geometry {
  int64_t batch, heads, height, width, dim, kernel_size, dilation;

  NA_HOST_DEVICE int64_t window() const { return kernel_size * kernel_size; }
  NA_HOST_DEVICE int64_t bias_side() const { return 2 * kernel_size - 1; }
  NA_HOST_DEVICE int64_t rows() const { return batch * heads * height; }  // (batch, head, y) map rows
};

// ------------------------------------------------------------------------------------------------
// Host-side input checks (shared so both backends reject the same inputs with the same messages)
// ------------------------------------------------------------------------------------------------
inline void check_placement(const at::Tensor& t, const char* name, const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(t.device() == like.device(), name, " is on ", t.device(), " but ", like_name, " is on ", like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " has dtype ", t.scalar_type(), " but ", like_name,
              " has ", like.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// Checks the kernel and the map `features` ([B, heads, H, W, D]) and returns the call's geometry.
inline Geometry make_geometry(const at::Tensor& features, const char* name, int64_t kernel_size, int64_t dilation) {
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, "kernel_size must be odd and positive, got ", kernel_size);
  TORCH_CHECK(dilation >= 1, "dilation must be >= 1, got ", dilation);
  TORCH_CHECK(features.dim() == 5, name, " must be [B, heads, H, W, D], got ", features.sizes());
  TORCH_CHECK(features.is_floating_point(), name, " must be floating point, got ", features.scalar_type());
  TORCH_CHECK(features.is_contiguous(), name, " must be contiguous");
  const Geometry g{features.size(0), features.size(1), features.size(2), features.size(3), features.size(4),
                   kernel_size, dilation};
  TORCH_CHECK(g.height >= kernel_size * dilation && g.width >= kernel_size * dilation, name, " is ", g.height, "x",
              g.width, " but neighbourhood attention needs H, W >= kernel_size * dilation = ", kernel_size * dilation);
  return g;
}

// A second map of the same shape as `like` (key of query, grad_out of value).
inline void check_like(const at::Tensor& t, const char* name, const at::Tensor& like, const char* like_name) {
  check_placement(t, name, like, like_name);
  TORCH_CHECK(t.sizes() == like.sizes(), name, " has shape ", t.sizes(), " but ", like_name, " has ", like.sizes());
}

// attn-like tensors: [B, heads, H, W, K*K] over the queries of `like`.
inline void check_attn(const at::Tensor& t, const char* name, const Geometry& g, const at::Tensor& like,
                       const char* like_name) {
  check_placement(t, name, like, like_name);
  TORCH_CHECK(t.dim() == 5 && t.size(0) == g.batch && t.size(1) == g.heads && t.size(2) == g.height &&
                  t.size(3) == g.width && t.size(4) == g.window(),
              name, " must be [", g.batch, ", ", g.heads, ", ", g.height, ", ", g.width, ", ", g.window(), "], got ",
              t.sizes());
}

inline void check_rpb(const at::Tensor& rpb, const Geometry& g, const at::Tensor& query) {
  check_placement(rpb, "rpb", query, "query");
  TORCH_CHECK(rpb.dim() == 3 && rpb.size(0) == g.heads && rpb.size(1) == g.bias_side() && rpb.size(2) == g.bias_side(),
              "rpb must be [heads, 2K-1, 2K-1] = [", g.heads, ", ", g.bias_side(), ", ", g.bias_side(), "], got ",
              rpb.sizes());
}

}  // namespace na
}  // namespace dense
