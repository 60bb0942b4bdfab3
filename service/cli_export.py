"""``tailor export``: export an adapter straight from a store folder, no server needed.

    tailor export topics@2 --store ./tailor-store --quantize int8 --out ./bundles
    python -m service.cli_export topics --store ./tailor-store      # standalone entry

Defaults come from the same TAILOR_* settings as the service (store path, backbone path and
name). Prints one JSON line: the bundle path, its size and the parity report. Exit status 0
on success, 1 on a parity failure (nothing written), 2 on bad input (unknown adapter, ...).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_export_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export an adapter to an ONNX bundle (zip) from a store folder",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    p.set_defaults(func=run_export)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter", help="adapter name or name@version")
    p.add_argument("--store", type=Path, default=None, help="store folder (default: TAILOR_STORE_PATH)")
    p.add_argument("--backbone", type=Path, default=None,
                   help="backbone folder (default: TAILOR_BACKBONE_PATH or the embedded MiniLM)")
    p.add_argument("--tenant", default="default", help="tenant that owns the adapter (default: default)")
    p.add_argument("--quantize", default="none", metavar="MODE",
                   help="none (fp32 graph, the default), int8, or int8-rows (the graph the "
                        "onnx-int8-rows runtime serves); checked by the exporter")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the zip (default: .)")
    p.add_argument("--providers", default="CPUExecutionProvider",
                   help="comma-separated onnxruntime providers the parity check runs on, e.g. "
                        "CUDAExecutionProvider to check the bundle where it will be served")


def run_export(args: argparse.Namespace) -> int:
    from adapters import open_encoder
    from adapters.storage import open_store
    from adapters.errors import TailorError
    from adapters.validation import parse_ref
    from export import ParityError, ProviderUnavailable, export_bundle

    from .settings import Settings

    settings = Settings.from_env()
    try:
        name, version = parse_ref(args.adapter)
        store_path = args.store or settings.store_path
        url = None if args.store else settings.store_url  # --store: always a folder
        if not url and not (Path(store_path) / "tenants").is_dir():
            print(f"error: {store_path} is not a Tailor store folder (no tenants/)", file=sys.stderr)
            return 2
        encoder = open_encoder(args.backbone or settings.backbone_path, name=settings.backbone_name)
        store = open_store(url, store_path, encoder.identity)
        result = export_bundle(encoder, store, args.tenant, name, version,
                               quantize=args.quantize, dest_dir=args.out,
                               providers=[p.strip() for p in args.providers.split(",") if p.strip()])
    except ProviderUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ParityError as e:
        print(f"error: {e.message}", file=sys.stderr)
        print(json.dumps({"error": e.code, "parity": e.report.as_dict()}))
        return 1
    except TailorError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    print(json.dumps({"bundle": str(result.path), "size_bytes": result.path.stat().st_size,
                      "adapter": result.manifest["adapter"]["ref"],
                      "quantization": result.manifest["quantization"]["mode"],
                      "parity": result.manifest["parity"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.cli_export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return run_export(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
