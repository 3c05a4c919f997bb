// Fused CPU kernels for the tokenizer's hottest elementwise chain, registered as TensorFlow ops inside the
// same libtensorflow tfjs-node runs on (issue 16). GroupNorm (+ optional SiLU) over an NHWC map is ~10 TF ops
// forward and ~13 backward when composed from tfjs primitives (each a full pass over a [B, H, W, C] map plus
// ~15 µs of dispatch); here it is one op each way, two passes over the map.
//
//   MergevqGroupNormAct(x [B,H,W,C], gamma [C], beta [C]; groups, eps, silu) → y, mean [B,G], rstd [B,G]
//     y = act((x − μ_bg)·rstd_bg·γ_c + β_c),  act = SiLU (z·σ(z)) or identity
//   MergevqGroupNormActGrad(dy, x, gamma, beta, mean, rstd; groups, silu) → dx, dgamma, dbeta
//     dz = dy·act'(z);  dx = rstd·(γ·dz − mean_grp(γ·dz) − x̂·mean_grp(γ·dz·x̂)),  dγ = Σ dz·x̂,  dβ = Σ dz
//
//   MergevqAdam(p, m, v, g: N tensors each; beta1, beta2, one_minus_beta1, one_minus_beta2, bc2_sqrt, eps,
//               step_size) → p', m', v' (N each): the whole optimiser step of trainer/src/train/adam.ts in one op,
//     the same float32 operations in the same order (m' = m·β1 + g·(1−β1); v' = v·β2 + g²·(1−β2);
//     p' = p − step·(m' / (√v' / √bc2 + eps))), compiled without FMA contraction, so bit-identical to it.
//   MergevqLayerNorm(x [N, D], gamma, beta; eps) → y, mean [N], rstd [N]  (timm LayerNorm, biased variance)
//   MergevqLayerNormGrad(dy, x, gamma, mean, rstd) → dx, dgamma, dbeta
//   MergevqGelu(x) → 0.5·x·(1 + erf(x/√2));  MergevqGeluGrad(dy, x) → dy·(Φ(x) + x·φ(x))
//   MergevqAttention(qkv [B,N,3·h·d], bias [B,N]; heads, scale, has_bias) → out [B,N,h·d], probs [B,h,N,N]
//     the core of timm's Attention after the qkv linear: per head P = softmax(scale·Q·Kᵀ + bias_j), O = P·V,
//     heads merged back into the last axis (no transposes); `bias` is ToMe's log-size over keys (ignored when
//     has_bias is false: then the caller passes qkv again)
//   MergevqScaledResidual(x, y, gamma [D]) → x + γ·y over the last axis (a residual through LayerScale)
//   MergevqScaledResidualGrad(dout, y, gamma) → dy = γ·dout, dgamma = Σ dout·y  (dx is dout itself)
//   MergevqAttentionGrad(dout, qkv, probs; heads, scale) → dqkv [B,N,3·h·d], dbias [B,N]
//     dV = Pᵀ·dO;  dS = P ⊙ (dO·Vᵀ − rowsum(P ⊙ dO·Vᵀ));  dQ = scale·dS·K;  dK = scale·dSᵀ·Q;  dbias = Σ_h,i dS
//   MergevqLinear(x [..., K], w [K, N] (or [1, 1, K, N]), b [N]; has_bias) → y [..., N] = x·w + b, no reshapes
//   MergevqLinearGrad(dy, x, w; has_bias) → dx = dy·wᵀ, dw = xᵀ·dy, db = Σ dy ([0] without bias)
//     Eigen's GEMM on row-major maps, one block per intra-op thread
//
// GroupNorm: same formulas as trainer/src/nn/groupNorm.ts (biased variance, PyTorch semantics); statistics are
// accumulated in double. Work is split over the batch on TF's intra-op pool. The file is also a (trivial)
// Node-API module, so `require()` loads it into the process; loading runs the op/kernel registrations.
// Built by hack/tfjs-native/build-ops.sh against the headers of the same tensorflow wheel.
#include <node_api.h>

#include <cmath>
#include <vector>

#include "Eigen/Core"
#include "unsupported/Eigen/SpecialFunctions"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using ArrayXXfMap = Eigen::Map<Eigen::ArrayXXf>;
using ConstArrayXXfMap = Eigen::Map<const Eigen::ArrayXXf>;
using ConstArrayXfMap = Eigen::Map<const Eigen::ArrayXf>;

REGISTER_OP("MergevqGroupNormAct")
    .Input("x: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: float")
    .Output("mean: float")
    .Output("rstd: float")
    .Attr("groups: int >= 1")
    .Attr("eps: float")
    .Attr("silu: bool")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->UnknownShape());
      c->set_output(2, c->UnknownShape());
      return absl::OkStatus();
    });

REGISTER_OP("MergevqGroupNormActGrad")
    .Input("dy: float")
    .Input("x: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Output("dx: float")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .Attr("groups: int >= 1")
    .Attr("silu: bool")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      return absl::OkStatus();
    });

struct Dims {
  int64_t B, HW, C, G, cg;
};

// Pixels per cache block of the SiLU passes (C·128 floats: 16 KiB at C = 32).
constexpr int64_t kPixBlock = 128;

// Validates x [B, H, W, C] and the per-channel vectors; sets dims. On false the op has failed with the error.
bool CheckInputs(OpKernelContext* ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups,
                 Dims* d) {
  auto fail = [&](const std::string& what) {
    ctx->CtxFailure(__FILE__, __LINE__, absl::InvalidArgumentError("MergevqGroupNormAct: " + what));
    return false;
  };
  if (x.dims() != 4) return fail("x must be [B, H, W, C], got " + x.shape().DebugString());
  d->B = x.dim_size(0);
  d->HW = x.dim_size(1) * x.dim_size(2);
  d->C = x.dim_size(3);
  d->G = groups;
  if (d->C % d->G != 0) return fail(std::to_string(d->C) + " channels not divisible by " + std::to_string(groups));
  d->cg = d->C / d->G;
  if (gamma.NumElements() != d->C || beta.NumElements() != d->C) return fail("gamma/beta must have C elements");
  return true;
}

void ForEachSample(OpKernelContext* ctx, const Dims& d, const std::function<void(int64_t, int64_t)>& fn) {
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(pool->num_threads, pool->workers, d.B, d.HW * d.C * 20, fn);
}

// Per-channel sums over the H·W pixels of one sample (NHWC: pixel-major, C contiguous), plain loops the compiler
// vectorises across channels: s1 = Σ a, s2 = Σ a·b (b = nullptr: Σ a²). float within blocks of 64 pixels,
// double across blocks.
void ChannelSums(const float* a, const float* b, const Dims& d, Eigen::ArrayXd& s1, Eigen::ArrayXd& s2) {
  const int64_t C = d.C;
  std::vector<float> f1(C), f2(C);
  s1.setZero();
  s2.setZero();
  for (int64_t p0 = 0; p0 < d.HW; p0 += 64) {
    std::fill(f1.begin(), f1.end(), 0.0f);
    std::fill(f2.begin(), f2.end(), 0.0f);
    float* __restrict q1 = f1.data();
    float* __restrict q2 = f2.data();
    const int64_t p1 = std::min<int64_t>(d.HW, p0 + 64);
    for (int64_t p = p0; p < p1; ++p) {
      const float* __restrict ap = a + p * C;
      if (b == nullptr) {
        for (int64_t c = 0; c < C; ++c) {
          q1[c] += ap[c];
          q2[c] += ap[c] * ap[c];
        }
      } else {
        const float* __restrict bp = b + p * C;
        for (int64_t c = 0; c < C; ++c) {
          q1[c] += ap[c];
          q2[c] += ap[c] * bp[c];
        }
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      s1[c] += q1[c];
      s2[c] += q2[c];
    }
  }
}

// Per-channel a, b with z = x·a + b = (x − μ)·rstd·γ + β for sample b0.
void AffineOf(const Dims& d, const float* mean, const float* rstd, const float* gamma, const float* beta,
              int64_t b0, Eigen::ArrayXf& a, Eigen::ArrayXf& bb) {
  for (int64_t c = 0; c < d.C; ++c) {
    const int64_t g = b0 * d.G + c / d.cg;
    a[c] = rstd[g] * gamma[c];
    bb[c] = beta[c] - mean[g] * a[c];
  }
}

class GroupNormActOp : public OpKernel {
 public:
  explicit GroupNormActOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("eps", &eps_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("silu", &silu_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& gamma = ctx->input(1);
    const Tensor& beta = ctx->input(2);
    Dims d;
    if (!CheckInputs(ctx, x, gamma, beta, groups_, &d)) return;
    Tensor *y, *mean, *rstd;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({d.B, d.G}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({d.B, d.G}), &rstd));
    const float* xp = x.flat<float>().data();
    const float* gp = gamma.flat<float>().data();
    const float* bp = beta.flat<float>().data();
    float* yp = y->flat<float>().data();
    float* mp = mean->flat<float>().data();
    float* rp = rstd->flat<float>().data();
    const double n = static_cast<double>(d.HW * d.cg);
    ForEachSample(ctx, d, [&](int64_t start, int64_t end) {
      Eigen::ArrayXd s1(d.C), s2(d.C);
      Eigen::ArrayXf a(d.C), bb(d.C);
      for (int64_t b0 = start; b0 < end; ++b0) {
        ConstArrayXXfMap X(xp + b0 * d.HW * d.C, d.C, d.HW);  // column p = pixel p's C channels
        ArrayXXfMap Y(yp + b0 * d.HW * d.C, d.C, d.HW);
        // Per-channel Σx, Σx² in float over blocks of pixels, accumulated in double across blocks.
        ChannelSums(xp + b0 * d.HW * d.C, nullptr, d, s1, s2);
        for (int64_t g = 0; g < d.G; ++g) {
          const double m = s1.segment(g * d.cg, d.cg).sum() / n;
          const double var = std::max(0.0, s2.segment(g * d.cg, d.cg).sum() / n - m * m);
          mp[b0 * d.G + g] = static_cast<float>(m);
          rp[b0 * d.G + g] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps_)));
        }
        AffineOf(d, mp, rp, gp, bp, b0, a, bb);
        if (!silu_) {
          Y = (X.colwise() * a).colwise() + bb;
          continue;
        }
        // y = z·σ(z) in blocks of pixels: z stays in cache, so y costs one write (the map is memory-bound).
        Eigen::ArrayXXf Z(d.C, kPixBlock);
        for (int64_t p = 0; p < d.HW; p += kPixBlock) {
          const int64_t w = std::min<int64_t>(kPixBlock, d.HW - p);
          auto z = Z.leftCols(w);
          z = (X.middleCols(p, w).colwise() * a).colwise() + bb;
          Y.middleCols(p, w) = z / ((-z).exp() + 1.0f);
        }
      }
    });
  }

 private:
  int groups_;
  float eps_;
  bool silu_;
};

class GroupNormActGradOp : public OpKernel {
 public:
  explicit GroupNormActGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("silu", &silu_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& gamma = ctx->input(2);
    const Tensor& beta = ctx->input(3);
    const Tensor& mean = ctx->input(4);
    const Tensor& rstd = ctx->input(5);
    Dims d;
    if (!CheckInputs(ctx, x, gamma, beta, groups_, &d)) return;
    OP_REQUIRES(ctx, dy.shape() == x.shape(), absl::InvalidArgumentError("MergevqGroupNormActGrad: dy shape"));
    OP_REQUIRES(ctx, mean.NumElements() == d.B * d.G && rstd.NumElements() == d.B * d.G,
                absl::InvalidArgumentError("MergevqGroupNormActGrad: mean/rstd must be [B, G]"));
    Tensor *dx, *dgamma, *dbeta;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, beta.shape(), &dbeta));
    const float* dyp = dy.flat<float>().data();
    const float* xp = x.flat<float>().data();
    const float* gp = gamma.flat<float>().data();
    const float* bp = beta.flat<float>().data();
    const float* mp = mean.flat<float>().data();
    const float* rp = rstd.flat<float>().data();
    float* dxp = dx->flat<float>().data();
    // Per-sample partial Σ dz and Σ dz·x̂ per channel ([B, C]), summed over the batch at the end.
    std::vector<double> partDz(d.B * d.C), partDzX(d.B * d.C);
    const double n = static_cast<double>(d.HW * d.cg);
    ForEachSample(ctx, d, [&](int64_t start, int64_t end) {
      Eigen::ArrayXf a(d.C), bb(d.C), kdz(d.C), kx(d.C), k0(d.C);
      for (int64_t b0 = start; b0 < end; ++b0) {
        const int64_t off = b0 * d.HW * d.C;
        ConstArrayXXfMap X(xp + off, d.C, d.HW);
        ConstArrayXXfMap DY(dyp + off, d.C, d.HW);
        ArrayXXfMap DZ(dxp + off, d.C, d.HW);  // dz first, then overwritten with dx
        AffineOf(d, mp, rp, gp, bp, b0, a, bb);
        Eigen::ArrayXd sdz(d.C), sdzx(d.C);
        if (silu_) {
          // z = x·a + b, s = σ(z): dz = dy·s·(1 + z·(1 − s)), in blocks of pixels (z, s cached), with the
          // per-channel Σ dz and Σ dz·x of each block taken while it is in cache.
          Eigen::ArrayXXf Z(d.C, kPixBlock), S(d.C, kPixBlock);
          sdz.setZero();
          sdzx.setZero();
          for (int64_t p = 0; p < d.HW; p += kPixBlock) {
            const int64_t w = std::min<int64_t>(kPixBlock, d.HW - p);
            auto z = Z.leftCols(w);
            auto sg = S.leftCols(w);
            z = (X.middleCols(p, w).colwise() * a).colwise() + bb;
            sg = ((-z).exp() + 1.0f).inverse();
            DZ.middleCols(p, w) = DY.middleCols(p, w) * sg * (z * (1.0f - sg) + 1.0f);
            Dims blk = d;
            blk.HW = w;
            Eigen::ArrayXd b1(d.C), b2(d.C);
            ChannelSums(dxp + off + p * d.C, xp + off + p * d.C, blk, b1, b2);
            sdz += b1;
            sdzx += b2;
          }
        } else {
          DZ = DY;
          ChannelSums(dxp + off, xp + off, d, sdz, sdzx);  // Σ dz, Σ dz·x per channel
        }
        for (int64_t g = 0; g < d.G; ++g) {
          const double m = mp[b0 * d.G + g];
          const double r = rp[b0 * d.G + g];
          double meanG = 0, meanGX = 0;
          for (int64_t c = g * d.cg; c < (g + 1) * d.cg; ++c) {
            const double sumDyXhat = r * (sdzx[c] - m * sdz[c]);  // Σ dz·x̂ = rstd·(Σ dz·x − μ Σ dz)
            partDz[b0 * d.C + c] = sdz[c];
            partDzX[b0 * d.C + c] = sumDyXhat;
            meanG += gp[c] * sdz[c];
            meanGX += gp[c] * sumDyXhat;
          }
          meanG /= n;
          meanGX /= n;
          // dx = r·γ·dz − r²·meanGX·x + r·(μ·r·meanGX − meanG)
          for (int64_t c = g * d.cg; c < (g + 1) * d.cg; ++c) {
            kdz[c] = static_cast<float>(r * gp[c]);
            kx[c] = static_cast<float>(-r * r * meanGX);
            k0[c] = static_cast<float>(r * (m * r * meanGX - meanG));
          }
        }
        DZ = ((DZ.colwise() * kdz) + (X.colwise() * kx)).colwise() + k0;
      }
    });
    float* dgp = dgamma->flat<float>().data();
    float* dbp = dbeta->flat<float>().data();
    for (int64_t c = 0; c < d.C; ++c) {
      double sg = 0, sb = 0;
      for (int64_t b0 = 0; b0 < d.B; ++b0) {
        sg += partDzX[b0 * d.C + c];
        sb += partDz[b0 * d.C + c];
      }
      dgp[c] = static_cast<float>(sg);
      dbp[c] = static_cast<float>(sb);
    }
  }

 private:
  int groups_;
  bool silu_;
};

REGISTER_OP("MergevqAdam")
    .Input("p: N * float")
    .Input("m: N * float")
    .Input("v: N * float")
    .Input("g: N * float")
    .Output("p_new: N * float")
    .Output("m_new: N * float")
    .Output("v_new: N * float")
    .Attr("N: int >= 1")
    .Attr("beta1: float")
    .Attr("beta2: float")
    .Attr("one_minus_beta1: float")
    .Attr("one_minus_beta2: float")
    .Attr("bc2_sqrt: float")
    .Attr("eps: float")
    .Attr("step_size: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      int n;
      TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
      for (int i = 0; i < 3 * n; ++i) c->set_output(i, c->input(i % n));
      return absl::OkStatus();
    });

class AdamOp : public OpKernel {
 public:
  explicit AdamOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    for (auto [name, dst] : {std::pair{"beta1", &beta1_}, {"beta2", &beta2_}, {"one_minus_beta1", &omb1_},
                             {"one_minus_beta2", &omb2_}, {"bc2_sqrt", &bc2_}, {"eps", &eps_}, {"step_size", &step_}}) {
      OP_REQUIRES_OK(ctx, ctx->GetAttr(name, dst));
    }
  }

  void Compute(OpKernelContext* ctx) override {
    tensorflow::OpInputList p, m, v, g;
    OP_REQUIRES_OK(ctx, ctx->input_list("p", &p));
    OP_REQUIRES_OK(ctx, ctx->input_list("m", &m));
    OP_REQUIRES_OK(ctx, ctx->input_list("v", &v));
    OP_REQUIRES_OK(ctx, ctx->input_list("g", &g));
    tensorflow::OpOutputList po, mo, vo;
    OP_REQUIRES_OK(ctx, ctx->output_list("p_new", &po));
    OP_REQUIRES_OK(ctx, ctx->output_list("m_new", &mo));
    OP_REQUIRES_OK(ctx, ctx->output_list("v_new", &vo));
    // Work items of ≤ 16k elements, so that one large parameter does not serialise the step.
    struct Item {
      int t;
      int64_t start, len;
    };
    std::vector<Item> items;
    std::vector<float*> pn(p.size()), mn(p.size()), vn(p.size());
    for (int t = 0; t < p.size(); ++t) {
      const TensorShape& shape = p[t].shape();
      OP_REQUIRES(ctx, m[t].shape() == shape && v[t].shape() == shape && g[t].shape() == shape,
                  absl::InvalidArgumentError("MergevqAdam: p, m, v, g shapes differ at index " + std::to_string(t)));
      Tensor *a, *b, *c;
      OP_REQUIRES_OK(ctx, po.allocate(t, shape, &a));
      OP_REQUIRES_OK(ctx, mo.allocate(t, shape, &b));
      OP_REQUIRES_OK(ctx, vo.allocate(t, shape, &c));
      pn[t] = a->flat<float>().data();
      mn[t] = b->flat<float>().data();
      vn[t] = c->flat<float>().data();
      const int64_t n = shape.num_elements();
      for (int64_t s = 0; s < n; s += 16384) items.push_back({t, s, std::min<int64_t>(16384, n - s)});
    }
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(pool->num_threads, pool->workers, static_cast<int64_t>(items.size()), 16384 * 30,
                      [&](int64_t begin, int64_t end) {
                        for (int64_t k = begin; k < end; ++k) {
                          const Item& it = items[k];
                          using Map = Eigen::Map<const Eigen::ArrayXf>;
                          using MapOut = Eigen::Map<Eigen::ArrayXf>;
                          Map P(p[it.t].flat<float>().data() + it.start, it.len);
                          Map M(m[it.t].flat<float>().data() + it.start, it.len);
                          Map V(v[it.t].flat<float>().data() + it.start, it.len);
                          Map G(g[it.t].flat<float>().data() + it.start, it.len);
                          MapOut PN(pn[it.t] + it.start, it.len), MN(mn[it.t] + it.start, it.len),
                              VN(vn[it.t] + it.start, it.len);
                          MN = M * beta1_ + G * omb1_;
                          VN = V * beta2_ + G.square() * omb2_;
                          PN = P - step_ * (MN / (VN.sqrt() / bc2_ + eps_));
                        }
                      });
  }

 private:
  float beta1_, beta2_, omb1_, omb2_, bc2_, eps_, step_;
};

REGISTER_KERNEL_BUILDER(Name("MergevqAdam").Device(tensorflow::DEVICE_CPU), AdamOp);
REGISTER_KERNEL_BUILDER(Name("MergevqGroupNormAct").Device(tensorflow::DEVICE_CPU), GroupNormActOp);
REGISTER_KERNEL_BUILDER(Name("MergevqGroupNormActGrad").Device(tensorflow::DEVICE_CPU), GroupNormActGradOp);

// ───────────────────────────── LayerNorm over the last axis ─────────────────────────────

REGISTER_OP("MergevqLayerNorm")
    .Input("x: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: float")
    .Output("mean: float")
    .Output("rstd: float")
    .Attr("eps: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->UnknownShape());
      c->set_output(2, c->UnknownShape());
      return absl::OkStatus();
    });

REGISTER_OP("MergevqLayerNormGrad")
    .Input("dy: float")
    .Input("x: float")
    .Input("gamma: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Output("dx: float")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(2));
      return absl::OkStatus();
    });

// Rows of the last axis: x viewed as [N, D] (D contiguous).
bool RowsOf(OpKernelContext* ctx, const Tensor& x, const Tensor& gamma, int64_t* N, int64_t* D) {
  if (x.dims() < 1 || x.dim_size(x.dims() - 1) != gamma.NumElements()) {
    ctx->CtxFailure(__FILE__, __LINE__,
                    absl::InvalidArgumentError("MergevqLayerNorm: last axis of " + x.shape().DebugString() +
                                               " must match gamma " + gamma.shape().DebugString()));
    return false;
  }
  *D = gamma.NumElements();
  *N = *D == 0 ? 0 : x.NumElements() / *D;
  return true;
}

void ForEachRow(OpKernelContext* ctx, int64_t N, int64_t D, const std::function<void(int64_t, int64_t)>& fn) {
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(pool->num_threads, pool->workers, N, D * 10, fn);
}

class LayerNormOp : public OpKernel {
 public:
  explicit LayerNormOp(OpKernelConstruction* ctx) : OpKernel(ctx) { OP_REQUIRES_OK(ctx, ctx->GetAttr("eps", &eps_)); }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& gamma = ctx->input(1);
    const Tensor& beta = ctx->input(2);
    int64_t N, D;
    if (!RowsOf(ctx, x, gamma, &N, &D)) return;
    OP_REQUIRES(ctx, beta.NumElements() == D, absl::InvalidArgumentError("MergevqLayerNorm: beta size"));
    Tensor *y, *mean, *rstd;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({N}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({N}), &rstd));
    const float* xp = x.flat<float>().data();
    float* yp = y->flat<float>().data();
    float* mp = mean->flat<float>().data();
    float* rp = rstd->flat<float>().data();
    ConstArrayXfMap G(gamma.flat<float>().data(), D), Bt(beta.flat<float>().data(), D);
    ForEachRow(ctx, N, D, [&](int64_t start, int64_t end) {
      for (int64_t r = start; r < end; ++r) {
        ConstArrayXfMap X(xp + r * D, D);
        Eigen::Map<Eigen::ArrayXf> Y(yp + r * D, D);
        const double m = X.cast<double>().mean();
        const double var = (X.cast<double>() - m).square().mean();
        const float rs = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps_)));
        mp[r] = static_cast<float>(m);
        rp[r] = rs;
        Y = (X - mp[r]) * rs * G + Bt;
      }
    });
  }

 private:
  float eps_;
};

class LayerNormGradOp : public OpKernel {
 public:
  explicit LayerNormGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& gamma = ctx->input(2);
    const Tensor& mean = ctx->input(3);
    const Tensor& rstd = ctx->input(4);
    int64_t N, D;
    if (!RowsOf(ctx, x, gamma, &N, &D)) return;
    OP_REQUIRES(ctx, dy.shape() == x.shape() && mean.NumElements() == N && rstd.NumElements() == N,
                absl::InvalidArgumentError("MergevqLayerNormGrad: input shapes"));
    Tensor *dx, *dgamma, *dbeta;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gamma.shape(), &dbeta));
    const float* xp = x.flat<float>().data();
    const float* dyp = dy.flat<float>().data();
    const float* mp = mean.flat<float>().data();
    const float* rp = rstd.flat<float>().data();
    float* dxp = dx->flat<float>().data();
    ConstArrayXfMap G(gamma.flat<float>().data(), D);
    // dγ, dβ: per-shard partial sums (float64), added at the end.
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
    const int shards = std::max(1, pool->num_threads) * 4;
    std::vector<Eigen::ArrayXd> pg(shards, Eigen::ArrayXd::Zero(D)), pb(shards, Eigen::ArrayXd::Zero(D));
    const int64_t per = (N + shards - 1) / shards;
    tensorflow::Shard(pool->num_threads, pool->workers, shards, per * D * 12, [&](int64_t s0, int64_t s1) {
      Eigen::ArrayXf xhat(D), g(D);
      for (int64_t s = s0; s < s1; ++s) {
        for (int64_t r = s * per; r < std::min(N, (s + 1) * per); ++r) {
          ConstArrayXfMap X(xp + r * D, D), DY(dyp + r * D, D);
          Eigen::Map<Eigen::ArrayXf> DX(dxp + r * D, D);
          xhat = (X - mp[r]) * rp[r];
          g = DY * G;
          const float mg = g.mean();
          const float mgx = (g * xhat).mean();
          DX = rp[r] * (g - mg - xhat * mgx);
          pg[s] += (DY * xhat).cast<double>();
          pb[s] += DY.cast<double>();
        }
      }
    });
    Eigen::ArrayXd sg = Eigen::ArrayXd::Zero(D), sb = Eigen::ArrayXd::Zero(D);
    for (int s = 0; s < shards; ++s) {
      sg += pg[s];
      sb += pb[s];
    }
    Eigen::Map<Eigen::ArrayXf>(dgamma->flat<float>().data(), D) = sg.cast<float>();
    Eigen::Map<Eigen::ArrayXf>(dbeta->flat<float>().data(), D) = sb.cast<float>();
  }
};

// ───────────────────────────── exact GELU ─────────────────────────────

REGISTER_OP("MergevqGelu").Input("x: float").Output("y: float").SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
  c->set_output(0, c->input(0));
  return absl::OkStatus();
});
REGISTER_OP("MergevqGeluGrad")
    .Input("dy: float")
    .Input("x: float")
    .Output("dx: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    });

template <bool kGrad>
class GeluOp : public OpKernel {
 public:
  explicit GeluOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(kGrad ? 1 : 0);
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &out));
    const float* xp = x.flat<float>().data();
    const float* dyp = kGrad ? ctx->input(0).flat<float>().data() : nullptr;
    if (kGrad) OP_REQUIRES(ctx, ctx->input(0).shape() == x.shape(), absl::InvalidArgumentError("MergevqGeluGrad: shapes"));
    float* op = out->flat<float>().data();
    const int64_t n = x.NumElements();
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
    constexpr int64_t kBlock = 4096;
    tensorflow::Shard(pool->num_threads, pool->workers, (n + kBlock - 1) / kBlock, kBlock * 40,
                      [&](int64_t b0, int64_t b1) {
                        for (int64_t b = b0; b < b1; ++b) {
                          const int64_t s = b * kBlock, w = std::min(kBlock, n - s);
                          ConstArrayXfMap X(xp + s, w);
                          Eigen::Map<Eigen::ArrayXf> O(op + s, w);
                          const Eigen::ArrayXf cdf = 0.5f * ((X * static_cast<float>(M_SQRT1_2)).erf() + 1.0f);
                          if (kGrad) {
                            ConstArrayXfMap DY(dyp + s, w);
                            O = DY * (cdf + X * (-0.5f * X.square()).exp() * static_cast<float>(0.5 * M_2_SQRTPI * M_SQRT1_2));
                          } else {
                            O = X * cdf;
                          }
                        }
                      });
  }
};

REGISTER_KERNEL_BUILDER(Name("MergevqLayerNorm").Device(tensorflow::DEVICE_CPU), LayerNormOp);
REGISTER_KERNEL_BUILDER(Name("MergevqLayerNormGrad").Device(tensorflow::DEVICE_CPU), LayerNormGradOp);
REGISTER_KERNEL_BUILDER(Name("MergevqGelu").Device(tensorflow::DEVICE_CPU), GeluOp<false>);
REGISTER_KERNEL_BUILDER(Name("MergevqGeluGrad").Device(tensorflow::DEVICE_CPU), GeluOp<true>);

// ───────────────────────────── residual through LayerScale ─────────────────────────────

REGISTER_OP("MergevqScaledResidual")
    .Input("x: float")
    .Input("y: float")
    .Input("gamma: float")
    .Output("out: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("MergevqScaledResidualGrad")
    .Input("dout: float")
    .Input("y: float")
    .Input("gamma: float")
    .Output("dy: float")
    .Output("dgamma: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      return absl::OkStatus();
    });

class ScaledResidualOp : public OpKernel {
 public:
  explicit ScaledResidualOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& y = ctx->input(1);
    const Tensor& gamma = ctx->input(2);
    int64_t N, D;
    if (!RowsOf(ctx, y, gamma, &N, &D)) return;
    OP_REQUIRES(ctx, x.shape() == y.shape(),
                absl::InvalidArgumentError("MergevqScaledResidual: x " + x.shape().DebugString() + " vs y " +
                                           y.shape().DebugString()));
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &out));
    const float* xp = x.flat<float>().data();
    const float* yp = y.flat<float>().data();
    float* op = out->flat<float>().data();
    ConstArrayXfMap G(gamma.flat<float>().data(), D);
    ForEachRow(ctx, N, D, [&](int64_t start, int64_t end) {
      for (int64_t r = start; r < end; ++r) {
        Eigen::Map<Eigen::ArrayXf>(op + r * D, D) = ConstArrayXfMap(xp + r * D, D) + G * ConstArrayXfMap(yp + r * D, D);
      }
    });
  }
};

class ScaledResidualGradOp : public OpKernel {
 public:
  explicit ScaledResidualGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dout = ctx->input(0);
    const Tensor& y = ctx->input(1);
    const Tensor& gamma = ctx->input(2);
    int64_t N, D;
    if (!RowsOf(ctx, y, gamma, &N, &D)) return;
    OP_REQUIRES(ctx, dout.shape() == y.shape(), absl::InvalidArgumentError("MergevqScaledResidualGrad: shapes"));
    Tensor *dy, *dgamma;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, y.shape(), &dy));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &dgamma));
    const float* dop = dout.flat<float>().data();
    const float* yp = y.flat<float>().data();
    float* dyp = dy->flat<float>().data();
    ConstArrayXfMap G(gamma.flat<float>().data(), D);
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
    const int shards = std::max(1, pool->num_threads) * 4;
    std::vector<Eigen::ArrayXd> pg(shards, Eigen::ArrayXd::Zero(D));
    const int64_t per = (N + shards - 1) / shards;
    tensorflow::Shard(pool->num_threads, pool->workers, shards, per * D * 4, [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        for (int64_t r = s * per; r < std::min(N, (s + 1) * per); ++r) {
          ConstArrayXfMap DO(dop + r * D, D), Y(yp + r * D, D);
          Eigen::Map<Eigen::ArrayXf>(dyp + r * D, D) = DO * G;
          pg[s] += (DO * Y).cast<double>();
        }
      }
    });
    Eigen::ArrayXd sg = Eigen::ArrayXd::Zero(D);
    for (int s = 0; s < shards; ++s) sg += pg[s];
    Eigen::Map<Eigen::ArrayXf>(dgamma->flat<float>().data(), D) = sg.cast<float>();
  }
};

REGISTER_KERNEL_BUILDER(Name("MergevqScaledResidual").Device(tensorflow::DEVICE_CPU), ScaledResidualOp);
REGISTER_KERNEL_BUILDER(Name("MergevqScaledResidualGrad").Device(tensorflow::DEVICE_CPU), ScaledResidualGradOp);

// ───────────────────────────── attention core ─────────────────────────────

REGISTER_OP("MergevqAttention")
    .Input("qkv: float")
    .Input("bias: float")
    .Output("out: float")
    .Output("probs: float")
    .Attr("heads: int >= 1")
    .Attr("scale: float")
    .Attr("has_bias: bool")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->UnknownShape());
      c->set_output(1, c->UnknownShape());
      return absl::OkStatus();
    });

REGISTER_OP("MergevqAttentionGrad")
    .Input("dout: float")
    .Input("qkv: float")
    .Input("probs: float")
    .Output("dqkv: float")
    .Output("dbias: float")
    .Attr("heads: int >= 1")
    .Attr("scale: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->UnknownShape());
      return absl::OkStatus();
    });

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Strided = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using StridedOut = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;

// qkv [B, N, 3D] with D = heads·d: checks the shape and returns B, N, D, d.
bool QkvDims(OpKernelContext* ctx, const Tensor& qkv, int64_t heads, int64_t* B, int64_t* N, int64_t* D, int64_t* d) {
  if (qkv.dims() != 3 || qkv.dim_size(2) % (3 * heads) != 0) {
    ctx->CtxFailure(__FILE__, __LINE__,
                    absl::InvalidArgumentError("MergevqAttention: qkv must be [B, N, 3·heads·d], got " +
                                               qkv.shape().DebugString() + " for " + std::to_string(heads) + " heads"));
    return false;
  }
  *B = qkv.dim_size(0);
  *N = qkv.dim_size(1);
  *D = qkv.dim_size(2) / 3;
  *d = *D / heads;
  return true;
}

class AttentionOp : public OpKernel {
 public:
  explicit AttentionOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("heads", &heads_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_bias", &has_bias_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& qkv = ctx->input(0);
    const Tensor& bias = ctx->input(1);
    int64_t B, N, D, d;
    if (!QkvDims(ctx, qkv, heads_, &B, &N, &D, &d)) return;
    if (has_bias_) {
      OP_REQUIRES(ctx, bias.dims() == 2 && bias.dim_size(0) == B && bias.dim_size(1) == N,
                  absl::InvalidArgumentError("MergevqAttention: bias must be [B, N], got " + bias.shape().DebugString()));
    }
    Tensor *out, *probs;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, N, D}), &out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, heads_, N, N}), &probs));
    const float* q0 = qkv.flat<float>().data();
    const float* bp = has_bias_ ? bias.flat<float>().data() : nullptr;
    float* op = out->flat<float>().data();
    float* pp = probs->flat<float>().data();
    const int64_t H = heads_;
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(pool->num_threads, pool->workers, B * H, N * N * d * 6, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t b = u / H, h = u % H;
        const float* base = q0 + b * N * 3 * D + h * d;
        Strided Q(base, N, d, Eigen::OuterStride<>(3 * D)), K(base + D, N, d, Eigen::OuterStride<>(3 * D)),
            V(base + 2 * D, N, d, Eigen::OuterStride<>(3 * D));
        Eigen::Map<RowMat> P(pp + u * N * N, N, N);
        P.noalias() = Q * K.transpose();
        P *= scale_;
        if (bp) P.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bp + b * N, N);
        for (int64_t i = 0; i < N; ++i) {
          auto row = P.row(i).array();
          row = (row - row.maxCoeff()).exp();
          row /= row.sum();
        }
        StridedOut O(op + b * N * D + h * d, N, d, Eigen::OuterStride<>(D));
        O.noalias() = P * V;
      }
    });
  }

 private:
  int64_t heads_;
  float scale_;
  bool has_bias_;
};

class AttentionGradOp : public OpKernel {
 public:
  explicit AttentionGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("heads", &heads_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dout = ctx->input(0);
    const Tensor& qkv = ctx->input(1);
    const Tensor& probs = ctx->input(2);
    int64_t B, N, D, d;
    if (!QkvDims(ctx, qkv, heads_, &B, &N, &D, &d)) return;
    const int64_t H = heads_;
    OP_REQUIRES(ctx, dout.shape() == TensorShape({B, N, D}) && probs.shape() == TensorShape({B, H, N, N}),
                absl::InvalidArgumentError("MergevqAttentionGrad: dout " + dout.shape().DebugString() + " / probs " +
                                           probs.shape().DebugString() + " do not match qkv " +
                                           qkv.shape().DebugString()));
    Tensor *dqkv, *dbias;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, qkv.shape(), &dqkv));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, N}), &dbias));
    const float* q0 = qkv.flat<float>().data();
    const float* dop = dout.flat<float>().data();
    const float* pp = probs.flat<float>().data();
    float* dq0 = dqkv->flat<float>().data();
    // Column sums of dS per (b, h), added over heads after the parallel part.
    std::vector<float> colsum(B * H * N);
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(pool->num_threads, pool->workers, B * H, N * N * d * 10, [&](int64_t u0, int64_t u1) {
      RowMat dS(N, N);
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t b = u / H, h = u % H;
        const int64_t at = b * N * 3 * D + h * d;
        const Eigen::OuterStride<> s3(3 * D);
        Strided Q(q0 + at, N, d, s3), K(q0 + at + D, N, d, s3), V(q0 + at + 2 * D, N, d, s3);
        Strided dO(dop + b * N * D + h * d, N, d, Eigen::OuterStride<>(D));
        Eigen::Map<const RowMat> P(pp + u * N * N, N, N);
        StridedOut dQ(dq0 + at, N, d, s3), dK(dq0 + at + D, N, d, s3), dV(dq0 + at + 2 * D, N, d, s3);
        dV.noalias() = P.transpose() * dO;
        dS.noalias() = dO * V.transpose();  // dP
        const Eigen::VectorXf r = (P.array() * dS.array()).rowwise().sum();
        dS = (P.array() * (dS.array().colwise() - r.array())).matrix();
        Eigen::Map<Eigen::RowVectorXf>(colsum.data() + u * N, N) = dS.colwise().sum();
        dQ.noalias() = dS * K;
        dQ *= scale_;
        dK.noalias() = dS.transpose() * Q;
        dK *= scale_;
      }
    });
    float* dbp = dbias->flat<float>().data();
    for (int64_t b = 0; b < B; ++b) {
      Eigen::Map<Eigen::RowVectorXf> out(dbp + b * N, N);
      out.setZero();
      for (int64_t h = 0; h < H; ++h) out += Eigen::Map<const Eigen::RowVectorXf>(colsum.data() + (b * H + h) * N, N);
    }
  }

 private:
  int64_t heads_;
  float scale_;
};

REGISTER_KERNEL_BUILDER(Name("MergevqAttention").Device(tensorflow::DEVICE_CPU), AttentionOp);
REGISTER_KERNEL_BUILDER(Name("MergevqAttentionGrad").Device(tensorflow::DEVICE_CPU), AttentionGradOp);

// ───────────────────────────── linear ─────────────────────────────

REGISTER_OP("MergevqLinear")
    .Input("x: float")
    .Input("w: float")
    .Input("b: float")
    .Output("y: float")
    .Attr("has_bias: bool")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->UnknownShape());
      return absl::OkStatus();
    });

REGISTER_OP("MergevqLinearGrad")
    .Input("dy: float")
    .Input("x: float")
    .Input("w: float")
    .Output("dx: float")
    .Output("dw: float")
    .Output("db: float")
    .Attr("has_bias: bool")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->UnknownShape());
      return absl::OkStatus();
    });

using ConstRowMap = Eigen::Map<const RowMat>;
using RowMap = Eigen::Map<RowMat>;

// Splits [0, n) into at most `threads` parts of `align`-multiples and runs fn(begin, end) for each on TF's
// intra-op pool (one part per thread: Eigen's GEMM is fastest on the largest blocks it is given).
void SplitRange(OpKernelContext* ctx, int64_t n, int64_t align, double flops,
                const std::function<void(int64_t, int64_t)>& fn) {
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
  // Below ~2 MFLOP a second thread costs more to wake than it saves.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>({static_cast<int64_t>(pool->num_threads),
                                                                 (n + align - 1) / align,
                                                                 static_cast<int64_t>(flops / 2e6) + 1}));
  if (parts == 1) {
    fn(0, n);
    return;
  }
  const int64_t per = ((n + parts - 1) / parts + align - 1) / align * align;
  tensorflow::Shard(pool->num_threads, pool->workers, parts, 1LL << 40, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t b = p * per, e = std::min(n, (p + 1) * per);
      if (b < e) fn(b, e);
    }
  });
}

// x [..., K], w with K·N elements ([K, N] or a 1×1 conv's [1, 1, K, N]): returns M (rows of x), K, N.
bool LinearDims(OpKernelContext* ctx, const Tensor& x, const Tensor& w, int64_t* M, int64_t* K, int64_t* N) {
  const int64_t wd = w.dims();
  if (x.dims() < 1 || wd < 2 || w.NumElements() != w.dim_size(wd - 2) * w.dim_size(wd - 1) ||
      x.dim_size(x.dims() - 1) != w.dim_size(wd - 2)) {
    ctx->CtxFailure(__FILE__, __LINE__,
                    absl::InvalidArgumentError("MergevqLinear: x " + x.shape().DebugString() + " and w " +
                                               w.shape().DebugString() + " do not make x·w over x's last axis"));
    return false;
  }
  *K = w.dim_size(wd - 2);
  *N = w.dim_size(wd - 1);
  *M = *K == 0 ? 0 : x.NumElements() / *K;
  return true;
}

class LinearOp : public OpKernel {
 public:
  explicit LinearOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_bias", &has_bias_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& w = ctx->input(1);
    const Tensor& b = ctx->input(2);
    int64_t M, K, N;
    if (!LinearDims(ctx, x, w, &M, &K, &N)) return;
    OP_REQUIRES(ctx, !has_bias_ || b.NumElements() == N,
                absl::InvalidArgumentError("MergevqLinear: bias must have " + std::to_string(N) + " elements"));
    TensorShape ys = x.shape();
    ys.set_dim(ys.dims() - 1, N);
    Tensor* y;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ys, &y));
    ConstRowMap X(x.flat<float>().data(), M, K);
    ConstRowMap W(w.flat<float>().data(), K, N);
    RowMap Y(y->flat<float>().data(), M, N);
    const float* bp = b.flat<float>().data();
    SplitRange(ctx, M, 8, 2.0 * M * K * N, [&](int64_t r0, int64_t r1) {
      auto Yr = Y.middleRows(r0, r1 - r0);
      Yr.noalias() = X.middleRows(r0, r1 - r0) * W;
      if (has_bias_) Yr.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(bp, N);
    });
  }

 private:
  bool has_bias_;
};

class LinearGradOp : public OpKernel {
 public:
  explicit LinearGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("has_bias", &has_bias_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& w = ctx->input(2);
    int64_t M, K, N;
    if (!LinearDims(ctx, x, w, &M, &K, &N)) return;
    OP_REQUIRES(ctx, dy.NumElements() == M * N && dy.dim_size(dy.dims() - 1) == N,
                absl::InvalidArgumentError("MergevqLinearGrad: dy " + dy.shape().DebugString() + " for x " +
                                           x.shape().DebugString() + " and w " + w.shape().DebugString()));
    Tensor *dx, *dw, *db;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, w.shape(), &dw));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({has_bias_ ? N : 0}), &db));
    ConstRowMap DY(dy.flat<float>().data(), M, N);
    ConstRowMap X(x.flat<float>().data(), M, K);
    ConstRowMap W(w.flat<float>().data(), K, N);
    RowMap DX(dx->flat<float>().data(), M, K);
    RowMap DW(dw->flat<float>().data(), K, N);
    const double flops = 2.0 * M * K * N;
    // dx = dy·wᵀ [M, K], split over rows.
    SplitRange(ctx, M, 8, flops, [&](int64_t r0, int64_t r1) {
      DX.middleRows(r0, r1 - r0).noalias() = DY.middleRows(r0, r1 - r0) * W.transpose();
    });
    // dw = xᵀ·dy [K, N], split over the longer output axis.
    if (K >= N) {
      SplitRange(ctx, K, 8, flops, [&](int64_t k0, int64_t k1) {
        DW.middleRows(k0, k1 - k0).noalias() = X.middleCols(k0, k1 - k0).transpose() * DY;
      });
    } else {
      SplitRange(ctx, N, 16, flops, [&](int64_t n0, int64_t n1) {
        DW.middleCols(n0, n1 - n0).noalias() = X.transpose() * DY.middleCols(n0, n1 - n0);
      });
    }
    if (!has_bias_) return;
    // db = Σ_rows dy, accumulated in double.
    Eigen::RowVectorXd acc = Eigen::RowVectorXd::Zero(N);
    for (int64_t r = 0; r < M; ++r) acc += DY.row(r).cast<double>();
    Eigen::Map<Eigen::RowVectorXf>(db->flat<float>().data(), N) = acc.cast<float>();
  }

 private:
  bool has_bias_;
};

REGISTER_KERNEL_BUILDER(Name("MergevqLinear").Device(tensorflow::DEVICE_CPU), LinearOp);
REGISTER_KERNEL_BUILDER(Name("MergevqLinearGrad").Device(tensorflow::DEVICE_CPU), LinearGradOp);

// Node-API side: `cpuSupported` says whether this CPU runs the instructions the file was built for; `hasOp(name)`
// whether TensorFlow's op registry knows an op (so the loader registers only kernels this build provides, even
// when the library on disk is older or newer than the TypeScript that loads it).
napi_value HasOp(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg;
  napi_get_cb_info(env, info, &argc, &arg, nullptr, nullptr);
  char name[256] = {0};
  size_t len = 0;
  bool found = false;
  if (argc == 1 && napi_get_value_string_utf8(env, arg, name, sizeof(name), &len) == napi_ok) {
    const tensorflow::OpRegistrationData* data = nullptr;
    found = tensorflow::OpRegistry::Global()->LookUp(std::string(name, len), &data).ok();
  }
  napi_value out;
  napi_get_boolean(env, found, &out);
  return out;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_value ok, has;
  bool cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#ifdef __AVX512F__  // the mergevq_ops_avx512.node build
  cpu = cpu && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
#endif
  napi_get_boolean(env, cpu, &ok);
  napi_set_named_property(env, exports, "cpuSupported", ok);
  napi_create_function(env, "hasOp", NAPI_AUTO_LENGTH, HasOp, nullptr, &has);
  napi_set_named_property(env, exports, "hasOp", has);
  return exports;
}

}  // namespace

NAPI_MODULE(mergevq_ops, Init)
