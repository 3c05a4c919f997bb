"""Convert the standard FID Inception weights into the ONNX model trainer/src/eval uses.

Source weights: pytorch-fid's port of the TF FID Inception (2015-12-05),
  https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
  (the file pytorch-fid downloads). The script records the file's sha256 in the model metadata
  (`mergevq.provenance`) and labels the output as the real weights only for a file of that name; compare the
  printed sha256 with the one of a trusted download.

Exact commands (on a machine that can download the file; torch is only needed to unpickle the .pth):

    python3 -m venv ~/.cache/mergevq/venv && ~/.cache/mergevq/venv/bin/pip install -r hack/inception/requirements.txt
    ~/.cache/mergevq/venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    curl -LO https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
    ~/.cache/mergevq/venv/bin/python hack/inception/convert_pt_inception.py \
        --weights pt_inception-2015-12-05-6726825d.pth --out fid-inception-2015-12-05.onnx

then point MERGEVQ_INCEPTION_URI at the .onnx (a path or s3:// URI). ``--weights`` also accepts an .npz holding
the same state dict (torchvision names), which needs no torch; ``--check`` with a .pth additionally compares
the ONNX pool features on random inputs against pytorch-fid's ``InceptionV3`` if pytorch-fid is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os

import numpy as np
import onnx

from fid_inception_onnx import build_model, required_keys

REAL_KIND = "pt_inception-2015-12-05"
REAL_FILE_STEM = "pt_inception-2015-12-05"


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    import torch  # only for .pth; CPU wheel is enough

    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def check_against_pytorch_fid(model: onnx.ModelProto) -> None:
    """Compare pool features with pytorch-fid's own InceptionV3 on random inputs. pytorch-fid loads the weights
    through torch hub: put the .pth into ~/.cache/torch/hub/checkpoints/ (or let it download)."""
    import onnxruntime as ort  # optional: pip install onnxruntime
    import torch
    from pytorch_fid.inception import InceptionV3

    net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True).eval()
    x = torch.rand(4, 3, 256, 256)
    with torch.no_grad():
        ref = net(x)[0].squeeze(-1).squeeze(-1).numpy()
    xr = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["pool"], {"images": xr.numpy()})[0]
    err = np.abs(got - ref).max() / max(1e-12, float(np.abs(ref).max()))
    print(f"max relative deviation from pytorch-fid InceptionV3: {err:.3e}")
    if err > 1e-4:
        raise SystemExit("conversion check FAILED")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="pt_inception-2015-12-05-6726825d.pth (or a .npz state dict)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--kind", default=REAL_KIND, help="metadata label of the weights (default requires the real file)")
    ap.add_argument("--check", action="store_true", help="compare with pytorch-fid (needs torch, pytorch-fid, onnxruntime)")
    args = ap.parse_args()
    sd = load_state_dict(args.weights)
    unused = sorted(set(sd) - set(required_keys()))
    unused = [k for k in unused if not k.endswith("num_batches_tracked")]
    if unused:
        print(f"note: ignoring {len(unused)} tensors not in the FID graph, e.g. {unused[:3]}")
    with open(args.weights, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if args.kind == REAL_KIND and REAL_FILE_STEM not in os.path.basename(args.weights):
        # A guard against labelling arbitrary weights as the real ones; the sha256 is recorded in the model
        # metadata (mergevq.provenance) for the user to compare with their download.
        raise SystemExit(
            f"{args.weights}: not named {REAL_FILE_STEM}*.pth; refusing to label it as the real FID weights "
            "(pass --kind <name> for other weights; metrics will then be labelled [unverified-inception])"
        )
    model = build_model(sd, args.kind, f"convert_pt_inception.py from {args.weights} sha256={digest}")
    onnx.save(model, args.out)
    print(f"wrote {args.kind} FID Inception to {args.out} (source sha256 {digest})")
    if args.check:
        check_against_pytorch_fid(model)


if __name__ == "__main__":
    main()
