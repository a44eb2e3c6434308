#!/usr/bin/env python3
"""Regenerate kif/data/manifest.json from a reference copy of the benchmark data.

    .venv/bin/python scripts/build_manifest.py [--data ../shared/benchmarks] [-o kif/data/manifest.json]

Hashes every task split's parsed content (kif.data.manifest.content_sha256) and records
where ``kif data pull`` fetches it (kif.data.manifest.upstream_sources). Run it after the
reference data changes; tests/data/test_data_pull.py fails until the manifest matches.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kif.data.locations import DEFAULT_DATA_DIR
from kif.data.manifest import MANIFEST_PATH, build_manifest, manifest_text
from kif.errors import KifError
from kif.io import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="reference data folder")
    p.add_argument("-o", "--output", type=Path, default=MANIFEST_PATH, help="manifest to write")
    args = p.parse_args(argv)
    try:
        entries = build_manifest(args.data)
    except KifError as e:
        print(f"build_manifest: error: {e}", file=sys.stderr)
        return 2
    atomic_write_text(args.output, manifest_text(entries))
    print(f"{args.output}: {len(entries)} task splits from {args.data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
