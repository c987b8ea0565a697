"""Previews of the built-in models on every real image of ../shared/data and the bundled samples.

    python scripts/preview_builtin_models.py [OUT_DIR]   (default: docs/previews)

Writes OUT_DIR/<case>.png for each CT (three planes) and each chest radiograph, as `unimiss segment
--preview` draws them, and OUT_DIR/radiographs.png: all radiographs side by side, the overview the
README shows. Nothing here is scored: most of these images have no labels; they are for looking at.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SAMPLES = ROOT / "UniMiSSCore" / "unimiss" / "samples"


def inputs() -> list[tuple[str, Path]]:
    cts = [(f"ct-{case.name}", case / "dicom" if (case / "dicom").is_dir() else case / "image.nii.gz")
           for case in sorted((DATA / "ct").iterdir()) if case.is_dir()]
    radiographs = [(f"xray-{p.name.split('.')[0]}", p) for p in sorted((DATA / "xray").iterdir())]
    samples = [("sample-ct", SAMPLES / "ct-abdomen.nii.gz"), ("sample-xray", SAMPLES / "chest-xray.png")]
    return cts + radiographs + samples


def contact_sheet(tiles, columns: int = 5, height: int = 360) -> Image.Image:
    """The pictures side by side, `columns` to a row, each scaled to `height` pixels."""
    tiles = [t.resize((round(t.width * height / t.height), height)) for t in tiles]
    rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
    width = max(sum(t.width for t in row) for row in rows)
    sheet = np.full((height * len(rows), width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        x = 0
        for tile in row:
            sheet[r * height:(r + 1) * height, x:x + tile.width] = np.asarray(tile)
            x += tile.width
    return Image.fromarray(sheet)


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "previews"
    out.mkdir(parents=True, exist_ok=True)
    tiles = []
    with tempfile.TemporaryDirectory() as work:
        for name, path in inputs():
            seg = Path(work) / f"{name}.seg.nrrd"
            subprocess.run([sys.executable, "-m", "unimiss", "segment", str(path), "-o", str(seg), "--preview",
                            "--progress", "none"], check=True)
            preview = out / f"{name}.png"
            shutil.copyfile(Path(work) / f"{name}-preview.png", preview)
            if name.startswith("xray") or name == "sample-xray":
                tiles.append(Image.open(preview).convert("RGB"))
            print(preview, file=sys.stderr)
    contact_sheet(tiles).save(out / "radiographs.png", optimize=True)

if __name__ == "__main__":
    main()
