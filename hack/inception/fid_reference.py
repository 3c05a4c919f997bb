"""Independent float64 reference computations for the TypeScript evaluation tests (numpy/scipy only).

    python fid_reference.py fid IN.npz       # IN has mu1, sigma1, mu2, sigma2 → prints JSON {"fid": ...}
    python fid_reference.py stats IN.npz     # IN has x (N×d) → writes IN.stats.npz with mu, sigma (np.cov)
    python fid_reference.py write-npz OUT    # writes OUT.plain.npz (np.savez) and OUT.compressed.npz
    python fid_reference.py read-npz IN.npz  # prints JSON {name: {dtype, shape, values}} of every array
    python fid_reference.py resize-model OUT.onnx  # ONNX Resize (linear, pytorch_half_pixel) to 299, ×2−1
    python fid_reference.py recompress IN.npz OUT.npz
    python fid_reference.py is IN.npz        # IN has logits (N×C) → JSON {"mean", "std"} (10 splits)

`fid` is pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm, ε·I retry, imaginary-part check),
which is also what MergeVQ's evaluation.py uses.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from scipy import linalg


def frechet(mu1, sigma1, mu2, sigma2, eps=1e-6):
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_eigh(mu1, sigma1, mu2, sigma2):
    """Second float64 reference via eigh (same maths as the TS code, different implementation: LAPACK)."""
    w, v = np.linalg.eigh(sigma1)
    w = np.clip(w, 0, None)
    a = v * np.sqrt(w)
    m = a.T @ sigma2 @ a
    ev = np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(ev).sum())


def main() -> None:
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "fid":
        z = np.load(path)
        args = [np.asarray(z[k], dtype=np.float64) for k in ("mu1", "sigma1", "mu2", "sigma2")]
        print(json.dumps({"fid": frechet(*args), "fid_eigh": frechet_eigh(*args)}))
    elif cmd == "stats":
        x = np.asarray(np.load(path)["x"], dtype=np.float64)
        np.savez(path.replace(".npz", ".stats.npz"), mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    elif cmd == "write-npz":
        rng = np.random.default_rng(7)
        arrays = {
            "mu": rng.standard_normal(5),
            "sigma": rng.standard_normal((5, 5)).astype(np.float32),
            "arr_0": rng.integers(0, 256, (3, 4, 6, 3), dtype=np.uint8),
            "labels": np.arange(-3, 4, dtype=np.int64),
            "ints": np.arange(6, dtype=np.int32).reshape(2, 3),
        }
        np.savez(path + ".plain.npz", **arrays)
        np.savez_compressed(path + ".compressed.npz", **arrays)
        print(json.dumps({k: {"dtype": v.dtype.str, "shape": list(v.shape), "values": v.ravel().tolist()} for k, v in arrays.items()}))
    elif cmd == "read-npz":
        with np.load(path) as z:
            out = {k: {"dtype": z[k].dtype.str, "shape": list(z[k].shape), "values": z[k].ravel().tolist()} for k in z.files}
        print(json.dumps(out))
    elif cmd == "recompress":  # IN.npz → OUT (np.savez_compressed of the same arrays)
        with np.load(path) as z:
            np.savez_compressed(sys.argv[3], **{k: z[k] for k in z.files})
    elif cmd == "resize-model":
        from onnx import TensorProto, helper

        sizes = helper.make_tensor("sizes_c", TensorProto.INT64, [4], [1, 3, 299, 299])
        nodes = [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Slice", ["shape", "zero", "one"], ["n"]),
            helper.make_node("Slice", ["sizes_c", "one", "four"], ["chw"]),
            helper.make_node("Concat", ["n", "chw"], ["sizes"], axis=0),
            helper.make_node(
                "Resize", ["x", "", "", "sizes"], ["r"], mode="linear", coordinate_transformation_mode="pytorch_half_pixel"
            ),
            helper.make_node("Mul", ["r", "two"], ["r2"]),
            helper.make_node("Sub", ["r2", "onef"], ["y"]),
        ]
        inits = [
            sizes,
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
            helper.make_tensor("four", TensorProto.INT64, [1], [4]),
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("onef", TensorProto.FLOAT, [], [1.0]),
        ]
        g = helper.make_graph(
            nodes,
            "resize",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 299, 299])],
            initializer=inits,
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        import onnx

        onnx.save(m, path)
    elif cmd == "is":
        # improved-GAN / torch-fidelity: softmax, 10 contiguous splits, exp(mean KL(p(y|x) || p(y))).
        logits = np.asarray(np.load(path)["logits"], dtype=np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        n, scores = len(p), []
        for k in range(10):
            part = p[k * n // 10 : (k + 1) * n // 10]
            py = part.mean(0, keepdims=True)
            kl = (part * (np.log(part) - np.log(py))).sum(1).mean()
            scores.append(np.exp(kl))
        print(json.dumps({"mean": float(np.mean(scores)), "std": float(np.std(scores))}))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
