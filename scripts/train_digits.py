"""Train the bundled demo model, ``rtpick:digits``, and write it into ``src/rtpick/assets/``.

A small CNN (`rtpick.assets.digits_net.DigitsNet`) learns scikit-learn's bundled handwritten digits (1797 images
of 8x8 pixels, no download). The images are scaled to [0, 1] and upsampled to 32x32 so the network does enough
work per image for runtimes and devices to differ visibly. Seeded and deterministic on the CPU: the same command
gives the same weights on the same software versions.

    PYTHONPATH=src python scripts/train_digits.py

Writes digits.pt (state_dict), digits.onnx (same weights; input ``image`` float32[batch,1,32,32], output
``logits`` float32[batch,10], opset 17), digits_eval.npz (the held-out images and labels, preprocessed exactly
as the model expects), digits_calibration.npz (128 training images for int8 calibration, so calibration never
sees the held-out set) and README.md (how it was made and its held-out accuracy, measured here in torch and in
ONNX Runtime). Fails unless the held-out top-1 accuracy is at least 95% and both runtimes agree.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import platform
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "rtpick" / "assets"
sys.path.insert(0, str(ROOT / "src"))

SEED = 0
HELD_OUT = 0.30
IMAGE_SIZE = 32
EPOCHS = 30
BATCH = 64
LEARNING_RATE = 2e-3
MAX_SHIFT = 2  # training-time augmentation: random translation by up to this many pixels (of 32)
MIN_ACCURACY = 0.95
CALIBRATION_SAMPLES = 128  # training images shipped for int8 calibration (never the held-out ones)
OPSET = 17


def preprocess(images_8x8: np.ndarray) -> np.ndarray:
    """sklearn's 0..16 pixel counts -> float32 [N, 1, 32, 32] in [0, 1], bilinear upsampling."""
    import torch
    import torch.nn.functional as F

    scaled = torch.from_numpy(images_8x8.astype(np.float32) / 16.0).unsqueeze(1)
    upsampled = F.interpolate(scaled, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return upsampled.clamp_(0.0, 1.0).numpy().astype(np.float32)


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed stratified 70/30 split: train images, train labels, held-out images, held-out labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=HELD_OUT, stratify=digits.target, random_state=SEED
    )
    return (preprocess(x_train), y_train.astype(np.int64), preprocess(x_test), y_test.astype(np.int64))


def shifted(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image moved by a random whole-pixel offset in [-MAX_SHIFT, MAX_SHIFT], zero-filled at the edges."""
    padded = np.pad(batch, ((0, 0), (0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT)))
    out = np.empty_like(batch)
    offsets = rng.integers(0, 2 * MAX_SHIFT + 1, size=(len(batch), 2))
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, :, dy:dy + IMAGE_SIZE, dx:dx + IMAGE_SIZE]
    return out


def train(x_train: np.ndarray, y_train: np.ndarray) -> object:
    import torch

    from rtpick.assets.digits_net import DigitsNet

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    loss_fn = torch.nn.CrossEntropyLoss()
    labels = torch.from_numpy(y_train)
    for epoch in range(EPOCHS):
        model.train()
        order = rng.permutation(len(x_train))
        total = 0.0
        for start in range(0, len(order), BATCH):
            index = order[start:start + BATCH]
            images = torch.from_numpy(shifted(x_train[index], rng))
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels[index])
            loss.backward()
            optimizer.step()
            total += float(loss) * len(index)
        schedule.step()
        print(f"epoch {epoch + 1:2d}/{EPOCHS}  train loss {total / len(order):.4f}")
    return model.eval()


def torch_logits(model: object, images: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(images)).numpy()  # type: ignore[operator]


def export_onnx(model: object, path: Path) -> None:
    import torch

    example = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is chosen on purpose; its deprecation is noise here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (example,), buffer, dynamo=False, opset_version=OPSET,
            input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=True,
        )
    import onnx

    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    path.write_bytes(proto.SerializeToString())


def ort_logits(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": images})[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def int8_accuracy(images: np.ndarray, labels: np.ndarray) -> float:
    """Held-out accuracy of rtpick's int8 build (ort-cpu, calibrated on digits_calibration.npz), in a private cache."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        os.environ["RTPICK_CACHE_DIR"] = cache
        import rtpick

        with rtpick.load("rtpick:digits", runtime="ort-cpu", precision="int8",
                         calibration=str(ASSETS / "digits_calibration.npz")) as session:
            logits = session.run({"image": images})["logits"]
        del os.environ["RTPICK_CACHE_DIR"]
    return float(np.mean(logits.argmax(1) == labels))


def write_readme(accuracy_torch: float, accuracy_ort: float, accuracy_int8: float, n_train: int, n_test: int,
                 params: int) -> None:
    import onnxruntime
    import sklearn
    import torch

    names = ("digits.pt", "digits.onnx", "digits_eval.npz", "digits_calibration.npz")
    sizes = {name: (ASSETS / name).stat().st_size for name in names}
    text = f"""# rtpick:digits, the bundled demo model

A small convolutional network that classifies handwritten digits 0-9, with real trained weights and a labelled
held-out set, so that `rtpick demo` can show speed *and* accuracy on any machine without downloading anything.

- **Data**: scikit-learn's bundled handwritten digits (`sklearn.datasets.load_digits`, 1797 images of 8x8
  pixels, values 0-16). Fixed stratified split (seed {SEED}): {n_train} training images, {n_test} held out.
- **Preprocessing**: pixel / 16 -> [0, 1], bilinear upsampling to {IMAGE_SIZE}x{IMAGE_SIZE}, one channel
  (light strokes on a dark background). `digits_eval.npz` holds the held-out images already preprocessed.
- **Model**: `DigitsNet` in `digits_net.py`: three conv3x3-BatchNorm-ReLU-MaxPool blocks (32, 64, 64 channels)
  and a 1024-128-10 classifier head; {params:,} parameters.
- **Training**: Adam (lr {LEARNING_RATE}, cosine schedule), {EPOCHS} epochs, batch {BATCH}, random shifts of up to
  {MAX_SHIFT} pixels, seeded and deterministic on the CPU.
- **Held-out top-1 accuracy** ({n_test} images): **{accuracy_torch:.2%}** in PyTorch, **{accuracy_ort:.2%}** in
  ONNX Runtime (CPU), measured by the training script when it wrote these files. rtpick's int8 build
  (`ort-cpu:int8`, calibrated on `digits_calibration.npz`) scores **{accuracy_int8:.2%}**.

## Files

| file | what | bytes |
|---|---|---|
| `digits_net.py` | the `nn.Module` class and `load_module(path)` | - |
| `digits.pt` | the trained `state_dict` (load with `weights_only=True`) | {sizes["digits.pt"]:,} |
| `digits.onnx` | the same weights, opset {OPSET}: input `image` float32[batch,1,32,32], output `logits` \
float32[batch,10] | {sizes["digits.onnx"]:,} |
| `digits_eval.npz` | held-out set: `image` float32[{n_test},1,32,32], `label` int64[{n_test}] | \
{sizes["digits_eval.npz"]:,} |
| `digits_calibration.npz` | {CALIBRATION_SAMPLES} *training* images, key `image`, for int8 calibration \
(`calibration=...`; the held-out set stays unseen) | {sizes["digits_calibration.npz"]:,} |

## How it was made

```
PYTHONPATH=src python scripts/train_digits.py
```

with Python {platform.python_version()}, torch {torch.__version__}, scikit-learn {sklearn.__version__},
onnxruntime {onnxruntime.__version__}. The weights are reproducible on the same versions (the script seeds
everything and asks torch for deterministic algorithms); other versions may give slightly different weights and
accuracy, which the script prints and checks (at least {MIN_ACCURACY:.0%}).
"""
    (ASSETS / "README.md").write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    import torch

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # one thread: the same reduction order, hence the same weights, on every machine

    x_train, y_train, x_test, y_test = split()
    print(f"train {x_train.shape}, held out {x_test.shape}")
    model = train(x_train, y_train)
    params = sum(p.numel() for p in model.parameters())  # type: ignore[attr-defined]

    ASSETS.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}  # type: ignore[attr-defined]
    torch.save(state, ASSETS / "digits.pt")
    export_onnx(model, ASSETS / "digits.onnx")
    np.savez_compressed(ASSETS / "digits_eval.npz", image=x_test, label=y_test)
    pick = np.sort(np.random.default_rng(SEED + 1).choice(len(x_train), CALIBRATION_SAMPLES, replace=False))
    np.savez_compressed(ASSETS / "digits_calibration.npz", image=x_train[pick])

    # Check what was written, from the files, the way users will load them.
    from rtpick.assets.digits_net import load_module

    reloaded = load_module(ASSETS / "digits.pt")
    with np.load(ASSETS / "digits_eval.npz") as archive:
        images, labels = archive["image"], archive["label"]
    logits_torch = torch_logits(reloaded, images)
    logits_ort = ort_logits(ASSETS / "digits.onnx", images)
    accuracy_torch = float(np.mean(logits_torch.argmax(1) == labels))
    accuracy_ort = float(np.mean(logits_ort.argmax(1) == labels))
    max_diff = float(np.max(np.abs(logits_torch - logits_ort)))
    print(f"parameters: {params:,}")
    print(f"held-out top-1 accuracy ({len(labels)} images): torch {accuracy_torch:.4f}, onnxruntime {accuracy_ort:.4f}")
    print(f"max |torch - onnxruntime| logit difference: {max_diff:.2e}")
    for name in ("digits.pt", "digits.onnx", "digits_eval.npz", "digits_calibration.npz"):
        print(f"{name}: {(ASSETS / name).stat().st_size:,} bytes, sha256 {sha256(ASSETS / name)[:16]}")
    accuracy_int8 = int8_accuracy(images, labels)
    print(f"held-out top-1 accuracy of ort-cpu:int8 (calibrated on digits_calibration.npz): {accuracy_int8:.4f}")
    write_readme(accuracy_torch, accuracy_ort, accuracy_int8, len(x_train), len(x_test), params)
    if accuracy_torch < MIN_ACCURACY or accuracy_ort != accuracy_torch:
        print(f"FAILED: accuracy below {MIN_ACCURACY:.0%} or torch and onnxruntime disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
