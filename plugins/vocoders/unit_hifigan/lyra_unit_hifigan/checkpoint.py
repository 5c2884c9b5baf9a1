"""Loading and saving CodeHiFiGAN weights: fairseq checkpoints (+ ``config.json``) and our safetensors format.

fairseq checkpoints are torch pickles whose ``"generator"`` key holds the state dict; they are read with
``weights_only=True`` so nothing but tensors and plain containers is ever unpickled. Loading is strict: a
missing or unexpected key, a shape mismatch or a config that disagrees with the weights raises
:class:`lyra_sdk.errors.CheckpointError` naming the key and the config fields involved.

Our own format is one ``.safetensors`` file whose metadata holds ``format`` and the fairseq-style config.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from lyra_sdk.errors import CheckpointError, ConfigError

from .config import HifiGanConfig
from .model import CodeHiFiGAN

FORMAT = "lyra-unit-hifigan"

# Which config fields decide the shape of the parameters under each key prefix.
_FIELDS_BY_PREFIX = {
    "dict.": "num_embeddings, embedding_dim",
    "spkr.": "multispkr, num_speakers / embedder_params, embedder_dim, embedding_dim",
    "dur_predictor.": "dur_predictor_params, embedding_dim",
    "f0_quant_embed.": "f0, f0_quant_num_bin, embedding_dim",
    "conv_pre.": "model_in_dim, upsample_initial_channel",
    "ups.": "upsample_rates, upsample_kernel_sizes, upsample_initial_channel",
    "resblocks.": "resblock, resblock_kernel_sizes, resblock_dilation_sizes, upsample_initial_channel",
    "conv_post.": "upsample_initial_channel, upsample_rates",
}


def _fields(key: str) -> str:
    return next((f for p, f in _FIELDS_BY_PREFIX.items() if key.startswith(p)), "the architecture")


def config_from_dict(data: Any, source: str = "config") -> HifiGanConfig:
    """Validate fairseq-style config data; problems raise :class:`ConfigError` listing every field."""
    if not isinstance(data, dict):
        raise ConfigError([("", f"expected a JSON object, got {type(data).__name__}")], source)
    try:
        cfg = HifiGanConfig.from_fairseq(data)
    except ValidationError as exc:
        raise ConfigError([(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()], source) from None
    errs = cfg.validate_arch()
    if errs:
        raise ConfigError(errs, source)
    return cfg


def load_config(path: str | Path) -> HifiGanConfig:
    """Read a fairseq vocoder ``config.json``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"vocoder config not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError([("", f"not valid JSON: {exc}")], str(path)) from None
    return config_from_dict(data, str(path))


def read_fairseq_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The ``"generator"`` state dict of a fairseq vocoder checkpoint, read safely (tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"vocoder checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln), "")
        raise CheckpointError(f"{path}: refusing to load: the file holds objects other than tensors and plain "
                              f"containers, or is not a torch checkpoint {detail}".rstrip()) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        detail = str(exc).split(". ")[0]
        raise CheckpointError(f"{path}: unreadable torch checkpoint, probably truncated or corrupt "
                              f"({type(exc).__name__}: {detail})") from None
    if not isinstance(obj, dict) or "generator" not in obj:
        got = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a fairseq vocoder checkpoint with a 'generator' key, got {got}")
    sd = obj["generator"]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: 'generator' must be a state dict, got {type(sd).__name__}")
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            raise CheckpointError(f"{path}: generator entry {k!r} is a {type(v).__name__}, not a tensor")
    return sd


def is_weight_normed(state_dict: dict[str, Tensor]) -> bool:
    """Whether the state dict stores fairseq's ``weight_g``/``weight_v`` pairs (vs. folded weights)."""
    return any(k.endswith(".weight_g") for k in state_dict)


def check_state_dict(model: CodeHiFiGAN, state_dict: dict[str, Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` matches ``model`` key for key and shape for shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    has_dp = model.dur_predictor is not None
    if unexpected and all(k.startswith("dur_predictor.") for k in unexpected) and not has_dp:
        raise CheckpointError(f"{source}: the checkpoint has a duration predictor ({unexpected[0]}, ...) but the "
                              f"config has no dur_predictor_params")
    if missing and all(k.startswith("dur_predictor.") for k in missing) and has_dp:
        raise CheckpointError(f"{source}: the config has dur_predictor_params but the checkpoint has no "
                              f"duration predictor (missing {missing[0]}, ...)")
    if missing:
        raise CheckpointError(f"{source}: missing key {missing[0]!r} (config fields: {_fields(missing[0])})"
                              + (f" and {len(missing) - 1} more: {', '.join(missing[1:4])}" if len(missing) > 1 else ""))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key {unexpected[0]!r} (config fields: {_fields(unexpected[0])})"
                              + (f" and {len(unexpected) - 1} more: {', '.join(unexpected[1:4])}"
                                 if len(unexpected) > 1 else ""))
    for k, v in expected.items():
        got = state_dict[k]
        if tuple(got.shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: {k} has shape {tuple(got.shape)} in the checkpoint but the config "
                                  f"({_fields(k)}) expects {tuple(v.shape)}")
        if not got.is_floating_point():
            raise CheckpointError(f"{source}: {k} has dtype {got.dtype}, expected a floating-point tensor")


def build_loaded(cfg: HifiGanConfig, state_dict: dict[str, Tensor], source: str) -> CodeHiFiGAN:
    """A generator of architecture ``cfg`` holding ``state_dict`` (weight-normed or folded, checked strictly)."""
    model = CodeHiFiGAN(cfg, weight_norm=is_weight_normed(state_dict))
    check_state_dict(model, state_dict, source)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return model.eval()


def load_fairseq(checkpoint: str | Path, config: str | Path | HifiGanConfig) -> CodeHiFiGAN:
    """Load a fairseq checkpoint (e.g. ``g_00500000``) with its ``config.json``; weight norm is kept."""
    cfg = config if isinstance(config, HifiGanConfig) else load_config(config)
    return build_loaded(cfg, read_fairseq_state_dict(checkpoint), str(checkpoint))


def save_safetensors(model: CodeHiFiGAN, path: str | Path) -> None:
    """Write the generator's weights and config to one ``.safetensors`` file (our format)."""
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata={"format": FORMAT, "config": json.dumps(model.cfg.to_fairseq())})


def load_safetensors(path: str | Path, config: str | Path | HifiGanConfig | None = None) -> CodeHiFiGAN:
    """Read a file written by :func:`save_safetensors`; ``config`` overrides the embedded config if given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"vocoder weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file, probably truncated or corrupt ({exc})") from None
    if config is not None:
        cfg = config if isinstance(config, HifiGanConfig) else load_config(config)
    elif meta.get("format") == FORMAT and "config" in meta:
        cfg = config_from_dict(json.loads(meta["config"]), f"{path} metadata")
    else:
        raise CheckpointError(f"{path}: no embedded {FORMAT} config; pass the vocoder's config.json")
    return build_loaded(cfg, sd, str(path))


def load_any(checkpoint: str | Path, config: str | Path | HifiGanConfig | None = None) -> CodeHiFiGAN:
    """Load ``.safetensors`` (our format) or a fairseq torch checkpoint (which needs ``config``)."""
    if str(checkpoint).endswith(".safetensors"):
        return load_safetensors(checkpoint, config)
    if config is None:
        raise CheckpointError(f"{checkpoint}: a fairseq checkpoint needs its config.json (option `config`)")
    return load_fairseq(checkpoint, config)
