"""Dice per class under part rules: largest part, all parts, parts whose masks grown by d mm touch (gaps up to 2d mm).
Run on the development machine with its /tmp paths (the held-out runs of scripts/train_builtin_models.sh)."""
import json, numpy as np, SimpleITK as sitk
from unimiss.data import read_labelmap
jobs = [("lidc-ct-organs-nolidc", "/tmp/builtin/data/lidc-heart-aorta.seg.nrrd", "LIDC (no-LIDC recipe)"),
        ("ricord-ct-organs-b", "/tmp/builtin/data/ricord-heart-aorta.seg.nrrd", "RICORD (1.2.0)"),
        ("ts-abdomen-ct-organs-heldout", "/tmp/builtin/data/ts-abdomen.seg.nrrd", "ts-abdomen native"),
        ("ts-abdomen-arterial-ct-organs-heldout", "/tmp/builtin/data/ts-abdomen-arterial.seg.nrrd", "ts-abdomen arterial")]
def dice(a, b): return round(2 * (a & b).sum() / max(a.sum() + b.sum(), 1), 3)
def joined(m, spacing, mm):
    img = sitk.GetImageFromArray(m.astype(np.uint8)); img.SetSpacing(spacing)
    radius = [max(1, int(round(mm / s))) for s in spacing]
    grown = sitk.BinaryDilate(img, radius, sitk.sitkBall)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(grown), sortByObjectSize=True)
    return m & (sitk.GetArrayFromImage(cc) == 1)
out = {}
for pred, ref, name in jobs:
    p, pl = read_labelmap(f"/tmp/s24/parts/{pred}.seg.nrrd"); r, rl = read_labelmap(ref)
    rv = {l.name: l.value for l in rl}; res = {}
    for l in pl:
        if l.name not in rv: continue
        t = r.array == rv[l.name]; m = p.array == l.value
        img = sitk.GetImageFromArray(m.astype(np.uint8)); img.SetSpacing(p.spacing)
        cc = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(img), sortByObjectSize=True))
        row = {"largest": dice(cc == 1, t), "all": dice(m, t)}
        for mm in (5, 10, 20):
            row[f"joined {mm} mm"] = dice(joined(m, p.spacing, mm), t)
        res[l.name] = row
    out[name] = res
    print(name, p.spacing); [print(" ", k, v) for k, v in res.items()]
json.dump(out, open("/tmp/s25/aorta.json", "w"), indent=1)
