"""Training and inference mechanisms: small pure modules written once (soft-DTW, the LCMR loss, CTC over the vocabulary, ...).

Importing this package imports neither numba nor Triton: the kernels load on their first call.
"""

from __future__ import annotations

# Bound eagerly: a lazy attribute named like its submodule would be shadowed by the module once imported.
from .ctc_beam import BackbonePrior, LMPrior, lm_beam_search
from .ctc_compression import SpeechCompressionOptions, ctc_compress
from .lcmr import LCMROptions, lcmr_loss
from .soft_dtw import SoftDTWInputError, soft_dtw
from .vocab_ctc import VocabCTCInputError, vocab_ctc_decode, vocab_ctc_loss

__all__ = ["BackbonePrior", "LCMROptions", "LMPrior", "SoftDTWInputError", "SpeechCompressionOptions",
           "VocabCTCInputError", "ctc_compress", "lcmr_loss", "lm_beam_search", "soft_dtw", "vocab_ctc_decode",
           "vocab_ctc_loss"]
