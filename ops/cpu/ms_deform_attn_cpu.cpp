// Multi-scale deformable attention (Deformable DETR's MSDeformAttn), CPU kernels, float32 / float64.
// Defines the schemas of torch.ops.dense.ms_deform_attn_{forward,backward}; the CUDA kernels in
// ops/cuda/ms_deform_attn_cuda.cu register against the same schemas.
//
// Parallelisation (race-free and deterministic, no atomics): tasks over (n, m) pairs. A task copies the
// head's values value[n, :, m, :] into contiguous rows (cache-friendly: see gather_head) and visits the
// queries in a fixed order. It alone writes output[n, :, m], grad_sampling_loc[n, :, m] and
// grad_attn_weight[n, :, m], and - as grad_value[n, :, m, :] is touched only by the queries of batch n
// and head m - it accumulates that slice privately and writes it back whole.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "ms_deform_attn.h"

namespace dense {
namespace msda {

namespace {

void check_tensor(const at::Tensor& t, const char* name, int64_t dim, c10::DeviceType device,
                  const at::Tensor& value) {
  TORCH_CHECK(t.defined(), "ms_deform_attn: ", name, " is undefined");
  TORCH_CHECK(t.device().type() == device, "ms_deform_attn: ", name, " must be a ", device, " tensor, got ",
              t.device());
  TORCH_CHECK(t.device() == value.device(), "ms_deform_attn: ", name, " is on ", t.device(), " but value is on ",
              value.device());
  TORCH_CHECK(t.dim() == dim, "ms_deform_attn: ", name, " must have ", dim, " dims, got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "ms_deform_attn: ", name, " must be contiguous");
}

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, "ms_deform_attn: ", name, " must have shape ", expected, ", got ", t.sizes());
}

}  // namespace

Problem check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                     const at::Tensor& sampling_loc, const at::Tensor& attn_weight, const at::Tensor& grad_output,
                     c10::DeviceType device) {
  check_tensor(value, "value", 4, device, value);
  check_tensor(spatial_shapes, "spatial_shapes", 2, device, value);
  check_tensor(level_start_index, "level_start_index", 1, device, value);
  check_tensor(sampling_loc, "sampling_loc", 6, device, value);
  check_tensor(attn_weight, "attn_weight", 5, device, value);
  TORCH_CHECK(at::isFloatingType(value.scalar_type()), "ms_deform_attn: value must be floating point, got ",
              value.scalar_type());
  TORCH_CHECK(sampling_loc.scalar_type() == value.scalar_type(), "ms_deform_attn: sampling_loc has dtype ",
              sampling_loc.scalar_type(), " but value has ", value.scalar_type());
  TORCH_CHECK(attn_weight.scalar_type() == value.scalar_type(), "ms_deform_attn: attn_weight has dtype ",
              attn_weight.scalar_type(), " but value has ", value.scalar_type());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong, "ms_deform_attn: spatial_shapes must be int64, got ",
              spatial_shapes.scalar_type());
  TORCH_CHECK(level_start_index.scalar_type() == at::kLong, "ms_deform_attn: level_start_index must be int64, got ",
              level_start_index.scalar_type());

  Problem pb;
  pb.batch = value.size(0);
  pb.spatial = value.size(1);
  pb.heads = value.size(2);
  pb.channels = value.size(3);
  pb.queries = sampling_loc.size(1);
  pb.levels = sampling_loc.size(3);
  pb.points = sampling_loc.size(4);
  check_shape(sampling_loc, "sampling_loc", {pb.batch, pb.queries, pb.heads, pb.levels, pb.points, 2});
  check_shape(attn_weight, "attn_weight", {pb.batch, pb.queries, pb.heads, pb.levels, pb.points});
  check_shape(spatial_shapes, "spatial_shapes", {pb.levels, 2});
  check_shape(level_start_index, "level_start_index", {pb.levels});
  if (grad_output.defined()) {
    check_tensor(grad_output, "grad_output", 3, device, value);
    TORCH_CHECK(grad_output.scalar_type() == value.scalar_type(), "ms_deform_attn: grad_output has dtype ",
                grad_output.scalar_type(), " but value has ", value.scalar_type());
    check_shape(grad_output, "grad_output", {pb.batch, pb.queries, pb.heads * pb.channels});
  }
  return pb;
}

namespace {

// One feature level, as the kernels read it.
struct Level {
  int64_t height, width, start;
};

// Reads spatial_shapes / level_start_index and checks that the levels tile value's S positions in order:
// the kernels index value with them, so a mismatch would read out of bounds.
std::vector<Level> read_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                               int64_t spatial) {
  const int64_t* shape = spatial_shapes.data_ptr<int64_t>();
  const int64_t* start = level_start_index.data_ptr<int64_t>();
  std::vector<Level> levels(level_start_index.size(0));
  int64_t next = 0;
  for (size_t l = 0; l < levels.size(); ++l) {
    levels[l] = {shape[2 * l], shape[2 * l + 1], start[l]};
    TORCH_CHECK(levels[l].height >= 0 && levels[l].width >= 0, "ms_deform_attn: spatial_shapes[", l,
                "] must be non-negative, got (", levels[l].height, ", ", levels[l].width, ")");
    TORCH_CHECK(levels[l].start == next, "ms_deform_attn: level_start_index[", l, "] must be ", next,
                " (the sum of the previous levels' H * W), got ", levels[l].start);
    next += levels[l].height * levels[l].width;
  }
  TORCH_CHECK(next == spatial, "ms_deform_attn: spatial_shapes cover ", next, " positions but value has ", spatial);
  return levels;
}

// The D channels of head m of batch n at every position, value[n, :, m, :], copied into contiguous rows
// [S, D]. The kernels work on one (n, m) at a time: in value's layout the rows of a head are M * D apart,
// which uses only a fraction of the cache sets, while contiguous rows of one head usually fit in L2.
template <typename scalar_t>
void gather_head(const Problem& pb, const scalar_t* value, int64_t n, int64_t m, scalar_t* rows) {
  const scalar_t* src = value + (n * pb.spatial * pb.heads + m) * pb.channels;
  for (int64_t s = 0; s < pb.spatial; ++s) {
    std::copy_n(src + s * pb.heads * pb.channels, pb.channels, rows + s * pb.channels);
  }
}

// The inverse of gather_head: writes contiguous (op-math) rows [S, D] into grad_value[n, :, m, :].
template <typename scalar_t, typename opmath_t>
void scatter_head(const Problem& pb, const opmath_t* rows, int64_t n, int64_t m, scalar_t* grad_value) {
  scalar_t* dst = grad_value + (n * pb.spatial * pb.heads + m) * pb.channels;
  for (int64_t s = 0; s < pb.spatial; ++s) {
    std::copy_n(rows + s * pb.channels, pb.channels, dst + s * pb.heads * pb.channels);  // converts to scalar_t
  }
}

// A task walks the queries of one (n, m), so its reads of sampling_loc / attn_weight / grad_output jump
// M * L * P * 2 (resp. M * L * P, M * D) elements from query to query; among the random value reads the
// hardware prefetcher misses that stride and the loads stall. Requesting them a few queries ahead hides it.
constexpr int64_t kPrefetchAhead = 2;

template <typename T>
void prefetch(const T* data, int64_t count) {
#if defined(__GNUC__)
  constexpr int64_t kLine = 64;  // bytes
  const char* end = reinterpret_cast<const char*>(data + count);
  for (const char* p = reinterpret_cast<const char*>(data); p < end; p += kLine) __builtin_prefetch(p);
  if (count > 0) __builtin_prefetch(end - 1);  // the last line, when data does not start on a line
#endif
}

// Prefetches the inputs of (n, q + kPrefetchAhead, m), given the flat index `head` of (n, q, m);
// grad_out may be null (forward).
template <typename scalar_t>
void prefetch_ahead(const Problem& pb, int64_t q, int64_t head, const scalar_t* loc, const scalar_t* attn,
                    const scalar_t* grad_out) {
  if (q + kPrefetchAhead >= pb.queries) return;
  const int64_t ahead = head + kPrefetchAhead * pb.heads;  // (n, q + kPrefetchAhead, m)
  const int64_t pts = ahead * pb.levels * pb.points;
  prefetch(loc + 2 * pts, 2 * pb.levels * pb.points);
  prefetch(attn + pts, pb.levels * pb.points);
  if (grad_out != nullptr) prefetch(grad_out + ahead * pb.channels, pb.channels);
}

// acc[0:D] += attn * (bilinear sample of the head's rows [S, D] at the point's corners).
template <typename scalar_t, typename opmath_t>
void accumulate_point(const Corners<opmath_t>& c, opmath_t attn, const scalar_t* rows, int64_t channels,
                      opmath_t* acc) {
  for (int k = 0; k < 4; ++k) {
    if (c.position[k] < 0) continue;
    const opmath_t coef = attn * c.weight[k];
    const scalar_t* v = rows + c.position[k] * channels;
#pragma omp simd
    for (int64_t d = 0; d < channels; ++d) acc[d] += coef * static_cast<opmath_t>(v[d]);
  }
}

// output[n, q, m, :] for one (n, q, m): the attention-weighted sum over the L * P sampling points.
// rows: the head's values [S, D] (gather_head); loc / attn point at this (n, q, m)'s L * P points.
template <typename scalar_t>
void forward_head(const Problem& pb, const std::vector<Level>& levels, const scalar_t* rows, const scalar_t* loc,
                  const scalar_t* attn, at::opmath_type<scalar_t>* acc, scalar_t* out) {
  using opmath_t = at::opmath_type<scalar_t>;
  std::fill(acc, acc + pb.channels, opmath_t(0));
  for (int64_t l = 0; l < pb.levels; ++l) {
    const Level& lv = levels[l];
    for (int64_t p = 0; p < pb.points; ++p) {
      const int64_t i = l * pb.points + p;
      Corners<opmath_t> c;
      if (!locate<opmath_t>(loc[2 * i], loc[2 * i + 1], lv.height, lv.width, lv.start, &c)) continue;
      accumulate_point(c, static_cast<opmath_t>(attn[i]), rows, pb.channels, acc);
    }
  }
  for (int64_t d = 0; d < pb.channels; ++d) out[d] = static_cast<scalar_t>(acc[d]);
}

template <typename scalar_t>
void forward_kernel(const Problem& pb, const std::vector<Level>& levels, const scalar_t* value, const scalar_t* loc,
                    const scalar_t* attn, scalar_t* out) {
  using opmath_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, pb.batch * pb.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> rows(pb.spatial * pb.channels);
    std::vector<opmath_t> acc(pb.channels);
    for (int64_t nm = begin; nm < end; ++nm) {
      const int64_t n = nm / pb.heads;
      const int64_t m = nm % pb.heads;
      gather_head(pb, value, n, m, rows.data());
      for (int64_t q = 0; q < pb.queries; ++q) {
        const int64_t head = (n * pb.queries + q) * pb.heads + m;  // flat index of (n, q, m)
        const int64_t pts = head * pb.levels * pb.points;
        prefetch_ahead<scalar_t>(pb, q, head, loc, attn, nullptr);
        forward_head(pb, levels, rows.data(), loc + 2 * pts, attn + pts, acc.data(), out + head * pb.channels);
      }
    }
  });
}

// Backward of one sampling point through its in-map corners: grad_rows += attn * weight * grad_out at each
// corner, and corner_dot[k] = <grad_out, value row of corner k> (0 for corners outside the map).
template <typename scalar_t, typename opmath_t>
void backward_point(const Corners<opmath_t>& c, opmath_t attn, const scalar_t* grad_out, const scalar_t* rows,
                    opmath_t* grad_rows, int64_t channels, opmath_t corner_dot[4]) {
  for (int k = 0; k < 4; ++k) {
    corner_dot[k] = opmath_t(0);
    if (c.position[k] < 0) continue;
    const opmath_t coef = attn * c.weight[k];
    const scalar_t* v = rows + c.position[k] * channels;
    opmath_t* gv = grad_rows + c.position[k] * channels;
    opmath_t dot = 0;
    // the reduction clause lets the compiler vectorise the dot product (in a fixed, deterministic order)
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < channels; ++d) {
      const opmath_t g = static_cast<opmath_t>(grad_out[d]);
      dot += g * static_cast<opmath_t>(v[d]);
      gv[d] += coef * g;
    }
    corner_dot[k] = dot;
  }
}

// All gradients of one (n, q, m): its contributions to the head's grad_rows [S, D], and its location / weight
// gradients. rows: the head's values [S, D] (gather_head); loc / attn / grad_loc / grad_attn point at this
// (n, q, m)'s L * P points, grad_out at its D channels.
template <typename scalar_t>
void backward_head(const Problem& pb, const std::vector<Level>& levels, const scalar_t* rows, const scalar_t* loc,
                   const scalar_t* attn, const scalar_t* grad_out, at::opmath_type<scalar_t>* grad_rows,
                   scalar_t* grad_loc, scalar_t* grad_attn) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t l = 0; l < pb.levels; ++l) {
    const Level& lv = levels[l];
    for (int64_t p = 0; p < pb.points; ++p) {
      const int64_t i = l * pb.points + p;
      Corners<opmath_t> c;
      if (!locate<opmath_t>(loc[2 * i], loc[2 * i + 1], lv.height, lv.width, lv.start, &c)) continue;  // grads stay 0
      const opmath_t a = static_cast<opmath_t>(attn[i]);
      opmath_t corner_dot[4];
      backward_point(c, a, grad_out, rows, grad_rows, pb.channels, corner_dot);
      opmath_t g_attn, g_x, g_y;
      point_grads(c, corner_dot, a, lv.height, lv.width, &g_attn, &g_x, &g_y);
      grad_attn[i] = static_cast<scalar_t>(g_attn);
      grad_loc[2 * i] = static_cast<scalar_t>(g_x);
      grad_loc[2 * i + 1] = static_cast<scalar_t>(g_y);
    }
  }
}

template <typename scalar_t>
void backward_kernel(const Problem& pb, const std::vector<Level>& levels, const scalar_t* value, const scalar_t* loc,
                     const scalar_t* attn, const scalar_t* grad_out, scalar_t* grad_value, scalar_t* grad_loc,
                     scalar_t* grad_attn) {
  using opmath_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, pb.batch * pb.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> rows(pb.spatial * pb.channels);
    std::vector<opmath_t> grad_rows(pb.spatial * pb.channels);
    for (int64_t nm = begin; nm < end; ++nm) {
      const int64_t n = nm / pb.heads;
      const int64_t m = nm % pb.heads;
      gather_head(pb, value, n, m, rows.data());
      std::fill(grad_rows.begin(), grad_rows.end(), opmath_t(0));
      for (int64_t q = 0; q < pb.queries; ++q) {
        const int64_t head = (n * pb.queries + q) * pb.heads + m;  // flat index of (n, q, m)
        const int64_t pts = head * pb.levels * pb.points;
        prefetch_ahead(pb, q, head, loc, attn, grad_out);
        backward_head(pb, levels, rows.data(), loc + 2 * pts, attn + pts, grad_out + head * pb.channels,
                      grad_rows.data(), grad_loc + 2 * pts, grad_attn + pts);
      }
      scatter_head(pb, grad_rows.data(), n, m, grad_value);
    }
  });
}

at::Tensor forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                       const at::Tensor& sampling_loc, const at::Tensor& attn_weight) {
  const Problem pb = check_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, at::Tensor(),
                                  c10::DeviceType::CPU);
  const std::vector<Level> levels = read_levels(spatial_shapes, level_start_index, pb.spatial);
  at::Tensor output = at::empty({pb.batch, pb.queries, pb.heads * pb.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    forward_kernel<scalar_t>(pb, levels, value.data_ptr<scalar_t>(), sampling_loc.data_ptr<scalar_t>(),
                             attn_weight.data_ptr<scalar_t>(), output.data_ptr<scalar_t>());
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                            const at::Tensor& level_start_index,
                                                            const at::Tensor& sampling_loc,
                                                            const at::Tensor& attn_weight,
                                                            const at::Tensor& grad_output) {
  const Problem pb = check_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output,
                                  c10::DeviceType::CPU);
  const std::vector<Level> levels = read_levels(spatial_shapes, level_start_index, pb.spatial);
  // grad_value is written whole by scatter_head; skipped points keep zero location / weight gradients
  at::Tensor grad_value = at::empty_like(value);
  at::Tensor grad_loc = at::zeros_like(sampling_loc);
  at::Tensor grad_attn = at::zeros_like(attn_weight);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    backward_kernel<scalar_t>(pb, levels, value.data_ptr<scalar_t>(), sampling_loc.data_ptr<scalar_t>(),
                              attn_weight.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
                              grad_value.data_ptr<scalar_t>(), grad_loc.data_ptr<scalar_t>(),
                              grad_attn.data_ptr<scalar_t>());
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace
}  // namespace msda
}  // namespace dense

TORCH_LIBRARY_FRAGMENT(dense, m) {
  m.def(
      "ms_deform_attn_forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, Tensor sampling_loc, "
      "Tensor attn_weight) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, Tensor sampling_loc, "
      "Tensor attn_weight, Tensor grad_output) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dense, CPU, m) {
  m.impl("ms_deform_attn_forward", &dense::msda::forward_cpu);
  m.impl("ms_deform_attn_backward", &dense::msda::backward_cpu);
}
