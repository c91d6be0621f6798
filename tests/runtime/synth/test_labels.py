"""SynthAU's label process (ks_runtime/synth/labels.py), its fit (label_fit.py) and its statistics (stats.py)."""

import argparse
import json

import numpy as np
import pytest

from ks_runtime.core.au import BP4D, DISFA, AUSet
from ks_runtime.synth import label_fit, labels, stats


def _track(au_set: AUSet, seed: int, task: int = 0, frames: int = 300, fps: float = 25.0) -> labels.LabelTrack:
    model = labels.label_model(au_set)
    rng = np.random.default_rng(seed)
    return labels.sample_labels(model, labels.draw_label_traits(model, rng), task, frames, rng, fps=fps)


@pytest.fixture(scope="module")
def moderate_bp4d() -> stats.LabelStats:
    """300 label-only sequences: enough for loose checks of the marginals and the pair signs."""
    return stats.label_statistics(stats.draw_occurrences(BP4D, 300, 400, seed=5), BP4D)


# --- the process -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("au_set", [BP4D, DISFA])
def test_shapes_dtypes_and_rendered_superset(au_set):
    model = labels.label_model(au_set)
    assert set(au_set.numbers) <= set(model.rendered_aus)
    assert model.au_set == au_set
    track = _track(au_set, seed=1, frames=123)
    assert track.intensity.shape == (123, len(model.rendered_aus)) and track.intensity.dtype == np.float32
    assert track.occurrence.shape == (123, len(au_set)) and track.occurrence.dtype == np.int8


def test_model_is_cached_and_correlation_positive_definite():
    model = labels.label_model(BP4D)
    assert labels.label_model(BP4D) is model
    assert np.linalg.eigvalsh(model.correlation)[0] > 0.01
    assert np.linalg.eigvalsh(model.frame_correlation)[0] > 0.01
    with pytest.raises(ValueError, match="no fitted"):
        labels.label_model(AUSet("custom", (1, 2)))


def test_same_seed_same_track_and_different_seeds_differ():
    a, b, c = _track(BP4D, seed=7), _track(BP4D, seed=7), _track(BP4D, seed=8)
    np.testing.assert_array_equal(a.intensity, b.intensity)
    np.testing.assert_array_equal(a.occurrence, b.occurrence)
    assert not np.array_equal(a.intensity, c.intensity)


def test_intensity_bounded_smooth_and_occurrence_is_intensity_at_level():
    model = labels.label_model(BP4D)
    steps = []
    for seed in range(40):
        track = _track(BP4D, seed=seed, task=seed % labels.N_TASKS)
        assert track.intensity.min() >= 0.0 and track.intensity.max() <= 5.0
        expected = track.intensity[:, model.labelled] >= model.level
        np.testing.assert_array_equal(track.occurrence, expected.astype(np.int8))
        steps.append(np.abs(np.diff(track.intensity, axis=0)))
    steps = np.concatenate(steps)
    # Onset and offset take many frames: no jump, and a typical frame barely moves.
    assert steps.max() < 1.5
    assert np.median(steps) < 0.05
    # Transitions pass through intensities just below the level: ambiguous frames exist.
    all_intensity = np.concatenate([_track(BP4D, seed=s).intensity for s in range(10)])
    assert ((all_intensity > 1.0) & (all_intensity < model.level)).mean() > 0.02


def test_time_constants_scale_with_fps():
    """At 50 fps an expression lasts twice as many frames as at 25 fps."""

    def median_run(fps: float) -> float:
        occurrences = [
            _track(BP4D, seed=s, task=s % labels.N_TASKS, frames=600, fps=fps).occurrence for s in range(150)
        ]
        return float(np.nanmedian(stats.median_run_lengths(occurrences)))

    assert 1.6 < median_run(50.0) / median_run(25.0) < 2.4


def test_task_index_checked():
    with pytest.raises(ValueError, match="task_index"):
        _track(BP4D, seed=0, task=labels.N_TASKS)


def test_moderate_draw_marginals_and_pair_signs(moderate_bp4d):
    targets = labels.TARGETS["bp4d"]
    # 300 sequences: a rate's standard error is about .013, so +-.05 is about 4 of them.
    for au, target in targets.rates.items():
        assert abs(moderate_bp4d.rate(au) - target) < 0.05, f"AU{au}"
    for (a, b), target in targets.phi.items():
        measured = moderate_bp4d.phi_of(a, b)
        assert np.sign(measured) == np.sign(target) and abs(measured - target) < 0.12, f"phi AU{a}/AU{b}"
    # Durations differ by AU as in BP4D: brows and lips brief, smiles long.
    assert moderate_bp4d.median_run_of(12) > 2.5 * moderate_bp4d.median_run_of(1)
    assert moderate_bp4d.median_run_of(12) > 3.5 * moderate_bp4d.median_run_of(24)


def test_analytic_mixture_hits_target_rates():
    model = labels.label_model(BP4D)
    rates = label_fit.mixture_rates(model.threshold, label_fit.total_covariance(model.frame_correlation))
    for au, target in labels.TARGETS["bp4d"].rates.items():
        assert rates[labels.RENDERED_AUS.index(au)] == pytest.approx(target, abs=1e-3)


def test_subjects_differ_a_lot():
    """Per-subject AU1 rates over all tasks spread widely, as BP4D's do (docs/synthau.md, 'Labels')."""
    model = labels.label_model(BP4D)
    column = BP4D.index(1)
    rates = []
    for s in range(40):
        traits = labels.draw_label_traits(model, np.random.default_rng([3, s]))
        tracks = [
            labels.sample_labels(model, traits, k, 200, np.random.default_rng([3, s, k])) for k in range(labels.N_TASKS)
        ]
        rates.append(np.mean([track.occurrence[:, column].mean() for track in tracks]))
    assert min(rates) < 0.05 and max(rates) > 0.45


def test_tasks_differ():
    """AU12 is frequent in the pleasant chat and rare in the sad task."""
    model = labels.label_model(BP4D)
    column = BP4D.index(12)

    def task_rate(task: int) -> float:
        values = []
        for s in range(60):
            rng = np.random.default_rng([4, s])
            traits = labels.draw_label_traits(model, rng)
            values.append(labels.sample_labels(model, traits, task, 200, rng).occurrence[:, column].mean())
        return float(np.mean(values))

    chat = task_rate(labels.TASK_NAMES.index("pleasant chat"))
    sad = task_rate(labels.TASK_NAMES.index("sad"))
    assert chat > 0.65 and sad < 0.1


# --- the statistics --------------------------------------------------------------------------------------

TOY = AUSet("toy", (1, 2))
# AU1 ends sequence 1 and starts sequence 2: two runs, not one.
TOY_SEQUENCES = [np.array([[1, 1], [1, 1], [0, 0], [1, 0]], dtype=np.int8), np.array([[1, 0], [0, 0]], dtype=np.int8)]


def test_run_lengths_stay_within_sequences():
    runs = stats.run_lengths(TOY_SEQUENCES)
    assert sorted(runs[0].tolist()) == [1, 1, 2] and runs[1].tolist() == [2]
    np.testing.assert_array_equal(stats.median_run_lengths(TOY_SEQUENCES), [1.0, 2.0])


def test_label_statistics_hand_computed():
    s = stats.label_statistics(TOY_SEQUENCES, TOY)
    # AU1 on in 4 of 6 frames, AU2 in 2, both in 2:
    # phi = (2/6 - 4/6 * 2/6) / sqrt(4/6 * 2/6 * 2/6 * 4/6) = (1/9) / (2/9) = 1/2.
    assert s.rate(1) == pytest.approx(4 / 6) and s.rate(2) == pytest.approx(2 / 6)
    assert s.phi_of(1, 2) == pytest.approx(0.5) and s.phi_of(2, 1) == pytest.approx(0.5)
    assert s.p_given(1, 2) == pytest.approx(1.0) and s.p_given(2, 1) == pytest.approx(0.5)
    assert s.none_fraction == pytest.approx(2 / 6) and s.mean_active == pytest.approx(1.0)
    assert s.combo_fraction((1, 2)) == pytest.approx(2 / 6) and s.combo_fraction(()) == pytest.approx(2 / 6)
    assert s.combo_fraction((2,)) == 0.0
    assert s.n_sequences == 2 and s.n_frames == 6
    json.dumps(s.to_dict())


def test_label_statistics_rejects_wrong_width():
    with pytest.raises(ValueError, match=r"\[T, 2\]"):
        stats.label_statistics([np.zeros((5, 3), dtype=np.int8)], TOY)


def test_phi_from_conditional_matches_bp4d_table():
    rates = labels.TARGETS["bp4d"].rates
    assert labels.phi_from_conditional(0.85, rates[12], rates[6]) == pytest.approx(0.54, abs=0.01)


# --- acceptance (docs/synthau.md, 'Labels'): 2,000 label-only sequences, a few seconds -------------------


@pytest.mark.parametrize("au_set", [BP4D, DISFA])
def test_acceptance_large_draw(au_set):
    report = stats.acceptance_report(au_set, n_sequences=2000, frames=500, seed=0)
    assert report.passed, [(r.name, r.measured, r.target) for r in report.failures]
    gated = [r for r in report.rows if r.gated]
    targets = labels.TARGETS[au_set.name]
    assert len(gated) == len(targets.rates) + len(targets.phi) + len(targets.median_runs)
    json.dumps(report.to_dict())


# --- the command -----------------------------------------------------------------------------------------


def _command(argv: list[str]) -> argparse.Namespace:
    from ks_train.commands import synth_stats

    parser = argparse.ArgumentParser()
    synth_stats.register(parser.add_subparsers())
    return parser.parse_args(["synth-stats", *argv])


def test_command_prints_table_and_fails_on_a_draw_too_short_for_the_durations(capsys):
    # 50-frame sequences cannot hold AU12's 122-frame median run: the gate must fail.
    args = _command(["--sequences", "40", "--frames", "50"])
    assert args.run(args) == 1
    out = capsys.readouterr().out
    assert "median run AU12" in out and "FAIL" in out and "PASS" in out


def test_command_json_and_realised_set_never_fail(capsys):
    args = _command(["--size", "tiny", "--json"])
    assert args.run(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gated"] is False and report["sequences"] == 12
    assert all(row["passed"] is None for row in report["rows"])


# --- the stored constants come from the fit ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("au_set", [BP4D, DISFA])
def test_fit_reproduces_stored_constants(au_set):
    fitted = label_fit.fit_label_model(au_set)
    stored = labels._FITTED[au_set.name]
    np.testing.assert_allclose(fitted.thresholds, stored.thresholds, atol=2e-4)
    np.testing.assert_allclose(
        [c for *_, c in fitted.pair_correlations], [c for *_, c in stored.pair_correlations], atol=2e-3
    )
    np.testing.assert_allclose(fitted.taus, stored.taus, rtol=0.01)
