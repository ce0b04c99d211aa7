"""The pure-Python TensorFlow checkpoint V2 reader.

The checkpoints here are written by a small writer in this file, built from
the format's description (LevelDB table + BundleEntryProto + raw tensor data)
and an independent bitwise CRC32C, so the reader is checked against bytes it
did not produce; a last test reads the real musicnn checkpoints.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from core.models import tf_checkpoint
from core.models.base import ModelError

TF_DTYPES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3, np.dtype(np.int64): 9,
             np.dtype(np.float16): 19, np.dtype(np.uint8): 4}


def bitwise_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def field_fixed32(number: int, value: int) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<I", value)


def block(entries: list[tuple[bytes, bytes]], restart_interval: int = 2) -> bytes:
    """A table block with prefix-compressed keys and a restart every ``restart_interval`` entries."""
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        previous = key
    for r in restarts:
        out += struct.pack("<I", r)
    return bytes(out + struct.pack("<I", len(restarts)))


def write_checkpoint(prefix, tensors: dict[str, np.ndarray], per_block: int = 2) -> None:
    """Write ``prefix.index`` and ``prefix.data-00000-of-00001`` as TensorFlow's BundleWriter lays them out."""
    data = bytearray()
    entries = [(b"", field_varint(1, 1) + field_varint(2, 0) + field_bytes(3, field_varint(1, 1)))]
    for name in sorted(tensors):
        array = np.array(tensors[name], order="C")
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        shape = b"".join(field_bytes(2, field_varint(1, d)) for d in array.shape)
        proto = (field_varint(1, TF_DTYPES[array.dtype]) + field_bytes(2, shape) + field_varint(4, len(data))
                 + field_varint(5, len(raw)) + field_fixed32(6, masked(bitwise_crc32c(raw))))
        entries.append((name.encode(), proto))
        data += raw
    table, index_entries = bytearray(), []

    def add_block(contents: bytes) -> bytes:
        handle = varint(len(table)) + varint(len(contents))
        table.extend(contents + b"\x00" + struct.pack("<I", masked(bitwise_crc32c(contents + b"\x00"))))
        return handle

    for i in range(0, len(entries), per_block):
        chunk = entries[i:i + per_block]
        index_entries.append((chunk[-1][0], add_block(block(chunk))))
    meta_handle = add_block(block([]))
    index_handle = add_block(block(index_entries))
    footer = (meta_handle + index_handle).ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    (prefix.parent / (prefix.name + ".index")).write_bytes(bytes(table) + footer)
    (prefix.parent / (prefix.name + ".data-00000-of-00001")).write_bytes(bytes(data))


@pytest.fixture
def tensors():
    rng = np.random.default_rng(0)
    return {
        "conv/kernel": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
        "conv/bias": rng.standard_normal(4).astype(np.float32),
        "conv/kernel/Adam": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
        "dense/kernel": rng.standard_normal((1200, 3)).astype(np.float64),
        "global_step": np.array(1234567, dtype=np.int64),
        "half": np.array([0.5, -2.0, 65504.0], dtype=np.float16),
        "counts": np.arange(7, dtype=np.int32).reshape(7, 1),
        "bytes": np.arange(5, dtype=np.uint8),
    }


@pytest.fixture
def written(tmp_path, tensors):
    prefix = tmp_path / "model.ckpt"
    write_checkpoint(prefix, tensors)
    return prefix


def test_crc32c_matches_the_standard_check_value_and_a_bitwise_crc():
    assert tf_checkpoint.crc32c(b"123456789") == 0xE3069283
    data = np.random.default_rng(1).integers(0, 256, 20_011, dtype=np.uint8).tobytes()  # the chunked path
    assert tf_checkpoint.crc32c(data) == bitwise_crc32c(data)


def test_reads_every_tensor_with_its_dtype_and_shape(written, tensors):
    num_shards, entries = tf_checkpoint.read_index(tf_checkpoint.index_path(written))
    assert num_shards == 1
    assert set(entries) == set(tensors)
    loaded = tf_checkpoint.load_checkpoint(written)
    for name, expected in tensors.items():
        assert loaded[name].dtype == expected.dtype, name
        assert loaded[name].shape == expected.shape, name
        np.testing.assert_array_equal(loaded[name], expected)


def test_reads_a_chosen_subset_and_refuses_an_absent_name(written, tensors):
    loaded = tf_checkpoint.load_checkpoint(written, ["conv/bias", "half"])
    assert set(loaded) == {"conv/bias", "half"}
    np.testing.assert_array_equal(loaded["half"], tensors["half"])
    with pytest.raises(ModelError, match="no tensor 'missing/kernel'"):
        tf_checkpoint.load_checkpoint(written, ["missing/kernel"])


def test_one_block_and_many_blocks_read_alike(tmp_path, tensors):
    a, b = tmp_path / "one", tmp_path / "many"
    write_checkpoint(a, tensors, per_block=100)
    write_checkpoint(b, tensors, per_block=1)
    one, many = tf_checkpoint.load_checkpoint(a), tf_checkpoint.load_checkpoint(b)
    for name in tensors:
        np.testing.assert_array_equal(one[name], many[name])


def test_truncated_data_file_names_the_file(written):
    data = written.parent / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(ModelError, match=r"model\.ckpt\.data-00000-of-00001 is truncated"):
        tf_checkpoint.load_checkpoint(written)


def test_corrupted_data_byte_fails_the_crc(written):
    data = written.parent / "model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match=r"model\.ckpt\.data-00000-of-00001 is corrupted.*CRC32C"):
        tf_checkpoint.load_checkpoint(written)


def test_missing_data_file_names_the_file(written):
    (written.parent / "model.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(ModelError, match=r"Cannot read checkpoint data .*model\.ckpt\.data-00000-of-00001"):
        tf_checkpoint.load_checkpoint(written)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_broken_index_names_the_file(written, damage):
    index = written.parent / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[10] ^= 0x01  # inside the first data block: its CRC no longer matches
    elif damage == "garbage":
        raw = bytearray(np.random.default_rng(2).integers(0, 256, 300, dtype=np.uint8).tobytes())
    else:
        raw = bytearray()
    index.write_bytes(bytes(raw))
    with pytest.raises(ModelError, match=r"model\.ckpt\.index is not a valid TensorFlow checkpoint index"):
        tf_checkpoint.load_checkpoint(written)


def test_missing_index_names_the_file(tmp_path):
    with pytest.raises(ModelError, match=r"Cannot read checkpoint index .*nothing\.index"):
        tf_checkpoint.read_index(tmp_path / "nothing.index")


def test_reads_the_real_musicnn_checkpoints():
    from core.models import musicnn, weights

    expected = {"MSD_musicnn": ("conv2d/kernel", (7, 38, 1, 204), 150), "MSD_vgg": ("5CNN/kernel", (3, 3, 128, 128), 86)}
    for checkpoint, (name, shape, count) in expected.items():
        try:
            index = weights.packaged_file("musicnn", "0.1.0", f"{checkpoint}/.index", musicnn.WHEEL_SHA256)
            weights.packaged_file("musicnn", "0.1.0", f"{checkpoint}/.data-00000-of-00001", musicnn.WHEEL_SHA256)
        except ModelError as exc:
            pytest.skip(str(exc))
        _, entries = tf_checkpoint.read_index(index)
        assert len(entries) == count
        tensor = tf_checkpoint.load_checkpoint(str(index)[: -len(".index")], [name])[name]
        assert tensor.shape == shape and tensor.dtype == np.float32
        assert np.isfinite(tensor).all() and tensor.std() > 0
