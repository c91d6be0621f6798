"""Training-step speed of the `synth-cpu` KS in fp32 and under mixed precision, side by side in one run.

    python -m benchmarks.train_step [--steps 6] [--config synth-cpu]

Each setting trains the same batches (SynthAU `tiny`, the profile's batch of labelled and unlabelled clips,
after the warm-up so every term runs) with the trainer's own step; the first two steps warm up and are not
timed. Mixed precision is what `train.amp` picks for this machine (bf16 on a CPU with native bf16, none on
others, where the two rows are the same setting).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from ks_train.config import load_config
from ks_train.trainer import Trainer


def seconds_per_step(config: str, amp: bool, steps: int) -> tuple[float, str]:
    cfg = load_config(
        config,
        ["data.synth_size=tiny", "train.warmup_fraction=0.0", "train.workers=0", f"train.amp={str(amp).lower()}"],
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, out, device="cpu", progress=False)
        batches = list(trainer.batches.epoch(np.random.default_rng(0), with_unlabelled=True, count=steps + 2))
        built = [trainer.builder.build(items, 0, b) for b, items in enumerate(batches)]
        trainer.model.train()
        for b, batch in enumerate(built):
            if b == 2:
                started = time.perf_counter()
            trainer.train_batch(batch, semi=True, index=b)
        return (time.perf_counter() - started) / steps, str(trainer.amp_dtype or "fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--config", default="synth-cpu")
    args = parser.parse_args()
    fp32, _ = seconds_per_step(args.config, amp=False, steps=args.steps)
    mixed, dtype = seconds_per_step(args.config, amp=True, steps=args.steps)
    print(f"{args.config}, {torch.get_num_threads()} threads, {args.steps} timed steps each")
    print(f"fp32                     {fp32:.3f} s/step")
    print(f"train.amp ({dtype:<14}) {mixed:.3f} s/step   {fp32 / mixed:.2f}x")


if __name__ == "__main__":
    main()
