"""Write golden fixtures for ``lyra-imagebind`` from Meta's reference ImageBind code.

Run it where the reference imports (``pip install imagebind-unofficial`` with torchvision, torchaudio,
pytorchvideo, timm, einops, ftfy, regex, iopath, soundfile; ``torchaudio.load`` must work, i.e. torchaudio < 2.9
or torchcodec installed; e.g. a GPU image; CPU is enough)::

    python plugins/encoders/imagebind/scripts/make_golden.py [--out plugins/encoders/imagebind/tests/golden]

It builds the reference ``ImageBindModel`` with a tiny configuration for every modality and seeded, perturbed
random weights, decodes a seeded 1.1 s test signal through the reference ``load_and_transform_audio_data``
(clip sampler, torchaudio Kaldi fbank, padding, normalisation) and runs the reference audio branch. It writes:

* ``imagebind_audio_tiny.pth``: the audio keys of the state dict plus a few keys of other modalities (the loader
  must ignore them), exactly as ``imagebind_huge.pth`` names them;
* ``imagebind_audio_tiny_io.safetensors``: ``waveform`` (n,), ``fbank`` (clips, 1, M, T), ``tokens`` (clips, L, D)
  (trunk output), ``clip_embeddings`` (clips, out) and ``embedding`` (1, out) (the model's output: clip mean);
* ``imagebind_audio_tiny.json``: the ``imagebind-audio`` options that describe this tiny model, and versions.

All together they stay under 150 KB. ``tests/test_imagebind_model.py::test_golden_fixture`` checks them.

``--model-only``: where only the reference *model* code imports (``imagebind.models``; ``imagebind.data`` needs
torchaudio, torchvision and pytorchvideo), the spectrograms come from ``lyra_imagebind.fbank`` instead and the
JSON says so (``fbank_source``); the test then checks tokens and embeddings against the reference but not the
fbank. ``--note`` records how the reference was run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("make_golden")

SR = 16000
TINY = dict(embed_dim=16, num_blocks=2, num_heads=2, mlp_dim=64, out_embed_dim=8, num_mel_bins=32, target_length=48,
            kernel_size=16, stride=10)
CLIPS, CLIP_SECONDS, SECONDS = 3, 0.5, 1.1  # 0.5 s = 8000 samples -> 48 frames; clips overlap (in-place mean)
OTHER_KEYS = ("modality_preprocessors.vision.cls_token", "modality_heads.vision.2.weight",
              "modality_postprocessors.text.1.log_logit_scale")


def _reference_model():
    from imagebind.models.imagebind_model import ImageBindModel

    t = TINY
    small = dict(embed_dim=16, num_blocks=1, num_heads=2)  # every other modality: as small as it builds
    return ImageBindModel(
        video_frames=2, kernel_size=(2, 14, 14), audio_kernel_size=t["kernel_size"], audio_stride=t["stride"],
        out_embed_dim=t["out_embed_dim"], audio_embed_dim=t["embed_dim"], audio_num_blocks=t["num_blocks"],
        audio_num_heads=t["num_heads"], audio_num_mel_bins=t["num_mel_bins"], audio_target_len=t["target_length"],
        audio_drop_path=0.0,
        vision_embed_dim=small["embed_dim"], vision_num_blocks=1, vision_num_heads=2,
        text_embed_dim=small["embed_dim"], text_num_blocks=1, text_num_heads=2,
        depth_embed_dim=small["embed_dim"], depth_num_blocks=1, depth_num_heads=2,
        thermal_embed_dim=small["embed_dim"], thermal_num_blocks=1, thermal_num_heads=2,
        imu_embed_dim=small["embed_dim"], imu_num_blocks=1, imu_num_heads=2,
    )


def _signal() -> np.ndarray:
    t = np.arange(round(SECONDS * SR)) / SR
    rng = np.random.default_rng(0)
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t) + 0.05 * rng.standard_normal(t.shape)
    return (x + 0.02).astype(np.float32)


def _reference_fbanks(wave: np.ndarray) -> torch.Tensor:
    """The reference data pipeline on a float32 WAV file: (1, clips, 1, M, T)."""
    import soundfile as sf
    from imagebind import data

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "signal.wav"
        sf.write(path, wave, SR, subtype="FLOAT")
        return data.load_and_transform_audio_data(
            [str(path)], "cpu", num_mel_bins=TINY["num_mel_bins"], target_length=TINY["target_length"],
            sample_rate=SR, clip_duration=CLIP_SECONDS, clips_per_video=CLIPS)


def _reference_version() -> str:
    from importlib import metadata

    for dist in ("imagebind-unofficial", "imagebind"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "imagebind (not installed as a distribution; see note)"


def main(argv: list[str] | None = None) -> int:
    """Build the reference, run it, write the three fixture files; 1 when the reference cannot be imported."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "golden")
    parser.add_argument("--model-only", action="store_true",
                        help="use lyra_imagebind's fbank when the reference imagebind.data cannot import")
    parser.add_argument("--note", default="", help="how the reference was run (stored in the JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import imagebind.models.imagebind_model  # noqa: F401
    except ImportError as exc:
        log.error("the reference ImageBind model code does not import here (%s); install imagebind-unofficial", exc)
        return 1
    try:
        import imagebind.data  # noqa: F401  (needs torchaudio, torchvision, pytorchvideo)
        data_error = None
    except ImportError as exc:
        data_error = exc
    if data_error is not None and not args.model_only:
        log.error("imagebind.data does not import (%s): install torchaudio, torchvision and pytorchvideo, or pass "
                  "--model-only to take the spectrograms from lyra_imagebind.fbank", data_error)
        return 1
    torch.manual_seed(0)
    model = _reference_model().eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():  # break the init's symmetries (zero biases, unit LayerNorms)
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    wave = _signal()
    if data_error is None:
        fbank, source = _reference_fbanks(wave), "reference imagebind.data"  # (1, clips, 1, M, T)
    else:
        from lyra_imagebind.fbank import audio_to_fbanks

        fbank = audio_to_fbanks(torch.from_numpy(wave), CLIPS, CLIP_SECONDS, TINY["num_mel_bins"],
                                TINY["target_length"])[None]
        source = f"lyra_imagebind.fbank (reference imagebind.data not importable: {data_error})"
    with torch.no_grad():
        embedding = model({"audio": fbank})["audio"]  # (1, out): the clip mean
        flat = fbank[0]  # (clips, 1, M, T)
        pre = model.modality_preprocessors["audio"](audio=flat)
        tokens = model.modality_trunks["audio"](**pre["trunk"])  # (clips, L, D)
        clip_emb = model.modality_postprocessors["audio"](model.modality_heads["audio"](tokens, **pre["head"]))
    state = {k: v for k, v in model.state_dict().items() if ".audio." in k or k in OTHER_KEYS}
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out / "imagebind_audio_tiny.pth")
    from safetensors.torch import save_file

    save_file({"waveform": torch.from_numpy(wave), "fbank": flat.contiguous(), "tokens": tokens.contiguous(),
               "clip_embeddings": clip_emb.contiguous(), "embedding": embedding.contiguous()},
              str(args.out / "imagebind_audio_tiny_io.safetensors"))
    meta = {"options": {**TINY, "clips": CLIPS, "clip_seconds": CLIP_SECONDS}, "fbank_source": source,
            "reference": _reference_version(), "note": args.note,
            "versions": {"torch": torch.__version__}}
    (args.out / "imagebind_audio_tiny.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    total = sum(f.stat().st_size for f in args.out.iterdir())
    log.info("wrote %s (%d bytes in all)", args.out, total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
