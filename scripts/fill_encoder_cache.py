"""Encode a dataset's speech once into a trainer's on-disk encoder cache, in parallel processes.

    python scripts/fill_encoder_cache.py examples/configs/lyra-nano.yaml runs/encoder-cache/nano \\
        examples/data/nano/stage1_wordlists.json --workers 2

``lyra train`` with ``data.encoder_cache_dir`` fills the cache itself, but on its first epoch and in one
process. This does the same encoding beforehand (the frozen encoder of MODEL, through the same
:meth:`lyra_sdk.Lyra.encode_media` and cache keys, so the trainer finds every clip), ``--workers`` processes of
one thread each. Clips already cached are skipped. Progress goes to stderr. For a run that trains the
encoder's last blocks (``encoders.speech.trainable=top``), pass the same ``--override`` options: the cache then
holds the frozen stem's hidden states, as that run reads them.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _work(args: tuple[str, str, list[str], int, int, int, list[str]]) -> int:
    import torch

    from lyra_sdk import Lyra
    from lyra_sdk.encoder_cache import EncoderCache
    from lyra_sdk.interfaces import Modality

    model_path, cache_dir, paths, shard, shards, batch, overrides = args
    torch.set_num_threads(1)
    model = (Lyra.from_pretrained(model_path, overrides=overrides) if Path(model_path).is_dir()
             else Lyra.from_config(model_path, overrides))
    model.eval()
    model.encoder_cache = cache = EncoderCache(0, cache_dir)
    spec = model.config.encoders[Modality.SPEECH]
    top = spec.top_layers if spec.trainable == "top" else None
    mine = paths[shard::shards]
    todo = [p for p in mine if cache.get(EncoderCache.key("speech", p), model.encoders["speech"], top) is None]
    start = time.time()
    with torch.no_grad():
        for i in range(0, len(todo), batch):
            part = todo[i : i + batch]
            model.encode_media(Modality.SPEECH, part, cache_keys=[EncoderCache.key("speech", p) for p in part])
            if shard == 0:
                done = min(len(todo), i + batch)
                sys.stderr.write(f"\rworker 0: {done}/{len(todo)} clips ({time.time() - start:.0f} s)")
    if shard == 0:
        sys.stderr.write("\n")
    return len(todo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model config (.yaml/.json) or a saved model folder")
    ap.add_argument("cache_dir", help="the training config's data.encoder_cache_dir")
    ap.add_argument("datasets", nargs="+", help="Lyra dataset files (JSON lists) whose speech to encode")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4, help="clips per encoder call")
    ap.add_argument("--override", action="append", default=[], help="dotted config override, as the training "
                    "config's model.overrides (repeatable), e.g. encoders.speech.trainable=top")
    args = ap.parse_args()
    from lyra_sdk.interfaces import Modality
    from lyra_sdk.training.data import load_dataset

    from lyra_sdk import LyraError

    paths: list[str] = []
    for ds in args.datasets:
        try:
            samples = load_dataset(ds)
        except LyraError as e:
            raise SystemExit(f"error: {e}") from None
        for s in samples:
            paths += [str(p) for p in s.prompt.media_by_modality().get(Modality.SPEECH, [])]
    paths = list(dict.fromkeys(paths))
    sys.stderr.write(f"{len(paths)} clips, {args.workers} workers\n")
    jobs = [(args.model, args.cache_dir, paths, k, args.workers, args.batch, args.override)
            for k in range(args.workers)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        encoded = sum(pool.map(_work, jobs))
    sys.stderr.write(f"encoded {encoded} clips (the others were cached)\n")


if __name__ == "__main__":
    main()
