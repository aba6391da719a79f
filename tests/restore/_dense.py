"""Dense matrices of small operators: the independent reference of the restore tests."""

import torch


def dense_matrix(apply, shape: tuple[int, ...]) -> torch.Tensor:
    """The (N_out, N_in) float64 matrix of the linear map ``apply`` on (B, C, H, W) inputs of ``shape``."""
    n = 1
    for s in shape:
        n *= s
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape[1:]) if shape[0] == 1 else None
    assert basis is not None, "dense_matrix takes batch-1 shapes"
    columns = torch.cat([apply(basis[i:i + 64]).reshape(min(64, n - i), -1) for i in range(0, n, 64)])
    return columns.T


def forward_difference_matrix(H: int, W: int, circular: bool) -> torch.Tensor:
    """(2 H W, H W) float64 forward differences along rows then columns: circular, or Neumann (0 at the end)."""
    def axis(n: int) -> torch.Tensor:
        d = -torch.eye(n, dtype=torch.float64) + torch.eye(n, dtype=torch.float64).roll(1, dims=1)
        if not circular:
            d[-1] = 0
        return d
    eye_h, eye_w = torch.eye(H, dtype=torch.float64), torch.eye(W, dtype=torch.float64)
    return torch.cat([torch.kron(axis(H), eye_w), torch.kron(eye_h, axis(W))])
