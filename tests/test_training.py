"""Training: data validation before any step, loss falls, exact resume, 2-process DDP equals 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file

from lyra_sdk import ConfigError, Lyra
from lyra_sdk.training import DataError, TrainConfig, Trainer
from lyra_sdk.training.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
TINY_SPEECH = ROOT / "examples" / "configs" / "tiny-speech.yaml"
WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """12 tone clips whose pitch encodes a two-word transcript."""
    d = tmp_path_factory.mktemp("data")
    (d / "audio").mkdir()
    recs = []
    for i in range(12):
        a, b = WORDS[i % 8], WORDS[(i * 3 + 1) % 8]
        t = np.arange(16000) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (200 + 60 * (i % 8)) * t) + 0.2 * np.sin(2 * np.pi * (900 + 70 * (i * 3 % 8)) * t)
        sf.write(d / "audio" / f"{i}.wav", wav.astype(np.float32), 16000)
        recs.append({"id": f"r{i}", "speech": f"audio/{i}.wav", "speech_asr": f"{a} {b}",
                     "conversations": [{"from": "human", "value": "<speech>\nRecord the spoken words as text."},
                                       {"from": "gpt", "value": f"{a} {b}"}]})
    (d / "train.json").write_text(json.dumps(recs))
    (d / "eval.json").write_text(json.dumps(recs[:4]))
    return d


def _cfg(data_dir: Path, out: Path, **over) -> TrainConfig:
    data = {"stage": "test", "model": {"config": str(TINY_SPEECH), "overrides": over.pop("model_overrides", [
                "projectors.speech.trainable=full", "llm.trainable=full"])},
            "data": {"train": str(data_dir / "train.json"), "eval": str(data_dir / "eval.json")},
            "optim": {"lr": 3e-3, "max_steps": 6, "batch_size": 4, "warmup_steps": 1},
            "run": {"output_dir": str(out), "seed": 0}}
    for k, v in over.items():
        section, key = k.split("__")
        data.setdefault(section, {})[key] = v
    return TrainConfig.from_dict(data)


def test_loss_falls_and_run_folder(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path / "run", optim__max_steps=25, optim__lr=1e-2)
    trainer = Trainer(cfg, tmp_path / "run")
    result = trainer.train()
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.6 * losses[0], losses  # tiny model memorising 12 transcripts
    assert "eval_loss" in result and (tmp_path / "run" / "loss.png").stat().st_size > 1000
    again = Lyra.from_pretrained(tmp_path / "run" / "final")
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in trainer.lyra.parameters())


def test_resume_is_exact(data_dir, tmp_path):
    full = Trainer(_cfg(data_dir, tmp_path / "a", optim__grad_accum=2), tmp_path / "a")
    full.train()
    part = Trainer(_cfg(data_dir, tmp_path / "b", optim__grad_accum=2), tmp_path / "b")
    assert part.train(stop_at=3) == {"stopped_at": 3}
    assert [p.name for p in list_checkpoints(tmp_path / "b" / "checkpoints")] == ["step-000003"]
    with open(tmp_path / "b" / "log.jsonl", "a") as f:  # the run went on past its checkpoint, then died mid-write
        f.write(json.dumps({"step": 4, "loss": 9.0}) + "\n" + '{"step": 5, "lo')
    resumed = Trainer(_cfg(data_dir, tmp_path / "b", optim__grad_accum=2), tmp_path / "b", resume=True)
    assert resumed.state.step == 3
    resumed.train()
    a = load_file(str(list_checkpoints(tmp_path / "a" / "checkpoints")[-1] / "trainable.safetensors"))
    b = load_file(str(list_checkpoints(tmp_path / "b" / "checkpoints")[-1] / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def records(run: str) -> list[dict]:
        lines = (tmp_path / run / "log.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in lines]

    assert records("b") == records("a")  # each step logged once, with the uninterrupted run's values


def test_lr_multipliers_scale_their_groups(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path / "m", optim__max_steps=2, optim__warmup_steps=0, optim__min_lr_ratio=1.0,
               optim__lr_multipliers={"projectors.speech": 0.25, "llm.model.model.layers.0": 2.0})
    trainer = Trainer(cfg, tmp_path / "m")
    by_lr = {round(g["lr"], 9): sum(p.numel() for p in g["params"]) for g in trainer.optimizer.param_groups}
    proj = sum(p.numel() for p in trainer.lyra.projectors["speech"].parameters())
    layer0 = sum(p.numel() for p in trainer.lyra.llm.model.model.layers[0].parameters())
    assert by_lr[0.00075] == proj and by_lr[0.006] == layer0
    assert sum(by_lr.values()) == sum(p.numel() for p in trainer.params)
    before = {n: p.detach().clone() for n, p in trainer.lyra.named_parameters() if p.requires_grad}
    trainer.train()
    log = [json.loads(x) for x in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log if "lr" in r] == pytest.approx([3e-3, 3e-3])  # the base rate, not a group's
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in trainer.lyra.named_parameters() if n in before}
    assert all(v > 0 for v in moved.values())
    with pytest.raises(ConfigError, match=r"optim.lr_multipliers.encoders.speech: matches no trainable parameter.*"
                                          r"projectors.speech"):
        Trainer(_cfg(data_dir, tmp_path / "x", optim__lr_multipliers={"encoders.speech": 0.1}), tmp_path / "x")
    with pytest.raises(ConfigError, match="lr multiplier"):
        _cfg(data_dir, tmp_path / "x", optim__lr_multipliers={"llm": -0.5})


def test_a_zero_lr_multiplier_freezes_and_keeps_the_saved_layout(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path / "z", optim__max_steps=2, optim__warmup_steps=0,
               optim__lr_multipliers={"projectors.speech": 0, "projectors.speech.linear2": 1.0})
    trainer = Trainer(cfg, tmp_path / "z")
    proj = trainer.lyra.projectors["speech"]
    frozen = {n: p.detach().clone() for n, p in proj.named_parameters() if not n.startswith("linear2.")}
    assert frozen and not any(p.requires_grad for n, p in proj.named_parameters() if n in frozen)
    assert all(p.requires_grad for p in proj.linear2.parameters())  # the longer prefix wins
    in_optim = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optim for n, p in proj.named_parameters() if n in frozen)
    first = proj.linear2.weight.detach().clone()
    trainer.train()
    assert all(torch.equal(p, frozen[n]) for n, p in proj.named_parameters() if n in frozen)
    assert not torch.equal(proj.linear2.weight, first)
    saved = load_file(str(tmp_path / "z" / "final" / "model.safetensors"))
    assert any(k.startswith("projectors.speech.") for k in saved)  # still saved as a trained component
    with pytest.raises(ConfigError, match=r"trains nothing.*lr multiplier 0 froze: projectors.speech"):
        Trainer(_cfg(data_dir, tmp_path / "y", model_overrides=["projectors.speech.trainable=full"],
                     optim__lr_multipliers={"projectors.speech": 0}), tmp_path / "y")


def test_errors_before_any_step(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="trains nothing"):
        Trainer(_cfg(data_dir, tmp_path / "r", model_overrides=[]), tmp_path / "r")
    bad = json.loads((data_dir / "train.json").read_text())
    bad[3]["conversations"] = [{"from": "human", "value": "<speech>"}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    cfg = _cfg(data_dir, tmp_path / "r", data__train=str(tmp_path / "bad.json"), data__media_root=str(data_dir))
    with pytest.raises(DataError, match=r"bad.json: record 3 \(id 'r3'\): field 'conversations'"):
        Trainer(cfg, tmp_path / "r")
    missing = json.loads((data_dir / "train.json").read_text())
    missing[5]["speech"] = "audio/nope.wav"
    (data_dir / "missing.json").write_text(json.dumps(missing))
    cfg = _cfg(data_dir, tmp_path / "r", data__train=str(data_dir / "missing.json"))
    with pytest.raises(DataError, match="record 5.*'speech'.*media file not found"):
        Trainer(cfg, tmp_path / "r")
    cfg = _cfg(data_dir, tmp_path / "r", loss__ctc_weight=1.0)
    with pytest.raises(ConfigError, match="no speech_decoder"):
        Trainer(cfg, tmp_path / "r")
    assert not (tmp_path / "r" / "log.jsonl").exists()


def test_cli_train_and_resume(data_dir, tmp_path, capsys):
    from lyra_sdk.cli import run_cli

    cfg = _cfg(data_dir, tmp_path / "cli", data__train=[str(data_dir / "train.json"), str(data_dir / "eval.json")])
    f = tmp_path / "train.yaml"
    f.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert run_cli(["train", str(f), "optim.max_steps=4", "--stop-at", "2"]) == 0
    assert "resume with" in capsys.readouterr().err
    assert run_cli(["train", "--resume", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "final" / "model.safetensors").exists()
    assert run_cli(["train", str(f), "optim.nope=1"]) == 2
    assert "optim.nope" in capsys.readouterr().err


_DDP = """
import sys, json
from pathlib import Path
from lyra_sdk.training import TrainConfig, Trainer
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
t = Trainer(cfg, Path(cfg.run.output_dir))
t.train()
t.close()
"""


def test_two_process_ddp_equals_single_process(data_dir, tmp_path):
    single = _cfg(data_dir, tmp_path / "one", optim__batch_size=4, optim__max_steps=3,
                  data__eval=None, data__group_by_length=False)
    Trainer(single, tmp_path / "one").train()
    two = _cfg(data_dir, tmp_path / "two", optim__batch_size=2, optim__max_steps=3,
               data__eval=None, data__group_by_length=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = tmp_path / "ddp.py"
    script.write_text(_DDP)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29531", str(script), json.dumps(two.model_dump(mode="json"))],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    a = load_file(str(list_checkpoints(tmp_path / "one" / "checkpoints")[-1] / "trainable.safetensors"))
    b = load_file(str(list_checkpoints(tmp_path / "two" / "checkpoints")[-1] / "trainable.safetensors"))
    # Adam divides each gradient by its own running RMS, so an element whose gradient is near zero turns float
    # reduction-order differences (2 processes x 2 samples vs 1 x 4) into visible weight differences (2.4e-5 once
    # seen on one element of 8192); one step moves a weight by up to lr = 3e-3, so 1e-4 still catches a missing,
    # doubled or wrongly normalised step.
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-4)


def test_training_with_lmme_extraction(data_dir, tmp_path):
    over = ["projectors.speech.trainable=full", "llm.trainable=full", "extraction.plugin=topk",
            "extraction.options.keep=0.5", "extraction.options.gap=1", "extraction.options.min_keep=2"]
    trainer = Trainer(_cfg(data_dir, tmp_path / "x", model_overrides=over, optim__max_steps=3), tmp_path / "x")
    assert trainer.lyra.extractor is not None
    trainer.train()
    log = [json.loads(x) for x in (tmp_path / "x" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)


def test_lcmr_alone_over_the_vocabulary_pre_aligns_the_projector_without_an_llm_forward(data_dir, tmp_path, monkeypatch):
    cfg = _cfg(data_dir, tmp_path / "run", model_overrides=["projectors.speech.trainable=full"],
               loss__ce_weight=0.0, loss__lcmr_weight=1.0, loss__lcmr_softmax="vocabulary",
               optim__max_steps=20, optim__lr=1e-2,
               data__train=[str(data_dir / "train.json"), str(data_dir / "eval.json")])  # several files pool
    trainer = Trainer(cfg, tmp_path / "run")
    assert len(trainer.train_set) == 12 + 4

    def no_forward(*a, **k):
        raise AssertionError("LCMR alone must not run the LLM")

    from lyra_sdk.interfaces import LLMBackbone

    llm = trainer.lyra.llm  # the table LCMR reads: the HF backbone's matrix equals embedding every id
    assert torch.equal(llm.input_embeddings(), LLMBackbone.input_embeddings(llm))
    with pytest.raises(ConfigError, match="data.train"):
        _cfg(data_dir, tmp_path / "r3", data__train=[])
    monkeypatch.setattr(trainer.lyra.llm, "forward", no_forward)
    before = {k: v.clone() for k, v in trainer.lyra.llm.state_dict().items()}
    trainer.train()
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    lcmr = [r["lcmr"] for r in log if "lcmr" in r and "loss" in r]
    assert lcmr[-1] < 0.7 * lcmr[0], lcmr
    assert all(torch.equal(before[k], v) for k, v in trainer.lyra.llm.state_dict().items())
    # LoRA / LLM weights would get no gradient from LCMR alone: refused before any step
    cfg = _cfg(data_dir, tmp_path / "r2", loss__ce_weight=0.0, loss__lcmr_weight=1.0)
    with pytest.raises(ConfigError, match="run no LLM forward"):
        Trainer(cfg, tmp_path / "r2")


@pytest.fixture(scope="module")
def word_tones(tmp_path_factory, write_word_tones):
    """12 clips of two tones in turn (0.5 s each, 0.2 s apart), each tone standing for a word: "red blue" etc."""
    return write_word_tones(tmp_path_factory.mktemp("tones"), 12)


def test_asr_ctc_trains_the_projector_to_read_out_the_transcript_without_an_llm_forward(word_tones, tmp_path,
                                                                                        monkeypatch):
    from lyra_sdk.interfaces import Modality
    from lyra_sdk.mechanisms import vocab_ctc_decode

    cfg = _cfg(word_tones, tmp_path / "run", model_overrides=["projectors.speech.trainable=full"],
               loss__ce_weight=0.0, loss__asr_ctc_weight=1.0, loss__asr_ctc_temperature=0.01,
               optim__max_steps=150, optim__lr=1e-2, optim__warmup_steps=5, optim__batch_size=12,
               data__eval=None)
    trainer = Trainer(cfg, tmp_path / "run")

    def no_forward(*a, **k):
        raise AssertionError("ASR-CTC alone must not run the LLM")

    monkeypatch.setattr(trainer.lyra.llm, "forward", no_forward)
    trainer.train()
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    ctc = [r["asr_ctc"] for r in log if "asr_ctc" in r and "loss" in r]
    assert ctc[-1] < 0.3 * ctc[0], ctc
    # what the trained projector "says", read out greedily over the vocabulary: the training transcripts
    lyra, tok = trainer.lyra, trainer.lyra.llm.tokenizer
    lyra.eval()
    right = 0
    with torch.no_grad():
        for s in trainer.train_set:
            media = s.prompt.media.get(Modality.SPEECH) or s.prompt.media["speech"]
            (tokens, _), = lyra.encode_media(Modality.SPEECH, [media[0]])
            ids = vocab_ctc_decode(tokens[None], torch.ones(1, len(tokens), dtype=torch.bool),
                                   lyra.llm.input_embeddings(), 0.01)[0]
            said, truth = tok.decode(ids).split(), s.transcript.split()
            right += sum(a == b for a, b in zip(said, truth)) if len(said) == len(truth) else 0
    assert right >= 12, right  # words in place, of 24 (chance: 1 in 150,000)
    # CTC compression on this projector: the LLM reads fewer tokens, ASR-CTC still scores all of them
    from lyra_sdk.mechanisms.ctc_compression import SpeechCompressionOptions
    from lyra_sdk.training.trainer import StepModule

    monkeypatch.undo()  # the LLM runs now: CE on, so the step fuses (compressed) speech for the LLM
    samples = trainer.train_set[:4]
    with_ce = cfg.model_copy(deep=True)
    with_ce.loss.ce_weight = 1.0
    step = StepModule(lyra, with_ce, None)
    with torch.no_grad():
        plain = lyra.prepare([s.prompt for s in samples], padding_side="right")
        _, plain_terms = step(samples, 1, 1)
        lyra.config.speech_compression = SpeechCompressionOptions(temperature=0.01)
        try:
            packed = lyra.prepare([s.prompt for s in samples], padding_side="right")
            _, packed_terms = step(samples, 1, 1)
        finally:
            lyra.config.speech_compression = None
    for b in range(len(samples)):
        n_plain, n_packed = int(plain.media_mask[b].sum()), int(packed.media_mask[b].sum())
        assert 1 <= n_packed < n_plain, (n_packed, n_plain)
        torch.testing.assert_close(packed.raw_speech[b], plain.inputs_embeds[b][plain.media_mask[b]])
    assert plain.raw_speech is None
    torch.testing.assert_close(packed_terms["asr_ctc"], plain_terms["asr_ctc"])
    assert not torch.equal(packed_terms["ce"], plain_terms["ce"])  # the LLM did read the compressed tokens
    with pytest.raises(ConfigError, match="asr_ctc_weight"):  # a negative weight is refused at load
        _cfg(word_tones, tmp_path / "r2", loss__asr_ctc_weight=-1.0)


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "training").glob("*.yaml")), ids=lambda p: p.name)
def test_example_training_configs_validate(path):
    cfg = TrainConfig.load(path)  # schema only: the data and start folders are made by the documented scripts
    assert cfg.optim.max_steps > 0 and cfg.stage
    assert cfg.path(cfg.data.train if isinstance(cfg.data.train, str) else cfg.data.train[0]).name.endswith(".json")


def test_asr_ctc_alone_on_a_lora_route_trains_only_its_projector_copy(word_tones, tmp_path, monkeypatch):
    cfg = _cfg(word_tones, tmp_path / "run", model_overrides=["llm.trainable=lora", "lora.adapters.speech.r=4"],
               loss__ce_weight=0.0, loss__asr_ctc_weight=1.0, optim__max_steps=3, optim__lr=1e-2,
               run__lora_route="speech", data__eval=None)
    trainer = Trainer(cfg, tmp_path / "run")
    params = dict(trainer.lyra.named_parameters())
    trained = {n for n, p in params.items() if p.requires_grad}
    assert trained and not any("lora_" in n for n in trained), sorted(trained)[:5]
    before = {n: p.detach().clone() for n, p in params.items()}

    def no_forward(*a, **k):
        raise AssertionError("ASR-CTC alone must not run the LLM")

    monkeypatch.setattr(trainer.lyra.llm, "forward", no_forward)
    trainer.train()
    changed = {n for n, p in trainer.lyra.named_parameters() if not torch.equal(before[n], p)}
    assert changed and changed <= trained
