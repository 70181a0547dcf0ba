"""Tensor-resident batching and batch-level augmentation.

Small datasets live as whole tensors (on the CPU, or on the accelerator with
``data.on_device=true``); a batch is one gather by index, with no per-sample Python work.
Augmentation (random crop with zero padding, horizontal flip) and normalisation run on the
whole batch wherever it lives, after Lightning moved it to the device.
"""

from __future__ import annotations

import numpy as np
import torch


class PassSeeds:
    """The seed of each pass over a split: a function of (the run's seed, the epoch, the pass
    within the epoch) alone, with ``epoch_of`` telling the current epoch. A run resumed at
    epoch e draws what the uninterrupted run drew (a loader cycled several times per epoch,
    like the trusted one, counts its passes), and every DDP rank draws the same."""

    def __init__(self, seed: int = 0, epoch_of=None):
        self.seed, self.epoch_of = int(seed), epoch_of or (lambda: 0)
        self._pass = (-1, -1)  # (epoch, pass within it)

    def next(self) -> int:
        epoch = int(self.epoch_of())
        self._pass = (epoch, self._pass[1] + 1 if self._pass[0] == epoch else 0)
        return int(np.random.SeedSequence([abs(self.seed), *self._pass]).generate_state(1)[0])


class TensorBatches:
    """An iterable of batches ``{name: tensor[idx]}`` over equally long tensors.

    The order of a pass is a function of (seed, epoch, pass within the epoch) alone, with
    ``epoch_of`` telling the current epoch: a run resumed at epoch e sees the batches the
    uninterrupted run saw (a loader cycled several times per epoch, like the trusted one,
    counts its passes). Under DDP each rank takes every ``world_size``-th sample of the
    permutation.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, shuffle: bool,
                 drop_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 epoch_of=None):
        self.tensors = tensors
        self.size = len(next(iter(tensors.values())))
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.seeds = PassSeeds(seed, epoch_of)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)[self.rank :: self.world_size]
        generator = torch.Generator().manual_seed(self.seeds.next())
        return torch.randperm(self.size, generator=generator)[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(range(self.rank, self.size, self.world_size))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = self._order()
        device = next(iter(self.tensors.values())).device
        order = order.to(device)
        for batch_index in range(len(self)):
            idx = order[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]
            yield {name: tensor[idx] for name, tensor in self.tensors.items()}


def random_crop_flip(x: torch.Tensor, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Per-sample random crop of a zero-padded batch (B, C, H, W), then random h-flip."""
    batch, _, height, width = x.shape
    if padding > 0:
        padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (batch,), device=x.device)
        left = torch.randint(0, 2 * padding + 1, (batch,), device=x.device)
        rows = (top[:, None] + torch.arange(height, device=x.device))[:, :, None]  # B, H, 1
        cols = (left[:, None] + torch.arange(width, device=x.device))[:, None, :]  # B, 1, W
        x = padded.permute(0, 2, 3, 1)[torch.arange(batch, device=x.device)[:, None, None], rows, cols]
        x = x.permute(0, 3, 1, 2)
    if flip:
        flipped = torch.rand(batch, device=x.device) < 0.5
        x = torch.where(flipped[:, None, None, None], x.flip(3), x)
    return x.contiguous()


class BatchTransform:
    """uint8 -> float in [0, 1], optional train-time crop/flip, optional normalisation."""

    def __init__(self, augment: str = "none", mean=None, std=None, padding: int = 4):
        self.augment, self.padding = augment, padding
        self.mean = None if mean is None else torch.tensor(list(mean)).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(list(std)).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        if training and self.augment == "crop_flip":
            x = random_crop_flip(x, self.padding, flip=True)
        elif training and self.augment == "crop":
            x = random_crop_flip(x, self.padding, flip=False)
        if self.mean is not None:
            if self.mean.device != x.device:  # moved once, not copied to the device every batch
                self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
            x = (x - self.mean) / self.std
        return x
