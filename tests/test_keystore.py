"""Encryption at rest of the keys stored on connections (`batches.keystore`)."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from batches import keystore
from batches.models import Connection, ConnectionKeyError

SECRET = "sk-proj-a-very-secret-key-abcd"


def fernet_key() -> str:
    return Fernet.generate_key().decode()


def test_a_key_round_trips_and_the_stored_value_is_not_the_key(settings):
    settings.BATCHWEB_ENCRYPTION_KEY = fernet_key()

    token = keystore.encrypt(SECRET)

    assert SECRET not in token
    assert keystore.decrypt(token) == SECRET
    assert keystore.can_decrypt(token)


def test_each_encryption_differs_so_equal_keys_do_not_show(settings):
    settings.BATCHWEB_ENCRYPTION_KEY = fernet_key()

    assert keystore.encrypt(SECRET) != keystore.encrypt(SECRET)


def test_a_passphrase_works_as_an_encryption_key(settings):
    settings.BATCHWEB_ENCRYPTION_KEY = "correct horse battery staple, but longer"

    token = keystore.encrypt(SECRET)

    assert keystore.decrypt(token) == SECRET
    settings.BATCHWEB_ENCRYPTION_KEY = "another passphrase entirely"
    assert not keystore.can_decrypt(token)


def test_rotation_new_comma_old_reads_old_keys_and_writes_with_the_new(settings):
    old, new = fernet_key(), fernet_key()
    settings.BATCHWEB_ENCRYPTION_KEY = old
    saved_before = keystore.encrypt(SECRET)

    settings.BATCHWEB_ENCRYPTION_KEY = f"{new}, {old}"
    assert keystore.decrypt(saved_before) == SECRET
    saved_after = keystore.encrypt(SECRET)

    settings.BATCHWEB_ENCRYPTION_KEY = new
    assert keystore.decrypt(saved_after) == SECRET
    assert not keystore.can_decrypt(saved_before)


def test_a_changed_key_is_detected_not_decrypted_to_garbage(settings):
    settings.BATCHWEB_ENCRYPTION_KEY = fernet_key()
    token = keystore.encrypt(SECRET)
    settings.BATCHWEB_ENCRYPTION_KEY = fernet_key()

    with pytest.raises(keystore.KeystoreError, match="not the key it was saved with") as caught:
        keystore.decrypt(token)

    assert "BATCHWEB_ENCRYPTION_KEY" in str(caught.value)
    assert not keystore.can_decrypt(token)


def test_a_tampered_value_is_detected(settings):
    settings.BATCHWEB_ENCRYPTION_KEY = fernet_key()
    token = keystore.encrypt(SECRET)
    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]

    assert not keystore.can_decrypt(tampered)
    assert not keystore.can_decrypt("not a token at all")


def test_without_an_encryption_key_it_says_which_setting_to_set(settings):
    settings.BATCHWEB_ENCRYPTION_KEY = ""

    with pytest.raises(keystore.KeystoreError, match="BATCHWEB_ENCRYPTION_KEY is not set"):
        keystore.encrypt(SECRET)
    settings.BATCHWEB_ENCRYPTION_KEY = " , "
    with pytest.raises(keystore.KeystoreError):
        keystore.decrypt("anything")


# --- On a connection -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_connection_stores_only_the_encrypted_key_and_its_last_four(settings):
    settings.BATCHWEB_ENCRYPTION_KEY = fernet_key()
    connection = Connection(name="Research", slug="research", base_url="https://x.test/v1")
    connection.set_key(f"  {SECRET}\n")
    connection.save()

    stored = Connection.objects.values("key_encrypted", "key_last4", "key_env").get(
        pk=connection.pk
    )
    assert SECRET not in stored["key_encrypted"]
    assert stored["key_last4"] == "abcd"
    assert stored["key_env"] == ""
    connection.refresh_from_db()
    assert connection.api_key() == SECRET
    assert connection.key_source() == "stored, encrypted (ends in …abcd)"


@pytest.mark.django_db
def test_a_connection_whose_key_cannot_be_decrypted_says_so(settings):
    settings.BATCHWEB_ENCRYPTION_KEY = fernet_key()
    connection = Connection(name="Research", slug="research", base_url="https://x.test/v1")
    connection.set_key(SECRET)
    settings.BATCHWEB_ENCRYPTION_KEY = fernet_key()

    with pytest.raises(ConnectionKeyError, match="Research") as caught:
        connection.api_key()

    assert SECRET not in str(caught.value)
    assert not connection.has_key()
