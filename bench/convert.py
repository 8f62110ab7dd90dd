"""int8 against fp32 ONNX: file size, batch-1024 throughput and test accuracy.

A model of the demo's shape (`_model.py`: 11 raw inputs, NaN imputation, scaling, one-hot,
PCA to 11, an MLP, by default the demo's [64, 32]) is trained in-process on synthetic rows and
converted by the convert stage's own function (`lakestory.conversion.convert`): ONNX fp32, int8
dynamic, int8 static (QDQ, per channel, calibrated on the validation rows). Throughput is then
timed again on one thread, batches of 1024 test rows, the three sides alternating --repeat
times after a warm-up, the best of each taken. Accuracy is on the test rows (0.5 threshold).

To tell why a target is missed, the script also gives the bytes of each file that are not the
MLP's weights (graph, preprocessing constants, quantization scales, int32 biases) and, from ONNX
Runtime's profiler, the share of the fp32 graph's kernel time spent in the MLP (Gemm): int8 can
only speed up that share.

Measured on 2 shared cores, 60,000 rows (12,000 test), --repeat 5 (targets: size ratio <= 0.30,
throughput ratio >= 1.5, accuracy drop <= 1 point):
- the demo's [64, 32] (2,900 weights): fp32 16,043 B, dynamic 9,795 B (0.61), static 12,609 B
  (0.79); 5.40M rows/s fp32, 5.45M dynamic (1.01), 5.22M static (0.97); accuracy 0.8815,
  drops 0.03 and -0.01 points. Size and speed targets missed, and int8 cannot meet them at
  this size: the MLP's weights do shrink to 0.26 (11,211 B -> 2,888 B), but the rest of the
  file (graph, preprocessing constants; for int8 also scales, zero points, int32 biases, Q/DQ
  nodes) is 4,832 B in fp32 and 6,907 / 9,721 B in int8; and the MLP takes only 41% of fp32's
  kernel time (the preprocessing the rest), so even free int8 layers would give at most 1.7x,
  while the int8 ones add quantize/dequantize work.
- --hidden 512,256 (138,000 weights): fp32 555,446 B, dynamic 146,674 B (0.26), static
  158,232 B (0.29); 366k rows/s fp32, 947k dynamic (2.59), 849k static (2.32); accuracy
  0.8756, drops 0.10 and 0.09 points: every target met (the MLP is 95% of the kernel time).
Dynamic int8 gave rows up to 0.054 another probability alone than within the test batch (its
activation scales come from the batch), which is why the gate passes it over by default.

Prints one JSON line: {"hidden": [...], "test_rows": N, "fp32_bytes": ..., "dynamic_bytes":
..., "static_bytes": ..., "size_ratio_dynamic": ..., "size_ratio_static": ..., "fp32_rows_s":
..., "dynamic_rows_s": ..., "static_rows_s": ..., "throughput_ratio_dynamic": ...,
"throughput_ratio_static": ..., "accuracy_fp32": ..., "accuracy_drop_dynamic_points": ...,
"accuracy_drop_static_points": ..., "dynamic_batch_max_abs_diff": ..., "non_weight_bytes":
{...}, "fp32_gemm_time_share": ..., "champion": ...}.

    python bench/convert.py
    python bench/convert.py --hidden 512,256
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from _model import synthetic, trained_model  # bench/ is on sys.path when a script there runs

from lakestory.conversion import (
    INPUT_NAME,
    INT8_DYNAMIC,
    INT8_STATIC,
    ONNX_FP32,
    convert,
    inference_session,
    onnx_probabilities,
)
from lakestory.conversion.build import throughput

SIDES = {"fp32": ONNX_FP32, "dynamic": INT8_DYNAMIC, "static": INT8_STATIC}


def non_weight_bytes(path: Path) -> int:
    """The file's bytes that are not the MLP's weight matrices (the 2-D initializers named
    after a Linear layer's weight, fp32 or quantized)."""
    model = onnx.load(str(path))
    weights = sum(
        t.ByteSize() for t in model.graph.initializer if len(t.dims) == 2 and "weight" in t.name
    )
    return path.stat().st_size - weights


def gemm_time_share(path: Path, batch: np.ndarray, runs: int = 50) -> float:
    """Share of the graph's kernel time spent in the MLP's layers, by ONNX Runtime's profiler
    (which runs a Gemm followed by a Relu as one FusedGemm, a QDQ Gemm as a QGemm)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {INPUT_NAME: batch})
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    total = sum(by_op.values())
    gemm = sum(t for op, t in by_op.items() if op.endswith("Gemm"))
    return gemm / total if total else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--hidden", default="64,32")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    hidden = [int(h) for h in args.hidden.split(",")]

    x, y = synthetic(args.rows, args.seed)
    cut = [int(0.6 * len(x)), int(0.8 * len(x))]
    (x_train, x_val, x_test), (y_train, y_val, y_test) = np.split(x, cut), np.split(y, cut)
    model = trained_model(x_train, y_train, hidden, args.epochs, args.seed)
    arrays = {"x_test": x_test, "y_test": y_test, "x_validation": x_val, "y_validation": y_val}

    with tempfile.TemporaryDirectory(prefix="lakestory-bench-") as tmp:
        report = convert(model, "bench", "1", arrays, Path(tmp))
        paths = {side: Path(report.paths[artifact]) for side, artifact in SIDES.items()}
        batch = x_test[:1024]
        sessions = {side: inference_session(path, threads=1) for side, path in paths.items()}

        def predict(side: str) -> Callable[[np.ndarray], np.ndarray]:
            return lambda rows: onnx_probabilities(sessions[side], rows)

        for side in SIDES:  # warm-up
            throughput(predict(side), batch)
        rates: dict[str, list[float]] = {side: [] for side in SIDES}
        for _ in range(args.repeat):
            for side in SIDES:
                rates[side].append(throughput(predict(side), batch))
        best = {side: max(r) for side, r in rates.items()}
        sizes = {side: path.stat().st_size for side, path in paths.items()}
        overhead = {side: non_weight_bytes(path) for side, path in paths.items()}
        share = gemm_time_share(paths["fp32"], batch)

    figures = {side: report.figure(artifact) for side, artifact in SIDES.items()}
    print(
        json.dumps(
            {
                "hidden": hidden,
                "test_rows": len(y_test),
                "fp32_bytes": sizes["fp32"],
                "dynamic_bytes": sizes["dynamic"],
                "static_bytes": sizes["static"],
                "size_ratio_dynamic": round(sizes["dynamic"] / sizes["fp32"], 3),
                "size_ratio_static": round(sizes["static"] / sizes["fp32"], 3),
                "fp32_rows_s": round(best["fp32"]),
                "dynamic_rows_s": round(best["dynamic"]),
                "static_rows_s": round(best["static"]),
                "throughput_ratio_dynamic": round(best["dynamic"] / best["fp32"], 2),
                "throughput_ratio_static": round(best["static"] / best["fp32"], 2),
                "accuracy_fp32": round(figures["fp32"].accuracy, 4),
                "accuracy_drop_dynamic_points": round(100 * figures["dynamic"].accuracy_drop, 2),
                "accuracy_drop_static_points": round(100 * figures["static"].accuracy_drop, 2),
                "dynamic_batch_max_abs_diff": round(figures["dynamic"].batch_max_abs_diff, 4),
                "non_weight_bytes": overhead,
                "fp32_gemm_time_share": round(share, 2),
                "champion": report.gate.champion,
            }
        )
    )


if __name__ == "__main__":
    main()
