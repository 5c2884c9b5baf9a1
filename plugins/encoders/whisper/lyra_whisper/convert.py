"""Whisper encoder weights from three checkpoint formats, mapped onto ``transformers``' parameter names.

* ``hf``: a transformers folder: ``config.json`` + ``model.safetensors`` (or a sharded
  ``model.safetensors.index.json``, or ``pytorch_model.bin``), with keys of ``WhisperModel`` (``encoder.*``),
  ``WhisperForConditionalGeneration`` (``model.encoder.*``) or a bare ``WhisperEncoder``.
* ``openai``: an openai-whisper ``.pt`` checkpoint: ``{"dims": {...}, "model_state_dict": {...}}``.
* ``ct2``: a CTranslate2 Whisper folder (``model.bin`` + ``config.json``); see :mod:`lyra_whisper.ct2`.

Every loader returns a :class:`WhisperEncoderConfig` and a state dict in our (= HF ``WhisperEncoder``) names;
:func:`load_strict` then refuses a missing or unexpected key or a shape mismatch, naming the key.
Files are read with ``torch.load(weights_only=True)`` or safetensors: never an arbitrary pickle.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from lyra_sdk.weights import load_strict as _load_strict
from lyra_sdk.errors import CheckpointError

from .ct2 import Ct2Model, has_variable, load_ct2, read_ct2_header, scalar
from .model import WhisperEncoderConfig, sinusoids

log = logging.getLogger(__name__)

Format = Literal["auto", "hf", "openai", "ct2"]
FORMATS = ("hf", "openai", "ct2")
StateDict = dict[str, Tensor]

# openai-whisper block names -> transformers names (per layer, after "blocks.N." / "layers.N.")
_OPENAI_LAYER = {
    "attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj", "attn.value": "self_attn.v_proj",
    "attn.out": "self_attn.out_proj", "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
    "mlp_ln": "final_layer_norm",
}
_OPENAI_TOP = {"conv1": "conv1", "conv2": "conv2", "ln_post": "layer_norm"}
# CTranslate2 names -> transformers names (per layer; linear_0 of self_attention is the fused q/k/v)
_CT2_LAYER = {
    "self_attention/layer_norm": "self_attn_layer_norm", "self_attention/linear_1": "self_attn.out_proj",
    "ffn/layer_norm": "final_layer_norm", "ffn/linear_0": "fc1", "ffn/linear_1": "fc2",
}
_CT2_PARAM = {"gamma": "weight", "beta": "bias", "weight": "weight", "bias": "bias"}


def detect_format(path: str | Path) -> str:
    """Guess a checkpoint's format from its files; raises :class:`CheckpointError` listing what was found."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Whisper checkpoint not found: {path}")
    if path.is_file():
        with path.open("rb") as f:
            head = f.read(64)
        if head[:4] in (b"\x04\0\0\0", b"\x05\0\0\0", b"\x06\0\0\0") and b"Spec\0" in head:
            return "ct2"  # CTranslate2's binary version + spec name (see lyra_whisper.ct2)
        return "openai"  # a torch checkpoint file (zip or legacy); its contents are checked when loaded
    names = {p.name for p in path.iterdir()}
    if "model.bin" in names:
        return "ct2"
    if "config.json" in names and names & {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"}:
        return "hf"
    pts = sorted(n for n in names if n.endswith((".pt", ".pth")))
    if len(pts) == 1:
        return "openai"
    raise CheckpointError(
        f"cannot tell the format of Whisper checkpoint {path}: expected config.json + model.safetensors (hf), "
        f"a .pt file (openai) or model.bin (ct2); found {sorted(names) or 'an empty folder'}"
    )


def _resolve_openai_file(path: Path) -> Path:
    if path.is_file():
        return path
    pts = sorted(p for p in path.iterdir() if p.suffix in (".pt", ".pth"))
    if len(pts) != 1:
        raise CheckpointError(f"expected exactly one .pt file in {path}, found {[p.name for p in pts]}")
    return pts[0]


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated/foreign file: not a traceback for the user
        raise CheckpointError(f"cannot read torch checkpoint {path}: {type(exc).__name__}: {exc}") from exc


# ----------------------------------------------------------------------------------------------- hf
def _hf_config(path: Path) -> WhisperEncoderConfig:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path / 'config.json'}: {exc}") from exc
    activation = cfg.get("activation_function", "gelu")
    if activation != "gelu":
        raise CheckpointError(f"{path}: activation_function {activation!r} is not supported (only 'gelu')")
    fields = WhisperEncoderConfig.__dataclass_fields__
    missing = [k for k in ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim") if k not in cfg]
    if missing:
        raise CheckpointError(f"{path / 'config.json'} lacks {missing}: is it a Whisper config?")
    return WhisperEncoderConfig(**{k: int(cfg[k]) for k in fields if k in cfg})


def _hf_tensors(path: Path) -> StateDict:
    """Only the encoder's tensors, with the model prefix stripped."""
    from safetensors import safe_open

    files: list[Path]
    if (path / "model.safetensors.index.json").exists():
        index = json.loads((path / "model.safetensors.index.json").read_text())
        files = sorted({path / f for f in index["weight_map"].values()})
    elif (path / "model.safetensors").exists():
        files = [path / "model.safetensors"]
    else:
        files = []
    raw: StateDict = {}
    wanted = ("encoder.", "model.encoder.", "conv", "layers.", "embed_positions", "layer_norm")
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                raw.update({key: f.get_tensor(key) for key in f.keys() if key.startswith(wanted)})
        except Exception as exc:  # a missing shard or a corrupt file: name it
            raise CheckpointError(f"cannot read safetensors file {file}: {type(exc).__name__}: {exc}") from exc
    if not files:
        sd = _torch_load(path / "pytorch_model.bin")
        if not isinstance(sd, dict):
            raise CheckpointError(f"{path / 'pytorch_model.bin'} is not a state dict")
        raw = dict(sd)
    for prefix in ("model.encoder.", "encoder.", ""):
        if prefix + "conv1.weight" in raw:
            return {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    raise CheckpointError(f"{path}: no Whisper encoder weights found (looked for 'model.encoder.conv1.weight', "
                          f"'encoder.conv1.weight' or 'conv1.weight')")


def load_hf(path: str | Path) -> tuple[WhisperEncoderConfig, StateDict]:
    """A transformers Whisper folder -> (config, encoder state dict)."""
    path = Path(path)
    return _hf_config(path), _hf_tensors(path)


# ------------------------------------------------------------------------------------------- openai
def openai_to_hf(sd: StateDict) -> StateDict:
    """openai-whisper ``encoder.*`` keys -> our names; other keys (the decoder) are dropped."""
    out: StateDict = {}
    for key, value in sd.items():
        if not key.startswith("encoder."):
            continue
        key = key[len("encoder."):]
        if key == "positional_embedding":
            out["embed_positions.weight"] = value
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", key)
        top = re.fullmatch(r"(\w+)\.(weight|bias)", key)
        if m and m.group(2) in _OPENAI_LAYER:
            out[f"layers.{m.group(1)}.{_OPENAI_LAYER[m.group(2)]}.{m.group(3)}"] = value
        elif top and top.group(1) in _OPENAI_TOP:
            out[f"{_OPENAI_TOP[top.group(1)]}.{top.group(2)}"] = value
        else:
            out["<openai>encoder." + key] = value  # kept so that load_strict names it as unexpected
    return out


def load_openai(path: str | Path) -> tuple[WhisperEncoderConfig, StateDict]:
    """An openai-whisper checkpoint (file, or a folder with one ``.pt``) -> (config, encoder state dict)."""
    file = _resolve_openai_file(Path(path))
    ckpt = _torch_load(file)
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{file} is not an openai-whisper checkpoint: expected keys 'dims' and "
                              f"'model_state_dict', got {keys}")
    dims = ckpt["dims"]
    try:
        config = WhisperEncoderConfig(
            num_mel_bins=int(dims["n_mels"]), d_model=int(dims["n_audio_state"]),
            encoder_layers=int(dims["n_audio_layer"]), encoder_attention_heads=int(dims["n_audio_head"]),
            encoder_ffn_dim=4 * int(dims["n_audio_state"]), max_source_positions=int(dims["n_audio_ctx"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{file}: bad 'dims' {dims!r}: {exc}") from exc
    sd = openai_to_hf(ckpt["model_state_dict"])
    if "embed_positions.weight" not in sd:  # a non-persistent buffer in some exports: it is fixed by construction
        log.info("%s has no encoder.positional_embedding; using Whisper's sinusoids", file)
        sd["embed_positions.weight"] = sinusoids(config.max_source_positions, config.d_model)
    return config, sd


# ---------------------------------------------------------------------------------------------- ct2
def _ct2_file(path: Path) -> Path:
    return path if path.is_file() else path / "model.bin"


def _ct2_shape(model: Ct2Model, name: str) -> tuple[int, ...]:
    if not has_variable(model, name):
        raise CheckpointError(f"{model.path}: missing CTranslate2 variable {name!r}")
    return model.variables[model.aliases.get(name, name)].shape


class _Ct2Taker:
    """Reads CTranslate2 arrays and remembers which were used, so leftovers can be refused."""

    def __init__(self, model: Ct2Model) -> None:
        self.model, self.used = model, set()

    def __call__(self, name: str) -> Tensor:
        self.used.update({name, name + "_scale"})
        return load_ct2(self.model, name)

    def linear(self, name: str, dest: str, out: StateDict) -> None:
        """A linear/conv/LayerNorm: weight|gamma -> weight, bias|beta -> bias, when present."""
        for src, dst in _CT2_PARAM.items():
            if has_variable(self.model, f"{name}/{src}"):
                out[f"{dest}.{dst}"] = self(f"{name}/{src}")


def ct2_encoder(model: Ct2Model) -> tuple[WhisperEncoderConfig, StateDict]:
    """(config, our-names state dict) of the encoder in a parsed CTranslate2 Whisper model.

    Every ``encoder/*`` array must be used: a leftover raises :class:`CheckpointError` naming it. Missing
    arrays surface as missing keys in :func:`load_strict`.
    """
    if model.spec != "WhisperSpec":
        raise CheckpointError(f"{model.path}: expected a CTranslate2 'WhisperSpec' model, got {model.spec!r}")
    layers = sorted({int(m.group(1)) for n in model.variables if (m := re.match(r"encoder/layer_(\d+)/", n))})
    if not layers:
        raise CheckpointError(f"{model.path}: no CTranslate2 encoder layers ('encoder/layer_N/...')")
    d_model, n_mels, _ = _ct2_shape(model, "encoder/conv1/weight")  # (D, n_mels, 3)
    config = WhisperEncoderConfig(
        num_mel_bins=n_mels, d_model=d_model, encoder_layers=len(layers),
        encoder_attention_heads=scalar(model, "encoder/num_heads"),
        encoder_ffn_dim=_ct2_shape(model, "encoder/layer_0/ffn/linear_0/weight")[0],
        max_source_positions=_ct2_shape(model, "encoder/position_encodings/encodings")[0],
    )
    take = _Ct2Taker(model)
    take.used.add("encoder/num_heads")
    sd: StateDict = {}
    take.linear("encoder/conv1", "conv1", sd)
    take.linear("encoder/conv2", "conv2", sd)
    take.linear("encoder/layer_norm", "layer_norm", sd)
    sd["embed_positions.weight"] = take("encoder/position_encodings/encodings")  # (1500, D)
    for i in layers:
        base = f"encoder/layer_{i}"
        for src, dst in _CT2_LAYER.items():
            take.linear(f"{base}/{src}", f"layers.{i}.{dst}", sd)
        if not has_variable(model, f"{base}/self_attention/linear_0/weight"):
            continue  # reported by load_strict as missing q/k/v keys
        qkv_w = take(f"{base}/self_attention/linear_0/weight")  # (3D, D): q, k, v stacked
        qkv_b = take(f"{base}/self_attention/linear_0/bias")  # (3D,)
        for name, w, b in zip(("q_proj", "k_proj", "v_proj"), qkv_w.split(d_model), qkv_b.split(d_model)):
            sd[f"layers.{i}.self_attn.{name}.weight"] = w
            if name != "k_proj":
                sd[f"layers.{i}.self_attn.{name}.bias"] = b
            elif b.abs().max() > 0:  # a key bias shifts every logit of a query equally: softmax ignores it
                log.debug("%s: dropping a non-zero key bias in layer %d (it cannot change attention)", model.path, i)
    leftovers = sorted(n for n in model.variables if n.startswith("encoder/") and n not in take.used)
    if leftovers:
        raise CheckpointError(f"{model.path}: unexpected CTranslate2 encoder variable {leftovers[0]!r}{_more(leftovers)}")
    return config, sd


def load_ct2_checkpoint(path: str | Path) -> tuple[WhisperEncoderConfig, StateDict]:
    """A CTranslate2 Whisper folder (or its ``model.bin``) -> (config, encoder state dict)."""
    return ct2_encoder(read_ct2_header(_ct2_file(Path(path))))


# ------------------------------------------------------------------------------------------ common
_LOADERS = {"hf": load_hf, "openai": load_openai, "ct2": load_ct2_checkpoint}


def load_checkpoint(path: str | Path, format: Format = "auto") -> tuple[WhisperEncoderConfig, StateDict, str]:
    """Read a Whisper encoder checkpoint of any supported format -> (config, state dict, format used)."""
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in _LOADERS:
        raise CheckpointError(f"unknown Whisper checkpoint format {format!r}; valid: auto, {', '.join(FORMATS)}")
    if not Path(path).exists():
        raise CheckpointError(f"Whisper checkpoint not found: {path}")
    config, sd = _LOADERS[fmt](path)
    log.info("read Whisper encoder (%s format) from %s: %s", fmt, path, config)
    return config, sd, fmt


def _more(keys: list[str]) -> str:
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""


def load_strict(module: nn.Module, state_dict: StateDict, source: str) -> None:
    """Strict copy through :func:`lyra_sdk.weights.load_strict` (openai checkpoint keys shown unprefixed)."""
    _load_strict(module, state_dict, source, key_name=lambda k: k.removeprefix("<openai>"))


# --------------------------------------------------------------------- ct2 -> openai-whisper (whole model)
def hf_to_openai(sd: StateDict) -> StateDict:
    """Our encoder names -> openai-whisper ``encoder.*`` names (the inverse of :func:`openai_to_hf`)."""
    layer = {v: k for k, v in _OPENAI_LAYER.items()}
    top = {v: k for k, v in _OPENAI_TOP.items()}
    out: StateDict = {}
    for key, value in sd.items():
        if key == "embed_positions.weight":
            out["encoder.positional_embedding"] = value
        elif m := re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", key):
            out[f"encoder.blocks.{m.group(1)}.{layer[m.group(2)]}.{m.group(3)}"] = value
        else:
            name, param = key.rsplit(".", 1)
            out[f"encoder.{top[name]}.{param}"] = value
    return out


def _ct2_decoder(model: Ct2Model, layers: list[int], d: int) -> StateDict:
    """openai-whisper ``decoder.*`` weights from a CTranslate2 Whisper decoder."""
    sd: StateDict = {}

    def linear(src: str, dst: str) -> None:
        for a, b in _CT2_PARAM.items():
            if has_variable(model, f"{src}/{a}"):
                sd[f"{dst}.{b}"] = load_ct2(model, f"{src}/{a}")

    def split(src: str, dsts: tuple[str, ...]) -> None:
        weights = load_ct2(model, f"{src}/weight").split(d)  # fused projections stacked on the output axis
        biases = load_ct2(model, f"{src}/bias").split(d)
        for dst, w, b in zip(dsts, weights, biases):
            sd[f"{dst}.weight"] = w
            if not dst.endswith(".key"):  # openai-whisper's key projections have no bias
                sd[f"{dst}.bias"] = b

    sd["decoder.token_embedding.weight"] = load_ct2(model, "decoder/embeddings/weight")  # (V, D)
    sd["decoder.positional_embedding"] = load_ct2(model, "decoder/position_encodings/encodings")  # (n_text_ctx, D)
    linear("decoder/layer_norm", "decoder.ln")
    for i in layers:
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        linear(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        split(f"{src}/self_attention/linear_0", (f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"))
        linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
        linear(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
        split(f"{src}/attention/linear_1", (f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"))
        linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
        linear(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
        linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
        linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")
    return sd


def ct2_to_openai_whisper(path: str | Path):
    """A CTranslate2 Whisper folder -> an openai-whisper ``whisper.model.Whisper`` (encoder and decoder), fp32.

    Needs the ``openai-whisper`` package. Used to prove the CTranslate2 reader right: the converted model
    transcribes with ``whisper.decode``.
    """
    from whisper.model import ModelDimensions, Whisper

    path = Path(path)
    model = read_ct2_header(_ct2_file(path))
    enc, enc_sd = ct2_encoder(model)
    for name, want in (("decoder/pre_norm", 1), ("decoder/scale_embeddings", 0), ("decoder/activation", 3)):
        if has_variable(model, name) and scalar(model, name) != want:
            raise CheckpointError(f"{model.path}: {name} = {scalar(model, name)}, openai-whisper needs {want}")
    if "decoder/projection/weight" in model.variables:  # stored separately instead of aliased
        if not torch.equal(load_ct2(model, "decoder/projection/weight"), load_ct2(model, "decoder/embeddings/weight")):
            raise CheckpointError(f"{model.path}: untied output projection is not supported by openai-whisper")
    layers = sorted({int(m.group(1)) for n in model.variables if (m := re.match(r"decoder/layer_(\d+)/", n))})
    vocab, d_text = model.variables["decoder/embeddings/weight"].shape
    dims = ModelDimensions(
        n_mels=enc.num_mel_bins, n_audio_ctx=enc.max_source_positions, n_audio_state=enc.d_model,
        n_audio_head=enc.encoder_attention_heads, n_audio_layer=enc.encoder_layers, n_vocab=vocab,
        n_text_ctx=model.variables["decoder/position_encodings/encodings"].shape[0], n_text_state=d_text,
        n_text_head=scalar(model, "decoder/num_heads"), n_text_layer=len(layers),
    )
    whisper = Whisper(dims)
    load_strict(whisper, {**hf_to_openai(enc_sd), **_ct2_decoder(model, layers, d_text)}, str(model.path))
    config_file = model.path.parent / "config.json"
    if config_file.exists():  # alignment heads (for word timestamps) live in CTranslate2's config.json
        heads = json.loads(config_file.read_text()).get("alignment_heads")
        if heads:
            mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
            for layer, head in heads:
                mask[layer, head] = True
            whisper.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return whisper.eval()
