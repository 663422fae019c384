// 2x2 stride-2 "same" max pooling of channels-last maps with the position
// of each window's first maximum, and the two linear maps that position
// defines (tfmeta.models.max_pool computes the same with TensorFlow ops):
//
//   TfmetaMaxPool(x [N, H, W, C]) -> (y [N, h, w, C], position [N, h, w, C])
//     h = ceil(H / 2), w = ceil(W / 2); position in {0, 1, 2, 3} is the
//     window's row-major offset (2 * di + dj) of its first maximum, the one
//     tf.nn.max_pool2d's gradient sends the gradient to.
//   TfmetaMaxPoolScatter(pooled [N, h, w, C], position, height, width)
//     -> [N, H, W, C]: each value at its window's position, zeros elsewhere
//     (the gradient of the pooling, MaxPoolGrad).
//   TfmetaMaxPoolGather(values [N, H, W, C], position) -> [N, h, w, C]: each
//     window's value at its position (the gradient of the scatter).
//
// Each is one pass over the full-size maps, split over the intra-op threads.

#include <algorithm>
#include <cstdint>

#include "shared.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfmeta {

namespace tf = ::tensorflow;
namespace shape = ::tensorflow::shape_inference;
using shared::ForRows;
using shared::Half;

namespace {

// One whole window's channels (the loops vectorize: no branch, no alias).
template <typename T>
void PoolWindow(const T* __restrict p00, const T* __restrict p01,
                const T* __restrict p10, const T* __restrict p11,
                T* __restrict y, uint8_t* __restrict position, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const T a = p00[c], b = p01[c], d = p10[c], e = p11[c];
    const T best = std::max(std::max(a, b), std::max(d, e));
    y[c] = best;
    // The first position holding the maximum, in row-major order: how many
    // positions before it do not hold it.
    const int past_a = a != best, past_b = past_a & (b != best),
              past_d = past_b & (d != best);
    position[c] = static_cast<uint8_t>(past_a + past_b + past_d);
  }
}

template <typename T>
void ScatterWindow(const T* __restrict pooled,
                   const uint8_t* __restrict position, int k,
                   T* __restrict target, int64_t C) {
  for (int64_t c = 0; c < C; ++c)
    target[c] = position[c] == k ? pooled[c] : T(0);
}

template <typename T>
void GatherWindow(const T* __restrict p00, const T* __restrict p01,
                  const T* __restrict p10, const T* __restrict p11,
                  const uint8_t* __restrict position, T* __restrict out,
                  int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const uint8_t at = position[c];
    out[c] = at == 0 ? p00[c] : at == 1 ? p01[c] : at == 2 ? p10[c] : p11[c];
  }
}

}  // namespace

REGISTER_OP("TfmetaMaxPool")
    .Input("x: T")
    .Output("y: T")
    .Output("position: uint8")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape::InferenceContext* c) {
      shape::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      shape::ShapeHandle y =
          c->MakeShape({c->Dim(x, 0), Half(c, c->Dim(x, 1)),
                        Half(c, c->Dim(x, 2)), c->Dim(x, 3)});
      c->set_output(0, y);
      c->set_output(1, y);
      return absl::OkStatus();
    });

REGISTER_OP("TfmetaMaxPoolScatter")
    .Input("pooled: T")
    .Input("position: uint8")
    .Input("height: int32")
    .Input("width: int32")
    .Output("values: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape::InferenceContext* c) {
      shape::ShapeHandle pooled;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &pooled));
      shape::DimensionHandle height, width;
      TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(2, &height));
      TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(3, &width));
      c->set_output(0, c->MakeShape({c->Dim(pooled, 0), height, width,
                                     c->Dim(pooled, 3)}));
      return absl::OkStatus();
    });

REGISTER_OP("TfmetaMaxPoolGather")
    .Input("values: T")
    .Input("position: uint8")
    .Output("pooled: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    });

template <typename T>
class MaxPoolOp : public tf::OpKernel {
 public:
  using tf::OpKernel::OpKernel;

  void Compute(tf::OpKernelContext* context) override {
    const tf::Tensor& x = context->input(0);
    shared::Map map;
    if (!shared::ReadMap(context, x, &map)) return;
    const int64_t n = map.n, H = map.H, W = map.W, C = map.C;
    const int64_t h = (H + 1) / 2, w = (W + 1) / 2;
    const tf::TensorShape pooled_shape({n, h, w, C});
    tf::Tensor* y = nullptr;
    tf::Tensor* position = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, pooled_shape, &y));
    OP_REQUIRES_OK(context,
                   context->allocate_output(1, pooled_shape, &position));
    if (x.NumElements() == 0) return;
    const T* xp = x.flat<T>().data();
    T* yp = y->flat<T>().data();
    uint8_t* pp = position->flat<uint8_t>().data();
    ForRows(context, n * h, 4 * w * C, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / h, i = row % h;
        const bool two_rows = 2 * i + 1 < H;
        for (int64_t j = 0; j < w; ++j) {
          const bool two_cols = 2 * j + 1 < W;
          const T* p00 = xp + ((b * H + 2 * i) * W + 2 * j) * C;
          const T* p01 = two_cols ? p00 + C : nullptr;
          const T* p10 = two_rows ? p00 + W * C : nullptr;
          const T* p11 = two_rows && two_cols ? p10 + C : nullptr;
          T* yr = yp + (row * w + j) * C;
          uint8_t* pr = pp + (row * w + j) * C;
          if (p11) {
            // A whole window: its maximum, then the first position holding
            // it (branch-free, so the loop vectorizes).
            PoolWindow(p00, p01, p10, p11, yr, pr, C);
            continue;
          }
          for (int64_t c = 0; c < C; ++c) {
            // The first maximum in row-major order: a later value replaces
            // it only when strictly greater.
            T best = p00[c];
            uint8_t at = 0;
            if (p01 && p01[c] > best) best = p01[c], at = 1;
            if (p10 && p10[c] > best) best = p10[c], at = 2;
            yr[c] = best;
            pr[c] = at;
          }
        }
      }
    });
  }
};

template <typename T>
class MaxPoolScatterOp : public tf::OpKernel {
 public:
  using tf::OpKernel::OpKernel;

  void Compute(tf::OpKernelContext* context) override {
    const tf::Tensor& pooled = context->input(0);
    const tf::Tensor& position = context->input(1);
    const tf::Tensor& height = context->input(2);
    const tf::Tensor& width = context->input(3);
    OP_REQUIRES(context,
                pooled.dims() == 4 && position.shape() == pooled.shape(),
                tf::errors::InvalidArgument(
                    "pooled and position must be one [N, h, w, C]"));
    OP_REQUIRES(
        context, height.NumElements() == 1 && width.NumElements() == 1,
        tf::errors::InvalidArgument("height and width must be scalars"));
    const int64_t n = pooled.dim_size(0), h = pooled.dim_size(1),
                  w = pooled.dim_size(2), C = pooled.dim_size(3);
    const int64_t H = height.flat<int32_t>()(0), W = width.flat<int32_t>()(0);
    OP_REQUIRES(context, (H + 1) / 2 == h && (W + 1) / 2 == w,
                tf::errors::InvalidArgument(
                    "height and width must pool to the pooled size"));
    tf::Tensor* values = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, tf::TensorShape({n, H, W, C}), &values));
    if (values->NumElements() == 0) return;
    const T* src = pooled.flat<T>().data();
    const uint8_t* pp = position.flat<uint8_t>().data();
    T* out = values->flat<T>().data();
    ForRows(context, n * h, 4 * w * C, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / h, i = row % h;
        const bool two_rows = 2 * i + 1 < H;
        T* top = out + (b * H + 2 * i) * W * C;
        T* bottom = two_rows ? top + W * C : nullptr;
        for (int64_t j = 0; j < w; ++j) {
          const T* sr = src + (row * w + j) * C;
          const uint8_t* pr = pp + (row * w + j) * C;
          const bool two_cols = 2 * j + 1 < W;
          T* window[4] = {
              top + 2 * j * C, two_cols ? top + (2 * j + 1) * C : nullptr,
              bottom ? bottom + 2 * j * C : nullptr,
              bottom && two_cols ? bottom + (2 * j + 1) * C : nullptr};
          for (int k = 0; k < 4; ++k) {
            T* target = window[k];
            if (!target) continue;
            ScatterWindow(sr, pr, k, target, C);
          }
        }
      }
    });
  }
};

template <typename T>
class MaxPoolGatherOp : public tf::OpKernel {
 public:
  using tf::OpKernel::OpKernel;

  void Compute(tf::OpKernelContext* context) override {
    const tf::Tensor& values = context->input(0);
    const tf::Tensor& position = context->input(1);
    OP_REQUIRES(context, values.dims() == 4 && position.dims() == 4,
                tf::errors::InvalidArgument("values and position must be 4-D"));
    const int64_t n = values.dim_size(0), H = values.dim_size(1),
                  W = values.dim_size(2), C = values.dim_size(3);
    const int64_t h = (H + 1) / 2, w = (W + 1) / 2;
    OP_REQUIRES(context, position.shape() == tf::TensorShape({n, h, w, C}),
                tf::errors::InvalidArgument(
                    "position must be the pooled shape of values"));
    tf::Tensor* pooled = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(0, position.shape(), &pooled));
    if (pooled->NumElements() == 0) return;
    const T* vp = values.flat<T>().data();
    const uint8_t* pp = position.flat<uint8_t>().data();
    T* out = pooled->flat<T>().data();
    ForRows(context, n * h, 2 * w * C, [&](int64_t begin, int64_t end) {
      // Offsets of a window's four positions (those past an odd edge are
      // never a maximum, so never read).
      const int64_t offset[4] = {0, C, W * C, W * C + C};
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / h, i = row % h;
        const bool two_rows = 2 * i + 1 < H;
        const T* top = vp + (b * H + 2 * i) * W * C;
        for (int64_t j = 0; j < w; ++j) {
          const T* base = top + 2 * j * C;
          const uint8_t* pr = pp + (row * w + j) * C;
          T* outr = out + (row * w + j) * C;
          if (two_rows && 2 * j + 1 < W) {
            GatherWindow(base, base + offset[1], base + offset[2],
                         base + offset[3], pr, outr, C);
            continue;
          }
          for (int64_t c = 0; c < C; ++c) outr[c] = base[offset[pr[c]] + c];
        }
      }
    });
  }
};

#define REGISTER(T)                                                        \
  REGISTER_KERNEL_BUILDER(                                                 \
      Name("TfmetaMaxPool").Device(tf::DEVICE_CPU).TypeConstraint<T>("T"), \
      MaxPoolOp<T>);                                                       \
  REGISTER_KERNEL_BUILDER(Name("TfmetaMaxPoolScatter")                     \
                              .Device(tf::DEVICE_CPU)                      \
                              .TypeConstraint<T>("T")                      \
                              .HostMemory("height")                        \
                              .HostMemory("width"),                        \
                          MaxPoolScatterOp<T>);                            \
  REGISTER_KERNEL_BUILDER(Name("TfmetaMaxPoolGather")                      \
                              .Device(tf::DEVICE_CPU)                      \
                              .TypeConstraint<T>("T"),                     \
                          MaxPoolGatherOp<T>);

REGISTER(float)
REGISTER(double)
#undef REGISTER

}  // namespace tfmeta
