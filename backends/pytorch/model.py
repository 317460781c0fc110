"""The shared ``crnn`` architecture in PyTorch (layer-by-layer spec: docs/architectures.md).

Input: float tensor (batch, 1, 32, W), gray pixels scaled to [-1, 1], W a multiple of 4.
Output: raw logits (T, batch, classes), **time-major**, T = W / 4 + 1; class 0 is the CTC blank.
"""

from __future__ import annotations

import torch
from torch import nn

from ocrbench.crnn_layout import BATCH_NORM_AFTER, KERNELS, PADDINGS, POOL_2X2_AFTER, POOL_TALL_AFTER


def conv_stack(channels: list[int]) -> nn.Sequential:
    """The 7-convolution feature extractor: (B, 1, 32, W) -> (B, channels[6], 1, W / 4 + 1)."""
    layers: list[nn.Module] = []
    previous = 1
    for index, (out, kernel, padding) in enumerate(zip(channels, KERNELS, PADDINGS)):
        layers.append(nn.Conv2d(previous, out, kernel, stride=1, padding=padding))
        if index in BATCH_NORM_AFTER:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        if index in POOL_2X2_AFTER:
            layers.append(nn.MaxPool2d(2, 2))
        elif index in POOL_TALL_AFTER:
            layers.append(nn.MaxPool2d((2, 2), (2, 1), (0, 1)))
        previous = out
    return nn.Sequential(*layers)


class BidirectionalLSTM(nn.Module):
    """One bidirectional LSTM layer followed by a linear projection of its 2*hidden outputs."""

    def __init__(self, inputs: int, hidden: int, outputs: int):
        super().__init__()
        self.rnn = nn.LSTM(inputs, hidden, bidirectional=True)
        self.embedding = nn.Linear(2 * hidden, outputs)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        """(T, B, inputs) -> (T, B, outputs), time-major."""
        recurrent, _ = self.rnn(sequence)
        return self.embedding(recurrent)


class CRNN(nn.Module):
    def __init__(self, num_classes: int, channels: list[int], hidden: int, input_width: int):
        super().__init__()
        self.input_width = input_width
        self.cnn = conv_stack(channels)
        self.rnn = nn.Sequential(BidirectionalLSTM(channels[-1], hidden, hidden),
                                 BidirectionalLSTM(hidden, hidden, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 32, W) in [-1, 1] -> logits (T, B, classes)."""
        features = self.cnn(images)                     # (B, C, 1, T)
        sequence = features.squeeze(2).permute(2, 0, 1)  # (T, B, C)
        return self.rnn(sequence)
