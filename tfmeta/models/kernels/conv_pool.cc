// A 3x3 stride-1 "same" convolution followed by 2x2 stride-2 "same" max
// pooling, in one pass that writes only the pooled maps (tfmeta.models.
// conv_pool computes the same with TensorFlow ops):
//
//   TfmetaConvPool(x [N, H, W, C], kernel [3, 3, C, F])
//     -> (pooled [N, h, w, F], position [N, h, w, F])
//     h = ceil(H / 2), w = ceil(W / 2); position in {0, 1, 2, 3} is the
//     window's row-major offset (2 * di + dj) of its first maximum.
//   TfmetaConvPoolAt(x, kernel, position) -> [N, h, w, F]: the convolution
//     at each window's given position (linear in the kernel).
//   TfmetaConvPoolFilterGrad(x, position, grad [N, h, w, F]) -> [3, 3, C, F]:
//     the gradient of TfmetaConvPoolAt with respect to the kernel, the
//     filter gradient of the convolution with each window's gradient at its
//     position and zeros elsewhere.
//
// Each window reads the 4x4 patch of x its four positions see (zeros past
// the edges) once, and sums over (kernel row, kernel column, channel) in
// that order, a block of output channels at a time in registers (GCC and
// Clang vector extensions: the build's widest instructions). The filter
// gradient sums windows in fixed chunks and the chunks in order, so its
// figures do not depend on the number of threads.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "shared.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfmeta {

namespace tf = ::tensorflow;
namespace shape = ::tensorflow::shape_inference;
using shared::ForChannels;
using shared::ForRows;
using shared::Half;

namespace {

// A block of output channels as one vector of 64 bytes (two AVX2 registers
// or one AVX-512 register), the lanes of a comparison, and a byte per lane.
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(64)));
  typedef int32_t mask __attribute__((vector_size(64)));
  typedef uint8_t bytes __attribute__((vector_size(16)));
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(64)));
  typedef int64_t mask __attribute__((vector_size(64)));
  typedef uint8_t bytes __attribute__((vector_size(8)));
};

// Output channels per block.
template <typename T>
constexpr int kBlock = 64 / sizeof(T);

// Windows per chunk of the filter gradient's fixed-order sum.
constexpr int64_t kChunk = 128;

// The problem's sizes, checked once per op.
struct Sizes {
  int64_t n, H, W, C, F, h, w;
  int64_t padded_f;  // F rounded up to the block
};

template <typename V>
inline V Load(const void* from) {
  V v;
  std::memcpy(&v, from, sizeof(V));
  return v;
}

template <typename V>
inline V Max(V a, V b) {
  return a < b ? b : a;  // std::max's choice, lane by lane
}

// The kernel as [9 * C, padded_f], zeros past F, so every block is whole.
template <typename T>
std::vector<T> PadKernel(const T* kernel, const Sizes& s) {
  std::vector<T> padded(9 * s.C * s.padded_f, T(0));
  for (int64_t row = 0; row < 9 * s.C; ++row)
    std::memcpy(padded.data() + row * s.padded_f, kernel + row * s.F,
                s.F * sizeof(T));
  return padded;
}

// The 4x4 patch (rows 2i-1..2i+2, columns 2j-1..2j+2, every channel) of
// image b, zeros past the edges, into patch[(4 * r + q) * C + c]. Channels
// are kC where known when compiled (kC > 0), else s.C.
template <typename T, int kC>
inline void ReadPatch(const T* x, const Sizes& s, int64_t b, int64_t i,
                      int64_t j, T* __restrict patch) {
  const int64_t C = kC > 0 ? kC : s.C;
  for (int r = 0; r < 4; ++r) {
    const int64_t row = 2 * i - 1 + r;
    const bool inside_row = row >= 0 && row < s.H;
    const int64_t from = ((b * s.H + row) * s.W + 2 * j - 1) * C;
    for (int q = 0; q < 4; ++q) {
      const int64_t col = 2 * j - 1 + q;
      T* to = patch + (4 * r + q) * C;
      if (inside_row && col >= 0 && col < s.W) {
        for (int64_t c = 0; c < C; ++c) to[c] = x[from + q * C + c];
      } else {
        for (int64_t c = 0; c < C; ++c) to[c] = T(0);
      }
    }
  }
}

// The convolution at a window's four positions (k = 2 * di + dj) for one
// block of output channels: conv[k].
template <typename T, int kC>
inline void ConvolveWindow(const T* __restrict patch,
                           const T* __restrict kernel, const Sizes& s,
                           int64_t block, typename Vec<T>::type (&conv)[4]) {
  using V = typename Vec<T>::type;
  const int64_t C = kC > 0 ? kC : s.C;
  V a[4] = {};
  for (int kh = 0; kh < 3; ++kh) {
    for (int kw = 0; kw < 3; ++kw) {
      const T* p00 = patch + (4 * kh + kw) * C;
      const T* p10 = p00 + 4 * C;
      const T* k = kernel + (kh * 3 + kw) * C * s.padded_f + block;
      for (int64_t c = 0; c < C; ++c, k += s.padded_f) {
        const V kv = Load<V>(k);
        a[0] += p00[c] * kv;
        a[1] += p00[C + c] * kv;
        a[2] += p10[c] * kv;
        a[3] += p10[C + c] * kv;
      }
    }
  }
  for (int q = 0; q < 4; ++q) conv[q] = a[q];
}

void CheckInputs(tf::OpKernelContext* context, const tf::Tensor& x,
                 const tf::Tensor* kernel, Sizes* s) {
  shared::Map map;
  if (!shared::ReadMap(context, x, &map)) return;
  s->n = map.n, s->H = map.H, s->W = map.W, s->C = map.C;
  s->h = (s->H + 1) / 2, s->w = (s->W + 1) / 2;
  if (kernel != nullptr) {
    OP_REQUIRES(
        context,
        kernel->dims() == 4 && kernel->dim_size(0) == 3 &&
            kernel->dim_size(1) == 3 && kernel->dim_size(2) == s->C,
        tf::errors::InvalidArgument("kernel must be [3, 3, ", s->C,
                                    ", F] for x ", x.shape().DebugString(),
                                    ", got ", kernel->shape().DebugString()));
    s->F = kernel->dim_size(3);
  }
}

void FinishSizes(Sizes* s, int block) {
  s->padded_f = (s->F + block - 1) / block * block;
}

}  // namespace

REGISTER_OP("TfmetaConvPool")
    .Input("x: T")
    .Input("kernel: T")
    .Output("pooled: T")
    .Output("position: uint8")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape::InferenceContext* c) {
      shape::ShapeHandle x, kernel;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &kernel));
      shape::ShapeHandle pooled =
          c->MakeShape({c->Dim(x, 0), Half(c, c->Dim(x, 1)),
                        Half(c, c->Dim(x, 2)), c->Dim(kernel, 3)});
      c->set_output(0, pooled);
      c->set_output(1, pooled);
      return absl::OkStatus();
    });

REGISTER_OP("TfmetaConvPoolAt")
    .Input("x: T")
    .Input("kernel: T")
    .Input("position: uint8")
    .Output("pooled: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape::InferenceContext* c) {
      c->set_output(0, c->input(2));
      return absl::OkStatus();
    });

REGISTER_OP("TfmetaConvPoolFilterGrad")
    .Input("x: T")
    .Input("position: uint8")
    .Input("grad: T")
    .Output("kernel_grad: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](shape::InferenceContext* c) {
      shape::ShapeHandle x, grad;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &grad));
      c->set_output(0, c->MakeShape({3, 3, c->Dim(x, 3), c->Dim(grad, 3)}));
      return absl::OkStatus();
    });

// TfmetaConvPool (at = false) and TfmetaConvPoolAt (at = true).
template <typename T, bool at>
class ConvPoolOp : public tf::OpKernel {
 public:
  using tf::OpKernel::OpKernel;

  void Compute(tf::OpKernelContext* context) override {
    constexpr int B = kBlock<T>;
    using V = typename Vec<T>::type;
    using M = typename Vec<T>::mask;
    using Bytes = typename Vec<T>::bytes;
    const tf::Tensor& x = context->input(0);
    const tf::Tensor& kernel = context->input(1);
    Sizes s;
    CheckInputs(context, x, &kernel, &s);
    if (!context->status().ok()) return;
    FinishSizes(&s, B);
    const tf::TensorShape pooled_shape({s.n, s.h, s.w, s.F});
    const uint8_t* given = nullptr;
    if (at) {
      const tf::Tensor& position = context->input(2);
      OP_REQUIRES(context, position.shape() == pooled_shape,
                  tf::errors::InvalidArgument(
                      "position must be ", pooled_shape.DebugString(), ", got ",
                      position.shape().DebugString()));
      given = position.flat<uint8_t>().data();
    }
    tf::Tensor* pooled = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, pooled_shape, &pooled));
    uint8_t* found = nullptr;
    if (!at) {
      tf::Tensor* position = nullptr;
      OP_REQUIRES_OK(context,
                     context->allocate_output(1, pooled_shape, &position));
      found = position->flat<uint8_t>().data();
    }
    if (pooled->NumElements() == 0) return;
    const std::vector<T> padded = PadKernel(kernel.flat<T>().data(), s);
    const T* xp = x.flat<T>().data();
    T* yp = pooled->flat<T>().data();
    const int64_t cost = s.w * 36 * s.C * s.padded_f;
    ForChannels(s.C, [&](auto channels) {
      constexpr int kC = decltype(channels)::value;
      ForRows(context, s.n * s.h, cost, [&](int64_t begin, int64_t end) {
        std::vector<T> patch(16 * s.C);
        V conv[4];
        for (int64_t row = begin; row < end; ++row) {
          const int64_t b = row / s.h, i = row % s.h;
          const bool two_rows = 2 * i + 1 < s.H;
          for (int64_t j = 0; j < s.w; ++j) {
            ReadPatch<T, kC>(xp, s, b, i, j, patch.data());
            const bool two_cols = 2 * j + 1 < s.W;
            const int64_t window = (row * s.w + j) * s.F;
            for (int64_t block = 0; block < s.F; block += B) {
              ConvolveWindow<T, kC>(patch.data(), padded.data(), s, block,
                                    conv);
              const bool whole = block + B <= s.F;
              const int lanes = whole ? B : static_cast<int>(s.F - block);
              const V p0 = conv[0];
              // A position past the map's edge stands in as the first,
              // which is never the first maximum in its place.
              const V p1 = two_cols ? conv[1] : p0;
              const V p2 = two_rows ? conv[2] : p0;
              const V p3 = two_rows && two_cols ? conv[3] : p0;
              V top;
              Bytes where = {};
              if (at) {
                if (whole) {  // copies of a fixed size where they can be
                  std::memcpy(&where, given + window + block, B);
                } else {
                  std::memcpy(&where, given + window + block, lanes);
                }
                const M k = __builtin_convertvector(where, M) & 3;
                top = k == 0 ? p0 : k == 1 ? p1 : k == 2 ? p2 : p3;
              } else {
                // The first position holding the maximum, in row-major
                // order: how many before it do not hold it.
                top = Max(Max(p0, p1), Max(p2, p3));
                const M past0 = p0 != top, past1 = past0 & (p1 != top),
                        past2 = past1 & (p2 != top);
                where =
                    __builtin_convertvector(-(past0 + past1 + past2), Bytes);
              }
              if (whole) {
                if (!at) std::memcpy(found + window + block, &where, B);
                std::memcpy(yp + window + block, &top, B * sizeof(T));
              } else {
                if (!at) std::memcpy(found + window + block, &where, lanes);
                std::memcpy(yp + window + block, &top, lanes * sizeof(T));
              }
            }
          }
        }
      });
    });
  }
};

// The filter gradient for kC channels (kC > 0) of one chunk of windows, a
// block of output channels at a time with the block's sums in registers.
template <typename T, int kC>
void FilterGradChunk(const T* patches, const T* grad, const uint8_t* position,
                     const Sizes& s, int64_t count, T* sum) {
  using V = typename Vec<T>::type;
  using M = typename Vec<T>::mask;
  using Bytes = typename Vec<T>::bytes;
  constexpr int B = kBlock<T>;
  for (int64_t block = 0; block < s.F; block += B) {
    const bool whole = block + B <= s.F;
    const int lanes = whole ? B : static_cast<int>(s.F - block);
    V acc[9 * kC] = {};
    for (int64_t window = 0; window < count; ++window) {
      const T* patch = patches + window * 16 * kC;
      V g = {};
      Bytes where = {};
      if (whole) {  // copies of a fixed size where they can be
        std::memcpy(&g, grad + window * s.F + block, B * sizeof(T));
        std::memcpy(&where, position + window * s.F + block, B);
      } else {
        std::memcpy(&g, grad + window * s.F + block, lanes * sizeof(T));
        std::memcpy(&where, position + window * s.F + block, lanes);
      }
      const M k = __builtin_convertvector(where, M) & 3;
      // The window's gradient at each of its four positions.
      const V zero = {};
      const V g0 = k == 0 ? g : zero, g1 = k == 1 ? g : zero,
              g2 = k == 2 ? g : zero, g3 = k == 3 ? g : zero;
      for (int kh = 0; kh < 3; ++kh) {
        for (int kw = 0; kw < 3; ++kw) {
          const T* p00 = patch + (4 * kh + kw) * kC;
          const T* p10 = p00 + 4 * kC;
          for (int c = 0; c < kC; ++c) {
            acc[(kh * 3 + kw) * kC + c] +=
                p00[c] * g0 + p00[kC + c] * g1 + p10[c] * g2 + p10[kC + c] * g3;
          }
        }
      }
    }
    for (int t = 0; t < 9 * kC; ++t)
      std::memcpy(sum + t * s.padded_f + block, &acc[t], sizeof(V));
  }
}

// The same for channels read at run time, the sums in memory.
template <typename T>
void FilterGradChunkAnyChannels(const T* patches, const T* grad,
                                const uint8_t* position, const Sizes& s,
                                int64_t count, T* sum) {
  const int64_t C = s.C;
  for (int64_t window = 0; window < count; ++window) {
    const T* patch = patches + window * 16 * C;
    for (int64_t f = 0; f < s.F; ++f) {
      const int k = position[window * s.F + f] & 3;
      const T g = grad[window * s.F + f];
      const int64_t di = k >> 1, dj = k & 1;
      for (int kh = 0; kh < 3; ++kh)
        for (int kw = 0; kw < 3; ++kw)
          for (int64_t c = 0; c < C; ++c)
            sum[((kh * 3 + kw) * C + c) * s.padded_f + f] +=
                patch[(4 * (kh + di) + kw + dj) * C + c] * g;
    }
  }
}

template <typename T>
class ConvPoolFilterGradOp : public tf::OpKernel {
 public:
  using tf::OpKernel::OpKernel;

  void Compute(tf::OpKernelContext* context) override {
    const tf::Tensor& x = context->input(0);
    const tf::Tensor& position = context->input(1);
    const tf::Tensor& grad = context->input(2);
    Sizes s;
    CheckInputs(context, x, nullptr, &s);
    if (!context->status().ok()) return;
    OP_REQUIRES(
        context,
        grad.dims() == 4 && grad.dim_size(0) == s.n &&
            grad.dim_size(1) == s.h && grad.dim_size(2) == s.w &&
            position.shape() == grad.shape(),
        tf::errors::InvalidArgument(
            "grad and position must be one [N, h, w, F] pooled from x ",
            x.shape().DebugString(), ", got ", grad.shape().DebugString(),
            " and ", position.shape().DebugString()));
    s.F = grad.dim_size(3);
    FinishSizes(&s, kBlock<T>);
    tf::Tensor* kernel_grad = nullptr;
    OP_REQUIRES_OK(
        context, context->allocate_output(0, tf::TensorShape({3, 3, s.C, s.F}),
                                          &kernel_grad));
    T* out = kernel_grad->flat<T>().data();
    const int64_t taps = 9 * s.C * s.padded_f;
    const int64_t windows = s.n * s.h * s.w;
    const int64_t chunks = (windows + kChunk - 1) / kChunk;
    std::vector<T> partial(std::max<int64_t>(chunks, 1) * taps, T(0));
    const T* xp = x.flat<T>().data();
    const T* gp = grad.flat<T>().data();
    const uint8_t* pp = position.flat<uint8_t>().data();
    const int64_t cost = kChunk * 36 * s.C * s.padded_f;
    ForChannels(s.C, [&](auto channels) {
      constexpr int kC = decltype(channels)::value;
      ForRows(context, chunks, cost, [&](int64_t begin, int64_t end) {
        std::vector<T> patches(kChunk * 16 * s.C);
        for (int64_t chunk = begin; chunk < end; ++chunk) {
          const int64_t first = chunk * kChunk;
          const int64_t count = std::min(windows, first + kChunk) - first;
          for (int64_t k = 0; k < count; ++k) {
            const int64_t window = first + k, row = window / s.w;
            ReadPatch<T, kC>(xp, s, row / s.h, row % s.h, window % s.w,
                             patches.data() + k * 16 * s.C);
          }
          T* sum = partial.data() + chunk * taps;
          const T* g = gp + first * s.F;
          const uint8_t* at = pp + first * s.F;
          if constexpr (kC > 0) {
            FilterGradChunk<T, kC>(patches.data(), g, at, s, count, sum);
          } else {
            FilterGradChunkAnyChannels<T>(patches.data(), g, at, s, count, sum);
          }
        }
      });
    });
    // The chunks in order, then the padding dropped.
    for (int64_t chunk = 1; chunk < chunks; ++chunk) {
      const T* from = partial.data() + chunk * taps;
      for (int64_t k = 0; k < taps; ++k) partial[k] += from[k];
    }
    for (int64_t row = 0; row < 9 * s.C; ++row)
      std::memcpy(out + row * s.F, partial.data() + row * s.padded_f,
                  s.F * sizeof(T));
  }
};

#define REGISTER(T)                                                           \
  REGISTER_KERNEL_BUILDER(                                                    \
      Name("TfmetaConvPool").Device(tf::DEVICE_CPU).TypeConstraint<T>("T"),   \
      ConvPoolOp<T, false>);                                                  \
  REGISTER_KERNEL_BUILDER(                                                    \
      Name("TfmetaConvPoolAt").Device(tf::DEVICE_CPU).TypeConstraint<T>("T"), \
      ConvPoolOp<T, true>);                                                   \
  REGISTER_KERNEL_BUILDER(Name("TfmetaConvPoolFilterGrad")                    \
                              .Device(tf::DEVICE_CPU)                         \
                              .TypeConstraint<T>("T"),                        \
                          ConvPoolFilterGradOp<T>);

REGISTER(float)
REGISTER(double)
#undef REGISTER

}  // namespace tfmeta
