"""The few dense linear-algebra kernels LogME needs, on numpy or on a torch device.

Everything here is float64: chunks arrive as float32 (or float64) and are widened before any
product, so ``F^T F`` accumulates exact float32 x float32 products in float64. Eigendecompositions
run where the Gram lives (a GPU when the statistics were built with ``device="cuda"``); only the
eigenvalues and the ``[k, t]`` projections come back to the host for the 1-D solver.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import scipy.sparse


def is_torch_tensor(value: Any) -> bool:
    """True for a ``torch.Tensor`` (without importing torch when it is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


class NumpyBackend:
    """Host float64 kernels (BLAS through numpy/scipy)."""

    device = None

    def native(self, array: Any) -> np.ndarray:
        """``array`` as a float64 numpy array (no copy when it already is one)."""
        if is_torch_tensor(array):
            array = array.detach().cpu().numpy()
        return np.asarray(array, dtype=np.float64)

    def to_numpy(self, array: Any) -> np.ndarray:
        return self.native(array)

    def zeros(self, rows: int, cols: int) -> np.ndarray:
        return np.zeros((rows, cols), dtype=np.float64)

    def add_gram(self, gram: np.ndarray, block: np.ndarray) -> np.ndarray:
        """``gram += block^T block`` for ``block: float64[b, d]`` (numpy dispatches to syrk)."""
        gram += block.T @ block
        return gram

    def row_gram(self, rows: np.ndarray, block_elements: int) -> np.ndarray:
        """``rows rows^T: float64[n, n]`` for ``rows: float[n, d]`` (float32 allowed), summed
        over column blocks widened to float64 so that no float64 copy of ``rows`` is made."""
        num_rows, dim = rows.shape
        gram = np.zeros((num_rows, num_rows))
        step = max(16, block_elements // max(num_rows, 1))
        for start in range(0, dim, step):
            block = np.asarray(rows[:, start : start + step], dtype=np.float64)
            gram += block @ block.T
        return gram

    def class_sums(self, block: np.ndarray, column: np.ndarray, num_columns: int) -> np.ndarray:
        """Per-class row sums ``float64[num_columns, d]``; ``column: int[b]`` indexes the class."""
        one_hot = scipy.sparse.csr_matrix(
            (np.ones(column.size), (column, np.arange(column.size))),
            shape=(num_columns, column.size),
        )
        return np.asarray(one_hot @ block)

    def cross(self, block: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``targets^T block``: ``float64[t, d]`` for ``targets: float64[b, t]``."""
        return targets.T @ block

    def matmul(self, left: np.ndarray, right: Any) -> np.ndarray:
        return left @ self.native(right)

    def eigh(self, symmetric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix."""
        return np.linalg.eigh(symmetric)


class TorchBackend:
    """The same kernels as :class:`NumpyBackend` with torch float64 tensors on ``device``."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def native(self, array: Any):
        torch = self.torch
        if isinstance(array, torch.Tensor):
            return array.detach().to(device=self.device, dtype=torch.float64)
        return torch.as_tensor(np.asarray(array), device=self.device).to(torch.float64)

    def to_numpy(self, array: Any) -> np.ndarray:
        if isinstance(array, self.torch.Tensor):
            return array.detach().cpu().numpy()
        return np.asarray(array, dtype=np.float64)

    def zeros(self, rows: int, cols: int):
        return self.torch.zeros((rows, cols), dtype=self.torch.float64, device=self.device)

    def add_gram(self, gram, block):
        gram.addmm_(block.T, block)
        return gram

    def row_gram(self, rows, block_elements: int):
        rows = self.native(rows)
        return rows @ rows.T

    def class_sums(self, block, column: np.ndarray, num_columns: int):
        torch = self.torch
        index = torch.as_tensor(column, device=self.device, dtype=torch.long)
        out = torch.zeros((num_columns, block.shape[1]), dtype=torch.float64, device=self.device)
        return out.index_add_(0, index, block)

    def cross(self, block, targets):
        return self.native(targets).T @ block

    def matmul(self, left, right):
        return left @ self.native(right)

    def eigh(self, symmetric):
        return self.torch.linalg.eigh(symmetric)


def backend_for(device: Any) -> NumpyBackend | TorchBackend:
    """``None`` -> numpy on the host; anything else (``"cpu"``, ``"cuda:0"``, a torch.device) -> torch."""
    if device is None:
        return NumpyBackend()
    return TorchBackend(device)
