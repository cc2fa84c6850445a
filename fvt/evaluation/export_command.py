"""``fvt export``: flags and entry point (the exporting itself is fvt.evaluation.export)."""

from __future__ import annotations

import sys
from pathlib import Path

from .commands import add_checkpoint_arguments, add_runtime_arguments, check_runtime_arguments, describe_weights
from .formats import DEFAULT_OPSET, FORMAT_HELP, FORMATS, ONNX_EXPORTERS, OPSETS


def add_export_arguments(p) -> None:
    add_checkpoint_arguments(p, "Export")
    p.add_argument("--format", required=True, choices=FORMATS, help=FORMAT_HELP)
    p.add_argument("--output", metavar="PATH", help="The export's file name (a folder for timm-folder), or a folder "
                   "to put it in (an existing folder, or a name ending in / or without a suffix). Default: next to "
                   "the checkpoint, named by format and precision (best.onnx, best-int8.xml, best.pt2, "
                   "best-aoti.pt2, best.torchscript.pt, ...). Never replaces the checkpoint, a run file or a file "
                   "fvt did not export.")
    lo = min(r[0] for r in OPSETS.values())
    hi = max(r[1] for r in OPSETS.values())
    p.add_argument("--opset", type=int, default=None, metavar="N",
                   help=f"ONNX opset, {lo}-{hi} (dynamo exporter {OPSETS['dynamo'][0]}-{OPSETS['dynamo'][1]}, "
                   f"legacy {OPSETS['legacy'][0]}-{OPSETS['legacy'][1]}). [default: {DEFAULT_OPSET}]")
    p.add_argument("--onnx-exporter", choices=ONNX_EXPORTERS, default="auto",
                   help="ONNX graph for onnx and openvino: dynamo (torch.onnx.export(dynamo=True), needs onnxscript), "
                   "legacy (the deprecated TorchScript-based exporter), or auto: dynamo when it exports a graph that "
                   "matches PyTorch on the check images, else legacy (the output says which, and why). "
                   "[default: auto]")
    p.add_argument("--dynamic", action="store_true", help="ONNX: dynamic height/width too, where the model allows "
                   "(the batch axis is always dynamic).")
    p.add_argument("--half", action="store_true", help="fp16 (onnx, openvino, tensorrt, coreml).")
    p.add_argument("--int8", nargs="?", const="static", choices=("static", "dynamic"), default=None,
                   help="int8 post-training quantization: static (calibrated on images, default) or dynamic (ONNX "
                   "only); OpenVINO uses NNCF.")
    p.add_argument("--simplify", action="store_true", help="ONNX: simplify the graph with onnxslim.")
    p.add_argument("--with-normalize", action="store_true", help="ONNX: mean/std inside the graph; the input is "
                   "RGB in 0..255 (N, 3, H, W).")
    p.add_argument("--data", metavar="DIR", help="Images for calibration and the check against PyTorch. "
                   "Default: the run's validation split.")
    p.add_argument("--check-images", type=int, default=64, metavar="N",
                   help="Images used to check (and calibrate) the export. [default: 64]")
    p.add_argument("--no-check", dest="check", action="store_false", help="Skip the check against PyTorch (the "
                   "export's record still holds its file digests).")
    # --device means something else here: where an AOTInductor package runs
    add_runtime_arguments(p, device_help="aoti: the device the package is compiled for (cpu, cuda, cuda:N; auto = "
                          "cpu, which runs anywhere). Other formats export on the CPU. [default: auto]")


def _options(args):
    from .export import ExportOptions, check_options

    device = "cpu" if args.device in ("auto", "cpu") else args.device
    opts = ExportOptions(args.opset, args.dynamic, args.half, args.int8, args.simplify, args.with_normalize,
                         args.check, args.onnx_exporter, device)
    check_options(args.format, opts)
    return opts


def _exporter_line(fmt: str, facts: dict) -> str:
    used = facts.get("exporter")
    if not used:
        return ""
    how = {"dynamo": "the dynamo exporter, torch.onnx.export(dynamo=True)",
           "legacy": "the legacy TorchScript-based exporter"}[used]
    note = facts.get("exporter_note")
    return f"ONNX graph{' for OpenVINO' if fmt == 'openvino' else ''} from {how}" + (f"; {note}" if note else "")


def run_export(args) -> int:
    from .export import export
    from .export_data import check_batches
    from .export_output import plan_output
    from .loading import load_any, resolve_checkpoint

    check_runtime_arguments(args)
    opts = _options(args)
    ckpt = resolve_checkpoint(args.checkpoint, args.model)
    downloaded = ckpt != Path(args.checkpoint).expanduser()
    out = plan_output(args.output, ckpt, args.format, opts.precision, downloaded)
    loaded = load_any(ckpt, model_name=args.model, ema=args.ema, device="cpu")
    print(f"exporting {loaded.model_name} ({describe_weights(loaded)}) to {args.format}", file=sys.stderr)
    needed = args.check_images if (opts.verify or opts.int8) else 0  # images check and calibrate; else none
    images, source = check_batches(loaded, args.data, needed, args.batch_size, args.workers)
    path, facts = export(loaded, args.format, out, opts, images, source)
    print(f"exported {loaded.model_name} ({len(loaded.classes)} classes, {opts.precision}) to {path}")
    line = _exporter_line(args.format, facts)
    if line:
        print(line)
    if "verify" in facts:
        from .verify import describe

        print(f"check: {describe(facts['verify'])}" + (" -> ok" if not facts["verify"].get("skipped") else ""))
    print(f"record (check, sha256 of every file): {facts['verify_file']}")
    if "sidecar" in facts:
        print(f"metadata: {facts['sidecar']}")
    license_ = loaded.metadata().get("weights_license")
    if license_:
        print(f"licence of these weights: {license_['name']} ({license_['note']}); written into the export's metadata")
    if args.format == "timm-folder":
        print(f"load: import fvt, timm; timm.create_model('local-dir:{path}', pretrained=True)")
    elif args.format == "torch-export":
        print(f"load: torch.export.load('{path}').module(), or fvt predict --checkpoint {path} IMAGES...")
    elif args.format == "aoti":
        print(f"load: torch._inductor.aoti_load_package('{path}'), or fvt predict --checkpoint {path} IMAGES...")
    elif args.format not in ("tensorrt", "coreml"):
        print(f"try: fvt predict --checkpoint {path} IMAGES...")
    return 0
