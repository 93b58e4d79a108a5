// CPU kernels of DCNv3 and DSCN (deformable sampling on channels-last maps), float32 and float64.
// Sampling math: ../dcn.h; semantics: dense/ops/reference.py (dcnv3, dscn).
//
// Forward: tasks are ranges of output pixels, each writing its own output rows.
// Backward: tasks own disjoint slices of grad_input (see BackwardBlocks), so no two tasks write the same
// element, no atomics are needed, and the result does not depend on the number of threads.
#include <algorithm>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "dcn.h"

namespace dense {
namespace dcn {

// ------------------------------------------------------------------------------------------------
// Argument checks (declared in dcn.h; the CUDA entry points use them too)
// ------------------------------------------------------------------------------------------------
namespace {

// Output size along one axis, as a convolution: (size + 2*pad - (dilation*(kernel-1) + 1)) / stride + 1.
int64_t output_size(const char* op, const char* axis, int64_t size, int64_t kernel, int64_t stride, int64_t pad,
                    int64_t dilation) {
  const int64_t span = size + 2 * pad - (dilation * (kernel - 1) + 1);
  TORCH_CHECK(span >= 0, op, ": the input's ", axis, " (", size, ") plus twice the padding (", pad,
              ") is smaller than the dilated kernel (", dilation * (kernel - 1) + 1, ")");
  return span / stride + 1;
}

void check_operand(const char* op, const char* name, const at::Tensor& t, const at::Tensor& input,
                   at::IntArrayRef shape) {
  TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ", t.device(), " but input is on ",
              input.device());
  TORCH_CHECK(t.scalar_type() == input.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but input has dtype ", input.scalar_type());
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

void check_conv_args(const char* op, Deform mode, const ConvArgs& a) {
  TORCH_CHECK(a.kernel_h > 0 && a.kernel_w > 0, op, ": kernel_h and kernel_w must be positive, got ", a.kernel_h,
              " and ", a.kernel_w);
  TORCH_CHECK(a.stride_h > 0 && a.stride_w > 0, op, ": stride_h and stride_w must be positive, got ", a.stride_h,
              " and ", a.stride_w);
  TORCH_CHECK(a.dilation_h > 0 && a.dilation_w > 0, op, ": dilation_h and dilation_w must be positive, got ",
              a.dilation_h, " and ", a.dilation_w);
  TORCH_CHECK(a.pad_h >= 0 && a.pad_w >= 0, op, ": pad_h and pad_w must be non-negative, got ", a.pad_h, " and ",
              a.pad_w);
  TORCH_CHECK(a.group > 0 && a.group_channels > 0, op, ": group and group_channels must be positive, got ",
              a.group, " and ", a.group_channels);
  TORCH_CHECK(a.remove_center == 0 || a.remove_center == 1, op, ": remove_center must be 0 or 1, got ",
              a.remove_center);
  TORCH_CHECK(!a.remove_center || (a.kernel_h % 2 == 1 && a.kernel_w % 2 == 1), op,
              ": remove_center needs odd kernel sizes, got kernel_h=", a.kernel_h, ", kernel_w=", a.kernel_w);
  TORCH_CHECK(mode != Deform::kX || a.kernel_h == 1, op, ": a strip along x (on_x=True) needs kernel_h == 1, got ",
              a.kernel_h);
  TORCH_CHECK(mode != Deform::kY || a.kernel_w == 1, op, ": a strip along y (on_x=False) needs kernel_w == 1, got ",
              a.kernel_w);
}

}  // namespace

Geometry check_arguments(const char* op, Deform mode, const at::Tensor& input, const at::Tensor& offset,
                         const at::Tensor* mask, const at::Tensor* grad_output, const ConvArgs& a) {
  check_conv_args(op, mode, a);
  const int64_t channels = a.group * a.group_channels;
  TORCH_CHECK(input.dim() == 4 && input.size(3) == channels, op,
              ": input must be channels-last [N, H, W, group * group_channels] = [N, H, W, ", channels, "], got ",
              input.sizes());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), op, ": input must be a floating-point tensor, got ",
              input.scalar_type());
  TORCH_CHECK(input.is_contiguous(), op, ": input must be contiguous");

  Geometry geo;
  geo.batch = input.size(0);
  geo.height = input.size(1);
  geo.width = input.size(2);
  geo.groups = a.group;
  geo.group_channels = a.group_channels;
  geo.out_height = output_size(op, "height", geo.height, a.kernel_h, a.stride_h, a.pad_h, a.dilation_h);
  geo.out_width = output_size(op, "width", geo.width, a.kernel_w, a.stride_w, a.pad_w, a.dilation_w);
  geo.points = a.kernel_h * a.kernel_w - a.remove_center;
  geo.kernel_h = a.kernel_h;
  geo.kernel_w = a.kernel_w;
  geo.stride_h = a.stride_h;
  geo.stride_w = a.stride_w;
  geo.pad_h = a.pad_h;
  geo.pad_w = a.pad_w;
  geo.dilation_h = a.dilation_h;
  geo.dilation_w = a.dilation_w;
  geo.remove_center = a.remove_center != 0;
  geo.offset_scale = a.offset_scale;

  const int64_t offsets_per_point = mode == Deform::kXY ? 2 : 1;
  const int64_t n = geo.batch, ho = geo.out_height, wo = geo.out_width;
  check_operand(op, "offset", offset, input, {n, ho, wo, a.group * geo.points * offsets_per_point});
  if (mask != nullptr) check_operand(op, "mask", *mask, input, {n, ho, wo, a.group * geo.points});
  if (grad_output != nullptr) check_operand(op, "grad_output", *grad_output, input, {n, ho, wo, channels});
  return geo;
}

namespace {

// ------------------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------------------

// Multiply-adds below which a task is not worth scheduling (ATen's own grain size).
constexpr int64_t kMinTaskWork = 32768;

// Output pixels per forward task: enough interpolation work to amortise scheduling.
template <Deform M>
int64_t pixels_per_task(const Geometry& geo) {
  // max(1, ...): a 1x1 kernel without its centre has no points, hence no work.
  const int64_t work = std::max<int64_t>(1, geo.groups * geo.points * Mode<M>::kTaps * geo.group_channels);
  return std::max<int64_t>(1, kMinTaskWork / work);
}

// out[c] = sum_e weights[e] * rows[e][c] for c < D. Channels go in blocks of kBlock whose accumulators
// stay in registers across all the taps, so the output is written once and never re-read.
template <typename scalar_t, typename opmath_t>
void weighted_rows(const scalar_t* const* rows, const opmath_t* weights, int64_t count, int64_t D, scalar_t* out) {
  constexpr int64_t kBlock = 16;  // four SSE vectors of float
  int64_t c0 = 0;
  for (; c0 + kBlock <= D; c0 += kBlock) {
    opmath_t acc[kBlock] = {};
    for (int64_t e = 0; e < count; ++e) {
      for (int64_t b = 0; b < kBlock; ++b) acc[b] += weights[e] * static_cast<opmath_t>(rows[e][c0 + b]);
    }
    for (int64_t b = 0; b < kBlock; ++b) out[c0 + b] = static_cast<scalar_t>(acc[b]);
  }
  for (; c0 < D; ++c0) {
    opmath_t acc = 0;
    for (int64_t e = 0; e < count; ++e) acc += weights[e] * static_cast<opmath_t>(rows[e][c0]);
    out[c0] = static_cast<scalar_t>(acc);
  }
}

// out[pixel, g*D:(g+1)*D] = sum_p mask * sample_p: the taps of the group's points are gathered once
// (input row and mask * weight each), then summed over the D channels.
template <Deform M, typename scalar_t>
void forward_kernel(const Geometry& geo, const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                    scalar_t* output) {
  using opmath_t = at::opmath_type<scalar_t>;
  using Md = Mode<M>;
  const int64_t C = geo.channels(), D = geo.group_channels, G = geo.groups, P = geo.points;
  const int64_t Ho = geo.out_height, Wo = geo.out_width;
  const int64_t pixels = geo.batch * Ho * Wo;
  at::parallel_for(0, pixels, pixels_per_task<M>(geo), [&](int64_t begin, int64_t end) {
    std::vector<const scalar_t*> rows(P * Md::kTaps);
    std::vector<opmath_t> weights(P * Md::kTaps);
    for (int64_t pix = begin; pix < end; ++pix) {
      const int64_t wo = pix % Wo, ho = (pix / Wo) % Ho, n = pix / (Wo * Ho);
      opmath_t origin_x, origin_y;
      pixel_origin(geo, ho, wo, origin_x, origin_y);
      for (int64_t g = 0; g < G; ++g) {
        const scalar_t* in = input + n * geo.height * geo.width * C + g * D;
        int64_t count = 0;
        for (KernelPoints k(geo); !k.done(); k.next()) {
          const int64_t gp = pix * G * P + g * P + k.p;
          Taps<opmath_t, M> taps;
          if (!sample_point<M>(geo, origin_x, origin_y, k.i, k.j, offset + gp * Md::kAxes, taps)) continue;
          const opmath_t m = Md::kMasked ? static_cast<opmath_t>(mask[gp]) : opmath_t(1);
          for (int t = 0; t < taps.count; ++t, ++count) {
            rows[count] = in + taps.pixel[t] * C;
            weights[count] = m * taps.weight[t];
          }
        }
        weighted_rows(rows.data(), weights.data(), count, D, output + pix * C + g * D);
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Backward
// ------------------------------------------------------------------------------------------------

// One backward task: the output pixels [ho_begin, ho_end) x [wo_begin, wo_end) of batch n, groups
// [g_begin, g_end).
struct BackwardBlock {
  int64_t n, ho_begin, ho_end, wo_begin, wo_end, g_begin, g_end;
};

// The backward tasks, chosen so that no two write the same grad_input element:
//  - DCNv3: (batch, range of groups); its points may land anywhere, but only in those groups' channels.
//    As few ranges as keep every thread busy: a task that covers all groups of a pixel reads its offset,
//    mask and grad_output rows whole.
//  - DSCN along x: (batch, output row); every point stays on input row ho*stride_h - pad_h.
//  - DSCN along y: (batch, strip of kStripColumns output columns); every point stays on input column
//    wo*stride_w - pad_w. A strip rather than one column, so that a task reads runs of adjacent pixels.
// Each grad_input element is accumulated by one task in (ho, wo, point) order whatever the partition,
// so the result does not depend on the number of threads.
template <Deform M>
class BackwardBlocks {
 public:
  static constexpr int64_t kStripColumns = 8;

  explicit BackwardBlocks(const Geometry& geo) : geo_(geo) {
    if constexpr (M == Deform::kXY) {
      const int64_t threads = at::get_num_threads(), batch = std::max<int64_t>(1, geo.batch);
      per_batch_ = std::min(geo.groups, (threads + batch - 1) / batch);
    } else if constexpr (M == Deform::kX) {
      per_batch_ = geo.out_height;
    } else {
      per_batch_ = (geo.out_width + kStripColumns - 1) / kStripColumns;
    }
  }

  int64_t count() const { return geo_.batch * per_batch_; }

  BackwardBlock operator[](int64_t b) const {
    const int64_t n = b / per_batch_, r = b % per_batch_;
    if constexpr (M == Deform::kXY) {
      const int64_t G = geo_.groups;
      return {n, 0, geo_.out_height, 0, geo_.out_width, r * G / per_batch_, (r + 1) * G / per_batch_};
    } else if constexpr (M == Deform::kX) {
      return {n, r, r + 1, 0, geo_.out_width, 0, geo_.groups};
    } else {
      const int64_t wo = r * kStripColumns;
      return {n, 0, geo_.out_height, wo, std::min(wo + kStripColumns, geo_.out_width), 0, geo_.groups};
    }
  }

 private:
  Geometry geo_;
  int64_t per_batch_;
};

// Gradients of kernel point (i, j), of mask m, of one output pixel and group. With dot_t = <grad_out, v_t>
// over the group's channels (v_t: the tap's input pixel): grad_input[tap] += m * weight_t * grad_out,
// d(loss)/d(mask) = sum_t weight_t * dot_t, d(loss)/d(offset) = s * m * sum_t slope_t * dot_t. A point
// outside the map has zero gradients.
template <Deform M, typename scalar_t, typename opmath_t>
void point_backward(const Geometry& geo, opmath_t origin_x, opmath_t origin_y, int64_t i, int64_t j,
                    const scalar_t* point_offset, opmath_t m, const scalar_t* in, const scalar_t* grad_out,
                    scalar_t* grad_in, scalar_t* point_grad_offset, scalar_t* point_grad_mask) {
  using Md = Mode<M>;
  const int64_t C = geo.channels(), D = geo.group_channels;
  opmath_t grad_pos[Md::kAxes] = {};
  opmath_t grad_m = 0;
  Taps<opmath_t, M> taps;
  if (sample_point<M>(geo, origin_x, origin_y, i, j, point_offset, taps)) {
    for (int t = 0; t < taps.count; ++t) {
      const scalar_t* v = in + taps.pixel[t] * C;
      scalar_t* gi = grad_in + taps.pixel[t] * C;
      const opmath_t w = m * taps.weight[t];
      opmath_t dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < D; ++c) {
        const opmath_t go = static_cast<opmath_t>(grad_out[c]);
        dot += go * static_cast<opmath_t>(v[c]);
        gi[c] = static_cast<scalar_t>(static_cast<opmath_t>(gi[c]) + w * go);
      }
      for (int a = 0; a < Md::kAxes; ++a) grad_pos[a] += taps.slope[a][t] * dot;
      grad_m += taps.weight[t] * dot;
    }
  }
  const opmath_t scale = static_cast<opmath_t>(geo.offset_scale);
  for (int a = 0; a < Md::kAxes; ++a) point_grad_offset[a] = static_cast<scalar_t>(scale * m * grad_pos[a]);
  if constexpr (Md::kMasked) *point_grad_mask = static_cast<scalar_t>(grad_m);
}

// grad_input must be zero on entry; grad_offset and grad_mask (DCNv3 only, else nullptr) are fully written.
template <Deform M, typename scalar_t>
void backward_kernel(const Geometry& geo, const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                     const scalar_t* grad_output, scalar_t* grad_input, scalar_t* grad_offset, scalar_t* grad_mask) {
  using opmath_t = at::opmath_type<scalar_t>;
  using Md = Mode<M>;
  const int64_t C = geo.channels(), D = geo.group_channels, G = geo.groups, P = geo.points;
  const int64_t image = geo.height * geo.width * C;
  const BackwardBlocks<M> blocks(geo);
  at::parallel_for(0, blocks.count(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const BackwardBlock blk = blocks[b];
      for (int64_t ho = blk.ho_begin; ho < blk.ho_end; ++ho) {
        for (int64_t wo = blk.wo_begin; wo < blk.wo_end; ++wo) {
          const int64_t pix = (blk.n * geo.out_height + ho) * geo.out_width + wo;
          opmath_t origin_x, origin_y;
          pixel_origin(geo, ho, wo, origin_x, origin_y);
          for (int64_t g = blk.g_begin; g < blk.g_end; ++g) {
            const int64_t channel0 = blk.n * image + g * D;
            for (KernelPoints k(geo); !k.done(); k.next()) {
              const int64_t gp = pix * G * P + g * P + k.p;
              const opmath_t m = Md::kMasked ? static_cast<opmath_t>(mask[gp]) : opmath_t(1);
              point_backward<M>(geo, origin_x, origin_y, k.i, k.j, offset + gp * Md::kAxes, m, input + channel0,
                                grad_output + pix * C + g * D, grad_input + channel0, grad_offset + gp * Md::kAxes,
                                Md::kMasked ? grad_mask + gp : nullptr);
            }
          }
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Entry points (schemas below)
// ------------------------------------------------------------------------------------------------
void check_cpu(const char* op, const at::Tensor& input) {
  TORCH_CHECK(input.device().is_cpu(), op, ": the CPU kernel got input on ", input.device());
}

at::Tensor dcnv3_forward_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                             int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                             int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t group,
                             int64_t group_channels, double offset_scale, int64_t remove_center) {
  const ConvArgs args{kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                      group, group_channels, offset_scale, remove_center};
  check_cpu("dcnv3_forward", input);
  const Geometry geo = check_arguments("dcnv3_forward", Deform::kXY, input, offset, &mask, nullptr, args);
  at::Tensor output = at::empty({geo.batch, geo.out_height, geo.out_width, geo.channels()}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcnv3_forward_cpu", [&] {
    forward_kernel<Deform::kXY, scalar_t>(geo, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(),
                                          mask.data_ptr<scalar_t>(), output.data_ptr<scalar_t>());
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_cpu(
    const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask, const at::Tensor& grad_output,
    int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
    int64_t dilation_h, int64_t dilation_w, int64_t group, int64_t group_channels, double offset_scale,
    int64_t remove_center) {
  const ConvArgs args{kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                      group, group_channels, offset_scale, remove_center};
  check_cpu("dcnv3_backward", input);
  const Geometry geo = check_arguments("dcnv3_backward", Deform::kXY, input, offset, &mask, &grad_output, args);
  at::Tensor grad_input = at::zeros_like(input);
  at::Tensor grad_offset = at::empty_like(offset);
  at::Tensor grad_mask = at::empty_like(mask);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dcnv3_backward_cpu", [&] {
    backward_kernel<Deform::kXY, scalar_t>(geo, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(),
                                           mask.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
                                           grad_input.data_ptr<scalar_t>(), grad_offset.data_ptr<scalar_t>(),
                                           grad_mask.data_ptr<scalar_t>());
  });
  return {grad_input, grad_offset, grad_mask};
}

at::Tensor dscn_forward_cpu(const at::Tensor& input, const at::Tensor& offset, int64_t kernel_h, int64_t kernel_w,
                            int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
                            int64_t dilation_w, int64_t group, int64_t group_channels, double offset_scale,
                            int64_t remove_center, bool on_x) {
  const ConvArgs args{kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                      group, group_channels, offset_scale, remove_center};
  const Deform mode = on_x ? Deform::kX : Deform::kY;
  check_cpu("dscn_forward", input);
  const Geometry geo = check_arguments("dscn_forward", mode, input, offset, nullptr, nullptr, args);
  at::Tensor output = at::empty({geo.batch, geo.out_height, geo.out_width, geo.channels()}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dscn_forward_cpu", [&] {
    const auto run = on_x ? forward_kernel<Deform::kX, scalar_t> : forward_kernel<Deform::kY, scalar_t>;
    run(geo, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), nullptr, output.data_ptr<scalar_t>());
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor> dscn_backward_cpu(const at::Tensor& input, const at::Tensor& offset,
                                                     const at::Tensor& grad_output, int64_t kernel_h, int64_t kernel_w,
                                                     int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                                     int64_t dilation_h, int64_t dilation_w, int64_t group,
                                                     int64_t group_channels, double offset_scale,
                                                     int64_t remove_center, bool on_x) {
  const ConvArgs args{kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                      group, group_channels, offset_scale, remove_center};
  const Deform mode = on_x ? Deform::kX : Deform::kY;
  check_cpu("dscn_backward", input);
  const Geometry geo = check_arguments("dscn_backward", mode, input, offset, nullptr, &grad_output, args);
  at::Tensor grad_input = at::zeros_like(input);
  at::Tensor grad_offset = at::empty_like(offset);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "dscn_backward_cpu", [&] {
    const auto run = on_x ? backward_kernel<Deform::kX, scalar_t> : backward_kernel<Deform::kY, scalar_t>;
    run(geo, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), nullptr, grad_output.data_ptr<scalar_t>(),
        grad_input.data_ptr<scalar_t>(), grad_offset.data_ptr<scalar_t>(), nullptr);
  });
  return {grad_input, grad_offset};
}

}  // namespace
}  // namespace dcn
}  // namespace dense

TORCH_LIBRARY_FRAGMENT(dense, m) {
  m.def(
      "dcnv3_forward(Tensor input, Tensor offset, Tensor mask, int kernel_h, int kernel_w, int stride_h, "
      "int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, int group, int group_channels, "
      "float offset_scale, int remove_center) -> Tensor");
  m.def(
      "dcnv3_backward(Tensor input, Tensor offset, Tensor mask, Tensor grad_output, int kernel_h, int kernel_w, "
      "int stride_h, int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, int group, "
      "int group_channels, float offset_scale, int remove_center) -> (Tensor, Tensor, Tensor)");
  m.def(
      "dscn_forward(Tensor input, Tensor offset, int kernel_h, int kernel_w, int stride_h, int stride_w, "
      "int pad_h, int pad_w, int dilation_h, int dilation_w, int group, int group_channels, float offset_scale, "
      "int remove_center, bool on_x) -> Tensor");
  m.def(
      "dscn_backward(Tensor input, Tensor offset, Tensor grad_output, int kernel_h, int kernel_w, int stride_h, "
      "int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w, int group, int group_channels, "
      "float offset_scale, int remove_center, bool on_x) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dense, CPU, m) {
  m.impl("dcnv3_forward", &dense::dcn::dcnv3_forward_cpu);
  m.impl("dcnv3_backward", &dense::dcn::dcnv3_backward_cpu);
  m.impl("dscn_forward", &dense::dcn::dscn_forward_cpu);
  m.impl("dscn_backward", &dense::dcn::dscn_backward_cpu);
}
