// The mean and covariance of a map's 3x3 patches (zero-padded as a "same"
// convolution pads), in one pass over the map (tfmeta.models.pool_first
// computes the same with a patch convolution, a subtraction and a matmul):
//
//   TfmetaPatchMoments(x [N, H, W, C]) -> (mean [9C], covariance [9C, 9C])
//     over the N * H * W patches p, p[(3 * kh + kw) * C + c] =
//     x[n, i + kh - 1, j + kw - 1, c] (zero past the edges).
//
// Each image is copied once, channel by channel, into zero-bordered planes;
// the sums run a row of positions at a time as vector products of shifted
// rows, in the input's type within an image; images add up in double, in
// fixed chunks of images and the chunks in order, so the figures do not
// depend on the number of threads.

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

// Images per chunk of the fixed-order sum.
constexpr int64_t kImages = 8;

// The sums over one chunk's images of each patch entry and of each pair's
// product (upper triangle of the 9C x 9C matrix, row-major), added into sums
// and products. A row of output positions at a time: each entry's values
// along the row are a shifted row of a zero-bordered plane (one per
// channel), so each sum is a run of whole-row vector products. Rows add up
// in T within an image, images in double.
template <typename T>
void ChunkSums(const T* x, int64_t first, int64_t count, int64_t H, int64_t W,
               int64_t C, double* sums, double* products) {
  constexpr int64_t kLanes = 64 / sizeof(T);
  const int64_t D = 9 * C, pairs = D * (D + 1) / 2;
  // Positions per row rounded up to whole vectors; the planes are wide
  // enough for every shifted read.
  const int64_t WP = (W + kLanes - 1) / kLanes * kLanes, PW = WP + 2;
  std::vector<T> planes(C * (H + 2) * PW, T(0));
  std::vector<T> values(D * WP), row_sums(D * WP), row_products(pairs * WP);
  for (int64_t b = first; b < first + count; ++b) {
    const T* image = x + b * H * W * C;
    for (int64_t i = 0; i < H; ++i)
      for (int64_t j = 0; j < W; ++j)
        for (int64_t c = 0; c < C; ++c)
          planes[(c * (H + 2) + i + 1) * PW + j + 1] =
              image[(i * W + j) * C + c];
    std::fill(row_sums.begin(), row_sums.end(), T(0));
    std::fill(row_products.begin(), row_products.end(), T(0));
    for (int64_t i = 0; i < H; ++i) {
      // Entry (3 * kh + kw) * C + c along the row, zero past its end.
      for (int64_t e = 0; e < D; ++e) {
        const int64_t tap = e / C, c = e % C;
        const T* from =
            planes.data() + (c * (H + 2) + i + tap / 3) * PW + tap % 3;
        T* to = values.data() + e * WP;
        for (int64_t j = 0; j < WP; ++j) to[j] = j < W ? from[j] : T(0);
      }
      const T* __restrict v = values.data();
      T* __restrict s = row_sums.data();
      for (int64_t k = 0; k < D * WP; ++k) s[k] += v[k];
      T* __restrict prod = row_products.data();
      for (int64_t e = 0; e < D; ++e) {
        const T* __restrict ve = v + e * WP;
        for (int64_t f = e; f < D; ++f, prod += WP) {
          const T* __restrict vf = v + f * WP;
          for (int64_t j = 0; j < WP; ++j) prod[j] += ve[j] * vf[j];
        }
      }
    }
    for (int64_t e = 0; e < D; ++e) {
      T total = 0;
      for (int64_t j = 0; j < WP; ++j) total += row_sums[e * WP + j];
      sums[e] += total;
    }
    for (int64_t k = 0; k < pairs; ++k) {
      T total = 0;
      for (int64_t j = 0; j < WP; ++j) total += row_products[k * WP + j];
      products[k] += total;
    }
  }
}

}  // namespace

REGISTER_OP("TfmetaPatchMoments")
    .Input("x: T")
    .Output("mean: T")
    .Output("covariance: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape::InferenceContext* c) {
      shape::ShapeHandle x;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      shape::DimensionHandle size;
      TF_RETURN_IF_ERROR(c->Multiply(c->Dim(x, 3), 9, &size));
      c->set_output(0, c->Vector(size));
      c->set_output(1, c->Matrix(size, size));
      return absl::OkStatus();
    });

template <typename T>
class PatchMomentsOp : public tf::OpKernel {
 public:
  using tf::OpKernel::OpKernel;

  void Compute(tf::OpKernelContext* context) override {
    const tf::Tensor& x = context->input(0);
    shared::Map map;
    if (!shared::ReadMap(context, x, &map)) return;
    const int64_t n = map.n, H = map.H, W = map.W, C = map.C, D = 9 * C;
    tf::Tensor* mean = nullptr;
    tf::Tensor* covariance = nullptr;
    OP_REQUIRES_OK(context,
                   context->allocate_output(0, tf::TensorShape({D}), &mean));
    OP_REQUIRES_OK(context, context->allocate_output(1, tf::TensorShape({D, D}),
                                                     &covariance));
    const int64_t chunks = (n + kImages - 1) / kImages;
    const int64_t width = D + D * (D + 1) / 2;
    std::vector<double> partial(std::max<int64_t>(chunks, 1) * width, 0.0);
    const T* xp = x.flat<T>().data();
    const int64_t cost = kImages * H * W * D * (D + 3) / 2;
    shared::ForRows(context, chunks, cost, [&](int64_t begin, int64_t end) {
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t first = chunk * kImages;
        double* sums = partial.data() + chunk * width;
        ChunkSums(xp, first, std::min(kImages, n - first), H, W, C, sums,
                  sums + D);
      }
    });
    for (int64_t chunk = 1; chunk < chunks; ++chunk)
      for (int64_t k = 0; k < width; ++k)
        partial[k] += partial[chunk * width + k];
    // With no patch the moments are NaN, as a mean over nothing is.
    const double count = static_cast<double>(n * H * W);
    auto m = mean->flat<T>();
    auto v = covariance->matrix<T>();
    for (int64_t e = 0; e < D; ++e) m(e) = static_cast<T>(partial[e] / count);
    const double* sum = partial.data();
    const double* product = sum + D;  // the upper triangle, row by row
    for (int64_t e = 0; e < D; ++e) {
      for (int64_t f = e; f < D; ++f, ++product) {
        const double value =
            *product / count - sum[e] / count * (sum[f] / count);
        v(e, f) = v(f, e) = static_cast<T>(value);
      }
    }
  }
};

#define REGISTER(T)                                    \
  REGISTER_KERNEL_BUILDER(Name("TfmetaPatchMoments")   \
                              .Device(tf::DEVICE_CPU)  \
                              .TypeConstraint<T>("T"), \
                          PatchMomentsOp<T>);

REGISTER(float)
REGISTER(double)
#undef REGISTER

}  // namespace tfmeta
