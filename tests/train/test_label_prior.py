"""The label prior (ks_train/label_prior.py): a per-AU Markov chain fitted from labels kept k frames apart must
recover the one-step chain that made them, and its samples must have the chain's base rates and run lengths."""

import numpy as np
import pytest
import torch

from ks_train.label_prior import MarkovLabelPrior, fit_label_prior, transition_counts

BASE = np.array([0.2, 0.5, 0.1])
PERSISTENCE = np.array([0.9, 0.8, 0.95])


def chain(length: int, rng: np.random.Generator) -> np.ndarray:
    """(length, 3) 0/1 labels from the stationary chains with BASE and PERSISTENCE."""
    onset, offset = BASE * (1 - PERSISTENCE), (1 - BASE) * (1 - PERSISTENCE)
    x = np.empty((length, len(BASE)), dtype=np.int8)
    x[0] = rng.random(len(BASE)) < BASE
    for t in range(1, length):
        r = rng.random(len(BASE))
        x[t] = np.where(x[t - 1] == 1, r >= offset, r < onset)
    return x


@pytest.mark.parametrize("spacing", [1, 5])
def test_the_fit_recovers_the_one_step_chain_from_labels_spacing_frames_apart(spacing):
    rng = np.random.default_rng(0)
    tracks = [chain(4000, rng)[int(rng.integers(spacing)) :: spacing] for _ in range(40)]
    prior = fit_label_prior(tracks, spacing)
    assert np.allclose(prior.base_rate.numpy(), BASE, atol=0.02)
    assert np.allclose(prior.persistence.numpy(), PERSISTENCE, atol=0.02)


def test_samples_have_the_chains_base_rates_and_run_lengths():
    prior = MarkovLabelPrior(torch.tensor(BASE, dtype=torch.float32), torch.tensor(PERSISTENCE, dtype=torch.float32))
    x = prior.sample(400, 60, torch.Generator().manual_seed(0))
    assert x.shape == (400, 60, 3) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert np.allclose(x.mean((0, 1)).numpy(), BASE, atol=0.02)
    ends = ((x[:, :-1] == 1) & (x[:, 1:] == 0)).sum((0, 1)).float()
    mean_run = x[:, :-1].sum((0, 1)) / ends  # active frames per run that ends
    assert np.allclose(mean_run.numpy(), 1 / prior.p_offset.numpy(), rtol=0.15)


def test_samples_follow_the_generator():
    prior = MarkovLabelPrior(torch.tensor([0.3]), torch.tensor([0.9]))
    a, b = (prior.sample(8, 9, torch.Generator().manual_seed(s)) for s in (1, 1))
    assert torch.equal(a, b) and not torch.equal(a, prior.sample(8, 9, torch.Generator().manual_seed(2)))


def test_unknown_labels_are_skipped_and_a_silent_au_stays_silent():
    track = np.array([[1, 0], [1, -1], [0, 0], [-1, 0], [0, 0]])
    counts = transition_counts([track])
    assert counts[0].tolist() == [[0, 0], [1, 1]]  # AU 0: 1->1 and 1->0; the pairs with an unknown skipped
    assert counts[1].tolist() == [[2, 0], [0, 0]]  # AU 1: 0->0 twice (0->-1 and -1->0 skipped)
    prior = fit_label_prior([np.zeros((50, 2), dtype=np.int8)], 3)
    assert prior.sample(50, 20, torch.Generator().manual_seed(0)).mean() < 0.05


def test_wrong_inputs_raise_errors_naming_them():
    with pytest.raises(ValueError, match="spacing"):
        fit_label_prior([np.zeros((4, 2))], 0)
    with pytest.raises(ValueError, match="no label tracks"):
        fit_label_prior([], 1)
    with pytest.raises(ValueError, match="AU count"):
        fit_label_prior([np.zeros((4, 2)), np.zeros((4, 3))], 1)
    with pytest.raises(ValueError, match="count must be"):
        MarkovLabelPrior(torch.tensor([0.5]), torch.tensor([0.5])).sample(2, 0, torch.Generator())
