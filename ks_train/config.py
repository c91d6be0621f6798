"""Experiment configs as dataclasses, and the named profiles `synth-cpu`, `paper-r50` and `demo`.

Every knob of a run is a field here; a run's config is saved in its checkpoints as a plain dict and read
back through configio, which rejects unknown names and wrong types. RANGES (and the model's, ks.RANGES) gives
every numeric field its allowed values, checked when the config is built, before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from ks_runtime.core.errors import ConfigError
from ks_runtime.core.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from ks_runtime.synth.face import NuisanceStrengths, TextureStrengths
from ks_runtime.synth.generate import synth_config_from_data
from ks_train import configio
from ks_train.data.augment import AugmentConfig
from ks_train.data.sampling import every_k_from_ratio
from ks_train.losses import AU_WEIGHTINGS, PL_TARGETS, POSITIVE_WEIGHTINGS
from ks_train.model.ks import KSConfig
from ks_train.ppl_gate import KINDS

METHODS = ("ks", "frame")
GATES = ("ppl", "sequence", "none", "confidence")
# data.feeding -> model.clip_stride (docs/model.md, Data feeding): "paper" is a key frame and its n - 1 adjacent
# unlabelled neighbours; "strided" takes the slots the label spacing k apart (0, resolved to k by the trainer), so
# every slot of a labelled clip is labelled [R].
FEEDING_STRIDES = {"paper": 1, "strided": 0}
# The feeding of synth-cpu and demo: the paper's. "strided" scored higher at 10% labels, but as supervised
# training on five labelled frames a clip, not as knowledge spread to unlabelled ones (docs/experiments.md).
SYNTH_CPU_FEEDING = "paper"
PROBABILITY = "[0, 1]"
STRENGTH = "[0, inf)"  # a strength or weight; 0 turns it off
SEED = "[0, inf)"  # numpy's generators take no negative seeds
# The allowed values of every numeric field outside `model` (configio.Range); a test holds each field to an entry.
# data.fold's upper end depends on the dataset: AUDataset.split checks it once the dataset is open.
RANGES = {
    "data.synth_seed": SEED,
    "data.synth_quirk_scale": STRENGTH,
    "data.synth_expressiveness": STRENGTH,
    **{f"data.synth_nuisance.{name}": STRENGTH for name in ("head_pose_deg", "jitter_px", "lighting", "noise")},
    **{f"data.synth_nuisance.{name}": STRENGTH for name in ("colour_cast", "blur_px", "occlusion_seconds")},
    **{f"data.synth_nuisance.{name}": PROBABILITY for name in ("blur_prob", "jpeg_prob", "occlusion_prob")},
    "data.synth_nuisance.jpeg_quality_min": "[0, 100]",
    "data.synth_nuisance.jpeg_quality_max": "[0, 100]",
    **{f"data.synth_texture.{name}": STRENGTH for name in ("glabella", "forehead", "crow", "lid_bulge", "cheek")},
    **{f"data.synth_texture.{name}": STRENGTH for name in ("nose_wrinkle", "nasolabial", "dimple", "chin")},
    **{f"data.synth_texture.{name}": STRENGTH for name in ("lip_bulge", "permanent")},
    "data.image_size": "[8, inf)",
    "data.fold": "[1, inf)",
    "data.label_ratio": "(0, 1]",
    "data.every_k": configio.Range("[0, inf)", "0: derived from data.label_ratio"),
    "data.sampling_seed": SEED,
    "loss.l_skd": STRENGTH,
    "loss.l_pl": STRENGTH,
    "loss.l_self": STRENGTH,
    "loss.gate_acceptance": "(0, 1]",
    "loss.gate_clips": "[2, inf)",
    "loss.ppl_threshold": PROBABILITY,
    "loss.confidence_threshold": PROBABILITY,
    "loss.p_student_key": PROBABILITY,
    "train.epochs": "[1, inf)",
    "train.batch_size": "[1, inf)",
    "train.unlabelled_per_batch": "[0, inf)",
    "train.warmup_fraction": "[0, 1]",
    "train.lr": "(0, inf)",
    "train.weight_decay": "[0, inf)",
    "train.min_lr_ratio": "[0, 1]",
    "train.grad_clip": configio.Range("[0, inf)", "0: no clipping"),
    "train.eval_every": "[1, inf)",
    "train.batches_per_epoch": configio.Range("[0, inf)", "0: one pass over the labelled clips"),
    "train.workers": configio.Range("[0, inf)", "0: batches built in the training process"),
    "train.seed": SEED,
    "train.augment.rotate_deg": "[0, 180]",
    "train.augment.flip_p": PROBABILITY,
    "train.augment.brightness": "[0, 1]",  # factors are drawn from [1 - v, 1 + v]: past 1 they turn negative
    "train.augment.contrast": "[0, 1]",
    "train.augment.saturation": "[0, 1]",
    "train.augment.grayscale_p": PROBABILITY,
    "mean": "[0, 1]",  # of pixel values scaled to [0, 1]
    "std": "(0, inf)",
}


@dataclass
class DataConfig:
    dataset: str = "synth"  # synth | bp4d | bp4dplus | disfa | generic
    root: str = ""  # dataset root; empty for in-memory SynthAU
    synth_size: str = "small"
    synth_seed: int = 0
    au_set: str = "bp4d"  # SynthAU's label set (real datasets fix their own)
    # SynthAU's difficulty knobs; the defaults are the frozen, calibrated generator. Change them only for
    # calibration experiments: results on other settings are not results on SynthAU <version>.
    synth_quirk_scale: float = 0.25
    synth_expressiveness: float = 1.0
    synth_nuisance: NuisanceStrengths = field(default_factory=NuisanceStrengths)
    synth_texture: TextureStrengths = field(default_factory=TextureStrengths)
    image_size: int = 96  # network input, pixels
    fold: int = 1
    label_ratio: float = 0.1  # fraction of training labels kept ...
    every_k: int = 0  # ... or keep every k-th frame (overrides the ratio when > 0)
    sampling_seed: int = 0
    # paper | strided: how clips are cut (FEEDING_STRIDES), mapped onto model.clip_stride; "" leaves
    # model.clip_stride as given. Set it with --set data.feeding=paper; a contradicting clip_stride is refused.
    feeding: str = ""

    @property
    def label_spacing(self) -> int:
        """k: one kept label every k frames of a training sequence."""
        return self.every_k if self.every_k > 0 else every_k_from_ratio(self.label_ratio)


@dataclass
class LossConfig:
    l_skd: float = 1.0
    l_pl: float = 1.0
    l_self: float = 1.0
    au_weighting: str = "inverse_rate"  # inverse_rate | none: scale each AU's term by 1 / its rate
    # [R] rare | balanced | none: positives weighted (1 - p) / p within an AU; "rare" only raises them (never
    # below 1), since downweighting a frequent AU's positives costs F1 (docs/experiments.md)
    positive_weighting: str = "rare"
    # [R] L_PL's positives: TT, trained weighted, already leans towards calling rare AUs positive, so
    # weighting its pseudo positives again would count the imbalance twice and teach S_a false positives.
    pl_weight_positives: bool = False
    # ppl (the token-level PPL) | sequence (ppl_gate's label-sequence gate against label_prior) | none (naive
    # pseudo-labels) | confidence (ablation)
    gate: str = "sequence"
    gate_acceptance: float = 0.9  # [R] sequence gate: share of held-out clean sequences its threshold accepts
    gate_clips: int = 64  # [R] sequence gate: clean sequences drawn from the prior a step, to train and to calibrate
    # [R] sequence gate: the perturbations it learns to spot. Flips only: a shifted, stretched or cut run is as
    # likely as a clean one under the label prior, so a gate that sees no frames cannot tell them (docs/model.md).
    gate_perturbations: tuple[str, ...] = ("flip",)
    ppl_threshold: float = 0.5  # [R] accept a clip when P(perturbed | clean tokens) < this
    confidence_threshold: float = 0.9  # [R] the confidence gate's mean max(p, 1 - p)
    p_student_key: float = 0.5  # [R] key token from the active student instead of S_a
    perturbations: tuple[str, ...] = ("swap", "negate")  # [R] what L_self teaches PPL to detect
    ppl_detach_tokens: bool = True  # [R] L_self trains TT and PPL, not the per-frame encoders
    # L_PL's targets (losses.pl_targets): tt (TT's pseudo labels, the model) | truth (the hidden labels: perfect
    # spreading, a ceiling) | key_label (the key's label copied to its clip: temporal label smoothness)
    pl_target: str = "tt"


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 8  # labelled clips per batch
    unlabelled_per_batch: int = 4  # unlabelled-only clips per batch after the warm-up
    warmup_fraction: float = 0.3  # of the schedule; the paper's is 10 epochs
    lr: float = 1e-3
    weight_decay: float = 0.05
    min_lr_ratio: float = 0.02
    grad_clip: float = 5.0
    amp: bool = True  # mixed precision: CUDA, and CPUs with native bf16
    eval_policy: str = "shift"
    eval_every: int = 1
    batches_per_epoch: int = 0  # 0: one pass over the labelled clips; more cycles them
    workers: int = 1
    freeze_bn: bool = False  # keep BatchNorm statistics fixed (fine-tuning from --init weights)
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def warmup_epochs(self) -> int:
        return int(round(self.warmup_fraction * self.epochs))


@dataclass
class ExperimentConfig:
    name: str = "custom"
    method: str = "ks"
    model: KSConfig = field(default_factory=KSConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        configio.check_ranges(self, RANGES)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError(f"mean and std need three values each (R, G, B), got {self.mean} and {self.std}")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.loss.gate not in GATES:
            raise ConfigError(f"loss.gate must be one of {GATES}, got {self.loss.gate!r}")
        if not self.loss.gate_perturbations or set(self.loss.gate_perturbations) - set(KINDS):
            raise ConfigError(
                f"loss.gate_perturbations must be a non-empty subset of {KINDS}, got {self.loss.gate_perturbations!r}"
            )
        if self.loss.au_weighting not in AU_WEIGHTINGS:
            raise ConfigError(f"loss.au_weighting must be one of {AU_WEIGHTINGS}, got {self.loss.au_weighting!r}")
        if self.loss.positive_weighting not in POSITIVE_WEIGHTINGS:
            raise ConfigError(
                f"loss.positive_weighting must be one of {POSITIVE_WEIGHTINGS}, got {self.loss.positive_weighting!r}"
            )
        if self.loss.pl_target not in PL_TARGETS:
            raise ConfigError(f"loss.pl_target must be one of {PL_TARGETS}, got {self.loss.pl_target!r}")
        if self.method == "ks" and self.model.clip_len < 2:
            raise ConfigError("model.clip_len must be >= 2 for KS (a clip needs non-key slots)")
        check_feeding(self.data, self.model)

    @property
    def synth(self):
        """The SynthAU set this config trains on (in-memory SynthAU only)."""
        return synth_config_from_data(configio.to_dict(self.data))

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(size=self.data.image_size, colour="RGB", mean=tuple(self.mean), std=tuple(self.std))

    def to_dict(self) -> dict:
        return configio.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ExperimentConfig:
        return configio.from_dict(cls, data, "config")


def check_feeding(data: DataConfig, model: KSConfig) -> None:
    """Refuse a data.feeding that model.clip_stride contradicts. "strided" takes 0 (unresolved) or k (what the
    trainer resolves 0 to and saves)."""
    if data.feeding == "":
        return
    if data.feeding not in FEEDING_STRIDES:
        raise ConfigError(f'data.feeding must be one of {tuple(FEEDING_STRIDES)} or "", got {data.feeding!r}')
    stride = FEEDING_STRIDES[data.feeding]
    if model.clip_stride == stride or (data.feeding == "strided" and model.clip_stride == data.label_spacing):
        return
    meaning = "adjacent frames" if stride else f"the label spacing, k = {data.label_spacing} here"
    raise ConfigError(
        f"data.feeding={data.feeding!r} means model.clip_stride={stride} ({meaning}), but model.clip_stride is "
        f"{model.clip_stride}: set one of the two, or both alike"
    )


def apply_feeding(data: dict, overrides: list[str]) -> dict:
    """Reconcile data.feeding and model.clip_stride in a config dict after `overrides`: a feeding the overrides
    set decides model.clip_stride, and a clip_stride they set alone replaces the profile's or file's feeding;
    when they set both, ExperimentConfig refuses a contradiction."""
    named = {override.partition("=")[0].strip() for override in overrides}
    if "data.feeding" in named and "model.clip_stride" not in named:
        feeding = data["data"]["feeding"]  # apply_overrides has set it
        if isinstance(feeding, str) and feeding in FEEDING_STRIDES and isinstance(data.get("model", {}), dict):
            data.setdefault("model", {})["clip_stride"] = FEEDING_STRIDES[feeding]
    elif "model.clip_stride" in named and "data.feeding" not in named and isinstance(data.get("data", {}), dict):
        data.setdefault("data", {})["feeding"] = ""
    return data


def _synth_cpu() -> ExperimentConfig:
    return ExperimentConfig(
        name="synth-cpu",
        # The paper's feeding (SYNTH_CPU_FEEDING, clip_stride 1): a labelled key frame and its adjacent unlabelled
        # neighbours. The profile states it as a clip_stride, leaving data.feeding free for --set.
        model=KSConfig(backbone="tiny", clip_len=5, clip_stride=FEEDING_STRIDES[SYNTH_CPU_FEEDING]),
        data=DataConfig(dataset="synth", synth_size="small", image_size=96),
        # No rotation augmentation: SynthAU's head pose already turns the faces, and the paper's +-45 degrees
        # kept the tiny CNN from fitting 2-3 px AU movements at 96 px (the calibration runs in docs/synthau.md).
        # Epochs are 100 steps whatever the label ratio: one pass over 10% of `small`'s labels is 34 steps,
        # far too few. 32 labelled clips a step: with 8, S_a learnt slower per labelled frame (docs/experiments.md).
        train=TrainConfig(
            epochs=16,
            batch_size=32,
            unlabelled_per_batch=8,
            batches_per_epoch=100,
            augment=AugmentConfig(rotate_deg=0.0),
        ),
    )


def _paper_r50() -> ExperimentConfig:
    return ExperimentConfig(
        name="paper-r50",
        model=KSConfig(backbone="resnet50", clip_len=5),
        data=DataConfig(dataset="synth", synth_size="full", image_size=224),
        train=TrainConfig(epochs=40, batch_size=16, unlabelled_per_batch=8, warmup_fraction=0.25, lr=3e-4),
    )


def _demo() -> ExperimentConfig:
    # Half the schedule: the pseudo labels need a warm-up of about 400 steps to beat chance by a margin.
    base = _synth_cpu()
    return replace(base, name="demo", train=replace(base.train, epochs=8, warmup_fraction=0.5, eval_every=2))


PROFILES = {"synth-cpu": _synth_cpu, "paper-r50": _paper_r50, "demo": _demo}


def load_config(name_or_path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """A named profile or a JSON file, with `section.field=value` overrides applied and checked."""
    if name_or_path in PROFILES:
        data = PROFILES[name_or_path]().to_dict()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"no profile or config file {name_or_path!r}; profiles: {', '.join(PROFILES)}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
    if overrides:
        data = apply_feeding(configio.apply_overrides(data, overrides), overrides)
    return ExperimentConfig.from_dict(data)
