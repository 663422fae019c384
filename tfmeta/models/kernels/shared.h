// What the kernels share: the pooled size of a dimension (2x2 stride-2
// "same" pooling), a channels-last input's sizes, the split of rows over the
// intra-op threads, and code compiled for the few channels of a network's
// input.

#ifndef TFMETA_MODELS_KERNELS_SHARED_H_
#define TFMETA_MODELS_KERNELS_SHARED_H_

#include <cstdint>
#include <type_traits>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tfmeta {
namespace shared {

// The pooled size of a dimension, or unknown.
inline ::tensorflow::shape_inference::DimensionHandle Half(
    ::tensorflow::shape_inference::InferenceContext* c,
    ::tensorflow::shape_inference::DimensionHandle d) {
  if (!c->ValueKnown(d)) return c->UnknownDim();
  return c->MakeDim((c->Value(d) + 1) / 2);
}

// The sizes of a channels-last map [N, H, W, C].
struct Map {
  int64_t n, H, W, C;
};

// x's sizes into map; false, with an InvalidArgument error on the context,
// where x is not [N, H, W, C].
inline bool ReadMap(::tensorflow::OpKernelContext* context,
                    const ::tensorflow::Tensor& x, Map* map) {
  if (x.dims() != 4) {
    context->SetStatus(::tensorflow::errors::InvalidArgument(
        "x must be [N, H, W, C], got ", x.shape().DebugString()));
    return false;
  }
  *map = {x.dim_size(0), x.dim_size(1), x.dim_size(2), x.dim_size(3)};
  return true;
}

// Runs body(begin, end) over [0, rows) on the intra-op threads.
template <typename Rows>
void ForRows(::tensorflow::OpKernelContext* context, int64_t rows,
             int64_t cost_per_row, Rows&& body) {
  auto* workers = context->device()->tensorflow_cpu_worker_threads();
  ::tensorflow::Shard(workers->num_threads, workers->workers, rows,
                      cost_per_row, body);
}

// body(std::integral_constant<int, kC>) with kC = C for the few channels
// of a network's input (1 to 4), else 0 (channels read at run time).
template <typename Body>
void ForChannels(int64_t C, Body&& body) {
  switch (C) {
    case 1:
      return body(std::integral_constant<int, 1>());
    case 2:
      return body(std::integral_constant<int, 2>());
    case 3:
      return body(std::integral_constant<int, 3>());
    case 4:
      return body(std::integral_constant<int, 4>());
    default:
      return body(std::integral_constant<int, 0>());
  }
}

}  // namespace shared
}  // namespace tfmeta

#endif  // TFMETA_MODELS_KERNELS_SHARED_H_
