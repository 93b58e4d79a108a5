// Multi-scale deformable attention (Deformable DETR's MSDeformAttn), CUDA kernels: float32 / float16 /
// bfloat16 accumulating in float, and float64 (used by the equality tests) in double. Registers the CUDA
// implementations of the schemas defined in ops/cpu/ms_deform_attn_cpu.cpp and mirrors that file:
// forward_kernel <-> forward_head + accumulate_point, backward_kernel <-> backward_head + backward_point,
// with the same per-point math (ms_deform_attn.h) and index arithmetic. One difference: the CPU kernels
// copy a head's values into contiguous rows first (row stride D); here value is read in place (row
// stride M * D), where neighbouring threads already read neighbouring channels.
//
// Work decomposition:
//   forward  - one thread per output element (n, q, m, d): the CPU's loops over (n, m), q and the channel
//              loop become the thread index; consecutive threads read consecutive channels (coalesced).
//   backward - one group of G lanes (G = D rounded up to a power of two, at most 32) per (n, q, m); lanes
//              stride over the D channels. grad_value is scattered with atomics into an op-math buffer
//              (float32; float64 for double), as many queries hit the same value row; the location / weight
//              gradients of a point are summed over the group with shuffles and written once by the group's
//              lane 0, without atomics.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <climits>

#include "ms_deform_attn.h"

namespace dense {
namespace msda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Number of blocks for `work` items of `per_block` each; fails before a launch gridDim.x cannot hold.
unsigned int block_count(int64_t work, int64_t per_block, const char* kernel) {
  const int64_t blocks = ceil_div(work, per_block);
  TORCH_CHECK(blocks <= INT_MAX, "ms_deform_attn: ", kernel, " needs ", blocks, " blocks, more than CUDA allows");
  return static_cast<unsigned int>(blocks);
}

// output[n, q, m, d] for one channel of one (n, q, m): the CPU's forward_head with d fixed.
// spatial_shapes / level_start_index are read on the device, like upstream: checking their values against S
// (as the CPU path does) would cost a host sync per call; the Python face checks sum(H * W) == S.
template <typename scalar_t>
__global__ void forward_kernel(Problem pb, const int64_t* __restrict__ spatial_shapes,
                               const int64_t* __restrict__ level_start_index, const scalar_t* __restrict__ value,
                               const scalar_t* __restrict__ loc, const scalar_t* __restrict__ attn,
                               scalar_t* __restrict__ out) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // flat (n, q, m, d)
  if (idx >= pb.batch * pb.queries * pb.heads * pb.channels) return;
  const int64_t d = idx % pb.channels;
  const int64_t head = idx / pb.channels;  // flat index of (n, q, m)
  const int64_t m = head % pb.heads;
  const int64_t n = head / (pb.queries * pb.heads);
  const scalar_t* value_head = value + (n * pb.spatial * pb.heads + m) * pb.channels;  // value[n, 0, m, 0]
  const int64_t row_stride = pb.heads * pb.channels;
  const int64_t pts = head * pb.levels * pb.points;
  opmath_t acc = 0;
  for (int64_t l = 0; l < pb.levels; ++l) {
    const int64_t height = spatial_shapes[2 * l], width = spatial_shapes[2 * l + 1], start = level_start_index[l];
    for (int64_t p = 0; p < pb.points; ++p) {
      const int64_t i = pts + l * pb.points + p;
      Corners<opmath_t> c;
      if (!locate<opmath_t>(static_cast<opmath_t>(loc[2 * i]), static_cast<opmath_t>(loc[2 * i + 1]), height, width,
                            start, &c)) {
        continue;
      }
      const opmath_t a = static_cast<opmath_t>(attn[i]);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (c.position[k] < 0) continue;
        acc += a * c.weight[k] * static_cast<opmath_t>(value_head[c.position[k] * row_stride + d]);
      }
    }
  }
  out[idx] = static_cast<scalar_t>(acc);
}

// Sum of v over the `width` lanes of this lane's group (an aligned power-of-two slice of the warp);
// every lane of the group gets the sum. xor offsets below `width` never leave the group.
template <typename T>
__device__ __forceinline__ T group_sum(T v, unsigned int mask, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(mask, v, offset);
  return v;
}

// All gradients of one (n, q, m), computed by a group of `group` lanes: the CPU's backward_head, with
// the channel loops of backward_point split over the lanes. Each lane applies point_grads to its partial
// corner dot products (the gradients are linear in them), then the group sums the three results.
template <typename scalar_t>
__global__ void backward_kernel(Problem pb, int group, const int64_t* __restrict__ spatial_shapes,
                                const int64_t* __restrict__ level_start_index, const scalar_t* __restrict__ value,
                                const scalar_t* __restrict__ loc, const scalar_t* __restrict__ attn,
                                const scalar_t* __restrict__ grad_out,
                                at::opmath_type<scalar_t>* __restrict__ grad_value, scalar_t* __restrict__ grad_loc,
                                scalar_t* __restrict__ grad_attn) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int groups_per_block = blockDim.x / group;
  const int64_t head = static_cast<int64_t>(blockIdx.x) * groups_per_block + threadIdx.x / group;  // (n, q, m)
  // Whole groups leave together, and the shuffles below only involve this group's lanes.
  if (head >= pb.batch * pb.queries * pb.heads) return;
  const int lane = threadIdx.x % group;
  const int warp_lane = threadIdx.x % kWarp;
  const unsigned int mask = (group == kWarp) ? 0xffffffffu : (((1u << group) - 1u) << (warp_lane - lane));
  const int64_t m = head % pb.heads;
  const int64_t n = head / (pb.queries * pb.heads);
  const int64_t value_offset = (n * pb.spatial * pb.heads + m) * pb.channels;  // value[n, 0, m, 0]
  const int64_t row_stride = pb.heads * pb.channels;
  const int64_t pts = head * pb.levels * pb.points;
  const scalar_t* go = grad_out + head * pb.channels;
  for (int64_t l = 0; l < pb.levels; ++l) {
    const int64_t height = spatial_shapes[2 * l], width = spatial_shapes[2 * l + 1], start = level_start_index[l];
    for (int64_t p = 0; p < pb.points; ++p) {
      const int64_t i = pts + l * pb.points + p;
      Corners<opmath_t> c;
      // the same inputs for every lane of the group, so the whole group skips together (grads stay 0)
      if (!locate<opmath_t>(static_cast<opmath_t>(loc[2 * i]), static_cast<opmath_t>(loc[2 * i + 1]), height, width,
                            start, &c)) {
        continue;
      }
      const opmath_t a = static_cast<opmath_t>(attn[i]);
      opmath_t corner_dot[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        corner_dot[k] = 0;
        if (c.position[k] < 0) continue;
        const opmath_t coef = a * c.weight[k];
        const int64_t row = value_offset + c.position[k] * row_stride;
        for (int64_t d = lane; d < pb.channels; d += group) {
          const opmath_t g = static_cast<opmath_t>(go[d]);
          corner_dot[k] += g * static_cast<opmath_t>(value[row + d]);
          atomicAdd(grad_value + row + d, coef * g);
        }
      }
      opmath_t g_attn, g_x, g_y;
      point_grads(c, corner_dot, a, height, width, &g_attn, &g_x, &g_y);
      g_attn = group_sum(g_attn, mask, group);
      g_x = group_sum(g_x, mask, group);
      g_y = group_sum(g_y, mask, group);
      if (lane == 0) {
        grad_attn[i] = static_cast<scalar_t>(g_attn);
        grad_loc[2 * i] = static_cast<scalar_t>(g_x);
        grad_loc[2 * i + 1] = static_cast<scalar_t>(g_y);
      }
    }
  }
}

// Lanes per (n, q, m) in the backward: D rounded up to a power of two, at most a warp.
int backward_group_size(int64_t channels) {
  int group = 1;
  while (group < kWarp && group < channels) group *= 2;
  return group;
}

at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                        const at::Tensor& sampling_loc, const at::Tensor& attn_weight) {
  const Problem pb = check_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, at::Tensor(),
                                  c10::DeviceType::CUDA);
  const at::cuda::OptionalCUDAGuard guard(value.device());
  at::Tensor output = at::empty({pb.batch, pb.queries, pb.heads * pb.channels}, value.options());
  const int64_t work = output.numel();
  if (work == 0) return output;
  const unsigned int blocks = block_count(work, kThreads, "forward");
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        pb, spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(), value.data_ptr<scalar_t>(),
        sampling_loc.data_ptr<scalar_t>(), attn_weight.data_ptr<scalar_t>(), output.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                             const at::Tensor& level_start_index,
                                                             const at::Tensor& sampling_loc,
                                                             const at::Tensor& attn_weight,
                                                             const at::Tensor& grad_output) {
  const Problem pb = check_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output,
                                  c10::DeviceType::CUDA);
  const at::cuda::OptionalCUDAGuard guard(value.device());
  // grad_value takes atomics from many queries: accumulate in the op-math dtype (float32 for half types),
  // cast to the input dtype at the end (a no-op for float32 / float64). Skipped points keep the zero
  // location / weight gradients.
  at::Tensor grad_value_acc = at::zeros(value.sizes(), value.options().dtype(at::toOpMathType(value.scalar_type())));
  at::Tensor grad_loc = at::zeros_like(sampling_loc);
  at::Tensor grad_attn = at::zeros_like(attn_weight);
  const int64_t heads = pb.batch * pb.queries * pb.heads;
  if (heads > 0 && pb.channels > 0) {
    const int group = backward_group_size(pb.channels);
    const unsigned int blocks = block_count(heads, kThreads / group, "backward");
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      backward_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
          pb, group, spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
          value.data_ptr<scalar_t>(), sampling_loc.data_ptr<scalar_t>(), attn_weight.data_ptr<scalar_t>(),
          grad_output.data_ptr<scalar_t>(), grad_value_acc.data_ptr<at::opmath_type<scalar_t>>(),
          grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_value_acc.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace
}  // namespace msda
}  // namespace dense

TORCH_LIBRARY_IMPL(dense, CUDA, m) {
  m.impl("ms_deform_attn_forward", &dense::msda::forward_cuda);
  m.impl("ms_deform_attn_backward", &dense::msda::backward_cuda);
}
