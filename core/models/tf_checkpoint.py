"""A pure-Python reader of TensorFlow checkpoint V2 files (tensor bundles).

The musicnn wheel ships its weights as TensorFlow checkpoints.  Installing
TensorFlow (or even protobuf) to read nine megabytes of floats would tie the
project to a stack that does not install on current Python, so this module
reads the two files directly:

* ``PREFIX.index`` is a LevelDB-style sorted table (blocks of prefix-compressed
  key/value entries, an index block of block handles, and a 48-byte footer).
  The empty key holds a ``BundleHeaderProto``; every other key is a tensor
  name whose value is a ``BundleEntryProto`` giving dtype, shape, shard,
  offset, size and a masked CRC32C of the tensor's bytes.
* ``PREFIX.data-SSSSS-of-NNNNN`` holds the raw tensors back to back, in the
  byte order the header states (little endian on every checkpoint seen).

Both protobuf messages are decoded with a minimal wire-format parser, and every
checksum is verified, so a truncated or corrupted file is refused with a
:class:`~core.models.base.ModelError` naming the file instead of yielding
silently wrong weights.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np

from core.models.base import ModelError

#: Last 8 bytes of every LevelDB table file.
TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
#: A block is followed by a compression-type byte and a masked CRC32C.
BLOCK_TRAILER_SIZE = 5

#: ``tensorflow.DataType`` values this reader decodes, and their numpy types.
DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}


# --------------------------------------------------------------------------- CRC32C

def _crc_table() -> np.ndarray:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(poly), table >> 1).astype(np.uint32)
    return table


_TABLE = _crc_table()
_TABLE_LIST = [int(v) for v in _TABLE]


def _crc_register(reg: int, data: bytes) -> int:
    table = _TABLE_LIST
    for byte in data:
        reg = (reg >> 8) ^ table[(reg ^ byte) & 0xFF]
    return reg


def _zeros_operator(length: int) -> list[list[int]]:
    """The linear map 'feed ``length`` zero bytes' on the CRC register, as 4 byte tables."""
    basis = np.array([1 << b for b in range(32)], dtype=np.uint32)
    for _ in range(length):
        basis = (basis >> np.uint32(8)) ^ _TABLE[basis & np.uint32(0xFF)]
    columns = [int(v) for v in basis]
    tables = []
    for shift in range(0, 32, 8):
        byte_table = []
        for value in range(256):
            out = 0
            for bit in range(8):
                if value >> bit & 1:
                    out ^= columns[shift + bit]
            byte_table.append(out)
        tables.append(byte_table)
    return tables


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of a byte string, as LevelDB and TensorFlow use it.

    Large inputs are cut into equal chunks whose registers are advanced in
    parallel with numpy from a zero start and then chained: the register
    update is affine, so ``reg(a + b) = Z_len(b)(reg(a)) ^ reg0(b)``, where
    ``Z_len`` is the fixed linear effect of ``len(b)`` zero bytes.
    """
    n = len(data)
    if n < 4096:
        return _crc_register(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    chunk = max(256, int(np.sqrt(n)))
    n_chunks = n // chunk
    body = np.frombuffer(data, dtype=np.uint8, count=n_chunks * chunk).reshape(n_chunks, chunk)
    regs = np.zeros(n_chunks, dtype=np.uint32)
    for j in range(chunk):
        regs = (regs >> np.uint32(8)) ^ _TABLE[(regs ^ body[:, j]) & np.uint32(0xFF)]
    t0, t1, t2, t3 = _zeros_operator(chunk)
    reg = 0xFFFFFFFF
    for part in regs.tolist():
        reg = t0[reg & 0xFF] ^ t1[reg >> 8 & 0xFF] ^ t2[reg >> 16 & 0xFF] ^ t3[reg >> 24] ^ part
    reg = _crc_register(reg, data[n_chunks * chunk:])
    return reg ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB's masking of a stored CRC (so that CRCs of CRCs stay well mixed)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------- wire formats

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end of its buffer")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Decode a protobuf message into (field number, value) pairs.

    Varints come back as ints, length-delimited fields as bytes, fixed32/64 as ints.
    """
    fields = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError("fixed64 field runs past the end")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("length-delimited field runs past the end")
            value = buf[pos:pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError("fixed32 field runs past the end")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, value))
    return fields


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives in the data shards (a decoded ``BundleEntryProto``)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None
    sliced: bool


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    dtype, shape, shard, offset, size, crc, sliced = 0, (), 0, 0, 0, None, False
    for number, value in _proto_fields(buf):
        if number == 1:
            dtype = value
        elif number == 2:
            dims = []
            for dnum, dim in _proto_fields(value):
                if dnum == 2:  # TensorShapeProto.Dim
                    size_field = [v for n, v in _proto_fields(dim) if n == 1]
                    dims.append(size_field[0] if size_field else 0)
            shape = tuple(dims)
        elif number == 3:
            shard = value
        elif number == 4:
            offset = value
        elif number == 5:
            size = value
        elif number == 6:
            crc = value
        elif number == 7:
            sliced = True
    return TensorEntry(name, dtype, shape, shard, offset, size, crc, sliced)


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The key/value pairs of one table block (keys are prefix-compressed)."""
    if len(block) < 4:
        raise ValueError("block shorter than its restart count")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * n_restarts
    if end < 0:
        raise ValueError("restart array larger than its block")
    entries = []
    key = b""
    pos = 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > end:
            raise ValueError("block entry runs past the end of its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    return entries


def _read_block(table: bytes, handle: bytes) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + BLOCK_TRAILER_SIZE > len(table):
        raise ValueError("a block handle points past the end of the file")
    block = table[offset:offset + size]
    kind = table[offset + size]
    stored = struct.unpack_from("<I", table, offset + size + 1)[0]
    if mask_crc(crc32c(block + bytes([kind]))) != stored:
        raise ValueError("a table block fails its CRC32C check")
    if kind != 0:
        raise ValueError(f"compressed table blocks (type {kind}) are not supported")
    return block


# --------------------------------------------------------------------------- public API

def index_path(prefix: str | Path) -> Path:
    """The ``.index`` file of a checkpoint prefix (``model.ckpt`` or ``dir/``)."""
    return Path(f"{prefix}.index")


def read_index(index_file: str | Path) -> tuple[int, dict[str, TensorEntry]]:
    """Parse a checkpoint's ``.index`` table.

    Returns
    -------
    num_shards : int
    entries : dict[str, TensorEntry]
        Every tensor in the bundle, by name.

    Raises
    ------
    ModelError
        If the file is missing, truncated, corrupted, big-endian or not a checkpoint index.
    """
    index_file = Path(index_file)
    try:
        table = index_file.read_bytes()
    except OSError as exc:
        raise ModelError(f"Cannot read checkpoint index {index_file}: {exc.strerror or exc}.") from None
    try:
        if len(table) < FOOTER_SIZE:
            raise ValueError("file shorter than a table footer")
        footer = table[-FOOTER_SIZE:]
        if struct.unpack("<Q", footer[-8:])[0] != TABLE_MAGIC:
            raise ValueError("no table magic number at its end")
        _, pos = _varint(footer, 0)  # the metaindex block handle (unused by TF)
        _, pos = _varint(footer, pos)
        index_block = _read_block(table, footer[pos:])
        num_shards, entries, header_seen = 1, {}, False
        for _, handle in _block_entries(index_block):
            for key, value in _block_entries(_read_block(table, handle)):
                if key == b"":
                    header_seen = True
                    for number, field in _proto_fields(value):
                        if number == 1:
                            num_shards = field
                        elif number == 2 and field != 0:
                            raise ValueError("big-endian checkpoints are not supported")
                else:
                    name = key.decode("utf-8")
                    entries[name] = _parse_entry(name, value)
        if not header_seen:
            raise ValueError("no bundle header")
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"{index_file} is not a valid TensorFlow checkpoint index: {exc}.") from None
    return num_shards, entries


def load_checkpoint(prefix: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read the tensors of a TensorFlow V2 checkpoint.

    Parameters
    ----------
    prefix : str or Path
        The checkpoint prefix: the ``.index`` file's path without ``.index``
        (for musicnn's ``MSD_musicnn/.index`` that is ``MSD_musicnn/``).
    names : list of str, optional
        Tensors to read; all of them by default.

    Returns
    -------
    dict[str, np.ndarray]
        Each tensor with its stored dtype and shape (TF layout, e.g. conv
        kernels as ``[kh, kw, in, out]``).

    Raises
    ------
    ModelError
        Naming the file, for a missing tensor, an unsupported dtype or slicing,
        a data shard that is missing or truncated, or a CRC mismatch.
    """
    index_file = index_path(prefix)
    num_shards, entries = read_index(index_file)
    wanted = sorted(entries) if names is None else list(names)
    missing = [n for n in wanted if n not in entries]
    if missing:
        raise ModelError(f"{index_file} holds no tensor {missing[0]!r}; it is not the expected checkpoint.")
    shards: dict[int, bytes] = {}
    tensors = {}
    for name in wanted:
        entry = entries[name]
        if entry.dtype not in DTYPES:
            raise ModelError(f"{index_file}: tensor {name!r} has TF dtype {entry.dtype}, which this reader does not decode.")
        if entry.sliced:
            raise ModelError(f"{index_file}: tensor {name!r} is saved in slices, which this reader does not decode.")
        data_file = Path(f"{prefix}.data-{entry.shard_id:05d}-of-{num_shards:05d}")
        if entry.shard_id not in shards:
            try:
                shards[entry.shard_id] = data_file.read_bytes()
            except OSError as exc:
                raise ModelError(f"Cannot read checkpoint data {data_file}: {exc.strerror or exc}.") from None
        data = shards[entry.shard_id]
        dtype = np.dtype(DTYPES[entry.dtype]).newbyteorder("<")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.size != count * dtype.itemsize:
            raise ModelError(f"{index_file}: tensor {name!r} has {entry.size} bytes for shape {entry.shape}.")
        if entry.offset + entry.size > len(data):
            raise ModelError(f"{data_file} is truncated: tensor {name!r} ends past its {len(data)} bytes.")
        raw = data[entry.offset:entry.offset + entry.size]
        if entry.crc32c is not None and mask_crc(crc32c(raw)) != entry.crc32c:
            raise ModelError(f"{data_file} is corrupted: tensor {name!r} fails its CRC32C check.")
        tensors[name] = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(entry.shape)
    return tensors
