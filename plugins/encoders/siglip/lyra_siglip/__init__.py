"""Lyra SDK plugin: SigLIP's vision tower (transformers ``SiglipVisionModel`` layout) in plain torch."""

from .model import SiglipVisionConfig, SiglipVisionTransformer
from .processing import preprocess_image, preprocess_images

__version__ = "0.1.0"

__all__ = ["SiglipVisionConfig", "SiglipVisionTransformer", "preprocess_image", "preprocess_images"]
