"""Make the golden fixtures of the unit HiFi-GAN tests with fairseq's own CodeHiFiGAN vocoder.

Run it in a SEPARATE virtualenv (fairseq pulls torchaudio, which must never enter the project's venv)::

    python3 -m venv /tmp/fairseq-venv
    /tmp/fairseq-venv/bin/pip install torch==2.13.0 numpy safetensors cython setuptools wheel
    /tmp/fairseq-venv/bin/pip install --no-build-isolation fairseq-fixed==0.12.3.1   # ~3 min; cython first
    /tmp/fairseq-venv/bin/python plugins/vocoders/unit_hifigan/scripts/make_golden.py

For each variant it builds fairseq's ``CodeGenerator`` from a small config with seeded random weights, saves
``{"generator": state_dict}`` with weight norm still applied (``weight_g``/``weight_v``; tensors only, so
``torch.load(weights_only=True)`` reads it), the ``config.json``, and the inputs and outputs of fairseq's
``CodeHiFiGANVocoder`` (which folds weight norm at load, as in inference) into ``tests/golden/``:

    <name>.pt  <name>.config.json  <name>.expected.safetensors
        units (T,) int64; wav (S,) fairseq output without duration prediction; and where the variant has
        a duration predictor, durations (T,) int64 and wav_dur; spkr (1, 1) int64 and f0 (T_f,) as used.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from fairseq.models.text_to_speech.codehifigan import CodeGenerator
from fairseq.models.text_to_speech.vocoder import CodeHiFiGANVocoder

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden"

TRAINING_KEYS = {"segment_size": 8960, "code_hop_size": 320, "num_mels": 80, "batch_size": 16, "fmin": 0}

VARIANTS = {
    # The Lyra vocoder's layout at a tiny width, with a duration predictor.
    "dur": {
        "resblock": "1", "upsample_rates": [5, 4, 4, 2, 2], "upsample_kernel_sizes": [11, 8, 8, 4, 4],
        "upsample_initial_channel": 32, "resblock_kernel_sizes": [3, 7, 11],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "num_embeddings": 100,
        "embedding_dim": 16, "model_in_dim": 16, "f0": False, "sampling_rate": 16000,
        "dur_predictor_params": {"encoder_embed_dim": 16, "var_pred_hidden_dim": 16,
                                 "var_pred_kernel_size": 3, "var_pred_dropout": 0.5},
        **TRAINING_KEYS,
    },
    # Multi-speaker: a speaker embedding concatenated to the unit embedding; another shape.
    "multispkr": {
        "resblock": "1", "upsample_rates": [5, 4, 2], "upsample_kernel_sizes": [11, 8, 4],
        "upsample_initial_channel": 16, "resblock_kernel_sizes": [3, 5],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 2, 3]], "num_embeddings": 50, "embedding_dim": 8,
        "model_in_dim": 16, "multispkr": True, "num_speakers": 4, "sampling_rate": 16000,
        "dur_predictor_params": {"encoder_embed_dim": 8, "var_pred_hidden_dim": 8,
                                 "var_pred_kernel_size": 3, "var_pred_dropout": 0.5},
    },
    # Quantized f0 at twice the unit rate (units are repeated to the f0 rate), no duration predictor.
    "f0": {
        "resblock": "1", "upsample_rates": [4, 2], "upsample_kernel_sizes": [8, 4],
        "upsample_initial_channel": 8, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]],
        "num_embeddings": 20, "embedding_dim": 4, "model_in_dim": 8, "f0": True, "f0_quant_num_bin": 6,
        "sampling_rate": 16000,
    },
}


def _randomize(gen: CodeGenerator, seed: int) -> None:
    """Random weight-norm gains and a duration bias that gives durations of 1-4 (not all 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(0.5 + torch.rand(p.shape, generator=g))
        if gen.dur_predictor is not None:
            gen.dur_predictor.proj.weight.mul_(3.0)
            gen.dur_predictor.proj.bias.fill_(0.9)


def make(name: str, cfg: dict, seed: int) -> None:
    torch.manual_seed(seed)
    gen = CodeGenerator(cfg).eval()
    _randomize(gen, seed)
    ckpt, cfg_path = OUT / f"{name}.pt", OUT / f"{name}.config.json"
    torch.save({"generator": {k: v.clone() for k, v in gen.state_dict().items()}}, ckpt)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    torch.load(ckpt, map_location="cpu", weights_only=True)  # must stay loadable without pickle code

    vocoder = CodeHiFiGANVocoder(str(ckpt), cfg)  # strict load_state_dict + remove_weight_norm, like inference
    gen_t = torch.Generator().manual_seed(seed + 1)
    units = torch.randint(0, cfg["num_embeddings"], (24,), generator=gen_t)
    inputs: dict[str, torch.Tensor] = {}
    if cfg.get("multispkr"):
        inputs["spkr"] = torch.tensor([[2]])
    if cfg.get("f0"):
        inputs["f0"] = torch.randint(0, cfg["f0_quant_num_bin"], (1, 2 * len(units)), generator=gen_t)
    out = {"units": units}
    with torch.no_grad():
        out["wav"] = vocoder({"code": units[None].clone(), **inputs}, dur_prediction=False)
        if vocoder.model.dur_predictor is not None:
            out["wav_dur"] = vocoder({"code": units[None].clone(), **inputs}, dur_prediction=True)
            log_dur = vocoder.model.dur_predictor(vocoder.model.dict(units[None]))
            out["durations"] = torch.clamp(torch.round(torch.exp(log_dur) - 1).long(), min=1)[0]
    out.update({k: (v[0] if k == "f0" else v) for k, v in inputs.items()})
    save_file({k: v.contiguous() for k, v in out.items()}, str(OUT / f"{name}.expected.safetensors"))
    dur = out.get("durations")
    print(f"{name}: {len(units)} units -> {out['wav'].numel()} samples, |wav| max {out['wav'].abs().max():.3f}"
          + (f", durations {dur.tolist()}" if dur is not None else ""))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for i, (name, cfg) in enumerate(VARIANTS.items()):
        make(name, cfg, seed=1234 + i)
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
