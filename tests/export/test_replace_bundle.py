"""Exporting over a bundle: replaced only when it holds nothing but the files its manifest lists (else --force),
and the hidden folders of an export that was killed are cleaned up by the next one."""

import copy
import os
import shutil

import pytest

import ks_export.export as ex
from ks_export import ExportError
from ks_export.export import export_bundle
from tests.train.test_run_folder import dead_pid


@pytest.fixture()
def quick_export(monkeypatch, exported):
    """_export_into copies the session's bundle into the work folder: the replacing is under test, not the export."""
    bundle, report = exported

    def copy_bundle(ckpt, work, *args):
        shutil.copytree(bundle, work, dirs_exist_ok=True)
        return copy.copy(report)

    monkeypatch.setattr(ex, "_export_into", copy_bundle)


def test_an_exported_bundle_lists_every_file_it_holds(bundle):
    assert ex.unlisted_files(bundle) == []  # so exporting over it again needs no --force


def test_a_bundle_holding_files_its_manifest_does_not_list_is_replaced_only_with_force(
    quick_export, checkpoint, bundle_copy
):
    (bundle_copy / "notes.txt").write_text("keep me")
    (bundle_copy / "trt" / "encoder.H100.trt10.fp16.plan").write_bytes(b"built on the device")
    message = r"holds 2 file\(s\) its manifest.json does not list \(notes.txt, trt/encoder.H100.trt10.fp16.plan\)"
    with pytest.raises(ExportError, match=message + r", which replacing the bundle would delete; .* --force"):
        export_bundle(checkpoint, bundle_copy)
    assert (bundle_copy / "notes.txt").read_text() == "keep me"
    assert export_bundle(checkpoint, bundle_copy, force=True).bundle == bundle_copy
    assert not (bundle_copy / "notes.txt").exists() and ex.unlisted_files(bundle_copy) == []


def test_a_bundle_holding_only_its_listed_files_is_replaced(quick_export, checkpoint, bundle_copy):
    assert export_bundle(checkpoint, bundle_copy).bundle == bundle_copy
    assert ex.unlisted_files(bundle_copy) == []


def test_the_folders_of_a_killed_export_are_cleaned_up_by_the_next(quick_export, checkpoint, bundle, tmp_path, caplog):
    out, dead = tmp_path / "b", dead_pid()
    partial = tmp_path / f".b.partial-{dead}"
    partial.mkdir()
    (partial / "encoder.onnx").write_bytes(b"half a graph")
    moved_aside = shutil.copytree(bundle, tmp_path / f".b.old-{dead}")  # killed between the two renames
    (moved_aside / "notes.txt").write_text("mine")
    live = tmp_path / f".b.partial-{os.getppid()}"  # another export, still running
    live.mkdir()
    with caplog.at_level("WARNING", logger="ks_export.export"):
        with pytest.raises(ExportError, match=r"\(notes.txt\)"):  # the restored bundle, notes and all
            export_bundle(checkpoint, out)
    assert (out / "notes.txt").read_text() == "mine" and not moved_aside.exists()
    assert not partial.exists() and live.exists()
    assert (
        f"restored from {moved_aside}" in caplog.text
        and "removed, left by an export that did not finish" in caplog.text
    )
