import base64
import hashlib

from herald.core.keys import KEY_PATTERN, _new_key, digest, key_id_of, matches


def test_a_key_starts_hk_embeds_its_id_and_carries_256_random_bits_of_secret() -> None:
    key_id, key = _new_key()
    assert KEY_PATTERN.fullmatch(key)
    assert key.startswith(f"hk_{key_id}_")
    secret = key.split("_", 2)[2]
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert key_id_of(key) == key_id


def test_keys_never_repeat() -> None:
    keys = {_new_key()[1] for _ in range(1000)}
    assert len(keys) == 1000
    assert len({key_id_of(key) for key in keys}) == 1000


def test_only_the_hash_of_the_whole_key_matches() -> None:
    _, key = _new_key()
    stored = digest(key)
    assert stored == hashlib.sha256(key.encode()).digest()
    assert matches(key, stored)
    assert not matches(key[:-1] + ("A" if key[-1] != "A" else "B"), stored)


def test_anything_that_is_not_a_key_has_no_id() -> None:
    _, key = _new_key()
    for bad in ("", "hk_", key + "x", key[1:], key.replace("hk_", "HK_"), "Bearer " + key):
        assert key_id_of(bad) is None
