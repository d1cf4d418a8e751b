"""Where L1's p × d arrays live and their products run: numpy on CPU, torch on a CUDA device (issue 18).

The refinement's cost is its p × d × d products (A M, Aᵀ S) and p × d elementwise work; its d × d algebra
(tangent projection, Cayley factors, polar) stays in numpy float64 on the host either way. ``ops(backend)``
returns an object with one small vocabulary both backends speak, so each solver is written once.
"""

from __future__ import annotations

import numpy as np

from services.errors import InvalidInput

__all__ = ["BACKENDS", "NumpyOps", "TorchOps", "ops"]

BACKENDS = ("auto", "numpy", "torch")


class NumpyOps:
    name = "numpy"

    def put(self, a, dtype=np.float64):
        return np.asarray(a, dtype=dtype)

    def get(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def to(self, x, dtype):
        return np.ascontiguousarray(x, dtype)

    def abs_sum(self, x) -> float:
        return float(np.abs(x).sum(dtype=np.float64))

    def smooth_sum(self, x, mu: float) -> float:
        return float(np.sqrt(x * x + mu * mu).sum())

    def smooth_weights(self, x, mu: float):
        return x / np.sqrt(x * x + mu * mu)

    def median_abs(self, x) -> float:
        return float(np.median(np.abs(x)))

    def sign_field(self, R, alpha: float):
        """tanh Z + Z ⊙ sech² Z at Z = α R, the reference's gradient weights, in R's dtype.

        Where |Z| ≥ 20, tanh Z rounds to ±1 and Z sech² Z < 1e-15 (float64; exactly 0 in float32), so only
        the few small residuals need the transcendental functions (with α = 1e8: residuals below 2e-7).
        """
        S = np.sign(R)
        small = np.abs(R) < 20.0 / alpha
        if small.any():
            Z = alpha * R[small]
            t = np.tanh(Z)
            S[small] = t + Z * (1.0 - t * t)
        return S


class TorchOps:
    name = "torch"

    def __init__(self, device=None):
        import torch

        from services.alignment.retrieval import torch_device

        self.torch = torch
        self.device = torch_device(device)

    def _dtype(self, dtype):
        return self.torch.float32 if np.dtype(dtype) == np.float32 else self.torch.float64

    def put(self, a, dtype=np.float64):
        return self.torch.as_tensor(np.ascontiguousarray(a, dtype=dtype), device=self.device)

    def get(self, x) -> np.ndarray:
        return x.detach().to("cpu", self.torch.float64).numpy()

    def to(self, x, dtype):
        return x.to(self._dtype(dtype)).contiguous()

    def abs_sum(self, x) -> float:
        return float(x.abs().sum(dtype=self.torch.float64))

    def smooth_sum(self, x, mu: float) -> float:
        return float(self.torch.sqrt(x * x + mu * mu).sum())

    def smooth_weights(self, x, mu: float):
        return x / self.torch.sqrt(x * x + mu * mu)

    def median_abs(self, x) -> float:
        return float(self.torch.quantile(x.abs().flatten().double(), 0.5)) if x.numel() <= 16_000_000 else \
            float(x.abs().flatten().median())

    def sign_field(self, R, alpha: float):
        torch = self.torch
        Z = alpha * R
        t = torch.tanh(Z)
        # tanh(Z) + Z sech²(Z); where |Z| ≥ 20 that is sign(R) (the numpy path computes it only where |Z| < 20)
        return torch.where(Z.abs() < 20.0, t + Z * (1.0 - t * t), torch.sign(R))


def ops(backend: str = "auto"):
    """``"auto"``: torch on CUDA when a device exists, else numpy; ``"torch"``: torch (CUDA when present)."""
    if backend not in BACKENDS:
        raise InvalidInput(f"unknown L1 backend {backend!r}; use one of {list(BACKENDS)}", detail={"field": "backend"})
    if backend == "numpy":
        return NumpyOps()
    if backend == "torch":
        return TorchOps()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return NumpyOps()
    return TorchOps() if torch.cuda.is_available() else NumpyOps()
