#!/usr/bin/env python3
"""Convert real LPIPS-VGG weights into the trainer's perceptual weight file (checkpoint container format,
kind "perceptual"; see trainer/src/io/checkpoint.ts and trainer/src/losses/perceptual.ts).

Inputs (obtain them wherever you are allowed to; nothing is downloaded here):
  --vgg   torchvision VGG16 state_dict (.pth, e.g. vgg16-397923af.pth) — keys features.<i>.weight/bias
  --lin   LPIPS v0.1 linear heads (.pth, lpips/weights/v0.1/vgg.pth) — keys lin<j>.model.1.weight [1,C,1,1]
Output: a file whose header says generated=false.

  python3 trainer/src/losses/convert_lpips.py --vgg vgg16.pth --lin vgg.pth --out lpips-vgg16.bin
Requires torch (CPU) and numpy: pip install torch numpy (e.g. into ~/.cache/mergevq/venv).
"""
import argparse
import datetime
import hashlib
import json
import struct

import numpy as np

VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
TAPS = [1, 3, 6, 9, 12]
# torchvision features.<idx> index of each conv (ReLU and MaxPool layers in between)
TORCH_CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def encode(kind, meta, tensors):
    entries, blobs, offset = [], [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        entries.append({"name": name, "shape": list(a.shape), "dtype": "float32", "offset": offset, "byteLength": a.nbytes})
        blobs.append(a.tobytes())
        offset += a.nbytes
    header = {
        "format": "mergevq-checkpoint",
        "version": 1,
        "kind": kind,
        "createdAt": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "meta": meta,
        "tensors": entries,
    }
    h = json.dumps(header).encode()
    h += b" " * ((8 - (12 + len(h)) % 8) % 8)
    body = b"MVQCKPT1" + struct.pack("<I", len(h)) + h + b"".join(blobs)
    return body + hashlib.sha256(body).digest()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vgg", required=True)
    p.add_argument("--lin", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    import torch

    vgg = torch.load(args.vgg, map_location="cpu")
    lin = torch.load(args.lin, map_location="cpu")
    tensors = {}
    for ci, ti in enumerate(TORCH_CONV_IDX):
        w = vgg[f"features.{ti}.weight"].numpy()  # [out, in, kh, kw] → [kh, kw, in, out]
        tensors[f"conv{ci}/kernel"] = w.transpose(2, 3, 1, 0)
        tensors[f"conv{ci}/bias"] = vgg[f"features.{ti}.bias"].numpy()
    for j in range(len(TAPS)):
        tensors[f"lin{j}/weight"] = lin[f"lin{j}.model.1.weight"].numpy().reshape(-1)
    spec = {"name": "lpips-vgg16-v0.1", "generated": False, "layers": VGG16_LAYERS, "taps": TAPS}
    with open(args.out, "wb") as f:
        f.write(encode("perceptual", {"spec": spec, "source": {"vgg": args.vgg, "lin": args.lin}}, tensors))


if __name__ == "__main__":
    main()
