"""SynthAU: a procedural facial-action video generator (labels, faces, nuisances), pure numpy + OpenCV.

labels.py     the correlated latent label process (rates, co-occurrence, durations, subjects, tasks) and the
              list of rendered AUs
label_fit.py  fitting the label process's constants to its targets (`python -m ks_runtime.synth.label_fit`)
stats.py      label statistics against the BP4D/DISFA targets
identity.py   a synthetic subject: face shape, colours, expressiveness, resting-face quirks
face_model.py an identity's landmark model: control points, AU blend shapes, textures, spline maps
drawing.py    drawing a face with OpenCV from its pixel-space landmarks
face.py       per-frame nuisances and the renderer (landmarks -> pose -> pixels -> camera)
generate.py   sizes, folds, whole sequences, and writing a set to disk in the generic layout
scene.py      scene mode: the face placed in a larger frame, with its true box and eye centres
preview.py    a one-page PNG to look at the AUs, textures, nuisances and scene mode

See docs/synthau.md.
"""
