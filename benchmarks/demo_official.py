"""Cost of the multi-label demo's data side on the real NIH metadata (112,120 rows): the
``nih-demo-official`` draw at full size and at a few caps (wall time, draws needed, peak memory
of the draw), and the synthetic renderer per image, multi-label (three findings) vs single-label,
at 32, 64 and 224 px, and the ratio of the two at 224 px. Prints one JSON object.

    .venv/bin/python benchmarks/demo_official.py
"""

from __future__ import annotations

import json
import time
import tracemalloc

from fairxray.config import SyntheticParams
from fairxray.data import nih, synthetic

SYN = SyntheticParams(
    signal=0.3, noise=0.2, age_signal_scale=(1.0, 0.45), sex_signal_scale={"M": 1.0, "F": 1.0}
)


def draws(meta) -> dict:
    out = {}
    for cap in (None, 30_000, 3_000):
        tracemalloc.start()
        t0 = time.perf_counter()
        splits, rec = nih.protocol_demo_official(meta, (0, 60, 100), 0.1, 42, nih.TARGETS, cap)
        wall = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[str(cap)] = {
            "seconds": round(wall, 3),
            "peak_mib": round(peak / 2**20, 1),
            "rows": {k: len(v) for k, v in splits.items()},
            "draw": rec["draw"],
            "test_share": rec["test_share"],
        }
    return out


def render_ms(size: int, n: int) -> dict:
    def per_image(fn) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            fn(f"{i:08d}_000.png")
        return round((time.perf_counter() - t0) / n * 1e3, 3)

    three = ("Effusion", "Infiltration", "Mass")
    return {
        "multilabel_3_findings": per_image(
            lambda i: synthetic.render_findings(i, three, 1, "F", size, SYN)
        ),
        "multilabel_no_finding": per_image(
            lambda i: synthetic.render_findings(i, (), 1, "F", size, SYN)
        ),
        "multiclass": per_image(lambda i: synthetic.render(i, 2, 1, "F", size, SYN)),
    }


def main() -> None:
    t0 = time.perf_counter()
    meta = nih.read_metadata(nih.bundled_metadata())
    read_s = round(time.perf_counter() - t0, 3)
    result = {
        "metadata_rows": len(meta),
        "read_metadata_s": read_s,
        "draw": draws(meta),
        "render_ms_per_image": {s: render_ms(s, 200 if s < 100 else 40) for s in (32, 64, 224)},
    }
    big = result["render_ms_per_image"][224]
    # What a multi-label image (three findings) costs against the single-label one.
    result["ratio_multilabel_vs_multiclass_224px"] = round(
        big["multilabel_3_findings"] / big["multiclass"], 2
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
