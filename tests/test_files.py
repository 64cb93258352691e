"""Atomic writes: the final name holds a complete file or the previous one, never a part."""
import cv2
import numpy as np
import pytest

from runtime.files import atomic_path, write_bytes_atomic, write_image_atomic, write_text_atomic


def test_writes_replace_the_final_name_and_leave_no_temporary(tmp_path):
    target = tmp_path / "sub" / "report.json"
    write_text_atomic(target, "{}")
    write_text_atomic(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    write_bytes_atomic(tmp_path / "blob.bin", b"\x00\x01")
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["report.json"]


def test_a_failed_writer_keeps_the_previous_file(tmp_path):
    target = tmp_path / "labels.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed half-way")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.png"]


def test_images_keep_their_format_and_refusals_are_errors(tmp_path):
    img = (np.arange(48 * 64) % 9).astype(np.uint8).reshape(48, 64)
    write_image_atomic(tmp_path / "labels.png", img)
    assert np.array_equal(cv2.imread(str(tmp_path / "labels.png"), cv2.IMREAD_UNCHANGED), img)
    with pytest.raises(ValueError, match="could not write"):
        write_image_atomic(tmp_path / "bad.png", np.zeros((4, 4, 7), np.float64))
    assert not (tmp_path / "bad.png").exists()
