"""The training loop: one mechanism for every stage; what trains comes from the config.

Loss = ce_weight * CE (answer tokens only) + lcmr_weight * LCMR (samples with a transcript) + ctc_weight * CTC
(samples with target units) + asr_ctc_weight * ASR-CTC (speech tokens over the vocabulary to the transcript); with
only LCMR and ASR-CTC no LLM forward runs (they read only the LLM's input embeddings).
AdamW, warmup + cosine, gradient accumulation and clipping, bf16 autocast where supported, optional gradient
checkpointing, periodic evaluation, JSONL logs, atomic checkpoints with exact
resume, and the same code under ``torchrun`` (DDP; FSDP on CUDA for models larger than one device).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from ..encoder_cache import EncoderCache
from ..errors import CheckpointError, ConfigError, LyraError
from ..fusion import IGNORE_INDEX
from ..interfaces import Modality
from ..prompt import build_segments, check_prompt
from . import distributed as dist_utils
from .checkpoint import TrainState, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import Sample, iterate, load_dataset

log = logging.getLogger(__name__)
CONFIG_NAME = "train_config.yaml"


class StepModule(nn.Module):
    """Computes the losses of one micro-batch; wrapped by DDP so every trained parameter is synchronised."""

    def __init__(self, lyra: nn.Module, cfg: TrainConfig, route: str | None) -> None:
        super().__init__()
        self.lyra = lyra
        self.cfg = cfg
        self.route = route
        self.asr_ctc_candidates: Tensor | None = None  # set by the Trainer from its training transcripts

    def forward(self, samples: Sequence[Sample], label_tokens_global: int, world: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss and its terms. CE is a sum over answer tokens / all answer tokens of the global batch x world,
        so DDP's gradient average equals single-process training on the same global batch."""
        lyra, lc = self.lyra, self.cfg.loss
        llm_free = lc.ce_weight == lc.ctc_weight == 0  # LCMR / ASR-CTC read only the input embeddings: no forward
        batch = lyra.prepare([s.prompt for s in samples], padding_side="right", route=self.route,
                             compress_speech=not llm_free)  # they read the uncompressed speech tokens anyway
        terms: dict[str, Tensor] = {}
        total = batch.inputs_embeds.sum() * 0.0
        if llm_free:
            return self._embedding_losses(total, terms, batch, samples)
        if lyra.extractor is not None and getattr(lyra.extractor, "enabled", True) and bool(batch.media_mask.any()):
            out, batch = _extracting_forward(lyra, batch)  # LMME in training: pruned tokens leave labels too
        else:
            out = lyra.llm(batch.inputs_embeds, batch.attention_mask, position_ids=lyra.position_ids(batch),
                           return_logits=False)
        total = total + out.hidden_states.sum() * 0.0
        if lc.ce_weight > 0:
            targets = batch.labels[:, 1:]
            keep = targets != IGNORE_INDEX  # logits only where a label is: the vocabulary projection is the cost
            logits = lyra.llm.logits(out.hidden_states[:, :-1][keep]).float()  # (N_labels, V)
            ce_sum = nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
            ce = ce_sum * world / max(1, label_tokens_global)
            terms["ce"] = ce
            total = total + lc.ce_weight * ce
        if lc.ctc_weight > 0:
            terms["ctc"] = self._ctc(batch, out.hidden_states, samples)
            total = total + lc.ctc_weight * terms["ctc"]
        return self._embedding_losses(total, terms, batch, samples)

    def _embedding_losses(self, total: Tensor, terms: dict[str, Tensor], batch: Any,
                          samples: Sequence[Sample]) -> tuple[Tensor, dict[str, Tensor]]:
        """Add the terms that compare speech tokens with the transcript's embeddings (LCMR, ASR-CTC)."""
        lc = self.cfg.loss
        if lc.lcmr_weight == lc.asr_ctc_weight == 0:
            return total, terms
        speech = _speech_rows(batch)
        ids = [self.lyra.llm.tokenizer.encode(s.transcript) if s.transcript else [] for s in samples]
        if lc.lcmr_weight > 0:
            terms["lcmr"] = self._lcmr(speech, ids, batch.inputs_embeds.device)
            total = total + lc.lcmr_weight * terms["lcmr"]
        if lc.asr_ctc_weight > 0:
            from ..mechanisms.vocab_ctc import vocab_ctc_loss

            sp, sp_mask = _pad(speech, batch.inputs_embeds.device)
            terms["asr_ctc"] = vocab_ctc_loss(sp, sp_mask, self.lyra.llm.input_embeddings().detach(), ids,
                                              lc.asr_ctc_temperature, lc.asr_ctc_blank,
                                              candidates=self._candidates(ids))
            total = total + lc.asr_ctc_weight * terms["asr_ctc"]
        return total, terms

    def _candidates(self, ids: Sequence[Sequence[int]]) -> Tensor | None:
        """ASR-CTC's candidate word pieces: this batch's, the training transcripts' (unless candidates=batch; an
        eval batch may hold others), plus ``asr_ctc_negatives`` random ones (a fixed draw when evaluating)."""
        lc = self.cfg.loss
        if lc.asr_ctc_candidates == "vocabulary":
            return None
        parts = [torch.tensor(sorted({v for t in ids for v in t}), dtype=torch.long)]
        if self.asr_ctc_candidates is not None:
            parts.append(self.asr_ctc_candidates)
        if lc.asr_ctc_negatives:
            gen = None if self.lyra.training else torch.Generator().manual_seed(0)
            vocab = self.lyra.llm.input_embeddings().shape[0]
            parts.append(torch.randint(0, vocab, (lc.asr_ctc_negatives,), generator=gen))
        return torch.unique(torch.cat(parts))

    def _lcmr(self, speech: Sequence[Tensor], ids: Sequence[Sequence[int]], dev: torch.device) -> Tensor:
        from ..mechanisms.lcmr import lcmr_loss

        lyra, lc = self.lyra, self.cfg.loss
        sp, sp_mask = _pad(speech, dev)
        text_ids, text_mask = _pad_ids(ids, lyra.llm.tokenizer.pad_token_id, dev)
        text = lyra.llm.embed_tokens(text_ids).detach()
        has = torch.tensor([bool(i) and len(x) > 0 for i, x in zip(ids, speech)], device=dev)
        vocab = lyra.llm.input_embeddings().detach() if lc.lcmr_softmax == "vocabulary" else None
        return lcmr_loss(sp, sp_mask, text, text_mask, has, temperature=lc.lcmr_temperature, gamma=lc.lcmr_gamma,
                         normalize=lc.lcmr_normalize, vocab_embeds=vocab, text_ids=text_ids if vocab is not None else None)

    def _ctc(self, batch: Any, hidden: Tensor, samples: Sequence[Sample]) -> Tensor:
        dec = self.lyra.speech_decoder
        eos = set(self.lyra.llm.tokenizer.eos_token_ids)
        rows, targets = [], []
        for b, s in enumerate(samples):
            if not s.units:
                continue
            pos = _answer_positions(batch.labels[b], eos)
            if pos:
                rows.append(hidden[b, pos])
                targets.append(s.units)
        if not rows:
            return hidden.sum() * 0.0
        h, mask = _pad(rows, hidden.device)
        return dec.loss(h, mask, targets)


def _speech_rows(batch: Any) -> list[Tensor]:
    """Each sample's speech tokens (all its speech spans, in order) from a fused batch: B tensors (n_b, D); those
    before CTC compression when the model compresses speech."""
    if batch.raw_speech is not None:
        return list(batch.raw_speech)
    return [torch.cat([batch.inputs_embeds[b, s.start : s.start + s.length] for s in spans
                       if s.modality is Modality.SPEECH] or [batch.inputs_embeds[b, :0]])
            for b, spans in enumerate(batch.spans)]


def _extracting_forward(lyra: Any, batch: Any) -> tuple[Any, Any]:
    """LLM forward with LMME token extraction; the batch's labels are gathered onto the surviving positions."""
    import dataclasses

    from ..interfaces import LLMOutput
    from ..mechanisms.extraction import LayerwiseLM, extract_forward, gather_kept

    res = extract_forward(LayerwiseLM(lyra.llm), batch.inputs_embeds, batch.attention_mask, lyra.position_ids(batch),
                          batch.media_mask, lyra.extractor)
    labels = gather_kept(batch.labels, res.kept)
    return LLMOutput(None, res.hidden), dataclasses.replace(batch, labels=labels)


def answer_tokens(lyra: Any, samples: Sequence[Sample]) -> int:
    """Number of labelled (answer) tokens in ``samples``: the CE normaliser."""
    system = lyra.config.system_prompt
    return sum(len(g.ids) for s in samples for g in build_segments(lyra.llm, s.prompt, system) if g.train)


def _answer_positions(labels: Tensor, eos: set[int]) -> list[int]:
    """Positions of the last labelled run (the final answer) up to its first stop token."""
    pos = (labels != IGNORE_INDEX).nonzero().squeeze(-1).tolist()
    if not pos:
        return []
    start = len(pos) - 1
    while start > 0 and pos[start - 1] == pos[start] - 1:
        start -= 1
    out = []
    for p in pos[start:]:
        if int(labels[p]) in eos:
            break
        out.append(p)
    return out


def _pad(rows: Sequence[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    n = max(1, max(r.shape[0] for r in rows))
    out = torch.zeros(len(rows), n, rows[0].shape[-1], device=device, dtype=rows[0].dtype)
    mask = torch.zeros(len(rows), n, dtype=torch.bool, device=device)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = True
    return out, mask


def _pad_ids(rows: Sequence[Sequence[int]], pad: int, device: torch.device) -> tuple[Tensor, Tensor]:
    n = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), n), pad, dtype=torch.long, device=device)
    mask = torch.zeros(len(rows), n, dtype=torch.bool, device=device)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = True
    return ids, mask


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total`` steps."""
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig`, checks it before any step, and trains."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, resume: bool = False,
                 on_log: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg, self.run_dir, self.on_log = cfg, Path(run_dir), on_log
        self.ctx = dist_utils.setup(cfg.run.device)
        self.device = self.ctx.device
        if not resume and list_checkpoints(self.run_dir / "checkpoints"):
            raise LyraError(f"{self.run_dir} already holds a run: resume it (lyra train --resume {self.run_dir}) "
                            "or choose another run.output_dir")
        torch.manual_seed(cfg.run.seed)
        self.lyra = self._build_model()
        self.route = cfg.run.lora_route
        if cfg.data.encoder_cache_mb > 0 or cfg.data.encoder_cache_dir:
            self.lyra.encoder_cache = EncoderCache(cfg.data.encoder_cache_mb * 2**20,
                                                   cfg.path(cfg.data.encoder_cache_dir))
        self._set_trainable()
        self._frozen_prefixes = self._freeze_zero_multipliers()
        self.params = [p for p in self.lyra.parameters() if p.requires_grad]
        if not self.params:
            frozen = (f" (lr multiplier 0 froze: {', '.join(sorted(self._frozen_prefixes))})"
                      if self._frozen_prefixes else "")
            raise ConfigError([("model.overrides", "this config trains nothing: set trainable: full (or lora with "
                                f"run.lora_route) on at least one component{frozen}")])
        self._check_losses()
        files = [cfg.data.train] if isinstance(cfg.data.train, str) else cfg.data.train
        self.train_set = [s for f in files
                          for s in load_dataset(cfg.path(f), cfg.path(cfg.data.media_root), cfg.data.max_length)]
        self.eval_set = (load_dataset(cfg.path(cfg.data.eval), cfg.path(cfg.data.media_root), cfg.data.max_length)
                         if cfg.data.eval else [])
        self._check_data()
        self.lyra.to(self.device)
        if cfg.run.gradient_checkpointing and hasattr(getattr(self.lyra.llm, "model", None), "gradient_checkpointing_enable"):
            self.lyra.llm.model.gradient_checkpointing_enable()
        self.asr_ctc_candidates = (self._transcript_ids() if cfg.loss.asr_ctc_weight > 0
                                   and cfg.loss.asr_ctc_candidates == "transcripts" else None)
        self.step_module = dist_utils.wrap(self._step_module(), self.ctx, cfg.run.strategy)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(o.warmup_steps, o.max_steps,
                                                                                     o.min_lr_ratio))
        self.state = TrainState()
        if resume:
            ckpts = list_checkpoints(self.run_dir / "checkpoints")
            if not ckpts:
                raise CheckpointError(f"nothing to resume in {self.run_dir}: no complete checkpoint")
            self.state = load_checkpoint(ckpts[-1], self.lyra, self.optimizer, self.scheduler)
            log.info("resumed from %s (step %d)", ckpts[-1], self.state.step)
            if self.ctx.rank == 0:
                _truncate_log(self.run_dir / "log.jsonl", self.state.step)
        self.autocast = self._autocast()

    # ------------------------------------------------------------------ setup helpers

    def _build_model(self) -> Any:
        from ..model import Lyra

        m = self.cfg.model
        if m.init_from is not None:
            return Lyra.from_pretrained(self.cfg.path(m.init_from), overrides=m.overrides)
        return Lyra.from_config(self.cfg.path(m.config), m.overrides)

    def _set_trainable(self) -> None:
        lyra, route = self.lyra, self.route
        lora_specs = [p for p, spec, _ in lyra.component_specs() if spec.trainable == "lora"]
        if route is None:
            if lora_specs:
                raise ConfigError([("run.lora_route", f"{lora_specs[0]} is trainable: lora, so name the LoRA route "
                                    "to train (e.g. run.lora_route=speech)")])
            if lyra.lora is not None:
                lyra.lora.requires_grad_(False)
            return
        if lyra.lora is None or route not in lyra.lora.routes:
            have = ", ".join(lyra.lora.routes) if lyra.lora is not None else "none (add a lora section to the model)"
            raise ConfigError([("run.lora_route", f"unknown LoRA route {route!r}; routes: {have}")])
        lyra.lora.mark_trainable(route)
        lc = self.cfg.loss
        if lc.ce_weight == lc.ctc_weight == 0:  # no LLM forward: only the route's projector copies can learn
            lyra.llm.requires_grad_(False)
            log.info("no LLM loss (ce_weight and ctc_weight 0): route %r keeps its LoRA weights, only its projector "
                     "copies train", route)
        owned = set(lyra.lora.options.adapters[route].projectors)
        for path, spec, module in lyra.component_specs():
            if spec.trainable == "full" and path != "llm" and not any(path == f"projectors.{m.value}" for m in owned):
                module.requires_grad_(True)

    def _multiplier_prefix(self, name: str) -> str | None:
        """The ``optim.lr_multipliers`` prefix that governs parameter ``name`` (the longest match), or None."""
        prefixes = sorted(self.cfg.optim.lr_multipliers, key=len, reverse=True)  # a few keys, set-up only
        return next((k for k in prefixes if name == k or name.startswith(k.rstrip(".") + ".")), None)

    def _freeze_zero_multipliers(self) -> set[str]:
        """Freeze the trainable parameters whose multiplier is 0 (no gradient, not in the optimizer); the
        component keeps its ``trainable`` setting, so what is saved does not change. Returns the prefixes used."""
        used: set[str] = set()
        for name, param in self.lyra.named_parameters():
            key = self._multiplier_prefix(name) if param.requires_grad else None
            if key is not None and self.cfg.optim.lr_multipliers[key] == 0:
                param.requires_grad_(False)
                used.add(key)
        for key in sorted(used):
            log.info("lr x0: %s frozen", key)
        return used

    def _param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters grouped by ``optim.lr_multipliers`` (longest matching name prefix wins); each group
        keeps its ``lr_multiplier``, so the logged base rate is derived from any group."""
        o = self.cfg.optim
        named = [(n, p) for n, p in self.lyra.named_parameters() if p.requires_grad]
        groups: dict[str | None, list[Tensor]] = {}
        for name, param in named:
            groups.setdefault(self._multiplier_prefix(name), []).append(param)
        unused = [k for k in o.lr_multipliers if k not in groups and k not in self._frozen_prefixes]
        if unused:
            have = sorted({".".join(n.split(".")[:2]) for n, _ in named})
            raise ConfigError([(f"optim.lr_multipliers.{k}", "matches no trainable parameter; trainable ones start "
                                f"with: {', '.join(have)}") for k in unused])
        out = []
        for key, params in groups.items():
            factor = o.lr_multipliers[key] if key is not None else 1.0
            out.append({"params": params, "lr": o.lr * factor, "lr_multiplier": factor})
            if key is not None:
                log.info("lr x%g for %d tensor(s) under %s", factor, len(params), key)
        return out

    def _step_module(self) -> StepModule:
        module = StepModule(self.lyra, self.cfg, self.route)
        module.asr_ctc_candidates = self.asr_ctc_candidates
        return module

    def _transcript_ids(self) -> Tensor:
        """Every word piece of the training transcripts (ASR-CTC's candidates), sorted."""
        tok = self.lyra.llm.tokenizer
        return torch.tensor(sorted({v for s in self.train_set if s.transcript for v in tok.encode(s.transcript)}),
                            dtype=torch.long)

    def _check_losses(self) -> None:
        lc = self.cfg.loss
        if lc.ctc_weight > 0 and self.lyra.speech_decoder is None:
            raise ConfigError([("loss.ctc_weight", "CTC loss asked for, but the model has no speech_decoder")])
        if lc.ce_weight == lc.lcmr_weight == lc.ctc_weight == lc.asr_ctc_weight == 0:
            raise ConfigError([("loss", "every loss weight is 0: nothing to train on")])
        if lc.ce_weight == lc.ctc_weight == 0 and any(p.requires_grad for p in self.lyra.llm.parameters()):
            raise ConfigError([("loss", "LCMR / ASR-CTC alone (ce_weight and ctc_weight 0) run no LLM forward, so "
                                "the LLM's trainable weights (LoRA or full) would get no gradient: train only "
                                "encoders and projectors with it, or give CE a weight")])

    def _check_data(self) -> None:
        lc = self.cfg.loss
        if lc.lcmr_weight > 0 and not any(s.transcript for s in self.train_set):
            raise ConfigError([("loss.lcmr_weight", "LCMR asked for, but no training record has speech_asr")])
        if lc.asr_ctc_weight > 0 and not any(s.transcript for s in self.train_set):
            raise ConfigError([("loss.asr_ctc_weight", "ASR-CTC asked for, but no training record has speech_asr")])
        if lc.ctc_weight > 0 and not any(s.units for s in self.train_set):
            raise ConfigError([("loss.ctc_weight", "CTC asked for, but no training record has tgt_unit")])
        for s in self.train_set[:1] + self.eval_set[:1]:
            check_prompt(s.prompt, self.lyra.modalities)

    def _autocast(self) -> contextlib.AbstractContextManager:
        p = self.cfg.run.precision
        bf16 = p == "bf16" or (p == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported())
        if bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ the loop

    def _label_tokens(self, samples: Sequence[Sample]) -> int:
        """Answer tokens of this rank's micro-batch, summed over ranks (exact DDP normalisation of CE)."""
        return dist_utils.all_reduce_int(answer_tokens(self.lyra, samples), self.ctx)

    def _micro(self, samples: Sequence[Sample], sync: bool) -> dict[str, float]:
        n_tokens = self._label_tokens(samples)
        ctx = contextlib.nullcontext() if sync or not hasattr(self.step_module, "no_sync") else self.step_module.no_sync()
        with ctx:
            with self.autocast:
                loss, terms = self.step_module(samples, n_tokens, self.ctx.world_size)
            (loss / self.cfg.optim.grad_accum).backward()
        return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean losses over the eval set (every term; each rank evaluates all of it)."""
        if not self.eval_set:
            return {}
        self.lyra.eval()
        sums: dict[str, float] = {}
        bs = self.cfg.optim.batch_size
        batches = [self.eval_set[i : i + bs] for i in range(0, len(self.eval_set), bs)]
        module = self._step_module()
        for chunk in batches:
            with self.autocast:
                loss, terms = module(chunk, answer_tokens(self.lyra, chunk), 1)
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        self.lyra.train()
        return {f"eval_{k}": v / len(batches) for k, v in sums.items()}

    def _emit(self, record: dict[str, Any]) -> None:
        self.state.history.append({k: v for k, v in record.items() if isinstance(v, (int, float))})
        if self.ctx.rank == 0:
            with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.on_log is not None and self.ctx.rank == 0:
            self.on_log(record)

    def save(self) -> None:
        """Checkpoint now (rank 0 writes; everyone waits)."""
        if self.ctx.rank == 0:
            save_checkpoint(self.run_dir / "checkpoints", self.lyra, self.optimizer, self.scheduler, self.state,
                            self.cfg.run.keep_last)
        dist_utils.barrier(self.ctx)

    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``optim.max_steps`` (or stop after step ``stop_at``, checkpointed, as an interruption would)."""
        cfg, o = self.cfg, self.cfg.optim
        if self.ctx.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.lyra.train()
        data = iterate(self.train_set, o.batch_size, self.ctx.world_size, self.ctx.rank, cfg.run.seed,
                       self.state.epoch, self.state.batch, cfg.data.group_by_length)
        t0 = time.time()
        if self.state.step == 0 and cfg.run.eval_every and self.eval_set:
            self._emit({"step": 0, **self.evaluate()})  # the baseline the curve starts from
        while self.state.step < o.max_steps:
            agg: dict[str, float] = {}
            for micro in range(o.grad_accum):
                epoch, b, samples = next(data)
                terms = self._micro(samples, sync=micro == o.grad_accum - 1)
                for k, v in terms.items():
                    agg[k] = agg.get(k, 0.0) + v / o.grad_accum
                self.state.epoch, self.state.batch = epoch, b + 1
            grad_norm = None
            if o.clip_grad_norm is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, o.clip_grad_norm))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.step += 1
            step = self.state.step
            if step % cfg.run.log_every == 0 or step == o.max_steps:
                base_lr = self.scheduler.get_last_lr()[0] / self.optimizer.param_groups[0].get("lr_multiplier", 1.0)
                self._emit({"step": step, "epoch": self.state.epoch, "lr": base_lr,
                            **agg, **({"grad_norm": grad_norm} if grad_norm is not None else {}),
                            "elapsed_s": round(time.time() - t0, 3)})
            if cfg.run.eval_every and step % cfg.run.eval_every == 0 and step < o.max_steps:
                self._emit({"step": step, **self.evaluate()})
            if cfg.run.save_every and step % cfg.run.save_every == 0 and step < o.max_steps:
                self.save()
            if stop_at is not None and step >= stop_at and step < o.max_steps:
                self.save()
                return {"stopped_at": step}
        final_eval = self.evaluate()
        if final_eval:
            self._emit({"step": self.state.step, **final_eval})
        self.save()
        if self.ctx.rank == 0:
            self.lyra.eval()
            self.lyra.save_pretrained(self.run_dir / "final")
            from .plot import plot_losses

            plot_losses(self.run_dir / "log.jsonl", self.run_dir / "loss.png")
        dist_utils.barrier(self.ctx)
        return {"steps": self.state.step, **final_eval}

    def close(self) -> None:
        """Tear down the process group if this trainer created one."""
        dist_utils.teardown(self.ctx)


def write_run_config(cfg: TrainConfig, run_dir: Path) -> None:
    """Save the resolved training config (absolute paths) so ``--resume RUN_DIR`` works from anywhere."""
    data = cfg.model_dump(mode="json")
    paths = (("model", ("config", "init_from")), ("data", ("train", "eval", "media_root", "encoder_cache_dir")))
    for section, keys in paths:
        for k in keys:
            value = data[section][k]
            if isinstance(value, list):
                data[section][k] = [str(cfg.path(v).resolve()) for v in value]
            elif value is not None:
                data[section][k] = str(cfg.path(value).resolve())
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_NAME).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _truncate_log(path: Path, step: int) -> None:
    """Drop the records a resumed run will write again (those after its checkpoint), so ``log.jsonl`` holds each
    step once; the file is replaced atomically and unparsable lines (a write cut short) are dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
    tmp.replace(path)
