"""Checkpoint reading: format detection, strict key checks, and a synthetic CTranslate2 container."""

from __future__ import annotations

import struct
from dataclasses import asdict

import numpy as np
import pytest
import torch

from lyra_sdk.errors import CheckpointError
from lyra_whisper.convert import detect_format, load_checkpoint, load_strict
from lyra_whisper.ct2 import read_ct2_header
from lyra_whisper.model import WhisperEncoderModel
from lyra_whisper.plugin import WhisperEncoder

_CT2_DTYPE = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
              np.dtype("float16"): 4}


def write_ct2(path, variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None, spec="WhisperSpec"):
    """An independent writer of CTranslate2's binary layout (version 6), as documented in lyra_whisper.ct2."""
    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", 6), string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, arr in variables.items():
        arr = np.asarray(arr, order="C")  # (ascontiguousarray would turn a scalar into shape (1,))
        out += [string(name), struct.pack("<B", arr.ndim), *(struct.pack("<I", d) for d in arr.shape),
                struct.pack("<BI", _CT2_DTYPE[arr.dtype], arr.nbytes), arr.tobytes()]
    out.append(struct.pack("<I", len(aliases or {})))
    for alias, target in (aliases or {}).items():
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))


def ct2_variables(sd: dict[str, torch.Tensor], num_heads: int, dtype=np.float32, quantize=False):
    """Our encoder names -> CTranslate2 names (fused q/k/v with a zero key bias), optionally int8-quantised."""
    v: dict[str, np.ndarray] = {}

    def put(name, t, weight=False):
        a = t.detach().numpy().astype(np.float32)
        if quantize and weight:
            scale = 127.0 / np.abs(a).reshape(a.shape[0], -1).max(axis=1)
            v[name] = np.round(a * scale.reshape(-1, *[1] * (a.ndim - 1))).astype(np.int8)
            v[name + "_scale"] = scale.astype(np.float32)
        else:
            v[name] = a.astype(dtype)

    for conv in ("conv1", "conv2"):
        put(f"encoder/{conv}/weight", sd[f"{conv}.weight"], weight=True)
        put(f"encoder/{conv}/bias", sd[f"{conv}.bias"])
    layers = sorted({int(k.split(".")[1]) for k in sd if k.startswith("layers.")})
    for i in layers:
        p, b = f"layers.{i}.", f"encoder/layer_{i}/"
        att = p + "self_attn."
        put(b + "self_attention/linear_0/weight", torch.cat([sd[att + f"{x}_proj.weight"] for x in "qkv"]), weight=True)
        q_bias = sd[att + "q_proj.bias"]
        put(b + "self_attention/linear_0/bias", torch.cat([q_bias, torch.zeros_like(q_bias), sd[att + "v_proj.bias"]]))
        put(b + "self_attention/linear_1/weight", sd[att + "out_proj.weight"], weight=True)
        put(b + "self_attention/linear_1/bias", sd[att + "out_proj.bias"])
        put(b + "self_attention/layer_norm/gamma", sd[p + "self_attn_layer_norm.weight"])
        put(b + "self_attention/layer_norm/beta", sd[p + "self_attn_layer_norm.bias"])
        for j, fc in enumerate(("fc1", "fc2")):
            put(b + f"ffn/linear_{j}/weight", sd[p + fc + ".weight"], weight=True)
            put(b + f"ffn/linear_{j}/bias", sd[p + fc + ".bias"])
        put(b + "ffn/layer_norm/gamma", sd[p + "final_layer_norm.weight"])
        put(b + "ffn/layer_norm/beta", sd[p + "final_layer_norm.bias"])
    put("encoder/layer_norm/gamma", sd["layer_norm.weight"])
    put("encoder/layer_norm/beta", sd["layer_norm.bias"])
    put("encoder/position_encodings/encodings", sd["embed_positions.weight"])
    v["encoder/num_heads"] = np.array(num_heads, dtype=np.int16)
    v["decoder/num_heads"] = np.array(num_heads, dtype=np.int16)
    return v


@pytest.fixture
def reference(tiny_config, perturb):
    torch.manual_seed(0)
    model = WhisperEncoderModel(tiny_config(80)).eval()
    perturb(model, seed=7)
    return model


@pytest.mark.parametrize("dtype,atol", [(np.float32, 0.0), (np.float16, 2e-3)])
def test_ct2_container_round_trip(tmp_path, reference, dtype, atol):
    write_ct2(tmp_path / "model.bin", ct2_variables(reference.state_dict(), 4, dtype))
    assert detect_format(tmp_path) == "ct2"
    cfg, sd, fmt = load_checkpoint(tmp_path)
    assert cfg == reference.config
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(sd[key], value, atol=atol, rtol=0)


def test_ct2_int8_dequantised(tmp_path, reference, mel_batch):
    write_ct2(tmp_path / "model.bin", ct2_variables(reference.state_dict(), 4, quantize=True))
    header = read_ct2_header(tmp_path / "model.bin")
    assert header.variables["encoder/layer_0/ffn/linear_0/weight"].dtype_id == 1
    encoder = WhisperEncoder.from_options(WhisperEncoder.Options(path=str(tmp_path), format="ct2")).eval()
    for key, value in reference.state_dict().items():  # int8 keeps each row within amax/127 / 2
        bound = value.abs().reshape(value.shape[0], -1).amax(1).max().item() / 127 if value.dim() > 1 else 0
        torch.testing.assert_close(encoder.encoder.state_dict()[key], value, atol=bound / 2 + 1e-6, rtol=0)


def test_ct2_unexpected_and_missing_variables(tmp_path, reference):
    variables = ct2_variables(reference.state_dict(), 4)
    write_ct2(tmp_path / "model.bin", {**variables, "encoder/layer_0/mystery/weight": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match="encoder/layer_0/mystery/weight"):
        load_checkpoint(tmp_path)
    del variables["encoder/layer_1/ffn/linear_1/bias"]
    write_ct2(tmp_path / "model.bin", variables)
    with pytest.raises(CheckpointError, match=r"layers\.1\.fc2\.bias"):
        WhisperEncoder.from_options(WhisperEncoder.Options(path=str(tmp_path)))


def test_ct2_truncated(tmp_path, reference):
    write_ct2(tmp_path / "model.bin", ct2_variables(reference.state_dict(), 4))
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="past the end|truncated"):
        load_checkpoint(tmp_path)


def test_strict_keys_name_the_key(reference, tiny_config):
    target = WhisperEncoderModel(tiny_config(80))
    sd = dict(reference.state_dict())
    with pytest.raises(CheckpointError, match=r"missing key 'layers\.0\.fc1\.bias'"):
        load_strict(target, {k: v for k, v in sd.items() if k != "layers.0.fc1.bias"}, "ckpt")
    with pytest.raises(CheckpointError, match=r"unexpected key 'layers\.0\.self_attn\.k_proj\.bias'"):
        load_strict(target, {**sd, "layers.0.self_attn.k_proj.bias": torch.zeros(64)}, "ckpt")
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'conv1\.weight'"):
        load_strict(target, {**sd, "conv1.weight": torch.zeros(64, 128, 3)}, "ckpt")


def test_openai_checkpoint_errors(tmp_path):
    whisper_model = pytest.importorskip("whisper.model")
    dims = whisper_model.ModelDimensions(80, 1500, 64, 4, 2, 100, 16, 64, 4, 1)
    sd = whisper_model.Whisper(dims).state_dict()
    sd["encoder.blocks.0.attn.rotary.weight"] = torch.zeros(2)
    torch.save({"dims": asdict(dims), "model_state_dict": sd}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"unexpected key 'encoder\.blocks\.0\.attn\.rotary\.weight'"):
        WhisperEncoder.from_options(WhisperEncoder.Options(path=str(tmp_path / "odd.pt")))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an openai-whisper checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="cannot read torch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_detection_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match=r"cannot tell the format.*notes\.txt"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="unknown Whisper checkpoint format"):
        load_checkpoint(tmp_path, format="onnx")  # type: ignore[arg-type]


def test_options_that_contradict_the_checkpoint(tmp_path, reference):
    write_ct2(tmp_path / "model.bin", ct2_variables(reference.state_dict(), 4))
    with pytest.raises(CheckpointError, match="d_model=384 but the checkpoint has 64"):
        WhisperEncoder.from_options(WhisperEncoder.Options(path=str(tmp_path), d_model=384))
