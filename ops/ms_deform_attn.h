// Multi-scale deformable attention (Deformable DETR): the per-point math shared by the CPU kernels
// (ops/cpu/ms_deform_attn_cpu.cpp) and the CUDA kernels (ops/cuda/ms_deform_attn_cuda.cu), so that both
// sample and differentiate with the same formulas.
//
// Layouts (all contiguous): value [N, S, M, D]; spatial_shapes [L, 2] (H, W); level_start_index [L];
// sampling_loc [N, Lq, M, L, P, 2] with (x, y) in [0, 1]; attn_weight [N, Lq, M, L, P];
// output / grad_output [N, Lq, M, D].
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <cstdint>

#ifdef __CUDACC__
#define MSDA_HOST_DEVICE __host__ __device__
#else
#define MSDA_HOST_DEVICE
#endif

namespace dense {
namespace msda {

// Sizes of one call, read from the validated tensors.
struct Problem {
  int64_t batch;     // N
  int64_t spatial;   // S = sum of H_l * W_l
  int64_t heads;     // M
  int64_t channels;  // D, per head
  int64_t queries;   // Lq
  int64_t levels;    // L
  int64_t points;    // P
};

// Validates the inputs of both ops (names each offending argument) and returns the problem sizes.
// `device` is the device type the caller's kernels run on. grad_output is checked when defined.
Problem check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                     const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const at::Tensor& grad_output,
                     c10::DeviceType device);

// The four bilinear corners of one sampling point, in the order (low row, low col), (low row, high col),
// (high row, low col), (high row, high col). A corner outside the map has position -1 and is read as 0.
template <typename T>
struct Corners {
  int64_t position[4];  // index along S (level start + row * W + col), or -1 when outside the map
  T weight[4];          // bilinear weights; they sum to 1
  T frac_h, frac_w;     // h_im - floor(h_im), w_im - floor(w_im): the location derivatives need them
};

// floor(v) as an integer, for v well inside the int64 range. Inline arithmetic rather than ::floor, which on
// the baseline x86-64 ISA (no SSE4.1 rounding instruction) is a library call per coordinate.
template <typename T>
MSDA_HOST_DEVICE inline int64_t floor_to_int(T v) {
  const int64_t truncated = static_cast<int64_t>(v);  // rounds toward zero
  return truncated - (static_cast<T>(truncated) > v ? 1 : 0);
}

// Locates the point (x, y) in [0, 1] on a level of size H x W starting at `level_start` along S, with
// pixel centres at (i + 0.5) / size (grid_sample's align_corners=False). Returns false when the point is
// skipped altogether: like Deformable DETR's kernel, only -1 < h_im < H and -1 < w_im < W are sampled.
template <typename T>
MSDA_HOST_DEVICE inline bool locate(T x, T y, int64_t height, int64_t width, int64_t level_start, Corners<T>* c) {
  const T h_im = y * static_cast<T>(height) - T(0.5);
  const T w_im = x * static_cast<T>(width) - T(0.5);
  if (!(h_im > T(-1) && w_im > T(-1) && h_im < static_cast<T>(height) && w_im < static_cast<T>(width))) {
    return false;  // also rejects NaN locations
  }
  const int64_t h_low = floor_to_int(h_im);
  const int64_t w_low = floor_to_int(w_im);
  const int64_t h_high = h_low + 1;
  const int64_t w_high = w_low + 1;
  c->frac_h = h_im - static_cast<T>(h_low);
  c->frac_w = w_im - static_cast<T>(w_low);
  const T rest_h = T(1) - c->frac_h;
  const T rest_w = T(1) - c->frac_w;
  const bool low_h_in = h_low >= 0, high_h_in = h_high < height;
  const bool low_w_in = w_low >= 0, high_w_in = w_high < width;
  c->position[0] = (low_h_in && low_w_in) ? level_start + h_low * width + w_low : -1;
  c->position[1] = (low_h_in && high_w_in) ? level_start + h_low * width + w_high : -1;
  c->position[2] = (high_h_in && low_w_in) ? level_start + h_high * width + w_low : -1;
  c->position[3] = (high_h_in && high_w_in) ? level_start + h_high * width + w_high : -1;
  c->weight[0] = rest_h * rest_w;
  c->weight[1] = rest_h * c->frac_w;
  c->weight[2] = c->frac_h * rest_w;
  c->weight[3] = c->frac_h * c->frac_w;
  return true;
}

// Gradients of one point's attention weight and location, from corner_dot[k] = <grad_out, value at corner k>
// over the head's D channels (0 for a corner outside the map). The point contributes
// attn * sum_k weight[k] * value[k] to the output, so d/d(attn) = sum_k weight[k] * corner_dot[k], and
// d/dx = W * d/dw_im, d/dy = H * d/dh_im by the chain rule through w_im = x * W - 0.5, h_im = y * H - 0.5.
template <typename T>
MSDA_HOST_DEVICE inline void point_grads(const Corners<T>& c, const T corner_dot[4], T attn, int64_t height,
                                         int64_t width, T* grad_attn, T* grad_x, T* grad_y) {
  const T rest_h = T(1) - c.frac_h;
  const T rest_w = T(1) - c.frac_w;
  *grad_attn = c.weight[0] * corner_dot[0] + c.weight[1] * corner_dot[1] + c.weight[2] * corner_dot[2] +
               c.weight[3] * corner_dot[3];
  const T d_w_im = rest_h * (corner_dot[1] - corner_dot[0]) + c.frac_h * (corner_dot[3] - corner_dot[2]);
  const T d_h_im = rest_w * (corner_dot[2] - corner_dot[0]) + c.frac_w * (corner_dot[3] - corner_dot[1]);
  *grad_x = attn * static_cast<T>(width) * d_w_im;
  *grad_y = attn * static_cast<T>(height) * d_h_im;
}

}  // namespace msda
}  // namespace dense
