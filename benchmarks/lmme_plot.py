"""Picture of LMME: which media tokens survive each pruning step, over the original token positions.

    python benchmarks/lmme_plot.py --model runs/nano-stage1-asr/final --speech examples/audio/question.wav \
        --prompt "<speech>" --keep 0.5 --gap 10 --out docs/mechanisms/lmme_kept.png

One row per pruning step (the prompt's text tokens are never dropped); colour = the attention a media token
received from the text queries at that step (grey: already dropped, black: dropped now).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from lyra_sdk import Lyra
from lyra_sdk.mechanisms.extraction import ExtractionOptions, LayerwiseLM, TopKExtractor, extract_forward
from lyra_sdk.prompt import Prompt


class RecordingExtractor(TopKExtractor):
    """The paper's top-k rule, remembering every step's scores and choices (batch of one, no padding)."""

    def __init__(self, options: ExtractionOptions) -> None:
        super().__init__(options)
        self.steps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def select(self, scores, media_mask):
        keep = super().select(scores, media_mask)
        self.steps.append((scores[0].float().cpu().numpy(), media_mask[0].cpu().numpy(), keep[0].cpu().numpy()))
        return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="saved model folder (default: build --config)")
    ap.add_argument("--config", default="examples/configs/lyra-nano.yaml")
    ap.add_argument("--speech", default="examples/audio/question.wav")
    ap.add_argument("--prompt", default="<speech>")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--gap", type=int, default=10)
    ap.add_argument("--min-keep", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("docs/mechanisms/lmme_kept.png"))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = Lyra.from_pretrained(args.model) if args.model else Lyra.from_config(args.config)
    batch = model.prepare([Prompt(args.prompt, {"speech": [args.speech]})])
    ext = RecordingExtractor(ExtractionOptions(keep=args.keep, gap=args.gap, min_keep=args.min_keep))
    with torch.no_grad():
        extract_forward(LayerwiseLM(model.llm), batch.inputs_embeds, batch.attention_mask, model.position_ids(batch),
                        batch.media_mask, ext)
    length = batch.inputs_embeds.shape[1]
    grid = np.full((len(ext.steps), length), np.nan)
    alive = np.arange(length)  # original positions of the current sequence
    dropped_marks = []
    for row, (scores, media, keep) in enumerate(ext.steps):
        cur = alive[-len(scores):] if len(alive) >= len(scores) else alive
        vals = np.where(media, scores, np.nan)
        grid[row, cur] = vals
        dropped_marks.append(cur[media & ~keep])
        alive = cur[keep]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.6 * len(ext.steps)), dpi=110)
    im = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis")
    for row, cols in enumerate(dropped_marks):
        ax.scatter(cols, [row] * len(cols), marker="|", color="black", s=40, linewidths=0.8)
    ax.set_yticks(range(len(ext.steps)), [f"after layer {args.gap * (i + 1)}" for i in range(len(ext.steps))])
    ax.set_xlabel("original token position (white: text or already dropped; black ticks: dropped at this step)")
    ax.set_title(f"LMME keep={args.keep}, gap={args.gap}: sequence of {length} tokens ({int(batch.media_mask.sum())} media) "
                 f"-> {len(alive)} after the last step")
    fig.colorbar(im, ax=ax, label="attention from text queries")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)


if __name__ == "__main__":
    main()
