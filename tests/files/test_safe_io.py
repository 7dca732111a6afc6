"""Writes inside a run folder never follow a symbolic link, and never leave half a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from refineloop.errors import RunFolderError
from refineloop.files.safe_io import append_line, read_user_text, write_bytes_atomic, write_text_atomic
from refineloop.files.trace import append_trace, read_trace
from refineloop.run_folder.checkpoints import connect
from refineloop.run_folder.folder import write_meta
from refineloop.run_folder.image_files import save_image, save_json
from refineloop.run_folder.lock import locked


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """A run folder and a file outside it that must stay untouched."""
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    return run, outside


def link(run: Path, name: str, target: Path) -> Path:
    path = run / name
    path.symlink_to(target)
    return path


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("best.png", lambda p: write_bytes_atomic(p, b"png")),
        ("summary.txt", lambda p: write_text_atomic(p, "text")),
        ("trace.jsonl", lambda p: append_line(p, "{}")),
        ("01.json", lambda p: save_json({"score": 1}, p)),
        ("01.png", lambda p: save_image(Image.new("RGB", (8, 8)), p)),
    ],
)
def test_every_writer_refuses_a_link_and_leaves_its_target(planted, name, write):
    run, outside = planted
    path = link(run, name, outside)
    with pytest.raises(RunFolderError, match=f"{name} is a symbolic link: refineloop does not write through links"):
        write(path)
    assert outside.read_text() == "outside\n"
    assert path.is_symlink() and sorted(p.name for p in run.iterdir()) == [name], "no temporary file is left"


def test_a_dangling_link_is_refused_too(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.symlink_to(tmp_path / "not-yet")
    with pytest.raises(RunFolderError, match="is a symbolic link"):
        append_trace(str(tmp_path), {"kind": "x"})
    assert not (tmp_path / "not-yet").exists()


def test_atomic_writes_replace_whole_files_and_appends_add_lines(tmp_path):
    path = tmp_path / "summary.txt"
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    assert path.read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.txt"]
    append_trace(str(tmp_path), {"kind": "a"})
    append_trace(str(tmp_path), {"kind": "b"})
    assert [r["kind"] for r in read_trace(str(tmp_path))] == ["a", "b"]


def test_the_run_folder_lock_meta_and_checkpoints_refuse_links(planted):
    run, outside = planted
    lock = link(run, ".lock", outside)
    with pytest.raises(RunFolderError, match=r"\.lock is a symbolic link"), locked(str(run)):
        pass
    lock.unlink()
    link(run, "notes.txt", outside)
    with pytest.raises(RunFolderError, match=r"notes.txt is a symbolic link"), locked(str(run)):
        pass
    (run / "notes.txt").unlink()
    link(run, "run.json", outside)
    with pytest.raises(RunFolderError, match="run.json is a symbolic link"):
        write_meta(str(run), "t", "greedy")
    link(run, "checkpoints.sqlite", outside)
    with pytest.raises(RunFolderError, match="checkpoints.sqlite is a symbolic link"):
        connect(str(run))
    assert outside.read_text() == "outside\n"


def test_reading_a_users_file_checks_size_and_encoding(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"\xef\xbb\xbfhello")
    assert read_user_text(path, "file f.txt", 100) == "hello"
    path.write_bytes(b"x" * 101)
    with pytest.raises(Exception, match="file f.txt is larger than 100 bytes"):
        read_user_text(path, "file f.txt", 100)
    path.write_bytes(b"ok\n\x80")
    with pytest.raises(Exception, match=r"file f.txt is not UTF-8 text \(byte 0x80 on line 2\)"):
        read_user_text(path, "file f.txt", 100)
