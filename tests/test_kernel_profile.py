"""Kernel time per stage from a chrome trace: kernels charged to the stage that launched them."""

from lart_stream.benchmarks.kernel_profile import kernel_time_by_stage


def _x(cat, name, ts, dur, tid=1, corr=None):
    e = {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "tid": tid}
    if corr is not None:
        e["args"] = {"correlation": corr}
    return e


def test_kernels_are_charged_to_the_launching_stage_by_correlation_and_thread():
    trace = {"traceEvents": [
        _x("user_annotation", "stage:detect", 0, 100, tid=1),
        _x("user_annotation", "stage:lift", 0, 100, tid=2),  # another thread, overlapping in time
        _x("cuda_runtime", "cudaLaunchKernel", 10, 2, tid=1, corr=1),
        _x("cuda_runtime", "cudaGraphLaunch", 20, 2, tid=2, corr=2),
        _x("cuda_runtime", "cudaLaunchKernel", 150, 2, tid=1, corr=3),  # outside any stage
        _x("kernel", "yolo_conv", 30, 1000, tid=7, corr=1),
        _x("kernel", "vit_gemm", 40, 3000, tid=8, corr=2),  # two kernels of one graph replay
        _x("kernel", "vit_gemm", 45, 1000, tid=8, corr=2),
        _x("gpu_memcpy", "Memcpy DtoH", 160, 500, tid=7, corr=3),
        {"ph": "i", "name": "instant"},
    ]}
    out = kernel_time_by_stage(trace, frames=2)
    assert out["per_frame_ms"] == {"detect": 0.5, "lift": 2.0, "unattributed": 0.25, "total": 2.75}
    assert out["top_kernels"][0] == ("vit_gemm", 2.0)
