"""Which paths are photos to look at: the one filter the scan and the watcher share."""

from __future__ import annotations

import os
from pathlib import Path

from dupwatch.daemon.config import IMAGE_SUFFIXES
from dupwatch.daemon.files import is_candidate, is_under, walk_images


def test_containment_is_by_path_component_not_by_string_prefix() -> None:
    assert is_under("/photos/a.jpg", "/photos")
    assert is_under("/photos/a.jpg", "/photos/")
    assert is_under("/photos", "/photos")
    assert not is_under("/photos2/a.jpg", "/photos")
    assert is_under("/anything", "/")


def test_candidates_by_suffix_case_insensitively_never_hidden_temporary_or_excluded() -> None:
    ok = ["/p/a.jpg", "/p/b.JPEG", "/p/c.Png", "/p/d.heic", "/p/e.webp"]
    assert all(is_candidate(p, IMAGE_SUFFIXES) for p in ok)
    not_ok = [
        "/p/.hidden.jpg",
        "/p/a.jpg.part",
        "/p/b.jpg.crdownload",
        "/p/.syncthing.c.jpg.tmp",
        "/p/.~lock.d.jpg",
        "/p/notes.txt",
        "/p/movie.mp4",
        "/p/noext",
    ]
    assert not any(is_candidate(p, IMAGE_SUFFIXES) for p in not_ok)
    assert not is_candidate("/p/q/a.jpg", IMAGE_SUFFIXES, exclude=[Path("/p/q")])
    assert is_candidate("/p/qq/a.jpg", IMAGE_SUFFIXES, exclude=[Path("/p/q")])


def test_walk_finds_images_in_order_and_skips_hidden_folders_linked_folders_and_exclusions(tmp_path: Path) -> None:
    for rel in ("b/2.jpg", "b/1.png", "a.jpg", ".cache/x.jpg", "q/moved.jpg", "notes.txt", "sub/deep/3.webp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    os.symlink(tmp_path / "a.jpg", tmp_path / "link.jpg")
    os.symlink(tmp_path / "b", tmp_path / "linked-folder")
    found = list(walk_images([tmp_path], IMAGE_SUFFIXES, exclude=[tmp_path / "q"]))
    rel = [os.path.relpath(p, tmp_path) for p in found]
    # the symlink is listed (the reader records that links are not followed); the linked folder is not entered
    assert rel == ["a.jpg", "link.jpg", "b/1.png", "b/2.jpg", "sub/deep/3.webp"]
    assert list(walk_images([tmp_path / "a.jpg"], IMAGE_SUFFIXES)) == [str(tmp_path / "a.jpg")]  # a file as root
