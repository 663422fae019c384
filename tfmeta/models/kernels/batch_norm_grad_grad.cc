// The gradient of training-mode batch norm's backward pass in two passes over
// the data (tfmeta.models.batch_norm.batch_norm_grad_grad writes the same
// closed form with about twenty TensorFlow ops, each a pass of its own).
//
// Inputs: x [M.., C] float32 (all axes but the last are reduced), scale [C],
// dy [M.., C] (the backward pass's incoming gradient), and the cotangents of
// the backward pass's outputs: ddx [M.., C], ddscale [C], ddoffset [C].
// Outputs: the cotangents of (dy, x, scale).
//
// Pass 1 accumulates, per channel and in double precision, the sums of x,
// x^2, dy, dy*x, ddx, ddx*x and ddx*dy; every mean of the closed form follows
// from them. Pass 2 writes both big outputs, affine per channel in
// (x - mean, dy, ddx).

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfmeta {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::InferenceContext;

REGISTER_OP("TfmetaBatchNormGradGrad")
    .Input("x: float")
    .Input("scale: float")
    .Input("dy: float")
    .Input("ddx: float")
    .Input("ddscale: float")
    .Input("ddoffset: float")
    .Attr("epsilon: float")
    .Output("grad_dy: float")
    .Output("grad_x: float")
    .Output("grad_scale: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(0));
      c->set_output(2, c->input(1));
      return absl::OkStatus();
    });

class BatchNormGradGradOp : public OpKernel {
 public:
  explicit BatchNormGradGradOp(OpKernelConstruction* context)
      : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& scale = context->input(1);
    const Tensor& dy = context->input(2);
    const Tensor& ddx = context->input(3);
    const Tensor& ddscale = context->input(4);
    const Tensor& ddoffset = context->input(5);
    OP_REQUIRES(context, x.dims() >= 1,
                InvalidArgument("x must have a channel axis"));
    const int64_t channels = x.dim_size(x.dims() - 1);
    OP_REQUIRES(context,
                dy.shape() == x.shape() && ddx.shape() == x.shape(),
                InvalidArgument("x, dy and ddx must have one shape"));
    for (const Tensor* t : {&scale, &ddscale, &ddoffset}) {
      OP_REQUIRES(context, t->dims() == 1 && t->dim_size(0) == channels,
                  InvalidArgument("scale, ddscale and ddoffset must be [C]"));
    }
    OP_REQUIRES(context, channels > 0 && x.NumElements() > 0,
                InvalidArgument("x must not be empty"));
    const int64_t rows = x.NumElements() / channels;

    Tensor* grad_dy = nullptr;
    Tensor* grad_x = nullptr;
    Tensor* grad_scale = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &grad_dy));
    OP_REQUIRES_OK(context, context->allocate_output(1, x.shape(), &grad_x));
    OP_REQUIRES_OK(context,
                   context->allocate_output(2, scale.shape(), &grad_scale));

    const float* xp = x.flat<float>().data();
    const float* dyp = dy.flat<float>().data();
    const float* ddxp = ddx.flat<float>().data();
    const float* sp = scale.flat<float>().data();
    const float* ddsp = ddscale.flat<float>().data();
    const float* ddop = ddoffset.flat<float>().data();

    // Pass 1: per-channel sums in double. Shifting by the first row keeps
    // the sums of squares and products well conditioned when |mean| >> std.
    const int64_t C = channels;
    std::vector<double> shift(xp, xp + C);
    std::vector<double> sx(C, 0.0), sxx(C, 0.0), sdy(C, 0.0), sdyx(C, 0.0),
        sddx(C, 0.0), sddxx(C, 0.0), sddxdy(C, 0.0);
    for (int64_t m = 0; m < rows; ++m) {
      const float* xr = xp + m * C;
      const float* dyr = dyp + m * C;
      const float* ddxr = ddxp + m * C;
      for (int64_t c = 0; c < C; ++c) {
        const double xv = static_cast<double>(xr[c]) - shift[c];
        const double dyv = dyr[c];
        const double ddxv = ddxr[c];
        sx[c] += xv;
        sxx[c] += xv * xv;
        sdy[c] += dyv;
        sdyx[c] += dyv * xv;
        sddx[c] += ddxv;
        sddxx[c] += ddxv * xv;
        sddxdy[c] += ddxv * dyv;
      }
    }

    // Per-channel coefficients of the closed form (see batch_norm.py).
    // xh = r (x - mean), P(dy) = dy - mean(dy) - xh mean(dy xh);
    // grad_dy = scale r ddx + dy_xh xh + dy_const;
    // grad_x = x_p_dy P(dy) + x_ddx ddx + x_xh xh + x_const.
    // Both are then written as a*(x - mean) + b*dy + c*ddx + d.
    std::vector<float> center(C), gdy_x(C), gdy_ddx(C), gdy_0(C);
    std::vector<float> gx_x(C), gx_dy(C), gx_ddx(C), gx_0(C);
    float* gsp = grad_scale->flat<float>().data();
    const double n = static_cast<double>(rows);
    for (int64_t c = 0; c < C; ++c) {
      const double mean_shifted = sx[c] / n;
      const double mean = shift[c] + mean_shifted;
      const double var = std::max(sxx[c] / n - mean_shifted * mean_shifted, 0.0);
      const double r = 1.0 / std::sqrt(var + static_cast<double>(epsilon_));
      const double m_dy = sdy[c] / n;
      const double m_ddx = sddx[c] / n;
      // mean(v * (x - mean)) = mean(v * x_shifted) - mean(v) mean_shifted
      const double m_dy_xh = r * (sdyx[c] / n - m_dy * mean_shifted);
      const double m_ddx_xh = r * (sddxx[c] / n - m_ddx * mean_shifted);
      const double m_ddx_pdy =
          sddxdy[c] / n - m_ddx * m_dy - m_ddx_xh * m_dy_xh;
      const double s = sp[c];
      const double scale_r = s * r;
      const double scale_r2 = scale_r * r;
      const double dy_xh = ddsp[c] - scale_r * m_ddx_xh;
      const double dy_const = ddop[c] - scale_r * m_ddx;
      const double x_ddx = -scale_r2 * m_dy_xh;
      const double x_p_dy = ddsp[c] * r - scale_r2 * m_ddx_xh;
      const double x_xh = -scale_r2 * m_ddx_pdy - x_ddx * m_ddx_xh;
      const double x_const = -x_ddx * m_ddx;
      // With u = x - mean: xh = r u, P(dy) = dy - m_dy - m_dy_xh r u.
      center[c] = static_cast<float>(mean);
      gdy_ddx[c] = static_cast<float>(scale_r);
      gdy_x[c] = static_cast<float>(dy_xh * r);
      gdy_0[c] = static_cast<float>(dy_const);
      gx_dy[c] = static_cast<float>(x_p_dy);
      gx_ddx[c] = static_cast<float>(x_ddx);
      gx_x[c] = static_cast<float>(-x_p_dy * m_dy_xh * r + x_xh * r);
      gx_0[c] = static_cast<float>(-x_p_dy * m_dy + x_const);
      gsp[c] = static_cast<float>(r * m_ddx_pdy * n);
    }

    // Pass 2: the big outputs.
    float* gdyp = grad_dy->flat<float>().data();
    float* gxp = grad_x->flat<float>().data();
    for (int64_t m = 0; m < rows; ++m) {
      const float* xr = xp + m * C;
      const float* dyr = dyp + m * C;
      const float* ddxr = ddxp + m * C;
      float* gdyr = gdyp + m * C;
      float* gxr = gxp + m * C;
      for (int64_t c = 0; c < C; ++c) {
        const float u = xr[c] - center[c];
        gdyr[c] = gdy_ddx[c] * ddxr[c] + gdy_x[c] * u + gdy_0[c];
        gxr[c] = gx_dy[c] * dyr[c] + gx_ddx[c] * ddxr[c] + gx_x[c] * u +
                 gx_0[c];
      }
    }
  }

 private:
  float epsilon_;
};

REGISTER_KERNEL_BUILDER(Name("TfmetaBatchNormGradGrad").Device(DEVICE_CPU),
                        BatchNormGradGradOp);

}  // namespace tfmeta
