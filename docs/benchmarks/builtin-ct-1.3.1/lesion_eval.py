"""Liver Dice and the share of simulated lesion voxels labelled liver, as the shipped model segments (largest parts)."""
import json, os, subprocess, sys
import numpy as np
from unimiss.data import read_labelmap
model, home, out_json = sys.argv[1:4]
D = "/tmp/builtin/data"
cases = {"native": (f"{D}/ts-abdomen.nrrd", f"{D}/ts-abdomen.seg.nrrd", None),
         "venous": (f"{D}/ts-abdomen-venous.nrrd", f"{D}/ts-abdomen-venous.seg.nrrd", None),
         "arterial": (f"{D}/ts-abdomen-arterial.nrrd", f"{D}/ts-abdomen-arterial.seg.nrrd", None),
         "native + lesions": ("/tmp/s25/tsn-lesions.nrrd", f"{D}/ts-abdomen.seg.nrrd", "/tmp/s25/tsn-lesions.nrrd.lesion.npy"),
         "venous + lesions": ("/tmp/s25/tsv-lesions.nrrd", f"{D}/ts-abdomen-venous.seg.nrrd", "/tmp/s25/tsv-lesions.nrrd.lesion.npy")}
res = {}
for name, (image, ref, lesion) in cases.items():
    out = f"/tmp/s25/pred-{model}-{os.path.basename(image)}.seg.nrrd"
    if not os.path.exists(out):
        subprocess.run(["unimiss", "segment", image, "-o", out, "--model", model, "--largest-component", "--progress", "none"],
                       check=True, env={**os.environ, "UNIMISS_HOME": home})
    p, pl = read_labelmap(out); r, rl = read_labelmap(ref)
    pv = {l.name: l.value for l in pl}; rv = {l.name: l.value for l in rl}
    row = {}
    for n in ("liver", "spleen", "kidney_left", "kidney_right", "aorta"):
        a, b = p.array == pv[n], r.array == rv[n]
        row[n] = round(float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1)), 3)
    if lesion:
        les = np.load(lesion)
        row["lesion voxels labelled liver"] = round(float((p.array[les] == pv["liver"]).mean()), 3)
    res[name] = row
    print(model, name, row, flush=True)
json.dump(res, open(out_json, "w"), indent=1)
