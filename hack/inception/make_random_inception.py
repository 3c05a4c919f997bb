"""Generate a FID-InceptionV3 ONNX model with DETERMINISTIC RANDOM weights (for tests and benchmarks).

Same graph as the real converted model (fid_inception_onnx.py): same layers, shapes, pooling variants,
inputs and outputs. Only the weights differ, so every number computed with it is meaningless as FID/IS;
the model carries metadata ``mergevq.weights = random`` and trainer/src/eval labels its metrics
``[random-inception]``.

Weights: conv He-normal (std √(2/fan_in)), batch-norm γ∈U(0.8,1.2), β~N(0,0.05²), running mean ~N(0,0.05²),
running var ∈U(0.8,1.2), folded exactly like real weights; fc ~N(0, (4/√2048)²), bias ~N(0, 0.1²). This keeps
activations O(1) through the 94 ReLU convs, so pool features and logits are not degenerate.

    python make_random_inception.py --seed 0 --out model.onnx [--save-state-dict sd.npz]
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx

from fid_inception_onnx import NUM_CLASSES, build_model, conv_specs


def random_state_dict(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}
    for name, cin, cout, (kh, kw), _stride, _pad in conv_specs():
        fan_in = cin * kh * kw
        sd[f"{name}.conv.weight"] = (rng.standard_normal((cout, cin, kh, kw)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        sd[f"{name}.bn.weight"] = rng.uniform(0.8, 1.2, cout).astype(np.float32)
        sd[f"{name}.bn.bias"] = (rng.standard_normal(cout) * 0.05).astype(np.float32)
        sd[f"{name}.bn.running_mean"] = (rng.standard_normal(cout) * 0.05).astype(np.float32)
        sd[f"{name}.bn.running_var"] = rng.uniform(0.8, 1.2, cout).astype(np.float32)
    sd["fc.weight"] = (rng.standard_normal((NUM_CLASSES, 2048)) * (4.0 / np.sqrt(2048))).astype(np.float32)
    sd["fc.bias"] = (rng.standard_normal(NUM_CLASSES) * 0.1).astype(np.float32)
    return sd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--save-state-dict", help="also write the (unfolded) random state dict as .npz")
    args = ap.parse_args()
    sd = random_state_dict(args.seed)
    if args.save_state_dict:
        np.savez(args.save_state_dict, **sd)
    model = build_model(sd, "random", f"hack/inception/make_random_inception.py --seed {args.seed}")
    onnx.save(model, args.out)
    n = sum(int(v.size) for v in sd.values())
    print(f"wrote RANDOM-weight FID Inception ({n} parameters before BN folding) to {args.out}")


if __name__ == "__main__":
    main()
