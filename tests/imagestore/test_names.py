"""What becomes a path in the store is allow-listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.imagestore import ImageStore, UnsafeName, chunk_id_hex, image_name, read_index


@pytest.mark.parametrize(
    "name",
    ["pc-high-2026.1", "101.lab", "mac_elem", "a", "0" * 81],
)
def test_ordinary_image_names_are_accepted(name: str) -> None:
    assert image_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../etc",
        "a/b",
        "..",
        "a..b",
        "a\x00b",
        ".hidden",
        "-flag",
        "Upper",
        "a b",
        "0" * 82,
        "a\\b",
        "caf\u00e9",
    ],
)
def test_unsafe_image_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeName):
        image_name(name)


def test_a_traversing_name_writes_nothing_outside_the_store(tmp_path: Path) -> None:
    source = tmp_path / "a.img"
    source.write_bytes(b"x" * 5000)
    with ImageStore(tmp_path / "images") as store:
        with pytest.raises(UnsafeName):
            store.import_file("../../escape", source)
        with pytest.raises(UnsafeName):
            store.index("../indexes/x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.img", "images"]
    assert list((tmp_path / "images" / "chunks").iterdir()) == []


@pytest.mark.parametrize(
    "chunk_id",
    ["a" * 63, "a" * 65, "A" * 64, "g" * 64, "../" + "a" * 61, "a" * 32, ""],
)
def test_a_chunk_id_is_exactly_64_lowercase_hex_digits(chunk_id: str) -> None:
    with pytest.raises(UnsafeName):
        chunk_id_hex(chunk_id)


def test_a_chunk_path_is_refused_for_an_id_of_the_wrong_length(tmp_path: Path) -> None:
    with ImageStore(tmp_path / "images") as store:
        with pytest.raises(UnsafeName):
            store.chunks.path(b"\x01" * 31)
        assert store.chunks.path("ab" * 32).parent.name == "abab"


def test_a_path_with_a_nul_byte_is_refused() -> None:
    with pytest.raises(UnsafeName):
        read_index("indexes/a\x00.caibx")
