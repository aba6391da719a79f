"""The stand-in velocity network and Gaussian data of the training tests, in a module of their own so that worker
processes can import them (torch.multiprocessing.spawn pickles functions by module and name)."""

import torch
from torch import nn

SIZE = 8

# Gaussian data N(MEAN, STD^2 I): its exact velocity is GaussianPrior's, the floor of the loss.
_rows, _cols = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
MEAN = torch.stack([0.5 * torch.sin(3 * _cols), 0.5 * _rows, 0.3 * _rows * _cols])
STD = 0.2


class StandIn(nn.Module):
    """v = a(t) x_t + b(t) m + dropout(conv(x_t, cond)): the form of the Gaussian optimum (see GaussianPrior) plus
    a conv; dropout draws from torch's default generator, so exact resume must restore it too."""

    def __init__(self, channels=3, cond_channels=0, dropout=0.1):
        super().__init__()
        self.image_channels, self.cond_channels = channels, cond_channels
        self.time = nn.Sequential(nn.Linear(1, 32), nn.SiLU(), nn.Linear(32, 2))
        self.mean = nn.Parameter(torch.zeros(channels, SIZE, SIZE))
        self.conv = nn.Conv2d(channels + cond_channels, channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x_t, t, cond=None):
        a, b = self.time(t[:, None]).unbind(1)
        h = x_t if cond is None else torch.cat([x_t, cond], 1)
        return a[:, None, None, None] * x_t + b[:, None, None, None] * self.mean + self.dropout(self.conv(h))


def stand_in(seed=0, **kwargs):
    """A StandIn whose initial weights come from ``seed``."""
    torch.manual_seed(seed)
    return StandIn(**kwargs)


def gaussian_data(count, generator):
    """(count, 3, SIZE, SIZE) draws of N(MEAN, STD^2 I) from ``generator``."""
    return MEAN + STD * torch.randn((count, 3, SIZE, SIZE), generator=generator)
