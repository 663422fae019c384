// Squared Euclidean distances between two sets of rows from their
// differences, without the [Q, N, d] tensor of differences TensorFlow ops
// write (tfmeta.core.squared_distances computes the same with them):
//
//   TfmetaSquaredDistances(x [Q, d], c [N, d]) -> [Q, N]:
//     sum_k (x[q, k] - c[n, k])^2
//   TfmetaSquaredDistancesGrad(x, c, grad [Q, N]) -> (dx [Q, d], dc [N, d]):
//     dx[q] = 2 sum_n grad[q, n] (x[q] - c[n]), dc[n] = -2 sum_q (the same).
//
// Each difference is formed once, so nothing cancels (the expansion
// |x|^2 - 2 x.c + |c|^2 does). dc sums the queries in fixed chunks and the
// chunks in order, so the figures do not depend on the number of threads.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "shared.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfmeta {

namespace tf = ::tensorflow;
namespace shape = ::tensorflow::shape_inference;

namespace {

// Queries per chunk of dc's fixed-order sum.
constexpr int64_t kQueries = 32;

// Lanes of a 64-byte vector.
template <typename T>
constexpr int kLanes = 64 / sizeof(T);

void CheckRows(tf::OpKernelContext* context, const tf::Tensor& x,
               const tf::Tensor& c) {
  OP_REQUIRES(
      context, x.dims() == 2 && c.dims() == 2 && x.dim_size(1) == c.dim_size(1),
      tf::errors::InvalidArgument("x and c must be [Q, d] and [N, d], got ",
                                  x.shape().DebugString(), " and ",
                                  c.shape().DebugString()));
}

}  // namespace

REGISTER_OP("TfmetaSquaredDistances")
    .Input("x: T")
    .Input("c: T")
    .Output("distances: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape::InferenceContext* c) {
      shape::ShapeHandle x, centers;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &centers));
      c->set_output(0, c->Matrix(c->Dim(x, 0), c->Dim(centers, 0)));
      return absl::OkStatus();
    });

REGISTER_OP("TfmetaSquaredDistancesGrad")
    .Input("x: T")
    .Input("c: T")
    .Input("grad: T")
    .Output("x_grad: T")
    .Output("c_grad: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      return absl::OkStatus();
    });

template <typename T>
class SquaredDistancesOp : public tf::OpKernel {
 public:
  using tf::OpKernel::OpKernel;

  void Compute(tf::OpKernelContext* context) override {
    const tf::Tensor& x = context->input(0);
    const tf::Tensor& c = context->input(1);
    CheckRows(context, x, c);
    if (!context->status().ok()) return;
    const int64_t Q = x.dim_size(0), N = c.dim_size(0), d = x.dim_size(1);
    tf::Tensor* out = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(0, tf::TensorShape({Q, N}), &out));
    const T* xp = x.flat<T>().data();
    const T* cp = c.flat<T>().data();
    T* op = out->flat<T>().data();
    shared::ForRows(context, Q, 3 * N * d, [&](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; ++q) {
        const T* __restrict xq = xp + q * d;
        for (int64_t n = 0; n < N; ++n) {
          const T* __restrict cn = cp + n * d;
          // Lane by lane over whole vectors of features, then the rest and
          // the lanes in order (the loop vectorizes; the order is fixed).
          T lanes[kLanes<T>] = {};
          int64_t k = 0;
          for (; k + kLanes<T> <= d; k += kLanes<T>) {
            for (int l = 0; l < kLanes<T>; ++l) {
              const T diff = xq[k + l] - cn[k + l];
              lanes[l] += diff * diff;
            }
          }
          T sum = 0;
          for (; k < d; ++k) sum += (xq[k] - cn[k]) * (xq[k] - cn[k]);
          for (int l = 0; l < kLanes<T>; ++l) sum += lanes[l];
          op[q * N + n] = sum;
        }
      }
    });
  }
};

template <typename T>
class SquaredDistancesGradOp : public tf::OpKernel {
 public:
  using tf::OpKernel::OpKernel;

  void Compute(tf::OpKernelContext* context) override {
    const tf::Tensor& x = context->input(0);
    const tf::Tensor& c = context->input(1);
    const tf::Tensor& grad = context->input(2);
    CheckRows(context, x, c);
    if (!context->status().ok()) return;
    const int64_t Q = x.dim_size(0), N = c.dim_size(0), d = x.dim_size(1);
    OP_REQUIRES(
        context, grad.shape() == tf::TensorShape({Q, N}),
        tf::errors::InvalidArgument("grad must be [", Q, ", ", N, "], got ",
                                    grad.shape().DebugString()));
    tf::Tensor* x_grad = nullptr;
    tf::Tensor* c_grad = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &x_grad));
    OP_REQUIRES_OK(context, context->allocate_output(1, c.shape(), &c_grad));
    const T* xp = x.flat<T>().data();
    const T* cp = c.flat<T>().data();
    const T* gp = grad.flat<T>().data();
    T* dxp = x_grad->flat<T>().data();
    const int64_t chunks = (Q + kQueries - 1) / kQueries;
    std::vector<T> partial(std::max<int64_t>(chunks, 1) * N * d, T(0));
    shared::ForRows(
        context, chunks, 4 * kQueries * N * d, [&](int64_t begin, int64_t end) {
          std::vector<T> row(d);
          for (int64_t chunk = begin; chunk < end; ++chunk) {
            T* __restrict dc = partial.data() + chunk * N * d;
            const int64_t last = std::min(Q, (chunk + 1) * kQueries);
            for (int64_t q = chunk * kQueries; q < last; ++q) {
              const T* __restrict xq = xp + q * d;
              T* __restrict dx = row.data();
              std::fill(dx, dx + d, T(0));
              for (int64_t n = 0; n < N; ++n) {
                const T* __restrict cn = cp + n * d;
                T* __restrict dcn = dc + n * d;
                const T g = 2 * gp[q * N + n];
                for (int64_t k = 0; k < d; ++k) {
                  const T step = g * (xq[k] - cn[k]);
                  dx[k] += step;
                  dcn[k] -= step;
                }
              }
              std::copy(dx, dx + d, dxp + q * d);
            }
          }
        });
    for (int64_t chunk = 1; chunk < chunks; ++chunk)
      for (int64_t k = 0; k < N * d; ++k)
        partial[k] += partial[chunk * N * d + k];
    std::copy(partial.begin(), partial.begin() + N * d,
              c_grad->flat<T>().data());
  }
};

#define REGISTER(T)                                          \
  REGISTER_KERNEL_BUILDER(Name("TfmetaSquaredDistances")     \
                              .Device(tf::DEVICE_CPU)        \
                              .TypeConstraint<T>("T"),       \
                          SquaredDistancesOp<T>);            \
  REGISTER_KERNEL_BUILDER(Name("TfmetaSquaredDistancesGrad") \
                              .Device(tf::DEVICE_CPU)        \
                              .TypeConstraint<T>("T"),       \
                          SquaredDistancesGradOp<T>);

REGISTER(float)
REGISTER(double)
#undef REGISTER

}  // namespace tfmeta
