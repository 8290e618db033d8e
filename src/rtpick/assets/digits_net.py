"""The bundled digits classifier as a PyTorch module, and how to load its trained weights.

Only imported when torch is installed (`rtpick.sources.load_bundled` checks first), so torch is imported at the
top here. The same weights are exported to ``digits.onnx`` by ``scripts/train_digits.py``.

Input: ``image`` float32 [batch, 1, 32, 32], a handwritten digit scaled to [0, 1] (white strokes on black).
Output: ``logits`` float32 [batch, 10], one score per digit 0-9.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

IMAGE_SIZE = 32
CLASSES = 10


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    """conv 3x3 -> batch norm -> ReLU -> halve the resolution."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class DigitsNet(nn.Module):
    """Three conv blocks (32 -> 16 -> 8 -> 4 pixels) and a two-layer classifier head: about 0.19M parameters.

    Big enough that runtimes and devices show different speeds, small enough to train on a CPU in a minute.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(1, 32), _block(32, 64), _block(64, 64))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.25),
            nn.Linear(128, CLASSES),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image))


def load_module(path: Path) -> nn.Module:
    """A fresh `DigitsNet` with the trained weights from `path` (a state_dict), in eval mode."""
    module = DigitsNet()
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return module.eval()
