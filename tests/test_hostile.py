"""A hostile corpus, generated at test time: every entry ends stored or as one failure row, memory stays bounded.

Each case is what a careless or unlucky user's folder holds: lying headers,
streaming encoders' FLAC, a 1 MB decompression bomb, names that are not
UTF-8 or hold a newline, links that go nowhere or in circles, a FIFO that
would block a reader forever.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.paths import from_text
from core.store import Store
from tests.conftest import PROJECT_ROOT, tone

#: The issue's bound on the peak resident memory of a ``dsp`` extract over the corpus.
MAX_RSS_BYTES = 1.5e9

#: Runs a command (after a time limit) and prints its own peak RSS in kB (``wait4``), exiting with its status.
#: The command is started from this small process, not from the test's: Linux folds the peak memory of the
#: process a child is forked from into the child's ``ru_maxrss`` at ``exec``, so a test process of 2 GB
#: would be measured instead of the extract.  The time limit is for a FIFO opened by mistake.
PEAK_RSS = (
    "import os, subprocess, sys, threading; "
    "proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL); "
    "threading.Timer(float(sys.argv[1]), proc.kill).start(); "
    "_, status, usage = os.wait4(proc.pid, 0); "
    "print(usage.ru_maxrss, flush=True); os._exit(os.waitstatus_to_exitcode(status))"
)


def wav_bytes(y: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytearray:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype=subtype)
    return bytearray(buf.getvalue())


def patched(data: bytearray, chunk: bytes, offset: int, fmt: str, value: int) -> bytes:
    """``data`` with one header field, ``offset`` bytes after ``chunk``'s id, overwritten."""
    at = data.find(chunk) + offset
    out = bytearray(data)
    out[at:at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(out)


def flac_without_length(y: np.ndarray, sr: int) -> bytes:
    """A FLAC whose STREAMINFO says ``total_samples = 0``, as streaming encoders write it."""
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="FLAC")
    data = bytearray(buf.getvalue())
    # STREAMINFO follows "fLaC" and its 4-byte block header; bytes 10..17 of it hold
    # sample rate (20 bits), channels - 1 (3), bits - 1 (5) and total samples (36).
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def write_bomb(path: Path, seconds: int = 320, sr: int = 384_000, channels: int = 8) -> None:
    """320 s of 384 kHz × 8-channel silence: about 1 MB of FLAC, 983 million sample values decoded."""
    block = np.zeros((sr * 4, channels), np.int16)
    with sf.SoundFile(path, "w", samplerate=sr, channels=channels, format="FLAC", subtype="PCM_16") as fh:
        for _ in range(seconds // 4):
            fh.write(block)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.flac"
    write_bomb(path)
    return path


def make_corpus(folder: Path, bomb: Path) -> dict[str, str | None]:
    """Write the corpus; returns entry name → expected failure reason (None: stored)."""
    folder.mkdir()
    y = tone(440, 4.0, 22050)
    wav = wav_bytes(y, 22050)
    expect: dict[str, str | None] = {}

    def put(name: str, data: bytes | None, reason: str | None) -> None:
        if data is not None:
            (folder / name).write_bytes(data)
        expect[name] = reason

    put("good.wav", bytes(wav), None)
    put("streamed.flac", flac_without_length(y, 22050), None)
    os.link(bomb, folder / "bomb.flac")
    expect["bomb.flac"] = None
    # lying headers: libsndfile trusts the file's length over these, so they decode what they hold
    put("data_claims_4GB.wav", patched(wav, b"data", 4, "<I", 0xFFFFFFF0), None)
    put("riff_claims_4GB.wav", patched(wav, b"RIFF", 4, "<I", 0xFFFFFFF0), None)
    aiff = io.BytesIO()
    sf.write(aiff, y, 22050, format="AIFF")
    put("claims_2^31_frames.aiff", patched(bytearray(aiff.getvalue()), b"COMM", 10, ">I", 2**31), None)
    au = io.BytesIO()
    sf.write(au, y, 22050, format="AU")
    put("claims_2^31_bytes.au", patched(bytearray(au.getvalue()), b".snd", 8, ">I", 2**31), "no audio frames")
    # a header that tells the truth about 4 GB of (sparse) PCM: over the default budget, refused undecoded
    header = patched(patched(wav_bytes(np.zeros(1, np.float32), 22050), b"data", 4, "<I", 2**32 - 2),
                     b"RIFF", 4, "<I", 0xFFFFFFFF)
    header = header[:header.find(b"data") + 8]
    with open(folder / "sparse_4GB.wav", "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + 2**32 - 2)
    expect["sparse_4GB.wav"] = "exceed the limit"
    fmt_at = 8  # offsets inside the "fmt " chunk: channels at 10, sample rate at 12
    put("zero_channels.wav", patched(wav, b"fmt ", fmt_at + 2, "<H", 0), "not a readable audio file")
    put("rate_0.wav", patched(wav, b"fmt ", fmt_at + 4, "<I", 0), "not a readable audio file")
    put("rate_1Hz.wav", bytes(wav_bytes(y[:100], 1)), "implausible sample rate")
    put("rate_384k.wav", bytes(wav_bytes(tone(1000, 1.0, 384_000), 384_000)), None)
    put("64_channels.wav", bytes(wav_bytes(np.tile(tone(300, 1.0, 16000)[:, None], (1, 64)), 16000)), None)
    put("one_sample.wav", bytes(wav_bytes(np.full(1, 0.1, np.float32), 22050)), None)
    nan, inf = y.copy(), y.copy()
    nan[100:110], inf[5] = np.nan, np.inf
    put("nan.wav", bytes(wav_bytes(nan, 22050, "FLOAT")), "NaN or infinite")
    put("inf.wav", bytes(wav_bytes(inf, 22050, "FLOAT")), "NaN or infinite")
    put("truncated.wav", bytes(wav[: len(wav) // 3]), None)  # libsndfile reads what is there
    put("empty.wav", b"", "empty file")
    put("text.wav", b"not audio at all\n" * 50, "not a readable audio file")
    # names
    for name in ("with space.wav", "quote's \"double\".wav", "new\nline.wav", "-leading-dash.wav", "$(id).wav",
                 "caf\udce9 latin-1.wav", "ünïcödé.wav"):
        put(name, bytes(wav), None)
    # entries that are not plain files, and folders that are not entries
    os.symlink("nowhere.wav", folder / "dangling.wav")
    expect["dangling.wav"] = "broken symbolic link"
    os.symlink("loop.wav", folder / "loop.wav")
    expect["loop.wav"] = "symbolic link loop"
    os.mkfifo(folder / "fifo.wav")
    expect["fifo.wav"] = "named pipe"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / "socket.wav"))
    expect["socket.wav"] = "a socket"
    put("unreadable.wav", bytes(wav), None if os.geteuid() == 0 else "Permission denied")
    os.chmod(folder / "unreadable.wav", 0)  # root reads it anyway: then it is stored
    (folder / "folder.wav").mkdir()
    (folder / "folder.wav" / "inside.wav").write_bytes(bytes(wav))
    expect["folder.wav/inside.wav"] = None
    os.symlink("..", folder / "folder.wav" / "up")  # a link back to a folder already walked adds nothing
    os.symlink("good.wav", folder / "same_as_good.wav")  # the same real file adds nothing either
    (folder / "notes.txt").write_text("not an audio name: not an entry")
    return expect


@pytest.mark.slow
def test_every_hostile_entry_is_stored_or_one_failure_row_and_memory_stays_bounded(tmp_path, bomb):
    corpus = tmp_path / "corpus"
    expect = make_corpus(corpus, bomb)
    db = tmp_path / "x.duckdb"
    with open(tmp_path / "stderr", "wb") as err_file:
        run = subprocess.run([sys.executable, "-c", PEAK_RSS, "900", sys.executable, "-m", "core", "extract",
                              str(corpus), "--model", "dsp", "--db", str(db)],
                             cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=err_file, text=True)
    err = (tmp_path / "stderr").read_text(errors="replace")
    assert run.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    peak = int(run.stdout) * 1024  # Linux reports kilobytes
    print(f"peak RSS of the dsp extract over the hostile corpus: {peak / 1e6:.0f} MB")
    assert peak < MAX_RSS_BYTES

    store = Store(db)
    tracks = store.tracks_frame()
    failures = store.failures()
    assert (failures["model"] == "dsp").all()
    stored = {os.fsencode(from_text(p, e)) for p, e in zip(tracks["path"], tracks["path_escaped"])}
    failed = {os.fsencode(from_text(p, e)): m for p, e, m in zip(failures["path"], failures["path_escaped"],
                                                                 failures["message"])}
    assert len(failures) == len(failed)  # one failure row per failed entry
    for name, reason in expect.items():
        target = corpus / name
        key = os.fsencode(target.resolve() if reason is None else os.path.abspath(target))
        if reason is None:
            assert key in stored and key not in failed, (name, failed.get(key))
        else:
            assert key in failed and key not in stored, (name, sorted(stored))
            assert reason in failed[key] and "\n" not in failed[key], (name, failed[key])
    assert len(stored) + len(failed) == len(expect)  # every entry found is a track or a failure
    assert f"{len(expect)} files: {len(stored)} stored" in err

    bomb_row = tracks[tracks["path"] == str((corpus / "bomb.flac").resolve())].iloc[0]
    assert (bomb_row["duration_s"], bomb_row["sample_rate"], bomb_row["channels"]) == (320.0, 384_000, 8)
    assert store.info()["segments"] >= 320 // 3
