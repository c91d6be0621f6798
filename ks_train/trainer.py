"""The training engine: data, model, optimiser and schedule, the epoch loop, evaluation, checkpoints.

Runs on a CPU or one GPU, or several under `torchrun` (DistributedDataParallel: each rank trains on its
share of every batch). Mixed precision on CUDA and on CPUs with native bf16. Checkpoints are atomic and
resume exactly: every random draw comes from the run seed, the epoch and the batch, or from torch's RNG,
whose state is saved. The run folder agrees with its last.pt after any kill (docs/training.md, Reliability).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ks_runtime.core.errors import CheckpointError, ConfigError, KSError, OutputError
from ks_runtime.core.metrics import F1Report
from ks_train import __version__, checkpoint, losses
from ks_train.config import ExperimentConfig
from ks_train.data.base import AUDataset, VideoSequence
from ks_train.data.clips import ClipBatch, ClipBatchBuilder, EpochBatches
from ks_train.data.registry import open_dataset
from ks_train.data.sampling import ClipBatches, build_sparse_index, every_k_from_ratio
from ks_train.evaluate import evaluate
from ks_train.methods import Method, StepResult, create_method, summarise_counts

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
# Seconds to wait for a DataLoader worker's batch before calling the worker dead or stuck (0: wait forever). Far
# above any batch's build time; without it, a run whose worker had died once sat 9 minutes at 0% CPU.
LOADER_TIMEOUT = 300.0


class TrainingError(KSError):
    """Training cannot go on (a NaN or infinite loss); the message names the step, batch and term."""


def load_experiment_data(cfg: ExperimentConfig, progress: bool = False, subjects: list[str] | None = None) -> AUDataset:
    """The dataset a config names: SynthAU in memory when no root is given, else the adapter's reader."""
    data = cfg.data
    if data.dataset == "synth" and not data.root:
        return open_dataset("synth", None, config=cfg.synth, progress=progress, subjects=subjects)
    if not data.root:
        raise ConfigError(f"data.root is required for dataset {data.dataset!r}")
    return open_dataset(data.dataset, data.root)


def every_k(cfg: ExperimentConfig) -> int:
    return cfg.data.every_k if cfg.data.every_k > 0 else every_k_from_ratio(cfg.data.label_ratio)


def mixed_precision_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype a device trains fastest in: bf16 (else fp16) on CUDA; bf16 on a CPU that computes
    it natively (AVX512-BF16 or AMX: a synth-cpu KS step 1.7x faster than fp32, benchmarks/train_step.py);
    None on other CPUs, where emulated bf16 is slower than fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    native = [
        getattr(torch.cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    return torch.bfloat16 if any(native) else None


class TrainStep(nn.Module):
    """Wraps model + method so one forward call computes a step's loss: DDP then syncs every gradient."""

    def __init__(self, method: Method, model: nn.Module) -> None:
        super().__init__()
        self.method, self.model = method, model

    def forward(self, batch: ClipBatch, weights: losses.AUWeights, semi_supervised: bool) -> StepResult:
        return self.method.train_step(self.model, batch, weights, semi_supervised)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available")
        local = int(os.environ.get("LOCAL_RANK", device.index or 0))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return device


def warn_if_clips_outreach(cfg: ExperimentConfig, train_seqs: list[VideoSequence]) -> None:
    """Warn when a KS clip spans more frames than the longest training video (its slots then repeat edges)."""
    reach = (cfg.model.clip_len - 1) * cfg.model.clip_stride + 1
    longest = max((len(s) for s in train_seqs), default=0)
    if cfg.method == "ks" and reach > longest:
        log.warning(
            "a clip reaches over %d frames (n = %d, stride %d) but the longest training video has %d: "
            "slots past a video's ends repeat its edge frames; a smaller model.clip_stride may suit",
            reach,
            cfg.model.clip_len,
            cfg.model.clip_stride,
            longest,
        )


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, floor: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay from the base learning rate to `floor` times it over `total_steps`."""

    def factor(step: int) -> float:
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step / max(total_steps, 1), 1)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Trainer:
    def __init__(
        self,
        cfg: ExperimentConfig,
        out_dir: Path | str,
        device: str = "auto",
        dataset: AUDataset | None = None,
        progress: bool = True,
        loader_timeout: float = LOADER_TIMEOUT,
    ) -> None:
        if not loader_timeout >= 0:
            raise ConfigError(f"loader timeout {loader_timeout}: must be >= 0 seconds (0 waits forever)")
        self.out_dir, self.loader_timeout = Path(out_dir), loader_timeout
        self.device = resolve_device(device)
        self.dist = Distributed.from_env(self.device)
        self.progress = progress and self.dist.main
        torch.manual_seed(cfg.train.seed)

        self.dataset = dataset or load_experiment_data(cfg, progress=self.progress)
        self.columns = self.dataset.au_set.columns
        # clip_stride 0: the label spacing, resolved here so checkpoints and bundles hold the stride trained with.
        cfg = replace(
            cfg, model=replace(cfg.model, n_aus=len(self.columns), clip_stride=cfg.model.clip_stride or every_k(cfg))
        )
        self.cfg = cfg
        self.method = create_method(cfg)
        # channels_last: oneDNN's and cuDNN's fastest convolution layout.
        self.model = self.method.build_model().to(self.device, memory_format=torch.channels_last)
        self.train_seqs, self.test_seqs = self.dataset.split(cfg.data.fold)
        warn_if_clips_outreach(cfg, self.train_seqs)

        self.index = build_sparse_index([len(s) for s in self.train_seqs], every_k(cfg), cfg.data.sampling_seed)
        label_tracks = [s.labels[m] for s, m in zip(self.train_seqs, self.index.masks, strict=True)]
        self.method.fit_data(label_tracks, every_k(cfg))
        kept = np.concatenate(label_tracks)
        self.weights = losses.au_weights(kept, cfg.loss.au_weighting, cfg.loss.positive_weighting).to(self.device)

        n, stride = self.method.clip_len, self.method.clip_stride
        batch = cfg.train.batch_size * (cfg.model.clip_len if cfg.method == "frame" else 1)
        self.batches = ClipBatches(self.index, n, batch, cfg.train.unlabelled_per_batch if n > 1 else 0, stride=stride)
        self.builder = ClipBatchBuilder(
            self.train_seqs, self.index, n, cfg.preprocess, cfg.train.augment, cfg.train.seed, stride
        )
        self.batches_per_epoch = cfg.train.batches_per_epoch or len(self.batches)
        self.total_steps = self.batches_per_epoch * cfg.train.epochs

        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        self.scheduler = cosine_schedule(self.optimizer, self.total_steps, cfg.train.min_lr_ratio)
        self.amp_dtype = mixed_precision_dtype(self.device) if cfg.train.amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.step_module = self._step_module()

        self.epoch = 0
        self.global_batch = 0
        self.best_f1 = -1.0
        self.history: list[dict] = []

    def _step_module(self) -> nn.Module:
        """The training step as a module: wrapped in DistributedDataParallel (with synchronised batch norm on
        GPUs) when more than one process trains."""
        step_module = TrainStep(self.method, self.model)
        if self.dist.world == 1:
            return step_module
        if self.device.type == "cuda":
            step_module = nn.SyncBatchNorm.convert_sync_batchnorm(step_module)
        return nn.parallel.DistributedDataParallel(
            step_module,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.cfg.loss.gate == "sequence",  # the token-level PPL then sits idle
        )

    # --- checkpoints ------------------------------------------------------------------------------
    def state(self, metrics: dict) -> dict:
        rng = {"torch": torch.get_rng_state(), **self.method.rng_states()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "config": self.cfg.to_dict(),
            "au_columns": list(self.columns),
            "preprocess": self.cfg.preprocess.to_dict(),
            "dataset": {
                "name": self.dataset.name,
                "version": getattr(self.dataset, "version", ""),
                "fold": self.cfg.data.fold,
                "every_k": self.index.every_k,
            },
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_batch": self.global_batch,
            "best_f1": self.best_f1,
            "rng": rng,
            "metrics": metrics,
            "history": self.history,
            "package_version": __version__,
        }

    def resume(self, path: Path | str) -> None:
        state = checkpoint.load_checkpoint(Path(path) / "last.pt" if Path(path).is_dir() else path)
        saved = ExperimentConfig.from_dict(state["config"])
        if saved.to_dict() != self.cfg.to_dict():
            ours, theirs = self.cfg.to_dict(), saved.to_dict()
            diff = [
                f"{section}.{k}"
                for section in ours
                if isinstance(ours[section], dict)
                for k in ours[section]
                if ours[section][k] != theirs.get(section, {}).get(k)
            ]
            diff += [k for k in ours if not isinstance(ours[k], dict) and ours[k] != theirs.get(k)]
            raise CheckpointError(f"{state['path']}: trained with another config (differs in {', '.join(diff)})")
        checkpoint.check_au_columns(state, list(self.columns))
        checkpoint.load_model_state(self.model, state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_batch = state["epoch"], state["global_batch"]
        self.best_f1, self.history = state["best_f1"], list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        self.method.set_rng_states(state["rng"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        log.info("resumed from %s at epoch %d", state["path"], self.epoch)
        self._check_best()

    def _check_best(self) -> None:
        """A best F1 the checkpoint records needs its best.pt in the run folder (resuming into another folder, or
        a best.pt removed): without it, forget that F1, so that the next evaluated epoch writes best.pt."""
        if self.best_f1 >= 0 and not (self.out_dir / "best.pt").is_file():
            log.warning(
                "%s: missing, though the checkpoint records a best mean F1 of %.4f; the next evaluated epoch writes it",
                self.out_dir / "best.pt",
                self.best_f1,
            )
            self.best_f1 = -1.0

    # --- the loop -----------------------------------------------------------------------------------
    def fit(self, until_epoch: int | None = None) -> list[dict]:
        """Train up to `until_epoch` (default: the schedule's end); returns the per-epoch metrics."""
        end = self._end_epoch(until_epoch)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.main:
            self._open_run_folder()
        writer = self._tensorboard()
        while self.epoch < end:
            record = self.train_epoch()
            if (self.epoch + 1) % self.cfg.train.eval_every == 0 or self.epoch + 1 == self.cfg.train.epochs:
                report = self.evaluate()
                record.update(
                    {
                        "mean_f1": report.mean,
                        "floor": report.mean_floor,
                        "per_au_f1": dict(zip(self.columns, map(float, report.f1), strict=True)),
                    }
                )
            self.epoch += 1
            self.history.append(record)
            if self.dist.main:
                self._save(record)
                self._log(record, writer)  # after last.pt: metrics.jsonl never runs ahead of the checkpoint
        if writer is not None:
            writer.close()
        return self.history

    def _end_epoch(self, until_epoch: int | None) -> int:
        if until_epoch is not None and until_epoch < 1:
            raise ConfigError(f"until_epoch={until_epoch}: must be >= 1 (the epoch to stop after)")
        end = self.cfg.train.epochs if until_epoch is None else min(until_epoch, self.cfg.train.epochs)
        if self.epoch >= end:
            log.warning("nothing to train: the run is at epoch %d and stops after epoch %d", self.epoch, end)
        return end

    def _open_run_folder(self) -> None:
        """Make the run folder agree with the state about to be trained: temporaries of saves a killed process left
        are removed, and metrics.jsonl is rewritten as the checkpoint's history (an epoch logged but not saved
        before a kill would otherwise appear twice once it is trained again)."""
        checkpoint.remove_stale_temporaries(self.out_dir)
        checkpoint.write_text_atomic(self.out_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=1))
        metrics = self.out_dir / METRICS
        old = metrics.read_text().splitlines() if metrics.is_file() else []
        lines = [json.dumps(record) for record in self.history]
        if old != lines:
            checkpoint.write_text_atomic(metrics, "".join(line + "\n" for line in lines))
        if len(old) > len(lines):
            log.warning(
                "%s: dropped %d line(s) written after the checkpoint's epoch %d (a run killed before saving, or "
                "another run in this folder)",
                metrics,
                len(old) - len(lines),
                self.epoch,
            )

    def _save(self, record: dict) -> None:
        """best.pt before last.pt, so that last.pt never records a best F1 whose checkpoint is not on disk. A save
        that fails (a full disk) stops training, naming the file, with the checkpoints before it intact."""
        improved = record.get("mean_f1", -1.0) > self.best_f1
        if improved:
            self.best_f1 = record["mean_f1"]
        state = self.state(record)
        try:
            if improved:
                checkpoint.save_checkpoint(state, self.out_dir / "best.pt")
            checkpoint.save_checkpoint(state, self.out_dir / "last.pt")
        except OutputError as error:
            raise OutputError(
                f"{error}. Epoch {self.epoch} was trained but is not saved: make room, then continue with "
                f"--resume {self.out_dir}"
            ) from None

    def train_epoch(self) -> dict:
        from tqdm import tqdm

        cfg = self.cfg
        semi = cfg.method == "ks" and self.epoch >= cfg.train.warmup_epochs
        rng = np.random.default_rng([cfg.train.seed, self.epoch])
        batches = self.batches.epoch(
            rng, with_unlabelled=semi, first_batch=self.global_batch, count=self.batches_per_epoch
        )
        batches = [items[self.dist.rank :: self.dist.world] for items in batches]
        loader = self._loader(batches)
        self.model.train()
        if cfg.train.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        started = time.perf_counter()
        bar = tqdm(
            loader,
            total=len(batches),
            disable=not self.progress,
            leave=False,
            desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}",
        )
        sums, counts = self._train_batches(bar, semi)
        n = max(len(batches), 1)
        record = {
            "epoch": self.epoch + 1,
            "semi_supervised": semi,
            "seconds": time.perf_counter() - started,
            "lr": self.scheduler.get_last_lr()[0],
            **{k: v / n for k, v in sums.items()},
        }
        if cfg.method == "ks":
            record.update(summarise_counts(counts))
        return record

    def _train_batches(self, bar, semi: bool) -> tuple[dict[str, float], dict[str, float]]:
        """Train on every batch of `bar`; returns the sums of the loss terms and of the gate counts."""
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        done = 0
        try:
            for b, batch in enumerate(bar):
                result = self.train_batch(batch.to(self.device), semi, b)
                for name, value in result.terms.items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                sums["loss"] = sums.get("loss", 0.0) + float(result.loss.detach())
                for name, value in result.counts.items():
                    counts[name] = counts.get(name, 0.0) + value
                bar.set_postfix(loss=f"{float(result.loss.detach()):.3f}")
                self.global_batch += 1
                done = b + 1
        except RuntimeError as error:
            # The DataLoader's own errors, raised when fetching a batch or, for a worker killed by a signal, from its
            # SIGCHLD handler at any point; a worker's own exceptions keep their type.
            if not str(error).startswith("DataLoader"):
                raise
            raise self._loader_failure(error, done) from None
        return sums, counts

    def _loader(self, batches: list[list]) -> torch.utils.data.DataLoader:
        workers = self.cfg.train.workers
        return torch.utils.data.DataLoader(
            EpochBatches(self.builder, batches, self.epoch, self.global_batch),
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            collate_fn=lambda x: x,
            persistent_workers=False,
            timeout=self.loader_timeout if workers > 0 else 0,  # a dead or stuck worker is an error, not a hang
        )

    def _loader_failure(self, error: RuntimeError, index: int) -> TrainingError:
        """The DataLoader's own error (a worker died, or sent nothing within the timeout) naming the batch."""
        return TrainingError(
            f"epoch {self.epoch + 1}, batch {index}: {error}. A DataLoader worker died or hangs; train.workers=0 "
            f"builds the batches in this process, ks-train fit --loader-timeout sets the wait "
            f"({self.loader_timeout:g} s now). The last checkpoint is intact."
        )

    def train_batch(self, batch: ClipBatch, semi: bool, index: int) -> StepResult:
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext()
        )
        with autocast:
            result = self.step_module(batch, self.weights, semi)
        for name, value in {"total": result.loss, **result.terms}.items():
            if not torch.isfinite(value):
                raise TrainingError(
                    f"loss term {name} is {float(value.detach())} at epoch {self.epoch + 1}, batch {index} "
                    f"(global step {self.global_batch}, key slot {batch.key_slot}); stopping. "
                    f"The last checkpoint is intact."
                )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(result.loss).backward()
        if self.cfg.train.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return result

    def evaluate(self, sequences: list[VideoSequence] | None = None, policy: str | None = None) -> F1Report:
        return evaluate(
            self.method,
            self.model,
            sequences or self.test_seqs,
            self.cfg.preprocess,
            policy or self.cfg.train.eval_policy,
            self.device,
            list(self.columns),
        )

    # --- logging --------------------------------------------------------------------------------------
    def _tensorboard(self):
        if not self.dist.main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def _log(self, record: dict, writer) -> None:
        try:
            with open(self.out_dir / METRICS, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:  # the next start rewrites metrics.jsonl from last.pt's history
            raise OutputError(
                f"{self.out_dir / METRICS}: cannot append epoch {record['epoch']} "
                f"({checkpoint.write_failure(error, self.out_dir)}); last.pt holds it: make room, then continue "
                f"with --resume {self.out_dir}"
            ) from None
        summary = " ".join(
            f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float) and k not in ("seconds", "lr")
        )
        log.info("epoch %d (%.0f s): %s", record["epoch"], record["seconds"], summary)
        if writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(key, value, record["epoch"])
                elif isinstance(value, dict):
                    for sub, v in value.items():
                        writer.add_scalar(f"{key}/{sub}", v, record["epoch"])
