"""FID-InceptionV3 (the pytorch-fid variant) as an ONNX graph built with onnx.helper from numpy weights.

Architecture = torchvision ``Inception3`` (num_classes=1008, aux_logits=False, transform_input=False) with
pytorch-fid's patched blocks (``fid_inception_v3``):

* Mixed_5b/5c/5d = FIDInceptionA: the pool branch uses avg_pool2d(3, 1, 1, count_include_pad=False)
* Mixed_6b..6e   = FIDInceptionC: idem
* Mixed_7b       = FIDInceptionE_1: idem
* Mixed_7c       = FIDInceptionE_2: the pool branch uses max_pool2d(3, 1, 1)

Every BasicConv2d (conv without bias → BatchNorm(eps=1e-3) → ReLU) is emitted as a Conv with the batch norm
folded in (w' = w·γ/√(var+ε), b' = β − mean·γ/√(var+ε)) followed by Relu; folding is exact up to float32
rounding.

Graph interface (shared by the random model and converted real weights; trainer/src/eval/inception.ts
relies on it):

* input  ``images``           float32 [N, 3, 299, 299], already resized and scaled to [-1, 1]
  (pytorch-fid: bilinear resize to 299 with align_corners=False, then 2·x − 1; done by the TS caller)
* output ``pool``             float32 [N, 2048]  final average-pool features (pytorch-fid's FID features)
* output ``logits``           float32 [N, 1008]  fc(pool) = pool·Wᵀ + b (torchvision's fc)
* output ``logits_unbiased``  float32 [N, 1008]  pool·Wᵀ, the logits the TF Inception-Score code and the
  ADM evaluator feed to softmax (they read the ``softmax/logits/MatMul`` weight and skip the bias)

Weights come as a dict name → numpy array in torchvision's state-dict naming
(``Mixed_5b.branch1x1.conv.weight``, ``Mixed_5b.branch1x1.bn.running_var``, ``fc.weight``, ...), which is the
naming of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BN_EPS = 1e-3
NUM_CLASSES = 1008
OPSET = 17


# (name, in_ch, out_ch, (kh, kw), stride, (pad_h, pad_w))
def conv_specs() -> list[tuple[str, int, int, tuple[int, int], int, tuple[int, int]]]:
    """Every BasicConv2d of the FID Inception in graph order (also the weight-generation order)."""
    s: list[tuple[str, int, int, tuple[int, int], int, tuple[int, int]]] = [
        ("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0)),
        ("Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0)),
        ("Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1)),
        ("Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0)),
        ("Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0)),
    ]

    def block_a(n: str, cin: int, pool_features: int) -> None:
        s.extend(
            [
                (f"{n}.branch1x1", cin, 64, (1, 1), 1, (0, 0)),
                (f"{n}.branch5x5_1", cin, 48, (1, 1), 1, (0, 0)),
                (f"{n}.branch5x5_2", 48, 64, (5, 5), 1, (2, 2)),
                (f"{n}.branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
                (f"{n}.branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
                (f"{n}.branch3x3dbl_3", 96, 96, (3, 3), 1, (1, 1)),
                (f"{n}.branch_pool", cin, pool_features, (1, 1), 1, (0, 0)),
            ]
        )

    def block_b(n: str, cin: int) -> None:
        s.extend(
            [
                (f"{n}.branch3x3", cin, 384, (3, 3), 2, (0, 0)),
                (f"{n}.branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
                (f"{n}.branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
                (f"{n}.branch3x3dbl_3", 96, 96, (3, 3), 2, (0, 0)),
            ]
        )

    def block_c(n: str, cin: int, c7: int) -> None:
        s.extend(
            [
                (f"{n}.branch1x1", cin, 192, (1, 1), 1, (0, 0)),
                (f"{n}.branch7x7_1", cin, c7, (1, 1), 1, (0, 0)),
                (f"{n}.branch7x7_2", c7, c7, (1, 7), 1, (0, 3)),
                (f"{n}.branch7x7_3", c7, 192, (7, 1), 1, (3, 0)),
                (f"{n}.branch7x7dbl_1", cin, c7, (1, 1), 1, (0, 0)),
                (f"{n}.branch7x7dbl_2", c7, c7, (7, 1), 1, (3, 0)),
                (f"{n}.branch7x7dbl_3", c7, c7, (1, 7), 1, (0, 3)),
                (f"{n}.branch7x7dbl_4", c7, c7, (7, 1), 1, (3, 0)),
                (f"{n}.branch7x7dbl_5", c7, 192, (1, 7), 1, (0, 3)),
                (f"{n}.branch_pool", cin, 192, (1, 1), 1, (0, 0)),
            ]
        )

    def block_d(n: str, cin: int) -> None:
        s.extend(
            [
                (f"{n}.branch3x3_1", cin, 192, (1, 1), 1, (0, 0)),
                (f"{n}.branch3x3_2", 192, 320, (3, 3), 2, (0, 0)),
                (f"{n}.branch7x7x3_1", cin, 192, (1, 1), 1, (0, 0)),
                (f"{n}.branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3)),
                (f"{n}.branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0)),
                (f"{n}.branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0)),
            ]
        )

    def block_e(n: str, cin: int) -> None:
        s.extend(
            [
                (f"{n}.branch1x1", cin, 320, (1, 1), 1, (0, 0)),
                (f"{n}.branch3x3_1", cin, 384, (1, 1), 1, (0, 0)),
                (f"{n}.branch3x3_2a", 384, 384, (1, 3), 1, (0, 1)),
                (f"{n}.branch3x3_2b", 384, 384, (3, 1), 1, (1, 0)),
                (f"{n}.branch3x3dbl_1", cin, 448, (1, 1), 1, (0, 0)),
                (f"{n}.branch3x3dbl_2", 448, 384, (3, 3), 1, (1, 1)),
                (f"{n}.branch3x3dbl_3a", 384, 384, (1, 3), 1, (0, 1)),
                (f"{n}.branch3x3dbl_3b", 384, 384, (3, 1), 1, (1, 0)),
                (f"{n}.branch_pool", cin, 192, (1, 1), 1, (0, 0)),
            ]
        )

    block_a("Mixed_5b", 192, 32)
    block_a("Mixed_5c", 256, 64)
    block_a("Mixed_5d", 288, 64)
    block_b("Mixed_6a", 288)
    block_c("Mixed_6b", 768, 128)
    block_c("Mixed_6c", 768, 160)
    block_c("Mixed_6d", 768, 160)
    block_c("Mixed_6e", 768, 192)
    block_d("Mixed_7a", 768)
    block_e("Mixed_7b", 1280)
    block_e("Mixed_7c", 2048)
    return s


def required_keys() -> list[str]:
    keys: list[str] = []
    for name, *_ in conv_specs():
        keys.append(f"{name}.conv.weight")
        for p in ("weight", "bias", "running_mean", "running_var"):
            keys.append(f"{name}.bn.{p}")
    keys += ["fc.weight", "fc.bias"]
    return keys


class _Builder:
    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        missing = [k for k in required_keys() if k not in weights]
        if missing:
            raise KeyError(f"state dict lacks {len(missing)} FID-Inception tensors, e.g. {missing[:5]}")
        self.w = weights
        self.specs = {s[0]: s for s in conv_specs()}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def _tmp(self, hint: str) -> str:
        self.n += 1
        return f"{hint}:{self.n}"

    def conv(self, name: str, x: str) -> str:
        _, cin, cout, (kh, kw), stride, (ph, pw) = self.specs[name]
        w = np.asarray(self.w[f"{name}.conv.weight"], dtype=np.float64)
        if w.shape != (cout, cin, kh, kw):
            raise ValueError(f"{name}.conv.weight: shape {w.shape}, expected {(cout, cin, kh, kw)}")
        g = np.asarray(self.w[f"{name}.bn.weight"], dtype=np.float64)
        b = np.asarray(self.w[f"{name}.bn.bias"], dtype=np.float64)
        m = np.asarray(self.w[f"{name}.bn.running_mean"], dtype=np.float64)
        v = np.asarray(self.w[f"{name}.bn.running_var"], dtype=np.float64)
        scale = g / np.sqrt(v + BN_EPS)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (b - m * scale).astype(np.float32)
        self.inits.append(numpy_helper.from_array(wf, f"{name}.w"))
        self.inits.append(numpy_helper.from_array(bf, f"{name}.b"))
        y = self._tmp(name)
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.w", f"{name}.b"],
                [y],
                name=f"{name}.conv",
                kernel_shape=[kh, kw],
                strides=[stride, stride],
                pads=[ph, pw, ph, pw],
            )
        )
        r = self._tmp(name + ".relu")
        self.nodes.append(helper.make_node("Relu", [y], [r], name=f"{name}.relu"))
        return r

    def maxpool(self, x: str, k: int, s: int, p: int, hint: str) -> str:
        y = self._tmp(hint)
        self.nodes.append(
            helper.make_node("MaxPool", [x], [y], name=y, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
        )
        return y

    def avgpool_excl(self, x: str, hint: str) -> str:
        # avg_pool2d(3, stride=1, padding=1, count_include_pad=False)
        y = self._tmp(hint)
        self.nodes.append(
            helper.make_node(
                "AveragePool",
                [x],
                [y],
                name=y,
                kernel_shape=[3, 3],
                strides=[1, 1],
                pads=[1, 1, 1, 1],
                count_include_pad=0,
            )
        )
        return y

    def concat(self, xs: list[str], hint: str) -> str:
        y = self._tmp(hint)
        self.nodes.append(helper.make_node("Concat", xs, [y], name=y, axis=1))
        return y

    def block_a(self, n: str, x: str) -> str:
        b1 = self.conv(f"{n}.branch1x1", x)
        b5 = self.conv(f"{n}.branch5x5_2", self.conv(f"{n}.branch5x5_1", x))
        b3 = self.conv(f"{n}.branch3x3dbl_1", x)
        b3 = self.conv(f"{n}.branch3x3dbl_3", self.conv(f"{n}.branch3x3dbl_2", b3))
        bp = self.conv(f"{n}.branch_pool", self.avgpool_excl(x, n + ".avgpool"))
        return self.concat([b1, b5, b3, bp], n)

    def block_b(self, n: str, x: str) -> str:
        b3 = self.conv(f"{n}.branch3x3", x)
        bd = self.conv(f"{n}.branch3x3dbl_1", x)
        bd = self.conv(f"{n}.branch3x3dbl_3", self.conv(f"{n}.branch3x3dbl_2", bd))
        bp = self.maxpool(x, 3, 2, 0, n + ".maxpool")
        return self.concat([b3, bd, bp], n)

    def block_c(self, n: str, x: str) -> str:
        b1 = self.conv(f"{n}.branch1x1", x)
        b7 = self.conv(f"{n}.branch7x7_1", x)
        b7 = self.conv(f"{n}.branch7x7_3", self.conv(f"{n}.branch7x7_2", b7))
        bd = self.conv(f"{n}.branch7x7dbl_1", x)
        for i in range(2, 6):
            bd = self.conv(f"{n}.branch7x7dbl_{i}", bd)
        bp = self.conv(f"{n}.branch_pool", self.avgpool_excl(x, n + ".avgpool"))
        return self.concat([b1, b7, bd, bp], n)

    def block_d(self, n: str, x: str) -> str:
        b3 = self.conv(f"{n}.branch3x3_2", self.conv(f"{n}.branch3x3_1", x))
        b7 = self.conv(f"{n}.branch7x7x3_1", x)
        for i in range(2, 5):
            b7 = self.conv(f"{n}.branch7x7x3_{i}", b7)
        bp = self.maxpool(x, 3, 2, 0, n + ".maxpool")
        return self.concat([b3, b7, bp], n)

    def block_e(self, n: str, x: str, max_pool_branch: bool) -> str:
        b1 = self.conv(f"{n}.branch1x1", x)
        b3 = self.conv(f"{n}.branch3x3_1", x)
        b3 = self.concat([self.conv(f"{n}.branch3x3_2a", b3), self.conv(f"{n}.branch3x3_2b", b3)], n + ".3x3")
        bd = self.conv(f"{n}.branch3x3dbl_2", self.conv(f"{n}.branch3x3dbl_1", x))
        bd = self.concat(
            [self.conv(f"{n}.branch3x3dbl_3a", bd), self.conv(f"{n}.branch3x3dbl_3b", bd)], n + ".3x3dbl"
        )
        # FIDInceptionE_1: avg pool without padded zeros; FIDInceptionE_2: max pool (TF graph bug kept).
        pooled = self.maxpool(x, 3, 1, 1, n + ".maxpool") if max_pool_branch else self.avgpool_excl(x, n + ".avgpool")
        bp = self.conv(f"{n}.branch_pool", pooled)
        return self.concat([b1, b3, bd, bp], n)

    def build(self, doc: str) -> onnx.ModelProto:
        x = "images"
        x = self.conv("Conv2d_1a_3x3", x)
        x = self.conv("Conv2d_2a_3x3", x)
        x = self.conv("Conv2d_2b_3x3", x)
        x = self.maxpool(x, 3, 2, 0, "block0.maxpool")
        x = self.conv("Conv2d_3b_1x1", x)
        x = self.conv("Conv2d_4a_3x3", x)
        x = self.maxpool(x, 3, 2, 0, "block1.maxpool")
        x = self.block_a("Mixed_5b", x)
        x = self.block_a("Mixed_5c", x)
        x = self.block_a("Mixed_5d", x)
        x = self.block_b("Mixed_6a", x)
        for n in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = self.block_c(n, x)
        x = self.block_d("Mixed_7a", x)
        x = self.block_e("Mixed_7b", x, max_pool_branch=False)
        x = self.block_e("Mixed_7c", x, max_pool_branch=True)
        gap = self._tmp("gap")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [gap], name="avgpool"))
        self.nodes.append(helper.make_node("Flatten", [gap], ["pool"], name="flatten", axis=1))

        fw = np.asarray(self.w["fc.weight"], dtype=np.float32)
        fb = np.asarray(self.w["fc.bias"], dtype=np.float32)
        if fw.shape != (NUM_CLASSES, 2048) or fb.shape != (NUM_CLASSES,):
            raise ValueError(f"fc: shapes {fw.shape}/{fb.shape}, expected ({NUM_CLASSES}, 2048)/({NUM_CLASSES},)")
        self.inits.append(numpy_helper.from_array(fw, "fc.w"))
        self.inits.append(numpy_helper.from_array(fb, "fc.b"))
        self.nodes.append(helper.make_node("Gemm", ["pool", "fc.w", "fc.b"], ["logits"], name="fc", transB=1))
        self.nodes.append(helper.make_node("Gemm", ["pool", "fc.w"], ["logits_unbiased"], name="fc_nobias", transB=1))

        graph = helper.make_graph(
            self.nodes,
            "fid_inception_v3",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 299, 299])],
            [
                helper.make_tensor_value_info("pool", TensorProto.FLOAT, ["N", 2048]),
                helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES]),
                helper.make_tensor_value_info("logits_unbiased", TensorProto.FLOAT, ["N", NUM_CLASSES]),
            ],
            initializer=self.inits,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="mergevq-hack-inception",
            doc_string=doc,
        )
        model.ir_version = 8
        return model


def build_model(weights: dict[str, np.ndarray], weights_kind: str, provenance: str) -> onnx.ModelProto:
    """Build the FID Inception ONNX model. ``weights_kind`` is "random" or "pt_inception-2015-12-05" and is
    stored as metadata (``mergevq.weights``) that trainer/src/eval reads to label its metrics."""
    model = _Builder(weights).build(doc=f"FID-InceptionV3 (pytorch-fid variant); weights: {weights_kind}")
    for k, v in {
        "mergevq.weights": weights_kind,
        "mergevq.provenance": provenance,
        "mergevq.preprocess": "bilinear resize to 299 (align_corners=False, no antialias), x*2-1, NCHW",
    }.items():
        entry = model.metadata_props.add()
        entry.key = k
        entry.value = v
    onnx.checker.check_model(model)
    return model
