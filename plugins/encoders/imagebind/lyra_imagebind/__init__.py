"""Lyra SDK plugin: ImageBind's audio encoder (the audio branch of ``imagebind_huge.pth``) and its Kaldi fbank."""

from .fbank import audio_to_fbanks, clip_spans, kaldi_fbank, mel_banks
from .model import ImageBindAudio, ImageBindAudioConfig

__version__ = "0.1.0"

__all__ = ["ImageBindAudio", "ImageBindAudioConfig", "audio_to_fbanks", "clip_spans", "kaldi_fbank", "mel_banks"]
