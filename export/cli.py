"""``lart-stream export``: ONNX files, optional TensorRT engines and a parity report.

    lart-stream export --out exported/ --model-size official --hmr-checkpoint hmr2.ckpt --lart-checkpoint lart.ckpt
    lart-stream export --out exported/ --model-size tiny --check      # random weights, CPU parity report
    lart-stream export --out exported/ --detector yolov8n.onnx --tensorrt
    lart-stream export --out exported/ --models mvit --mvit-checkpoint mvit.pyth [--mvit-config mvit.yaml]

``--models all`` includes the appearance model (mvit) only when ``--mvit-checkpoint`` is given.

Exit codes: 0 done (and parity passed with --check), 1 parity failed, 2 user error (one line, no
traceback): a missing file, TensorRT requested but absent, a bad option.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

from lart_stream.models.checkpoint import CheckpointError
from lart_stream.realtime.backends import BACKEND_NAMES, BackendUnavailable

MODEL_CHOICES = ("hmr2", "lart_window", "lart_step", "mvit")


class UserError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    from lart_stream.realtime.cli_args import HelpFormatter, Parser, add_alias, non_negative_int, positive_int

    p = Parser(prog="lart-stream export", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_version()
    p.add_argument("--out", default="exported", help="folder for the ONNX files, manifest.json and engines/")
    p.add_argument("--models", default="all", help=f"comma list of {', '.join(MODEL_CHOICES)} or 'all' or 'none'")
    size = p.add_argument("--model-size", choices=("tiny", "official"), default="official",
                          help="HMR and LART size without a checkpoint (tiny for tests)")
    add_alias(p, "--size", size)
    hmr = p.add_argument("--hmr-checkpoint",
                         help="HMR 2.0 checkpoint (epoch=35-step=1000000.ckpt); random weights if absent")
    add_alias(p, "--hmr2-checkpoint", hmr)
    p.add_argument("--lart-checkpoint", help="LART checkpoint; random weights if absent")
    p.add_argument("--mvit-checkpoint", help="PySlowFast MViT AVA checkpoint (mvit.pyth); random weights if absent")
    p.add_argument("--mvit-config", help="its PySlowFast yaml (mvit.yaml); default: the cfg the .pyth embeds")
    p.add_argument("--mvit-size", help="clip HxW the MViT graph takes (e.g. 312x374); default: the config's crop")
    p.add_argument("--lart-dim-head", type=positive_int, metavar="N",
                   help="LART attention head size, when the checkpoint does not record it")
    p.add_argument("--detector", help="a person-detector ONNX (YOLOv8/YOLO11 [1,4+C,A] or NMS'd [N,6]) to validate"
                                      " and, with --tensorrt, build an engine for")
    p.add_argument("--fp16-onnx", action="store_true", help="also write *.fp16.onnx (TensorRT >= 11 builds FP16 from it)")
    p.add_argument("--tensorrt", action="store_true", help="build FP16 TensorRT engines (needs tensorrt and a GPU)")
    p.add_argument("--engine-cache", help="engine cache folder (default OUT/engines)")
    p.add_argument("--check", action="store_true", help="parity report against PyTorch FP32; exit 1 above tolerance")
    p.add_argument("--check-backends", default="onnxruntime,torch",
                   help=f"comma list of {', '.join(BACKEND_NAMES)} for --check")
    p.add_argument("--device", default="cpu", help="device for --check backends and engine builds (cpu, cuda)")
    p.add_argument("--batches", default="1,7", help="batch sizes (crops / tracks) for --check")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random-weight seed")
    return p


def _csv(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise UserError(f"{what}: unknown {bad}; choose from {', '.join(allowed)}")
    return items


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (UserError, BackendUnavailable, FileNotFoundError, CheckpointError) as e:
        print(f"lart-stream export: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from lart_stream.export import onnx_export as ox

    if args.models == "all":
        models = [m for m in MODEL_CHOICES if m != "mvit" or args.mvit_checkpoint]
    elif args.models == "none":
        models = []
    else:
        models = _csv(args.models, MODEL_CHOICES, "--models")
    check_backends = _csv(args.check_backends, BACKEND_NAMES, "--check-backends") if args.check else []
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--batches: expected comma-separated integers, got {args.batches!r}") from None
    for flag in ("hmr_checkpoint", "lart_checkpoint", "mvit_checkpoint", "mvit_config", "detector"):
        path = getattr(args, flag)
        if path and not Path(path).is_file():
            raise UserError(f"--{flag.replace('_', '-')}: no such file: {path}")
    if args.tensorrt or "tensorrt" in check_backends:
        from lart_stream.realtime.tensorrt_engine import require_tensorrt

        require_tensorrt()  # fail before any export work, with the install hint
        if not args.device.startswith("cuda"):
            raise UserError("--tensorrt needs --device cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    specs = []
    for kind in models:
        specs.extend(_build_specs(kind, args))
    entries = {}
    for spec in specs:
        if spec.random_weights:
            print(f"WARNING: {spec.kind}: RANDOM weights (no checkpoint) - the exported model predicts nothing",
                  file=sys.stderr)
        entry = ox.export_model(spec, out, fp16_twin=args.fp16_onnx or args.tensorrt)
        entries[spec.kind] = entry
        print(f"exported {spec.kind}: {out / entry['file']}" + (f" (+ {entry['fp16_file']})" if "fp16_file" in entry else ""))
    if args.detector:
        info = ox.inspect_detector(args.detector)
        print(f"detector: {info.summary()}")
        print("detector: post-processing (confidence, person classes, NMS) runs in our code "
              "(realtime/onnx_detector.py), not in the graph")
        entries["detector"] = {"file": str(Path(args.detector).resolve()), "user_supplied": True,
                               "output_format": info.output_format, "class_names": info.class_names}
    if entries:
        print(f"manifest: {ox.write_manifest(out, entries)}")

    if args.tensorrt:
        _build_engines(specs, args, out)

    if not args.check:
        return 0
    from lart_stream.export.check import format_report

    rows = []
    for spec in specs:
        rows.extend(_check_spec(spec, out, check_backends, batches, args))
    print(format_report(rows))
    return 0 if all(r.passed for r in rows) else 1


def _build_specs(kind: str, args: argparse.Namespace) -> list:
    from lart_stream.export import onnx_export as ox

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning is printed once by _run
        if kind == "hmr2":
            return [ox.hmr2_spec(args.model_size, args.hmr_checkpoint, args.seed)]
        if kind == "mvit":
            h, w = _hw(args.mvit_size) if args.mvit_size else (None, None)
            return [ox.mvit_spec(args.model_size, args.mvit_checkpoint, args.seed, config=args.mvit_config, height=h, width=w)]
        builder = ox.SPEC_BUILDERS.get(kind)
        if builder is None:
            raise UserError(f"{kind}: export not available yet (models/lart.py has no export entry point)")
        if args.lart_checkpoint:
            return [builder(args.model_size, args.lart_checkpoint, args.seed, model=_lart_from_checkpoint(args))]
        return [builder(args.model_size, None, args.seed)]


def _lart_from_checkpoint(args: argparse.Namespace):
    """The LART checkpoint's model, loaded once for both LART exports (the head size from the flag
    or the checkpoint; a checkpoint that records neither is refused with the flag to pass)."""
    from lart_stream.models.lart import load_lart

    if not hasattr(args, "_lart_model"):
        try:
            args._lart_model = load_lart(args.lart_checkpoint, dim_head=args.lart_dim_head)[0].eval()
        except ValueError as exc:
            raise UserError(str(exc)) from None
    return args._lart_model


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--mvit-size: expected HxW (e.g. 312x374), got {text!r}") from None
    return h, w


def _build_engines(specs: list, args: argparse.Namespace, out: Path) -> None:
    from lart_stream.realtime import tensorrt_engine as tb
    from lart_stream.realtime.backends import io_from_onnx

    cache = tb.EngineCache(args.engine_cache or out / "engines")
    for spec in specs:
        profile = tb.make_profile(spec.io, fixed_dims=spec.fixed_dims)
        path = tb.get_or_build_engine(out / f"{spec.kind}.onnx", spec.io, cache, [profile])
        print(f"engine {spec.kind}: {path}")
    if args.detector:
        io = io_from_onnx(args.detector, "detector")
        path = tb.get_or_build_engine(args.detector, io, cache, [tb.make_profile(io)])
        print(f"engine detector: {path}")


def _check_spec(spec, out: Path, backend_names: list[str], batches: list[int], args: argparse.Namespace) -> list:
    from lart_stream.export.check import check_backend, fp32_copy, reference_outputs
    from lart_stream.realtime.backends import resolve_backend

    ref_module = fp32_copy(spec.module)
    rows = []
    for name in backend_names:
        backend, _ = resolve_backend(name, spec.kind, args.device, onnx_path=out / f"{spec.kind}.onnx",
                                     module=fp32_copy(spec.module), io=spec.io,
                                     engine_cache_dir=args.engine_cache or out / "engines")
        precision = "fp16" if name == "tensorrt" else "fp32"
        rows.extend(check_backend(spec.kind, backend,
                                  lambda x: reference_outputs(ref_module, x, spec.io.output_names),
                                  lambda b: spec.example(b, seed=args.seed + b), batches, precision=precision))
        if hasattr(spec, "streaming_check") and spec.streaming_check is not None:
            rows.extend(spec.streaming_check(backend))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
