"""Training and inference mechanisms: small pure modules written once (soft-DTW and the LCMR loss so far).

Importing this package imports neither numba nor Triton: the kernels load on their first call.
"""

from __future__ import annotations

# Bound eagerly: a lazy attribute named like its submodule would be shadowed by the module once imported.
from .lcmr import LCMROptions, lcmr_loss
from .soft_dtw import SoftDTWInputError, soft_dtw

__all__ = ["LCMROptions", "SoftDTWInputError", "lcmr_loss", "soft_dtw"]
