"""Images (issue 18): a single image, a list of images or a folder of unrelated images is scored per image, each its
own one-frame sequence whose clip is the image repeated n times, with a `file` column; `--sequence` (or OpenFace's
-fdir) reads a folder as one video's frames."""

import cv2
import numpy as np
import pytest

from ks_runtime.cli import main
from ks_runtime.detector import Detector
from ks_runtime.io.table import read_results_csv
from tests.runtime.conftest import synth_frames


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Two unrelated pictures, a face and another subject's face in inverted colours, as a folder of PNGs."""
    folder = tmp_path_factory.mktemp("pictures")
    a = synth_frames(1, size=32, subject=0, seed=3)[0][0]
    b = 255 - synth_frames(1, size=32, subject=1, seed=9)[0][0]
    for name, image in (("photo1.png", a), ("photo2.png", b)):
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder, a, b


def probs(table):
    return table[[c for c in table.columns if c.endswith("_p")]].to_numpy()


@pytest.mark.parametrize("policy", ["last", "center"])
def test_images_scored_alone_equal_the_same_images_as_a_folder(bundle, pictures, policy):
    folder, a, b = pictures
    one, two = folder / "photo1.png", folder / "photo2.png"
    detector = Detector(bundle, policy=policy)
    alone = np.concatenate([probs(detector.detect(one)), probs(detector.detect(two))])
    together = detector.detect(folder)
    assert together["file"].tolist() == [str(one), str(two)] and together["timestamp"].tolist() == [0.0, 0.0]
    # Nothing of one image reaches the other (the encoder's batches differ: float rounding only).
    np.testing.assert_allclose(probs(together), alone, atol=1e-6)
    listed = detector.detect([two, one])  # a list, in its own order
    assert listed["file"].tolist() == [str(two), str(one)]
    np.testing.assert_allclose(probs(listed), alone[::-1], atol=1e-6)
    # An image's clip is the image repeated n times: the middle frame of n copies streamed as a video.
    n = detector.manifest.clip_len
    copies = list(detector.stream(np.stack([b] * (2 * n - 1))))
    np.testing.assert_allclose(copies[n - 1].probs, alone[1], atol=1e-6)
    # As one video (asked for), the clips mix the two pictures: under `last` the second's clip holds the first,
    # under `center` the first's holds the second. (The test bundle's model barely looks at a clip's other
    # frames, so the change is small, but a hundred times the float rounding above.)
    video = detector.detect(folder, sequence=True)
    assert video["timestamp"].tolist() == pytest.approx([0.0, 1 / 30]) and video["file"].tolist()[1] == str(two)
    mixed = 1 if policy == "last" else 0
    assert np.abs(probs(video)[mixed] - alone[mixed]).max() > 1e-5


def test_each_image_gets_a_fresh_face_stage(bundle, pictures, tmp_path):
    """`auto` chooses per image: a square crop goes through as aligned, a 640 x 480 frame through the detector
    (a blank one: no face), whatever came before it."""
    folder, a, _ = pictures
    cv2.imwrite(str(tmp_path / "1.png"), cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "2.png"), np.full((480, 640, 3), 128, np.uint8))
    table = Detector(bundle).detect(tmp_path)
    assert table["success"].tolist() == [1, 0]
    assert Detector(bundle).detect(tmp_path, sequence=True)["success"].tolist() == [1, 1]  # one video: auto chose once


def test_ks_run_scores_an_image_a_folder_and_a_sequence(bundle, pictures, tmp_path, capsys):
    folder, _, _ = pictures
    base = [str(bundle), "--no-progress", "--out-dir", str(tmp_path)]
    assert main([*base, "--input", str(folder / "photo2.png")]) == 0  # a single image: once refused
    assert main([*base, "--input", str(folder)]) == 0
    alone, together = read_results_csv(tmp_path / "photo2.csv"), read_results_csv(tmp_path / f"{folder.name}.csv")
    assert list(together.columns)[-1] == "file" and together["file"].tolist()[1] == str(folder / "photo2.png")
    au = [c for c in alone.columns if c.endswith("_r")]
    assert np.allclose(together.loc[1, au].to_numpy(float), alone.loc[0, au].to_numpy(float), atol=2e-3, equal_nan=True)
    assert main([*base, "--input", str(folder), "--realtime", "--csv", str(tmp_path / "paced.csv")]) == 0
    paced = read_results_csv(tmp_path / "paced.csv")  # replayed as a camera would: still pictures of their own
    assert paced["file"].equals(together["file"])
    assert np.allclose(paced[au].to_numpy(float), together[au].to_numpy(float), atol=2e-3, equal_nan=True)
    for flags in (["--input", str(folder), "--sequence"], ["-fdir", str(folder)]):
        assert main([*base, *flags, "--format", "ks", "--csv", str(tmp_path / "seq.csv")]) == 0
        video = read_results_csv(tmp_path / "seq.csv")
        assert video["timestamp"].tolist() == [0.0, 0.033] and video["file"].tolist()[0] == str(folder / "photo1.png")


def test_a_path_with_a_comma_is_quoted(bundle, pictures, tmp_path):
    folder, a, _ = pictures
    odd = tmp_path / 'an "odd", name.png'
    cv2.imwrite(str(odd), cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
    for csv_format in ("ks", "openface"):
        Detector(bundle).detect(odd, csv=tmp_path / f"{csv_format}.csv", csv_format=csv_format)
        assert read_results_csv(tmp_path / f"{csv_format}.csv")["file"].tolist() == [str(odd)]


def test_an_unreadable_image_is_named_and_the_images_before_it_kept(bundle, pictures, tmp_path, capsys):
    folder, a, _ = pictures
    cv2.imwrite(str(tmp_path / "1.png"), cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
    (tmp_path / "2.png").write_bytes(b"not a png")
    cv2.imwrite(str(tmp_path / "3.png"), cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
    code = main([str(bundle), "--input", str(tmp_path), "--csv", str(tmp_path / "out.csv"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and f"{tmp_path / '2.png'}: image 1 cannot be decoded" in err
    assert read_results_csv(tmp_path / "out.csv")["file"].tolist() == [str(tmp_path / "1.png")]
