"""PromptIR's three-task scoring written out independently, to check ``allinone-ir benchmark`` against it.

The recipe of the official ``test.py``, ``utils/dataset_utils.py`` and ``utils/val_utils.py``
(va1shn9v/PromptIR): every image centre-cropped to a multiple of 16; ``np.random.seed(0)`` once, then
for sigma 15, 25 and 50 in turn, for every CBSD68 image, ``np.clip(clean + randn * sigma, 0, 255)``
truncated to uint8; Rain100L targets found by replacing ``input`` with ``target`` in the path; PSNR and
SSIM of scikit-image on RGB in [0, 1] after clipping, averaged over the images. The one change: sorted
file names instead of ``os.listdir`` order, as the library does. Only the network comes from the
library.

    python benchmarks/three_task_recipe.py ROOT CHECKPOINT > official.json
    allinone-ir benchmark --suite three-task --root ROOT --checkpoint CHECKPOINT \\
        --tasks denoise_15,denoise_25,denoise_50,derain --json ours.json

``ROOT`` is the ``test/`` folder of the PromptIR layout (``denoise/bsd68/``, ``derain/Rain100L/``).
The figures measured with it are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from allinone_ir import load_checkpoint


def crop_img(image: np.ndarray, base: int = 16) -> np.ndarray:
    h, w = image.shape[:2]
    ch, cw = h % base, w % base
    return image[ch // 2 : h - ch + ch // 2, cw // 2 : w - cw + cw // 2, :]


def to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float().div(255)[None]


def score(restored: torch.Tensor, clean: torch.Tensor) -> tuple[float, float]:
    rec = np.clip(restored.numpy(), 0, 1).transpose(0, 2, 3, 1)[0]
    cl = np.clip(clean.numpy(), 0, 1).transpose(0, 2, 3, 1)[0]
    psnr = peak_signal_noise_ratio(cl, rec, data_range=1)
    ssim = structural_similarity(cl, rec, data_range=1, channel_axis=-1)
    return float(psnr), float(ssim)


def main(root: str, checkpoint: str) -> dict[str, list[float]]:
    net = load_checkpoint(checkpoint).eval()
    np.random.seed(0)  # noqa: NPY002 (the official recipe uses the legacy global generator)
    out: dict[str, list[float]] = {}
    with torch.no_grad():
        bsd = os.path.join(root, "denoise", "bsd68")
        for sigma in (15, 25, 50):
            vals = []
            for name in sorted(os.listdir(bsd)):
                clean = crop_img(np.array(Image.open(os.path.join(bsd, name)).convert("RGB")))
                noisy = np.clip(clean + np.random.randn(*clean.shape) * sigma, 0, 255).astype(np.uint8)  # noqa: NPY002
                vals.append(score(net(to_tensor(noisy)), to_tensor(clean)))
            out[f"denoise_{sigma}"] = np.mean(vals, axis=0).tolist()
        rain = os.path.join(root, "derain", "Rain100L", "input")
        vals = []
        for name in sorted(os.listdir(rain)):
            path = os.path.join(rain, name)
            degraded = crop_img(np.array(Image.open(path).convert("RGB")))
            clean = crop_img(np.array(Image.open(path.replace("input", "target")).convert("RGB")))
            vals.append(score(net(to_tensor(degraded)), to_tensor(clean)))
        out["derain"] = np.mean(vals, axis=0).tolist()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
