"""Test volumes: irregular lesions (unions of 2-4 overlapping balls) with an enhancing rim, inside the liver.
A family unlike the training augmentation's ellipsoids: for scoring whether the liver keeps its lesions."""
import sys, numpy as np, SimpleITK as sitk
from unimiss.data import read_image, read_labelmap
img_path, seg_path, out_path, seed, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rng = np.random.default_rng(seed)
im = read_image(img_path); lab, labels = read_labelmap(seg_path)
liver = lab.array == {l.name: l.value for l in labels}['liver']
hu = im.array.astype(np.float32); med = float(np.median(hu[liver]))
sp = np.array(im.spacing[::-1]); zyx = np.argwhere(liver)
grid = np.indices(hu.shape).astype(np.float32)
lesion = np.zeros(hu.shape, np.float32)
for k in range(count):
    c = zyx[rng.integers(len(zyx))].astype(np.float32); r0 = rng.uniform(8, 30)
    for j in range(rng.integers(2, 5)):
        cj = c + rng.normal(0, r0 * 0.5, 3) / sp; rj = r0 * rng.uniform(0.5, 0.9)
        d = np.sqrt(sum(((grid[i] - cj[i]) * sp[i]) ** 2 for i in range(3)))
        lesion = np.maximum(lesion, np.clip((rj - d) / 2, 0, 1))
lesion *= liver
core = lesion > 0.5
eroded = sitk.GetArrayFromImage(sitk.BinaryErode(sitk.GetImageFromArray(core.astype(np.uint8)), [2, 2, 2]))
rim = core & (eroded == 0)
value = med - rng.uniform(30, 70) + rng.normal(0, 10, hu.shape)
out = hu * (1 - lesion) + lesion * value
out[rim] += rng.uniform(20, 50)
print(out_path, 'liver median', round(med), 'lesion share of liver', round(core.sum() / liver.sum(), 3))
np.save(out_path + '.lesion.npy', core)
sitk.WriteImage(im.with_array(out.astype(np.int16)).to_sitk(), out_path, True)
