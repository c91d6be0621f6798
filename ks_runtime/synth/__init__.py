"""SynthAU: a procedural facial-action video generator (labels, faces, nuisances), pure numpy + OpenCV.

labels.py  the correlated latent label process (rates, co-occurrence, durations, subjects, tasks)
face.py    identities and the parametric face renderer, with per-frame nuisances
generate.py sizes, folds, whole sequences, and writing a set to disk in the generic layout
stats.py   label statistics against the BP4D/DISFA targets
scene.py   scene mode: the face placed in a larger frame, with its true box and eye centres
"""
