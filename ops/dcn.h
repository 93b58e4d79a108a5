// Deformable sampling on channels-last maps, shared by the CPU and CUDA kernels of DCNv3 (InternImage)
// and DSCN (DSAN's deformable strip convolution).
//
// Both ops sample an input [N, H, W, G*D] at P points per output pixel and group. DCNv3 moves every
// point along x and y (bilinear, 4 taps) and weights it by a mask; DSCN moves it along one axis only
// (linear, 2 taps), with no mask. The math below is written once, for a compile-time Deform mode, so
// that both ops and both devices compute positions, validity and interpolation weights identically.
// Semantics: dense/ops/reference.py (dcnv3, dscn).
#pragma once

#include <cmath>
#include <cstdint>

#include <ATen/core/Tensor.h>

#ifdef __CUDACC__
#define DENSE_HOST_DEVICE __host__ __device__
#else
#define DENSE_HOST_DEVICE
#endif

namespace dense {
namespace dcn {

// Which axes a sampling point moves along: both (DCNv3), x only (DSCN, on_x), y only (DSCN, not on_x).
enum class Deform { kXY, kX, kY };

template <Deform M>
struct Mode {
  static constexpr bool kMovesX = M != Deform::kY;
  static constexpr bool kMovesY = M != Deform::kX;
  static constexpr int kAxes = int(kMovesX) + int(kMovesY);  // offsets per point, x first
  static constexpr int kTaps = (kMovesX ? 2 : 1) * (kMovesY ? 2 : 1);
  static constexpr bool kMasked = M == Deform::kXY;  // DCNv3 modulates each point; DSCN does not
};

// Sizes and convolution parameters of one op call (plain values, so it can be passed to a CUDA kernel).
struct Geometry {
  int64_t batch, height, width, groups, group_channels;
  int64_t out_height, out_width, points;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  bool remove_center;
  double offset_scale;

  DENSE_HOST_DEVICE int64_t channels() const { return groups * group_channels; }
};

// floor for float and double on host and device (std::floor is host only).
DENSE_HOST_DEVICE inline float floor_of(float v) { return floorf(v); }
DENSE_HOST_DEVICE inline double floor_of(double v) { return floor(v); }

// Walks the kernel points in upstream order: i over kernel_w (outer), j over kernel_h (inner), the centre
// skipped when removed; p is the point's index in the offset and mask tensors.
class KernelPoints {
 public:
  DENSE_HOST_DEVICE explicit KernelPoints(const Geometry& geo)
      : kernel_h_(geo.kernel_h), kernel_w_(geo.kernel_w), remove_center_(geo.remove_center) {
    skip_centre();
  }
  DENSE_HOST_DEVICE bool done() const { return i >= kernel_w_; }
  DENSE_HOST_DEVICE void next() {
    ++p;
    step();
    skip_centre();
  }

  int64_t p = 0, i = 0, j = 0;

 private:
  DENSE_HOST_DEVICE void step() {
    if (++j == kernel_h_) {
      j = 0;
      ++i;
    }
  }
  DENSE_HOST_DEVICE void skip_centre() {
    if (remove_center_ && i == kernel_w_ / 2 && j == kernel_h_ / 2) step();
  }

  int64_t kernel_h_, kernel_w_;
  bool remove_center_;
};

// Position of kernel point 0 at output index o, before offsets: o*stride - pad + c - c*s with
// c = (dilation*(kernel-1)) >> 1 (upstream's rounding of the kernel centre; it matters for even kernels).
template <typename T>
DENSE_HOST_DEVICE inline T axis_origin(int64_t o, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                                       T scale) {
  const int64_t centre = (dilation * (kernel - 1)) >> 1;
  return static_cast<T>(o * stride - pad + centre) - static_cast<T>(centre) * scale;
}

// Position of kernel index k displaced by `offset` pixels, both scaled by offset_scale.
template <typename T>
DENSE_HOST_DEVICE inline T axis_position(T origin, int64_t k, int64_t dilation, T offset, T scale) {
  return origin + (static_cast<T>(k * dilation) + offset) * scale;
}

// A point contributes only while at least one of its taps can be inside the map.
template <typename T>
DENSE_HOST_DEVICE inline bool inside(T pos, int64_t size) {
  return pos > T(-1) && pos < static_cast<T>(size);
}

// The in-map taps of one sampling point: `count` pixels with their interpolation weights and the
// derivative of each weight along each deformed axis (x first). Taps outside the map read 0, so they
// are left out: they add nothing to the sample nor to its gradients.
template <typename T, Deform M>
struct Taps {
  int count;
  int64_t pixel[Mode<M>::kTaps];  // y * W + x
  T weight[Mode<M>::kTaps];
  T slope[Mode<M>::kAxes][Mode<M>::kTaps];
};

// Interpolation taps at (x, y), which must pass `inside`. Along a fixed axis the position is an integer,
// so that axis has a single tap of weight 1: DSCN reads two pixels per point, DCNv3 four.
template <typename T, Deform M>
DENSE_HOST_DEVICE inline void make_taps(T x, T y, int64_t height, int64_t width, Taps<T, M>& taps) {
  using Md = Mode<M>;
  const T x0 = floor_of(x), y0 = floor_of(y);
  const T fx = x - x0, fy = y - y0;  // 0 along a fixed axis
  const int64_t col0 = static_cast<int64_t>(x0), row0 = static_cast<int64_t>(y0);
  taps.count = 0;
  for (int dy = 0; dy < (Md::kMovesY ? 2 : 1); ++dy) {
    for (int dx = 0; dx < (Md::kMovesX ? 2 : 1); ++dx) {
      const int64_t row = row0 + dy, col = col0 + dx;
      if (row < 0 || row >= height || col < 0 || col >= width) continue;
      const T wy = dy ? fy : T(1) - fy, wx = dx ? fx : T(1) - fx;
      const int t = taps.count++;
      taps.pixel[t] = row * width + col;
      taps.weight[t] = wy * wx;
      if constexpr (Md::kMovesX) taps.slope[0][t] = dx ? wy : -wy;               // d(wy*wx)/dx
      if constexpr (Md::kMovesY) taps.slope[Md::kAxes - 1][t] = dy ? wx : -wx;  // d(wy*wx)/dy
    }
  }
}

// Taps of kernel point (i, j) of an output pixel with origins (origin_x, origin_y); false when the point
// lies outside the map and contributes nothing. `point_offset` holds its Mode<M>::kAxes offsets (x first).
template <Deform M, typename T, typename S>
DENSE_HOST_DEVICE inline bool sample_point(const Geometry& geo, T origin_x, T origin_y, int64_t i, int64_t j,
                                           const S* point_offset, Taps<T, M>& taps) {
  using Md = Mode<M>;
  const T scale = static_cast<T>(geo.offset_scale);
  const T off_x = Md::kMovesX ? static_cast<T>(point_offset[0]) : T(0);
  const T off_y = Md::kMovesY ? static_cast<T>(point_offset[Md::kAxes - 1]) : T(0);
  const T x = axis_position(origin_x, i, geo.dilation_w, off_x, scale);
  const T y = axis_position(origin_y, j, geo.dilation_h, off_y, scale);
  if (!inside(x, geo.width) || !inside(y, geo.height)) return false;
  make_taps(x, y, geo.height, geo.width, taps);
  return true;
}

// The origins of output pixel (ho, wo), as (x, y).
template <typename T>
DENSE_HOST_DEVICE inline void pixel_origin(const Geometry& geo, int64_t ho, int64_t wo, T& origin_x, T& origin_y) {
  const T scale = static_cast<T>(geo.offset_scale);
  origin_x = axis_origin(wo, geo.kernel_w, geo.stride_w, geo.pad_w, geo.dilation_w, scale);
  origin_y = axis_origin(ho, geo.kernel_h, geo.stride_h, geo.pad_h, geo.dilation_h, scale);
}

// ------------------------------------------------------------------------------------------------
// Host-side argument checks, shared by both backends (defined in cpu/dcn_cpu.cpp).
// ------------------------------------------------------------------------------------------------
struct ConvArgs {
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t group, group_channels;
  double offset_scale;
  int64_t remove_center;
};

// Checks input, offset, mask (DCNv3 only: pass nullptr for DSCN) and grad_output (backward only: else
// nullptr) against each other and the convolution arguments; returns the call's geometry.
Geometry check_arguments(const char* op, Deform mode, const at::Tensor& input, const at::Tensor& offset,
                         const at::Tensor* mask, const at::Tensor* grad_output, const ConvArgs& args);

}  // namespace dcn
}  // namespace dense
