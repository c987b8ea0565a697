"""The core's two bundled sample images, offered in Slicer's Sample Data module."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .dependencies import MODULE_DIR, bundledCoreSource

SAMPLES = (  # (sample name, file in unimiss/samples, node name)
    ("UniMiSS CT abdomen", "ct-abdomen.nii.gz", "UniMiSSCTAbdomen"),
    ("UniMiSS chest radiograph", "chest-xray.png", "UniMiSSChestXray"),
)


def samplePath(fileName: str) -> Path | None:
    """A sample file from the installed `unimiss` package, else from the bundled core source."""
    folders = []
    spec = importlib.util.find_spec("unimiss")
    if spec is not None and spec.origin:
        folders.append(Path(spec.origin).parent / "samples")
    core = bundledCoreSource()
    if core is not None:
        folders.append(core / "unimiss" / "samples")
    return next((folder / fileName for folder in folders if (folder / fileName).is_file()), None)


def loadSample(fileName: str, nodeName: str):
    """Load a sample into the scene as a volume node (a radiograph becomes a single-slice volume)."""
    import slicer

    path = samplePath(fileName)
    if path is None:
        raise ValueError(f"the sample {fileName} is not installed")
    return slicer.util.loadVolume(str(path), {"name": nodeName, "singleFile": True})


def registerSampleData() -> None:
    """Add the samples to the Sample Data module, under 'UniMiSS' (called once Slicer has started)."""
    import SampleData

    icon = MODULE_DIR / "Resources" / "Icons" / "UniMiSSSlicer.png"
    for sampleName, fileName, nodeName in SAMPLES:
        path = samplePath(fileName)
        if path is None:
            continue
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="UniMiSS", sampleName=sampleName, uris=path.as_uri(), fileNames=fileName, nodeNames=nodeName,
            thumbnailFileName=str(icon), loadFileTypes="VolumeFile",
            customDownloader=lambda source, f=fileName, n=nodeName: loadSample(f, n))
