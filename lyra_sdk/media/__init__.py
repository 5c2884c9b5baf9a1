"""Media input: reading files into the arrays that encoders featurize."""

from .audio import SAMPLE_RATE, load_audio, resample

__all__ = ["SAMPLE_RATE", "load_audio", "resample"]
