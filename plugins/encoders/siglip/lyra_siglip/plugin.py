"""The ``siglip`` encoder plugin: images -> SigLIP preprocessing -> SigLIP vision tower -> patch tokens.

Each image becomes one row of ``(image_size / patch_size) ** 2`` tokens of width ``hidden_size`` (all valid),
with the token grid (1, h, w) attached for M-RoPE LLMs. Pair it with a projector such as ``mlp2x_gelu``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import torch
from PIL import Image
from pydantic import Field

from lyra_sdk.errors import CheckpointError, ConfigError, MediaError
from lyra_sdk.hookspecs import Register, hookimpl
from lyra_sdk.interfaces import Encoder, Features, MediaEmbeddings, Modality, PluginOptions
from lyra_sdk.paths import resolve_path

from lyra_sdk.weights import load_strict

from .checkpoint import load_folder
from .model import SiglipVisionConfig, SiglipVisionTransformer
from .processing import preprocess_images

log = logging.getLogger(__name__)

Triple = tuple[float, float, float]


class SiglipEncoder(Encoder):
    """SigLIP's vision tower (``transformers.SiglipVisionModel`` layout) as a Lyra image encoder.

    Weights come from ``path`` (an HF ``SiglipVisionModel`` or ``SiglipModel`` folder); with ``config`` instead
    (``SiglipVisionConfig`` fields) the tower is randomly initialised.
    """

    class Options(PluginOptions):
        """Options of the ``siglip`` encoder."""

        path: str | None = Field(None, description="HF SiglipVisionModel / SiglipModel folder (config.json + weights)")
        config: dict[str, Any] | None = Field(None, description="SiglipVisionConfig fields for a random-weight tower")
        select_layer: int = Field(-1, description="index into transformers' hidden_states: 0 = patch embeddings, "
                                                  "-1 = last layer, -2 = the one before (LLaVA)")
        post_layernorm: bool = Field(True, description="apply the tower's final LayerNorm to the selected layer "
                                                       "(True with select_layer -1 = transformers' last_hidden_state)")
        resample: Literal["bicubic", "bilinear", "lanczos", "nearest"] = "bicubic"
        rescale_factor: float = Field(1 / 255, gt=0)
        image_mean: Triple = (0.5, 0.5, 0.5)
        image_std: Triple = (0.5, 0.5, 0.5)
        max_batch_images: int = Field(16, gt=0, description="images per forward chunk (bounds memory)")

    modalities: ClassVar[frozenset[Modality]] = frozenset({Modality.IMAGE})

    def __init__(self, options: Options, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.options = options
        self.config = config
        self.vision_model = SiglipVisionTransformer(config)  # keys vision_model.* as in transformers 4.x folders
        try:
            self.vision_model.hidden_state_index(options.select_layer)
        except ValueError as exc:
            raise ConfigError([("select_layer", str(exc))]) from None
        if any(s <= 0 for s in options.image_std):
            raise ConfigError([("image_std", f"every value must be > 0, got {options.image_std}")])
        self.output_dim = config.hidden_size

    @classmethod
    def from_options(cls, options: Options) -> "SiglipEncoder":
        """Load from ``options.path`` or build from ``options.config`` with random weights."""
        if (options.path is None) == (options.config is None):
            raise ConfigError([("siglip.options", "set exactly one of path (an HF SigLIP folder) or config "
                                                  "(SiglipVisionConfig fields for random weights)")])
        if options.config is not None:
            try:
                config = SiglipVisionConfig.from_dict(options.config, strict=True)
            except (TypeError, ValueError) as exc:
                raise ConfigError([("siglip.options.config", str(exc))]) from None
            log.info("siglip: random init %s", config)
            return cls(options, config)
        folder = resolve_path(options.path)
        config, state_dict = load_folder(folder)
        if config.num_channels != 3:
            raise CheckpointError(f"{folder}: num_channels must be 3 (RGB), got {config.num_channels}")
        module = cls(options, config)
        load_strict(module.vision_model, state_dict, str(folder))
        return module

    def saved_options(self) -> Options:
        """Architecture-only options (``config`` inline, no path): rebuilds this encoder without the folder."""
        return self.options.model_copy(update={"path": None, "config": self.config.as_dict()})

    @property
    def tokens_per_image(self) -> int:
        """Patch tokens per image."""
        return self.config.num_patches

    def _image(self, item: Any, index: int) -> Image.Image:
        if not isinstance(item, Image.Image):
            raise MediaError(f"siglip encoder: image {index} must be a PIL image, got {type(item).__name__} "
                             "(use lyra_sdk.media.load_image for paths and bytes)")
        if item.width <= 0 or item.height <= 0:
            raise MediaError(f"siglip encoder: image {index} has no pixels ({item.width}x{item.height})")
        return item

    def featurize(self, media: Sequence[Any]) -> Features:
        """PIL images -> ``pixel_values`` (N, 3, image_size, image_size); one row per image."""
        o = self.options
        images = [self._image(item, i) for i, item in enumerate(media)]
        pixels = preprocess_images(images, self.config.image_size, o.resample, o.rescale_factor, o.image_mean,
                                   o.image_std)  # (N, 3, S, S)
        return Features({"pixel_values": pixels}, list(range(len(images))))

    def featurize_batches(self, media: Sequence[Any]) -> Iterator[Features]:
        """``max_batch_images`` images at a time (their ``row_item`` index ``media``)."""
        step = self.options.max_batch_images
        for start in range(0, len(media), step):
            feats = self.featurize(media[start : start + step])
            yield Features(feats.tensors, [start + i for i in feats.row_item])

    def forward(self, features: Features) -> MediaEmbeddings:
        """``pixel_values`` (N, 3, S, S) -> embeddings (N, P, hidden_size), mask (N, P) all True, grids (N, 3)."""
        x = features.tensors["pixel_values"]
        weight = self.vision_model.embeddings.patch_embedding.weight
        x = x.to(device=weight.device, dtype=weight.dtype)
        o, step = self.options, self.options.max_batch_images
        if x.shape[0] == 0:
            out = x.new_zeros(0, self.tokens_per_image, self.output_dim)
        else:
            out = torch.cat([self.vision_model(x[i : i + step], o.select_layer, o.post_layernorm)
                             for i in range(0, x.shape[0], step)])  # (N, P, D)
        mask = torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)
        g = self.config.grid
        grids = torch.tensor([[1, g, g]], device=out.device).expand(out.shape[0], 3)
        return MediaEmbeddings(embeddings=out, mask=mask, grids=grids)


@hookimpl
def register_encoders(register: Register) -> None:
    """Register :class:`SiglipEncoder` as ``siglip``."""
    register("siglip", SiglipEncoder)
