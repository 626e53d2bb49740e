"""Signed manifests: a release's signature covers the image's identity, approved
digest, index and effective sunset, and a receiver refuses a tampered, unsigned,
wrong, replayed older or sunset image before it applies anything."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.imagestore import manifest as mf
from orchestrator.imagestore.manifest import Manifest

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
TRUSTED = {mf.key_id(KEY.public_key()): KEY.public_key()}
INDEX = b"caibx bytes of 101/lab@1.2"
TODAY = date(2026, 12, 2)

LAB = Manifest(
    kind="custom_image",
    scope="101",
    name="lab",
    version="1.2",
    approved_digest="sha256:" + "ab" * 32,
    index_sha256=hashlib.sha256(INDEX).hexdigest(),
    size=20 * 2**30,
    chunks=320_000,
    sunset=date(2027, 6, 30),
    released_at=datetime(2026, 12, 1, 22, 0, tzinfo=UTC),
)


def _verify(data: bytes, **kw: object) -> Manifest:
    expect: dict[str, object] = {"kind": "custom_image", "scope": "101", "name": "lab"}
    return mf.verify(data, TRUSTED, today=TODAY, **(expect | kw))  # type: ignore[arg-type]


def _envelope(signed: bytes, signature: bytes, key: Ed25519PrivateKey = KEY) -> bytes:
    return json.dumps(
        {
            "manifest": base64.b64encode(signed).decode(),
            "key_id": mf.key_id(key.public_key()),
            "signature": base64.b64encode(signature).decode(),
        }
    ).encode()


def test_a_signed_manifest_verifies_and_binds_its_index() -> None:
    data = mf.sign(LAB, KEY).to_json()

    got = _verify(data, version="1.2", installed_version="1.1")

    assert got == LAB and got.ref == "101/lab@1.2"
    mf.check_index(got, INDEX)
    with pytest.raises(mf.Tampered, match="not the signed"):
        mf.check_index(got, INDEX + b"!")


def test_a_manifest_signed_by_a_key_the_district_does_not_hold_is_refused() -> None:
    with pytest.raises(mf.Unsigned, match="not one of the district's"):
        _verify(mf.sign(LAB, OTHER_KEY).to_json())


def test_a_changed_sunset_under_the_old_signature_is_refused_as_tampered() -> None:
    honest = mf.sign(LAB, KEY)
    later = replace(LAB, sunset=date(2030, 1, 1)).canonical()

    with pytest.raises(mf.Tampered):
        _verify(_envelope(later, honest.signature))


def test_another_images_manifest_is_refused_even_when_validly_signed() -> None:
    theirs = mf.sign(replace(LAB, scope="102"), KEY).to_json()
    with pytest.raises(mf.WrongImage, match="for custom_image 102/lab@1.2, not"):
        _verify(theirs)
    with pytest.raises(mf.WrongImage):
        _verify(mf.sign(LAB, KEY).to_json(), version="1.3")


def test_an_older_release_replayed_over_a_newer_install_is_refused() -> None:
    old = mf.sign(replace(LAB, version="1.1"), KEY).to_json()
    with pytest.raises(mf.Replayed, match="older than the installed 1.10"):
        _verify(old, installed_version="1.10")
    assert _verify(old, installed_version="1.1").version == "1.1"  # a re-apply is not a replay


def test_an_image_on_or_past_its_effective_sunset_is_refused() -> None:
    due = mf.sign(replace(LAB, sunset=TODAY), KEY).to_json()
    with pytest.raises(mf.Sunset, match="reached its sunset on 2026-12-02"):
        _verify(due)
    assert _verify(mf.sign(replace(LAB, sunset=None), KEY).to_json()).sunset is None


def test_a_second_spelling_of_the_same_manifest_is_not_accepted() -> None:
    spaced = json.dumps(json.loads(LAB.canonical()), indent=1).encode()
    with pytest.raises(mf.Malformed, match="canonical"):
        _verify(_envelope(spaced, KEY.sign(spaced)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "envelope is not JSON"),
        (b"[]", "exactly manifest, key_id and signature"),
        (b'{"manifest": "", "key_id": "zz", "signature": ""}', "key_id"),
        (
            b'{"manifest": "***", "key_id": "0123456789abcdef", "signature": ""}',
            "not base64",
        ),
        (b"{" + b" " * mf.MAX_ENVELOPE + b"}", "at most"),
    ],
)
def test_a_malformed_envelope_is_refused_saying_what(data: bytes, message: str) -> None:
    with pytest.raises(mf.Malformed, match=message):
        _verify(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "firmware"),
        ("scope", "../101"),
        ("name", "lab/../../etc"),
        ("version", "1.02"),
        ("approved_digest", "md5:00"),
        ("index_sha256", "AB" * 32),
        ("size", -1),
        ("released_at", datetime(2026, 12, 1, 22, 0)),
    ],
)
def test_a_manifest_with_a_bad_field_cannot_be_made(field: str, value: object) -> None:
    with pytest.raises(mf.Malformed, match=f"bad {field}"):
        replace(LAB, **{field: value})


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_changed_byte_of_a_signed_manifest_is_refused(position: int, flip: int) -> None:
    data = bytearray(mf.sign(LAB, KEY).to_json())
    data[position % len(data)] ^= flip
    try:
        got = _verify(bytes(data))
    except mf.ManifestRefused:
        return
    # Only a change that leaves the signed bytes, the key and the signature the
    # same may pass (a JSON whitespace or key-order change of the envelope).
    assert got == LAB
