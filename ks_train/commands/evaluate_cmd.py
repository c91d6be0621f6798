"""`ks-train eval`: dense testing of a checkpoint on its fold's test part, and the pseudo-label analysis."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from ks_runtime import commandline
from ks_runtime.core.errors import DataError
from ks_runtime.core.policy import POLICIES
from ks_runtime.synth.generate import synth_parts
from ks_train import checkpoint
from ks_train.config import ExperimentConfig
from ks_train.data.sampling import build_sparse_index
from ks_train.evaluate import evaluate, pseudo_label_analysis
from ks_train.methods import create_method
from ks_train.model.ks import FUSIONS
from ks_train.trainer import every_k, load_experiment_data, resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = commandline.add_command(sub, "eval", run, help="evaluate a checkpoint", description=__doc__)
    p.add_argument("--ckpt", required=True, help="a checkpoint file or a run folder (best.pt, else last.pt)")
    p.add_argument("--policy", choices=POLICIES, help="key-slot policy (default: the run's eval policy)")
    p.add_argument(
        "--fusion",
        choices=FUSIONS,
        help="score S_a alone, TT alone or their mean (default: the model's own fusion rule)",
    )
    p.add_argument("--data", help="dataset root, if not the one the run trained on")
    p.add_argument("--no-pseudo", action="store_true", help="skip the pseudo-label analysis on training data")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    state = checkpoint.load_checkpoint(args.ckpt)
    cfg = ExperimentConfig.from_dict(state["config"])
    if args.data:
        cfg = replace(cfg, data=replace(cfg.data, root=args.data))
    if args.fusion:
        cfg = replace(cfg, model=replace(cfg.model, fusion=args.fusion))
    device = resolve_device(args.device)
    method = create_method(cfg)
    model = method.build_model().to(device)
    checkpoint.load_model_state(model, state)
    want_pseudo = cfg.method == "ks" and not args.no_pseudo
    dataset = load_experiment_data(cfg, subjects=None if want_pseudo else _test_subjects(cfg))
    checkpoint.check_au_columns(state, dataset.au_set.columns)
    if not 1 <= cfg.data.fold <= len(dataset.parts):
        raise DataError(
            f"dataset {dataset.name} has {len(dataset.parts)} folds; the checkpoint names fold {cfg.data.fold}"
        )
    test_part = set(dataset.parts[cfg.data.fold - 1])
    test = [s for s in dataset.sequences if s.subject in test_part]
    policy = args.policy or cfg.train.eval_policy
    report = evaluate(method, model, test, cfg.preprocess, policy, device, dataset.au_set.columns)
    result = {
        "checkpoint": state["path"],
        "policy": policy,
        "fusion": cfg.model.fusion,
        "fold": cfg.data.fold,
        "dataset": state.get("dataset", {}),
        **report.to_dict(),
    }
    if want_pseudo:
        train = [s for s in dataset.sequences if s.subject not in test_part]
        index = build_sparse_index([len(s) for s in train], every_k(cfg), cfg.data.sampling_seed)
        method.fit_data([s.labels[m] for s, m in zip(train, index.masks, strict=True)], every_k(cfg))
        analysis = pseudo_label_analysis(model, train, index, cfg.preprocess, cfg.loss.ppl_threshold, device, method)
        result["pseudo_labels"] = analysis.to_dict()
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{state['path']}: fold {cfg.data.fold}, policy {policy}, fusion {cfg.model.fusion}")
    print(report.table())
    if want_pseudo:
        a = result["pseudo_labels"]
        print(
            f"pseudo labels on hidden training labels ({a['clips']} clips keyed on {a['keys']}, "
            f"{a['labels_scored']} labels): the {cfg.loss.gate} gate accepts {a['accepted_fraction']:.1%}; "
            f"accuracy accepted {a['accuracy_ppl']:.3f}, naive {a['accuracy_naive']:.3f}, "
            f"confidence gate at the same share {a['accuracy_confidence']:.3f}"
        )
    return 0


def _test_subjects(cfg: ExperimentConfig) -> list[str] | None:
    """For in-memory SynthAU, render only the test part's subjects."""
    if cfg.data.dataset != "synth" or cfg.data.root:
        return None
    return synth_parts(cfg.synth)[cfg.data.fold - 1]
