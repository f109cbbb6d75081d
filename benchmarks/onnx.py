"""CPU inference throughput of the exported ONNX model (onnxruntime) against PyTorch eager.

Builds the export's image -> probabilities module for a registry model at random init (``toy`` by
default; e.g. ``--model clip-vit-b16`` for a real architecture, slower) with a linear head,
exports it with ``fairxray.export.onnx.export_onnx``, checks parity, then times both runtimes on the
same random batches with the same thread count. Prints one JSON object; the number to read is
``speedup`` per batch size (onnxruntime images/s over PyTorch images/s, measured in this run).

    .venv/bin/python benchmarks/onnx.py --batch 1 32 --repeats 20 [--threads 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named onnx.py: run as a script, its folder leads sys.path and would shadow the
# onnx package (imported by torch.onnx and onnxruntime checks). Drop that folder first.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from fairxray.config import ExportParams  # noqa: E402
from fairxray.export.onnx import ProbsModel, export_onnx  # noqa: E402
from fairxray.models import create  # noqa: E402


def _time(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocation and graph optimisation are not throughput
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy", help="a registry model, built at random init")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--repeats", type=int, default=20)
    # One thread each by default: on a shared machine torch's OpenMP pool oversubscribes busy
    # cores and its timings swing tenfold; raise it for peak throughput on an idle machine.
    ap.add_argument("--threads", type=int, default=1, help="threads of both runtimes")
    ap.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo")
    ap.add_argument("--opset", type=int, default=18)
    args = ap.parse_args(argv)
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    threads = args.threads
    clip = create(args.model, None).eval()
    torch.manual_seed(0)
    module = ProbsModel(clip.vision, nn.Linear(clip.spec.embed_dim, 6)).eval()
    s = clip.spec.image
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        t0 = time.perf_counter()
        example = torch.from_numpy(
            rng.normal(size=(2, s.in_channels, s.size, s.size)).astype(np.float32)
        )
        export_onnx(module, example, path, ExportParams(args.opset, args.exporter, 1e-4, 2))
        export_seconds = time.perf_counter() - t0
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for b in args.batch:
            x = rng.normal(size=(b, s.in_channels, s.size, s.size)).astype(np.float32)
            xt = torch.from_numpy(x)

            def run_torch(xt=xt):
                with torch.inference_mode():
                    return module(xt).numpy()

            def run_ort(x=x):
                return sess.run(["probs"], {"image": x})[0]

            diff = float(np.max(np.abs(run_torch() - run_ort())))
            t_torch, t_ort = _time(run_torch, args.repeats), _time(run_ort, args.repeats)
            results.append(
                {
                    "batch": b,
                    "torch_images_per_s": round(b / t_torch, 1),
                    "onnxruntime_images_per_s": round(b / t_ort, 1),
                    "speedup": round(t_torch / t_ort, 3),
                    "max_abs_diff": diff,
                }
            )
    print(
        json.dumps(
            {
                "model": args.model,
                "weights": "random init",
                "input": [s.in_channels, s.size, s.size],
                "exporter": args.exporter,
                "opset": args.opset,
                "threads": threads,
                "repeats": args.repeats,
                "export_seconds": round(export_seconds, 2),
                "torch": torch.__version__,
                "onnxruntime": ort.__version__,
                "results": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
