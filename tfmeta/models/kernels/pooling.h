// What the 2x2 stride-2 "same" pooling kernels share (max_pool.cc,
// conv_pool.cc): the pooled size of a dimension and the split of pooled rows
// over the intra-op threads.

#ifndef TFMETA_MODELS_KERNELS_POOLING_H_
#define TFMETA_MODELS_KERNELS_POOLING_H_

#include <cstdint>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tfmeta {
namespace pooling {

// The pooled size of a dimension, or unknown.
inline ::tensorflow::shape_inference::DimensionHandle Half(
    ::tensorflow::shape_inference::InferenceContext* c,
    ::tensorflow::shape_inference::DimensionHandle d) {
  if (!c->ValueKnown(d)) return c->UnknownDim();
  return c->MakeDim((c->Value(d) + 1) / 2);
}

// Runs body(begin, end) over [0, rows) on the intra-op threads.
template <typename Rows>
void ForRows(::tensorflow::OpKernelContext* context, int64_t rows,
             int64_t cost_per_row, Rows&& body) {
  auto* workers = context->device()->tensorflow_cpu_worker_threads();
  ::tensorflow::Shard(workers->num_threads, workers->workers, rows,
                      cost_per_row, body);
}

}  // namespace pooling
}  // namespace tfmeta

#endif  // TFMETA_MODELS_KERNELS_POOLING_H_
