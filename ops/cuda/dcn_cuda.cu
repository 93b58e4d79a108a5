// CUDA kernels of DCNv3 and DSCN (deformable sampling on channels-last maps), float32, float16, bfloat16
// (and float64), accumulating in at::opmath_type. Sampling math: ../dcn.h; semantics:
// dense/ops/reference.py (dcnv3, dscn). The kernels mirror ../cpu/dcn_cpu.cpp: the same loops over output
// pixels, groups and kernel points, with the CPU's innermost loop over a group's D channels split across
// the lanes of a "team" (a power-of-two slice of a warp). Lanes of a team read consecutive channels of
// the same pixel, so their loads coalesce.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that one also needs the cuSPARSE/cuBLAS headers
#include <torch/library.h>

#include "dcn.h"

namespace dense {
namespace dcn {
namespace {

constexpr int kWarpSize = 32;
constexpr int kThreadsPerBlock = 256;  // a multiple of the warp size, so no team straddles two warps
constexpr int64_t kMaxBlocks = 1 << 20;  // larger problems are covered by the kernels' grid-stride loops

// The lanes that share one (output pixel, group). `size` is a power of two <= 32; `mask` names the
// team's lanes within its warp, for the shuffles of team_sum.
struct Team {
  int64_t id, count;  // this team's index in the grid, and the number of teams in the grid
  int lane, size;
  unsigned mask;
};

__device__ Team this_team(int size) {
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int first_lane = static_cast<int>(threadIdx.x % kWarpSize) / size * size;
  Team team;
  team.id = thread / size;
  team.count = static_cast<int64_t>(gridDim.x) * blockDim.x / size;
  team.lane = static_cast<int>(threadIdx.x % size);
  team.size = size;
  team.mask = size == kWarpSize ? 0xffffffffu : ((1u << size) - 1u) << first_lane;
  return team;
}

// Sum over the team's lanes, returned to every lane (butterfly; a fixed order, so deterministic).
template <typename T>
__device__ T team_sum(T value, const Team& team) {
  for (int delta = team.size / 2; delta > 0; delta /= 2) value += __shfl_xor_sync(team.mask, value, delta, team.size);
  return value;
}

// Lanes per team: enough for one channel each, up to a warp.
int team_size(int64_t group_channels) {
  int size = 1;
  while (size < group_channels && size < kWarpSize) size *= 2;
  return size;
}

// Output pixel `pix` = (n, ho, wo) and group g of work item `item` (groups fastest, as the memory layout).
struct Item {
  int64_t pix, n, ho, wo, g;
};

__device__ Item decompose(const Geometry& geo, int64_t item) {
  Item it;
  it.g = item % geo.groups;
  it.pix = item / geo.groups;
  it.wo = it.pix % geo.out_width;
  it.ho = (it.pix / geo.out_width) % geo.out_height;
  it.n = it.pix / (geo.out_width * geo.out_height);
  return it;
}

// ------------------------------------------------------------------------------------------------
// Forward: out[pix, g*D + c] = sum_p mask * sample_p[c]; lane handles channels c = lane, lane + size, ...
// ------------------------------------------------------------------------------------------------
template <Deform M, typename scalar_t>
__global__ void forward_kernel(Geometry geo, const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                               const scalar_t* __restrict__ mask, scalar_t* __restrict__ output, int team_size) {
  using opmath_t = at::opmath_type<scalar_t>;
  using Md = Mode<M>;
  const Team team = this_team(team_size);
  const int64_t C = geo.channels(), D = geo.group_channels, G = geo.groups, P = geo.points;
  const int64_t items = geo.batch * geo.out_height * geo.out_width * G;
  for (int64_t item = team.id; item < items; item += team.count) {
    const Item it = decompose(geo, item);
    opmath_t origin_x, origin_y;
    pixel_origin(geo, it.ho, it.wo, origin_x, origin_y);
    const scalar_t* in = input + it.n * geo.height * geo.width * C + it.g * D;
    for (int64_t c = team.lane; c < D; c += team.size) {
      opmath_t acc = 0;
      for (KernelPoints k(geo); !k.done(); k.next()) {
        const int64_t gp = it.pix * G * P + it.g * P + k.p;
        Taps<opmath_t, M> taps;
        if (!sample_point<M>(geo, origin_x, origin_y, k.i, k.j, offset + gp * Md::kAxes, taps)) continue;
        const opmath_t m = Md::kMasked ? static_cast<opmath_t>(mask[gp]) : opmath_t(1);
        for (int t = 0; t < taps.count; ++t) {
          acc += m * taps.weight[t] * static_cast<opmath_t>(in[taps.pixel[t] * C + c]);
        }
      }
      output[it.pix * C + it.g * D + c] = static_cast<scalar_t>(acc);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Backward: as the CPU's point_backward, with dot_t = <grad_out, v_t> split across the team's lanes.
// grad_input is scattered with atomics into an opmath_t buffer (several pixels sample the same tap);
// grad_offset and grad_mask of each point belong to one team and are written once by its lane 0.
// ------------------------------------------------------------------------------------------------
template <Deform M, typename scalar_t>
__global__ void backward_kernel(Geometry geo, const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                                const scalar_t* __restrict__ mask, const scalar_t* __restrict__ grad_output,
                                at::opmath_type<scalar_t>* __restrict__ grad_input, scalar_t* __restrict__ grad_offset,
                                scalar_t* __restrict__ grad_mask, int team_size) {
  using opmath_t = at::opmath_type<scalar_t>;
  using Md = Mode<M>;
  const Team team = this_team(team_size);
  const int64_t C = geo.channels(), D = geo.group_channels, G = geo.groups, P = geo.points;
  const int64_t items = geo.batch * geo.out_height * geo.out_width * G;
  const opmath_t scale = static_cast<opmath_t>(geo.offset_scale);
  for (int64_t item = team.id; item < items; item += team.count) {
    const Item it = decompose(geo, item);
    opmath_t origin_x, origin_y;
    pixel_origin(geo, it.ho, it.wo, origin_x, origin_y);
    const int64_t channel0 = it.n * geo.height * geo.width * C + it.g * D;
    const scalar_t* grad_out = grad_output + it.pix * C + it.g * D;
    for (KernelPoints k(geo); !k.done(); k.next()) {
      const int64_t gp = it.pix * G * P + it.g * P + k.p;
      const opmath_t m = Md::kMasked ? static_cast<opmath_t>(mask[gp]) : opmath_t(1);
      // This lane's share of d(loss)/d(position) per deformed axis and of d(loss)/d(mask).
      opmath_t grad_pos[Md::kAxes] = {};
      opmath_t grad_m = 0;
      Taps<opmath_t, M> taps;
      if (sample_point<M>(geo, origin_x, origin_y, k.i, k.j, offset + gp * Md::kAxes, taps)) {
        for (int t = 0; t < taps.count; ++t) {
          const int64_t tap = channel0 + taps.pixel[t] * C;
          const opmath_t w = m * taps.weight[t];
          opmath_t dot = 0;
          for (int64_t c = team.lane; c < D; c += team.size) {
            const opmath_t go = static_cast<opmath_t>(grad_out[c]);
            dot += go * static_cast<opmath_t>(input[tap + c]);
            atomicAdd(grad_input + tap + c, w * go);
          }
          for (int a = 0; a < Md::kAxes; ++a) grad_pos[a] += taps.slope[a][t] * dot;
          grad_m += taps.weight[t] * dot;
        }
      }
      // Every lane of the team reaches these sums: the branch above depends only on the team's item.
      for (int a = 0; a < Md::kAxes; ++a) grad_pos[a] = team_sum(grad_pos[a], team);
      if constexpr (Md::kMasked) grad_m = team_sum(grad_m, team);
      if (team.lane == 0) {
        for (int a = 0; a < Md::kAxes; ++a) {
          grad_offset[gp * Md::kAxes + a] = static_cast<scalar_t>(scale * m * grad_pos[a]);
        }
        if constexpr (Md::kMasked) grad_mask[gp] = static_cast<scalar_t>(grad_m);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Launches
// ------------------------------------------------------------------------------------------------
struct Launch {
  int blocks, threads, team;
};

// One team per (output pixel, group); zero blocks when there is nothing to do.
Launch launch_shape(const Geometry& geo) {
  const int team = team_size(geo.group_channels);
  const int64_t threads = geo.batch * geo.out_height * geo.out_width * geo.groups * team;
  const int64_t blocks = std::min((threads + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks);
  return {static_cast<int>(blocks), kThreadsPerBlock, team};
}

template <Deform M, typename scalar_t>
void launch_forward(const Geometry& geo, const at::Tensor& input, const at::Tensor& offset, const at::Tensor* mask,
                    at::Tensor& output) {
  const Launch l = launch_shape(geo);
  if (l.blocks == 0) return;
  forward_kernel<M, scalar_t><<<l.blocks, l.threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      geo, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), mask ? mask->data_ptr<scalar_t>() : nullptr,
      output.data_ptr<scalar_t>(), l.team);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// grad_input_acc: zeros, dtype opmath_type<scalar_t>; grad_offset and grad_mask are fully written.
template <Deform M, typename scalar_t>
void launch_backward(const Geometry& geo, const at::Tensor& input, const at::Tensor& offset, const at::Tensor* mask,
                     const at::Tensor& grad_output, at::Tensor& grad_input_acc, at::Tensor& grad_offset,
                     at::Tensor* grad_mask) {
  using opmath_t = at::opmath_type<scalar_t>;
  const Launch l = launch_shape(geo);
  if (l.blocks == 0) return;
  backward_kernel<M, scalar_t><<<l.blocks, l.threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      geo, input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), mask ? mask->data_ptr<scalar_t>() : nullptr,
      grad_output.data_ptr<scalar_t>(), grad_input_acc.data_ptr<opmath_t>(), grad_offset.data_ptr<scalar_t>(),
      grad_mask ? grad_mask->data_ptr<scalar_t>() : nullptr, l.team);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The buffer grad_input is accumulated in: opmath_type of the input's dtype (float32 for half types).
at::Tensor grad_input_buffer(const at::Tensor& input) {
  const at::ScalarType acc = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return at::zeros(input.sizes(), input.options().dtype(acc));
}

// ------------------------------------------------------------------------------------------------
// Entry points (schemas: ../cpu/dcn_cpu.cpp)
// ------------------------------------------------------------------------------------------------
void check_cuda(const char* op, const at::Tensor& input) {
  TORCH_CHECK(input.is_cuda(), op, ": the CUDA kernel got input on ", input.device());
}

at::Tensor dcnv3_forward_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                              int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                              int64_t pad_w, int64_t dilation_h, int64_t dilation_w, int64_t group,
                              int64_t group_channels, double offset_scale, int64_t remove_center) {
  const ConvArgs args{kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                      group, group_channels, offset_scale, remove_center};
  check_cuda("dcnv3_forward", input);
  const Geometry geo = check_arguments("dcnv3_forward", Deform::kXY, input, offset, &mask, nullptr, args);
  const c10::cuda::OptionalCUDAGuard guard(input.device());
  at::Tensor output = at::empty({geo.batch, geo.out_height, geo.out_width, geo.channels()}, input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_forward_cuda", [&] {
    launch_forward<Deform::kXY, scalar_t>(geo, input, offset, &mask, output);
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dcnv3_backward_cuda(
    const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask, const at::Tensor& grad_output,
    int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
    int64_t dilation_h, int64_t dilation_w, int64_t group, int64_t group_channels, double offset_scale,
    int64_t remove_center) {
  const ConvArgs args{kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                      group, group_channels, offset_scale, remove_center};
  check_cuda("dcnv3_backward", input);
  const Geometry geo = check_arguments("dcnv3_backward", Deform::kXY, input, offset, &mask, &grad_output, args);
  const c10::cuda::OptionalCUDAGuard guard(input.device());
  at::Tensor grad_input = grad_input_buffer(input);
  at::Tensor grad_offset = at::empty_like(offset);
  at::Tensor grad_mask = at::empty_like(mask);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_backward_cuda", [&] {
    launch_backward<Deform::kXY, scalar_t>(geo, input, offset, &mask, grad_output, grad_input, grad_offset,
                                           &grad_mask);
  });
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask};
}

at::Tensor dscn_forward_cuda(const at::Tensor& input, const at::Tensor& offset, int64_t kernel_h, int64_t kernel_w,
                             int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dilation_h,
                             int64_t dilation_w, int64_t group, int64_t group_channels, double offset_scale,
                             int64_t remove_center, bool on_x) {
  const ConvArgs args{kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                      group, group_channels, offset_scale, remove_center};
  const Deform mode = on_x ? Deform::kX : Deform::kY;
  check_cuda("dscn_forward", input);
  const Geometry geo = check_arguments("dscn_forward", mode, input, offset, nullptr, nullptr, args);
  const c10::cuda::OptionalCUDAGuard guard(input.device());
  at::Tensor output = at::empty({geo.batch, geo.out_height, geo.out_width, geo.channels()}, input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dscn_forward_cuda", [&] {
    const auto launch = on_x ? launch_forward<Deform::kX, scalar_t> : launch_forward<Deform::kY, scalar_t>;
    launch(geo, input, offset, nullptr, output);
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor> dscn_backward_cuda(const at::Tensor& input, const at::Tensor& offset,
                                                      const at::Tensor& grad_output, int64_t kernel_h,
                                                      int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                                                      int64_t pad_h, int64_t pad_w, int64_t dilation_h,
                                                      int64_t dilation_w, int64_t group, int64_t group_channels,
                                                      double offset_scale, int64_t remove_center, bool on_x) {
  const ConvArgs args{kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                      group, group_channels, offset_scale, remove_center};
  const Deform mode = on_x ? Deform::kX : Deform::kY;
  check_cuda("dscn_backward", input);
  const Geometry geo = check_arguments("dscn_backward", mode, input, offset, nullptr, &grad_output, args);
  const c10::cuda::OptionalCUDAGuard guard(input.device());
  at::Tensor grad_input = grad_input_buffer(input);
  at::Tensor grad_offset = at::empty_like(offset);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dscn_backward_cuda", [&] {
    const auto launch = on_x ? launch_backward<Deform::kX, scalar_t> : launch_backward<Deform::kY, scalar_t>;
    launch(geo, input, offset, nullptr, grad_output, grad_input, grad_offset, nullptr);
  });
  return {grad_input.to(input.scalar_type()), grad_offset};
}

}  // namespace
}  // namespace dcn
}  // namespace dense

TORCH_LIBRARY_IMPL(dense, CUDA, m) {
  m.impl("dcnv3_forward", &dense::dcn::dcnv3_forward_cuda);
  m.impl("dcnv3_backward", &dense::dcn::dcnv3_backward_cuda);
  m.impl("dscn_forward", &dense::dcn::dscn_forward_cuda);
  m.impl("dscn_backward", &dense::dcn::dscn_backward_cuda);
}
