"""Both object stores against the same contract: the directory store and the S3 store on a real
S3-protocol server (moto, or MinIO when SIGHTLINE_TEST_S3_ENDPOINT is set)."""

from __future__ import annotations

import threading

import httpx
import pytest

from infra.store import (
    InvalidKeyError,
    LocalStore,
    ObjectNotFoundError,
    frame_key,
    put_frame,
    put_frames,
    sha256_hex,
)


@pytest.fixture(params=["local", "s3"])
def store(request, local_store):
    return local_store if request.param == "local" else request.getfixturevalue("s3_store")


def test_put_get_exists_delete_list(store):
    store.put("a/b/one.bin", b"1")
    store.put("a/two.bin", b"22")
    store.put("other/three.bin", b"333")
    assert store.get("a/b/one.bin") == b"1"
    assert store.exists("a/two.bin") and not store.exists("a/none.bin")
    assert store.size("a/two.bin") == 2
    with pytest.raises(ObjectNotFoundError):
        store.size("a/none.bin")
    assert store.list("a/") == ["a/b/one.bin", "a/two.bin"]
    store.put("a/two.bin", b"replaced")
    assert store.get("a/two.bin") == b"replaced"
    store.delete("a/two.bin")
    assert not store.exists("a/two.bin")
    with pytest.raises(ObjectNotFoundError):
        store.get("a/two.bin")


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "a//b", "a/./b", "", "a\\b", "~/x"])
def test_unsafe_keys_are_refused(store, key):
    with pytest.raises(InvalidKeyError):
        store.put(key, b"x")
    with pytest.raises(InvalidKeyError):
        store.get(key)


def test_frames_are_content_addressed(store):
    data = b"\xff\xd8 pretend jpeg"
    key = put_frame(store, data, "image/jpeg")
    assert key == frame_key(sha256_hex(data)) and sha256_hex(data) in key
    assert put_frame(store, data, "image/jpeg") == key  # storing it again is a no-op
    assert store.get(key) == data


def test_frames_stored_in_a_group_are_each_stored_once(store):
    first, second = b"\xff\xd8 first", b"\xff\xd8 second"
    keys = [frame_key(sha256_hex(first)), frame_key(sha256_hex(second))]
    store.put(keys[0], b"already there")  # a frame already stored is left alone, not written again
    put_frames(store, [(keys[0], first, "image/jpeg"), (keys[1], second, "image/jpeg")])
    assert store.get(keys[0]) == b"already there"
    assert store.get(keys[1]) == second
    put_frames(store, [(keys[1], second, "image/jpeg")])  # again: nothing changes
    assert store.list("frames/") == sorted(keys)


def test_a_group_is_stored_whole_or_not_at_all(tmp_path):
    """A directory store writes a group's bytes, syncs, then names them: a write that fails part-way
    leaves no name and no temp file behind (a name always holds whole bytes)."""
    store = LocalStore(tmp_path)
    group = [(f"frames/sha256/aa/{i:064d}", bytes([i]) * 1000, "image/jpeg") for i in range(5)]
    with pytest.raises(InvalidKeyError):
        store.put_many([*group[:3], ("frames/../escape", b"x", "image/jpeg"), *group[3:]])
    assert store.list() == [] and not any(p.is_file() for p in tmp_path.rglob("*"))
    store.put_many(group)
    assert [store.get(key) for key, _, _ in group] == [data for _, data, _ in group]
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.rglob("*"))


def test_large_object_round_trips(store):
    data = bytes(range(256)) * (24 * 1024)  # 6 MiB: a multipart upload on S3
    store.put("big/object.bin", data)
    assert store.get("big/object.bin") == data


def test_local_writes_are_atomic(tmp_path):
    """Readers racing a writer see the old or the new object whole, never a torn one; no temp file stays."""
    store = LocalStore(tmp_path)
    old, new = b"o" * 2_000_000, b"n" * 2_000_000
    store.put("k/obj", old)
    seen, stop = set(), threading.Event()

    def read():
        while not stop.is_set():
            data = store.get("k/obj")
            seen.add(data[:1] + data[-1:])

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(20):
        store.put("k/obj", new if i % 2 else old)
    stop.set()
    reader.join()
    assert seen <= {b"oo", b"nn"}
    assert [p.name for p in (tmp_path / "k").iterdir()] == ["obj"]


def test_s3_presigned_url_serves_the_object(s3_store):
    s3_store.put("frames/x.jpg", b"image bytes", "image/jpeg")
    url = s3_store.url("frames/x.jpg")
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"image bytes"


def test_local_store_has_no_url(local_store):
    local_store.put("frames/x.jpg", b"x")
    assert local_store.url("frames/x.jpg") is None
