"""Prompts: user text with media placeholders -> chat-templated segments of token ids and media slots."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import PromptError
from .interfaces import ChatMessage, LLMBackbone, Modality

PLACEHOLDER_RE = re.compile(r"<(" + "|".join(m.value for m in Modality) + r")>")
DEFAULT_SYSTEM: Any = object()
"""Sentinel for :attr:`Prompt.system`: use the config's system prompt."""


@dataclass
class Prompt:
    """One request.

    ``text`` is the user turn; each ``<speech>``, ``<image>``, ``<video>`` or ``<sound>`` in it is replaced by
    the next item of that modality in ``media`` (paths, or already-loaded media). ``system`` overrides the
    config's system prompt (None = no system turn). ``answer`` is the assistant turn for training (its tokens
    get labels); ``history`` holds earlier turns (their assistant turns get labels too when ``train_history``).
    """

    text: str
    media: Mapping[Modality | str, Sequence[Any]] = field(default_factory=dict)
    system: Any = DEFAULT_SYSTEM
    answer: str | None = None
    history: Sequence[ChatMessage] = ()
    train_history: bool = True

    def media_by_modality(self) -> dict[Modality, list[Any]]:
        """``media`` with keys normalised to :class:`Modality` and empty lists dropped."""
        out: dict[Modality, list[Any]] = {}
        for key, items in self.media.items():
            try:
                m = Modality(key)
            except ValueError:
                valid = ", ".join(x.value for x in Modality)
                raise PromptError(f"unknown modality {key!r}; valid: {valid}") from None
            items = list(items) if not isinstance(items, (str, bytes)) else [items]
            if items:
                out[m] = items
        return out


@dataclass
class Segment:
    """A run of text token ids, or one media slot (``modality`` set, ``index`` = item index within the prompt)."""

    ids: list[int] = field(default_factory=list)
    modality: Modality | None = None
    index: int = -1
    train: bool = False


def count_placeholders(text: str) -> dict[Modality, int]:
    """How many placeholders of each modality ``text`` holds."""
    counts: dict[Modality, int] = {}
    for m in PLACEHOLDER_RE.findall(text):
        counts[Modality(m)] = counts.get(Modality(m), 0) + 1
    return counts


def check_prompt(prompt: Prompt, available: set[Modality], index: int = 0) -> dict[Modality, list[Any]]:
    """Every placeholder has its media and every medium its placeholder; the model can encode each modality."""
    media = prompt.media_by_modality()
    counts = count_placeholders(prompt.text + "".join(h.content for h in prompt.history))
    where = f"prompt {index}: " if index else ""
    for m in sorted(set(counts) | set(media), key=lambda x: x.value):
        n_ph, n_media = counts.get(m, 0), len(media.get(m, []))
        if n_ph != n_media:
            if n_media == 0:
                raise PromptError(f"{where}the prompt has {n_ph} {m.placeholder} placeholder(s) but no {m.value} was given")
            if n_ph == 0:
                raise PromptError(f"{where}{n_media} {m.value} input(s) given but the prompt has no {m.placeholder} "
                                  f"placeholder: put {m.placeholder} where the {m.value} belongs")
            raise PromptError(f"{where}the prompt has {n_ph} {m.placeholder} placeholder(s) but {n_media} {m.value} input(s)")
        if m not in available:
            have = ", ".join(sorted(x.value for x in available)) or "none"
            raise PromptError(f"{where}this model has no {m.value} encoder (it accepts: {have})")
    return media


def build_segments(llm: LLMBackbone, prompt: Prompt, system: str | None) -> list[Segment]:
    """Chat-template the prompt and split it into text ids and media slots.

    Without an answer the rendering ends with the generation prompt. With one, the answer is the final
    assistant turn and every assistant turn (the answer, and earlier ones when ``prompt.train_history``) gets
    ``train=True`` including its end-of-turn token, located by rendering conversation prefixes.
    """
    def wrap(text: str) -> str:
        def sub(mo: re.Match) -> str:
            pre, post = llm.media_wrappers.get(Modality(mo.group(1)), ("", ""))
            return f"{pre}{mo.group(0)}{post}"

        return PLACEHOLDER_RE.sub(sub, text)

    messages = [ChatMessage("system", system)] if system is not None else []
    messages += [ChatMessage(h.role, wrap(h.content) if h.role == "user" else h.content) for h in prompt.history]
    messages.append(ChatMessage("user", wrap(prompt.text)))
    spans: list[tuple[int, int]] = []
    if prompt.answer is None:
        rendered = llm.format_chat(messages, add_generation_prompt=True)
    else:
        messages.append(ChatMessage("assistant", prompt.answer))
        rendered = llm.format_chat(messages, add_generation_prompt=False)
        for k, msg in enumerate(messages):
            if msg.role != "assistant" or (k < len(messages) - 1 and not prompt.train_history):
                continue
            before = llm.format_chat(messages[:k], add_generation_prompt=True)
            upto = llm.format_chat(messages[: k + 1], add_generation_prompt=False)
            if not (rendered.startswith(upto) and upto.startswith(before)):
                raise PromptError("the chat template does not render conversation prefixes as prefixes, so "
                                  "assistant turns cannot be located for labels")
            spans.append((len(before), len(upto)))

    def trained(pos: int) -> bool:
        return any(a <= pos < b for a, b in spans)

    cuts = sorted({0, len(rendered), *[x for span in spans for x in span]})
    segments: list[Segment] = []
    counters: dict[Modality, int] = {}
    for a, b in zip(cuts, cuts[1:]):
        piece, train, pos = rendered[a:b], trained(a), 0
        matches = [] if train else list(PLACEHOLDER_RE.finditer(piece))
        for mo in matches:
            if mo.start() > pos:
                segments.append(Segment(ids=llm.tokenizer.encode(piece[pos : mo.start()])))
            m = Modality(mo.group(1))
            segments.append(Segment(modality=m, index=counters.get(m, 0)))
            counters[m] = counters.get(m, 0) + 1
            pos = mo.end()
        if pos < len(piece):
            segments.append(Segment(ids=llm.tokenizer.encode(piece[pos:]), train=train))
    return segments
