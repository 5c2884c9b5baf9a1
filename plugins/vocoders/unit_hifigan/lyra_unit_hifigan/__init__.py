"""Unit HiFi-GAN vocoder for the Lyra SDK: fairseq CodeHiFiGAN checkpoints in plain torch, plus streaming."""

from .api import parse_units, vocode_units
from .checkpoint import load_fairseq, load_safetensors, save_safetensors
from .config import HifiGanConfig, receptive_field_frames
from .model import CodeHiFiGAN, InvalidUnitsError
from .streaming import StreamingVocoder

__all__ = [
    "CodeHiFiGAN", "HifiGanConfig", "InvalidUnitsError", "StreamingVocoder", "load_fairseq", "load_safetensors",
    "parse_units", "receptive_field_frames", "save_safetensors", "vocode_units",
]
