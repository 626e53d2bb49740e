"""Allow-lists for values that later become paths, commands or audit text."""

from __future__ import annotations

import hashlib
import string
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain import validation
from orchestrator.errors import InvalidInput

# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------

ORDINARY_NAMES = ["lab", "Lab-2", "cart_07", "pc-high", "a", "9", "math.lab", "x" * 63, "A1_b-c.d"]

REFUSED_NAMES = [
    ("empty", ""),
    ("slash", "lab/1"),
    ("leading slash", "/etc"),
    ("backslash", "lab\\1"),
    ("windows path", "C:\\Windows"),
    ("parent", ".."),
    ("parent in path", "a/../b"),
    ("double dot inside", "lab..1"),
    ("leading dot", ".hidden"),
    ("leading dash", "-rf"),
    ("leading underscore", "_lab"),
    ("space", "computer lab"),
    ("leading space", " lab"),
    ("trailing space", "lab "),
    ("tab", "lab\t1"),
    ("newline", "lab\n"),
    ("carriage return", "lab\r"),
    ("nul", "lab\x00"),
    ("escape", "lab\x1b[31m"),
    ("delete", "lab\x7f"),
    ("64 characters", "x" * 64),
    ("100 characters", "y" * 100),
    ("non-ascii letter", "café"),
    ("fullwidth slash", "lab\uff0f1"),
    ("shell metacharacter", "lab;rm"),
    ("glob", "lab*"),
    ("colon", "c:lab"),
]


@pytest.mark.parametrize("value", ORDINARY_NAMES)
def test_ordinary_names_are_accepted_unchanged(value: str) -> None:
    assert validation.name(value) == value


@pytest.mark.parametrize("value", [v for _, v in REFUSED_NAMES], ids=[n for n, _ in REFUSED_NAMES])
def test_names_that_could_escape_a_folder_or_a_command_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput):
        validation.name(value)


def test_name_refusal_names_the_field_and_the_rule() -> None:
    with pytest.raises(InvalidInput) as info:
        validation.name("a/b", field="image")
    assert info.value.field == "image"
    assert str(info.value).startswith("image: 'a/b' is not allowed")
    assert "no spaces, slashes or '..'" in str(info.value)


def test_name_refuses_values_that_are_not_text() -> None:
    with pytest.raises(InvalidInput):
        validation.name(7)  # type: ignore[arg-type]


def _dangerous(value: str) -> bool:
    return (
        "/" in value
        or "\\" in value
        or ".." in value
        or any(unicodedata.category(ch).startswith("C") for ch in value)
    )


_TRICKY = st.text(
    alphabet=st.sampled_from(list("aZ09._-/\\ \t\n\r\x00\x1b\x7f\u200b\u202e\u2215é"))
    | st.characters(),
    max_size=70,
)


@given(_TRICKY)
def test_any_accepted_name_has_no_separator_parent_or_control_character(value: str) -> None:
    try:
        accepted = validation.name(value)
    except InvalidInput:
        return
    assert accepted == value
    assert not _dangerous(value)
    assert value.isascii() and value.isprintable()
    assert 1 <= len(value) <= 63


_SAFE_TAIL = st.text(alphabet=string.ascii_letters + string.digits + "._-", max_size=62)


@given(st.sampled_from(string.ascii_letters + string.digits), _SAFE_TAIL)
def test_any_short_name_of_allowed_characters_without_double_dots_is_accepted(
    first: str, tail: str
) -> None:
    value = first + tail
    if ".." in value:
        with pytest.raises(InvalidInput):
            validation.name(value)
    else:
        assert validation.name(value) == value


# ---------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("0", (0,)),
        ("7", (7,)),
        ("2026.1", (2026, 1)),
        ("1.4.2", (1, 4, 2)),
        ("10.0.0.1", (10, 0, 0, 1)),
        ("999999", (999999,)),
    ],
)
def test_dotted_numeric_versions_parse_to_their_sort_key(value: str, key: tuple[int, ...]) -> None:
    assert validation.version(value) == key


REFUSED_VERSIONS = [
    ("empty", ""),
    ("leading zero", "01"),
    ("leading zero in part", "2026.01"),
    ("five parts", "1.2.3.4.5"),
    ("letters", "1.2a"),
    ("v prefix", "v1.2"),
    ("beta", "1.0-beta"),
    ("trailing dot", "1."),
    ("leading dot", ".1"),
    ("empty part", "1..2"),
    ("space", "1. 2"),
    ("newline", "1.2\n"),
    ("negative", "-1"),
    ("seven digits", "1000000"),
    ("arabic-indic digits", "\u0661.\u0662"),
    ("path", "1/../2"),
]


@pytest.mark.parametrize(
    "value", [v for _, v in REFUSED_VERSIONS], ids=[n for n, _ in REFUSED_VERSIONS]
)
def test_versions_that_are_not_one_to_four_plain_numbers_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="is not a version"):
        validation.version(value)


@given(st.lists(st.integers(0, 999_999), min_size=1, max_size=4))
def test_any_one_to_four_part_version_round_trips(parts: list[int]) -> None:
    text = ".".join(str(p) for p in parts)
    assert validation.version(text) == tuple(parts)


@given(
    st.lists(st.integers(0, 999_999), min_size=1, max_size=4),
    st.lists(st.integers(0, 999_999), min_size=1, max_size=4),
)
def test_version_keys_order_versions_numerically(a: list[int], b: list[int]) -> None:
    ka = validation.version(".".join(map(str, a)))
    kb = validation.version(".".join(map(str, b)))
    assert (ka < kb) is (tuple(a) < tuple(b))


@pytest.mark.parametrize(
    ("value", "bumped"),
    [("1.0", "1.1"), ("2026.9", "2026.10"), ("3", "4"), ("1.2.3.9", "1.2.3.10")],
)
def test_bump_adds_one_to_the_last_number(value: str, bumped: str) -> None:
    assert validation.bump(value) == bumped


# ---------------------------------------------------------------------------
# Free text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "bad\x00byte",
        "bell\x07",
        "esc\x1b[2J",
        "del\x7f",
        "cr\rlf",
        "zero\u200bwidth",
        "bidi\u202eoverride",
        "private\ue000use",
        "c1\x85control",
    ],
    ids=repr,
)
def test_text_refuses_control_and_format_characters(value: str) -> None:
    with pytest.raises(InvalidInput, match="contains a control character"):
        validation.text(value, field="reason")


def test_text_keeps_newlines_and_tabs_and_strips_the_ends() -> None:
    assert validation.text("  line one\n\tline two  \n", field="notes") == "line one\n\tline two"


def test_text_accepts_ordinary_unicode() -> None:
    assert validation.text("Écran d'accueil — élèves ✓", field="notes") == (
        "Écran d'accueil — élèves ✓"
    )


def test_required_text_refuses_blank_values() -> None:
    for blank in ("", "   ", "\n\t "):
        with pytest.raises(InvalidInput, match="reason: is required"):
            validation.text(blank, field="reason", required=True)
    assert validation.text("   ", field="reason") == ""


def test_text_refuses_values_longer_than_the_limit_after_stripping() -> None:
    assert validation.text(" " + "a" * 10 + " ", field="f", max_len=10) == "a" * 10
    with pytest.raises(InvalidInput, match="is 11 characters; at most 10"):
        validation.text("a" * 11, field="f", max_len=10)


def test_text_refuses_values_that_are_not_text() -> None:
    with pytest.raises(InvalidInput, match="must be text"):
        validation.text(None, field="f")  # type: ignore[arg-type]


@given(st.text(max_size=200))
def test_accepted_text_never_carries_control_characters_other_than_newline_and_tab(
    value: str,
) -> None:
    try:
        out = validation.text(value, field="f")
    except InvalidInput:
        return
    assert out == value.strip()
    for ch in out:
        assert ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")


def test_label_refuses_slashes_and_line_breaks() -> None:
    assert validation.label("Windows 11 24H2", field="os") == "Windows 11 24H2"
    for bad in ("a/b", "a\\b", "a\nb", "a\tb", ""):
        with pytest.raises(InvalidInput):
            validation.label(bad, field="os")


# ---------------------------------------------------------------------------
# KEY=VALUE lists
# ---------------------------------------------------------------------------


def test_parse_key_values_splits_on_the_first_equals_sign() -> None:
    assert validation.parse_key_values(
        ["wallpaper=school", "url=https://x/?a=b", "empty="], field="set"
    ) == {
        "wallpaper": "school",
        "url": "https://x/?a=b",
        "empty": "",
    }


def test_parse_key_values_strips_keys_but_not_values() -> None:
    assert validation.parse_key_values([" key =  v "], field="set") == {"key": "  v "}


def test_parse_key_values_of_nothing_is_empty() -> None:
    assert validation.parse_key_values([], field="set") == {}


def test_parse_key_values_refuses_an_item_without_equals_sign() -> None:
    with pytest.raises(InvalidInput) as info:
        validation.parse_key_values(["a=1", "wallpaper"], field="set")
    assert str(info.value) == "set: 'wallpaper' is not KEY=VALUE"
    assert info.value.field == "set"


@pytest.mark.parametrize("items", [["a=1", "a=2"], ["a=1", " a =1"], ["k=", "k=x"]])
def test_parse_key_values_refuses_a_key_given_twice(items: list[str]) -> None:
    with pytest.raises(InvalidInput, match="is given twice"):
        validation.parse_key_values(items, field="set")


# ---------------------------------------------------------------------------
# SHA-256
# ---------------------------------------------------------------------------

HEX = "ab" * 32


def test_sha256_hex_accepts_64_hex_digits() -> None:
    assert validation.sha256_hex(HEX) == HEX


def test_sha256_hex_normalizes_case_and_prefix() -> None:
    assert validation.sha256_hex(HEX.upper()) == HEX
    assert validation.sha256_hex("sha256:" + HEX) == HEX
    assert validation.sha256_hex("SHA256:" + HEX.upper()) == HEX


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ab" * 31 + "a",
        "ab" * 32 + "a",
        "g" * 64,
        " " + HEX,
        HEX + "\n",
        "md5:" + HEX,
        "0x" + HEX,
    ],
    ids=["empty", "63", "65", "not hex", "space", "newline", "other prefix", "0x"],
)
def test_sha256_hex_refuses_anything_else(value: str) -> None:
    with pytest.raises(InvalidInput, match="64 hexadecimal digits"):
        validation.sha256_hex(value, field="installer-sha256")


@given(st.binary())
def test_sha256_hex_accepts_every_real_digest(data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    assert validation.sha256_hex(digest) == digest
    assert validation.sha256_hex(f"sha256:{digest.upper()}") == digest
