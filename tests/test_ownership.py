"""thingmask.ownership: the "may I write here" rules every writing stage shares (issue 18)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from thingmask.errors import InputError
from thingmask.ownership import MANIFEST, Manifest, check_writable, folder_lock, remove_owned


def test_a_recorded_file_is_owned_until_someone_changes_it(tmp_path: Path) -> None:
    staged = tmp_path / ".stage" / "out.csv"
    staged.parent.mkdir()
    staged.write_text("a,b\n")
    final = tmp_path / "out.csv"
    manifest = Manifest.load(tmp_path)
    manifest.record([staged], as_names=[final])  # recorded before the rename ...
    manifest.save()
    os.replace(staged, final)  # ... and still matching after it (size, mtime, inode kept)
    assert Manifest.load(tmp_path).owns(final)
    check_writable([final])  # ours: may be replaced
    final.write_text("a,b\n1,2\n")  # the user edited it since
    assert not Manifest.load(tmp_path).owns(final)
    with pytest.raises(InputError, match=r"out\.csv: exists and was not written by thingmask"):
        check_writable([final])


def test_refusal_names_every_file_in_one_line_and_overwrite_spares_folders(tmp_path) -> None:
    mine = [tmp_path / "a.mp4", tmp_path / "b.csv"]
    for p in mine:
        p.write_text("user")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "x.txt").write_text("user")
    with pytest.raises(InputError) as refused:
        check_writable([*mine, tmp_path / "new.json"])
    text = str(refused.value)
    assert "\n" not in text and all(str(p) in text for p in mine) and "--overwrite" in text
    check_writable(mine, overwrite=True)  # files may be replaced when asked ...
    with pytest.raises(InputError, match="never a folder of yours"):
        check_writable([tmp_path / "clips"], overwrite=True)  # ... a user's folder never


def test_a_folder_is_owned_only_when_every_file_in_it_is(tmp_path: Path) -> None:
    clips = tmp_path / "v_clips"
    clips.mkdir()
    (clips / "t1.mp4").write_bytes(b"clip")
    manifest = Manifest.load(tmp_path)
    manifest.record([clips])
    assert manifest.owns(clips)
    (clips / "mine.txt").write_text("user")
    assert not manifest.owns(clips)
    assert not remove_owned(clips, manifest) and (clips / "mine.txt").exists()
    (clips / "mine.txt").unlink()
    assert remove_owned(clips, manifest) and not clips.exists()
    manifest.settle()
    assert manifest.files == {}


def test_a_foreign_file_at_the_manifest_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text('{"my": "notes"}')
    with pytest.raises(InputError, match="not thingmask's manifest"):
        check_writable([tmp_path / "new.mp4"])
    (tmp_path / MANIFEST).unlink()
    (tmp_path / MANIFEST).symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(InputError, match="not thingmask's manifest"):
        Manifest.load(tmp_path)


def test_one_writer_per_folder(tmp_path: Path) -> None:
    with (
        folder_lock(tmp_path / "out"),
        pytest.raises(InputError, match="another thingmask run is writing"),
        folder_lock(tmp_path / "out"),
    ):
        pass
    with folder_lock(tmp_path / "out"):  # released: the next run gets it
        pass
