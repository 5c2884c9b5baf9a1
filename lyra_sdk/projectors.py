"""Projectors shipped with the core: Lyra's ``simple_mlp`` speech projector, ``identity`` and ``mlp2x_gelu``.

``in_dim`` / ``out_dim`` may be left unset in a config: :meth:`lyra_sdk.Lyra.from_config` fills them from the
encoder's ``output_dim`` and the LLM's ``hidden_size``.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field
from torch import nn

from .errors import ConfigError
from .interfaces import MediaEmbeddings, PluginOptions, Projector


class ProjectorOptions(PluginOptions):
    """Widths shared by every projector; None = inferred from the neighbouring components."""

    in_dim: int | None = Field(None, gt=0, description="encoder output width (inferred when unset)")
    out_dim: int | None = Field(None, gt=0, description="LLM hidden size (inferred when unset)")


def _dims(options: ProjectorOptions, name: str) -> tuple[int, int]:
    if options.in_dim is None or options.out_dim is None:
        raise ConfigError([(f"{name}.options", "in_dim and out_dim must be set (or inferred by Lyra.from_config)")])
    return options.in_dim, options.out_dim


class SimpleMlpProjector(Projector):
    """Lyra's speech projector (from LLaMA-Omni): stack k consecutive frames, then Linear -> ReLU -> Linear.

    Frames beyond a multiple of k are dropped; a token is valid when its first frame is valid, so the padded
    tail of a final 30 s window yields no tokens. (N, T, d) -> (N, T // k, out_dim).
    """

    class Options(ProjectorOptions):
        """Options of ``simple_mlp``."""

        k: int = Field(5, gt=0, description="frames concatenated into one token (speech_encoder_ds_rate)")
        hidden_dim: int = Field(2048, gt=0, description="width of the hidden layer")

    def __init__(self, options: Options) -> None:
        super().__init__()
        self.options = options
        self.in_dim, self.out_dim = _dims(options, "simple_mlp")
        self.k = options.k
        self.linear1 = nn.Linear(self.in_dim * self.k, options.hidden_dim)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(options.hidden_dim, self.out_dim)

    @classmethod
    def from_options(cls, options: Options) -> Self:
        """Build with random weights."""
        return cls(options)

    def forward(self, x: MediaEmbeddings) -> MediaEmbeddings:
        """(N, T, in_dim) -> (N, T // k, out_dim)."""
        n, t, d = x.embeddings.shape
        t_out = t // self.k
        h = x.embeddings[:, : t_out * self.k].reshape(n, t_out, self.k * d)  # (N, T/k, k*d)
        h = self.linear2(self.relu(self.linear1(h)))
        mask = x.mask[:, : t_out * self.k : self.k]  # (N, T/k): first frame of each group
        return MediaEmbeddings(h, mask, x.grids)


class IdentityProjector(Projector):
    """Passes embeddings through unchanged (Qwen2-VL's merger already outputs the LLM width)."""

    Options = ProjectorOptions

    def __init__(self, options: ProjectorOptions) -> None:
        super().__init__()
        self.options = options
        self.in_dim, self.out_dim = _dims(options, "identity")
        if self.in_dim != self.out_dim:
            raise ConfigError([("identity.options", f"in_dim ({self.in_dim}) must equal out_dim ({self.out_dim})")])

    @classmethod
    def from_options(cls, options: ProjectorOptions) -> Self:
        """Build (no weights)."""
        return cls(options)

    def forward(self, x: MediaEmbeddings) -> MediaEmbeddings:
        """Unchanged."""
        return x


class MlpGeluProjector(Projector):
    """LLaVA's two-layer projector: Linear(in, out) -> GELU -> Linear(out, out)."""

    Options = ProjectorOptions

    def __init__(self, options: ProjectorOptions) -> None:
        super().__init__()
        self.options = options
        self.in_dim, self.out_dim = _dims(options, "mlp2x_gelu")
        self.linear1 = nn.Linear(self.in_dim, self.out_dim)
        self.act = nn.GELU()
        self.linear2 = nn.Linear(self.out_dim, self.out_dim)

    @classmethod
    def from_options(cls, options: ProjectorOptions) -> Self:
        """Build with random weights."""
        return cls(options)

    def forward(self, x: MediaEmbeddings) -> MediaEmbeddings:
        """(N, T, in_dim) -> (N, T, out_dim)."""
        return MediaEmbeddings(self.linear2(self.act(self.linear1(x.embeddings))), x.mask, x.grids)


__all__ = ["IdentityProjector", "MlpGeluProjector", "ProjectorOptions", "SimpleMlpProjector"]
