"""Lyra SDK plugin: Whisper's audio encoder (HF, openai-whisper and CTranslate2 checkpoints) in plain torch."""

from .features import log_mel_spectrogram, mel_filters, num_windows
from .model import WhisperEncoderConfig, WhisperEncoderModel

__version__ = "0.1.0"

__all__ = ["WhisperEncoderConfig", "WhisperEncoderModel", "log_mel_spectrogram", "mel_filters", "num_windows"]
