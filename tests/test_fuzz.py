"""Fuzzing every decoder: random and mutated inputs, seeded from real ones, only ever raise the declared error.

The decoders (``fuzz_targets.TARGETS``): wire messages, round configurations, saved client sessions, audit
transcripts (parsed and checked), training checkpoints, and the fields of a Flower round-start record (the
ClientApp must answer every record with a reply, a message or a named refusal, never raise). A short run is
part of the default suite; ``test_long_fuzz_campaign`` (slow) runs the coverage-guided campaign of
``fuzz_campaign.py``, a million inputs per decoder.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from fuzz_targets import TARGETS  # noqa: E402

# Bounded time per input: a decoder that takes longer than this on any input is a finding too.
PER_INPUT_SECONDS = 2.0


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A real input, then up to four mutations: bit flips, byte overwrites with boundary values, truncation,
    insertion, deletion, duplication of a slice, or a splice with another seed; or plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
        position = draw(st.integers(0, len(data) - 1))
        operation = draw(st.integers(0, 7))
        if operation == 0:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == 1:
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from([0, 1, 2**(8 * width - 1), 2**(8 * width) - 1, 2**(8 * width - 1) - 1]))
            data[position:position + width] = value.to_bytes(width, "little")
        elif operation == 2:
            del data[position:]
        elif operation == 3:
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif operation == 4:
            del data[position:position + draw(st.integers(1, 64))]
        elif operation == 5:
            end = min(len(data), position + draw(st.integers(1, 64)))
            data[position:position] = data[position:end]
        elif operation == 6:
            other = draw(st.sampled_from(seeds))
            data = data[:position] + other[draw(st.integers(0, max(0, len(other) - 1))):]
        else:
            data[position] = draw(st.sampled_from(b'0-9e.+"{}[],:\x00\xff'))
    return bytes(data)


def _check(name: str, data: bytes) -> None:
    target = TARGETS[name]()
    started = time.perf_counter()
    try:
        target.run(data)
    except target.declared:
        pass
    elapsed = time.perf_counter() - started
    assert elapsed < PER_INPUT_SECONDS, f"{name}: {elapsed:.1f} s on one input"


def _fuzz(name: str, examples: int) -> None:
    target = TARGETS[name]()

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated(target.seeds))
    def run(data: bytes) -> None:
        _check(name, data)

    run()


@pytest.mark.parametrize("name, examples", [("wire-message", 1500), ("round-config", 600), ("session-state", 600),
                                            ("transcript", 400), ("checkpoint", 150), ("flower-record", 150)])
def test_only_the_declared_error_comes_out(name: str, examples: int) -> None:
    _fuzz(name, examples)


def test_every_seed_is_accepted() -> None:
    # The mutations start from real inputs: each must decode, or the fuzzing would explore only refusals.
    for name, make in TARGETS.items():
        target = make()
        for seed in target.seeds:
            target.run(seed)


def test_memory_stays_bounded_on_hostile_sizes() -> None:
    # Declared lengths of 2^32 - 1 in every length field the seeds have: refused, not allocated.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name in ("wire-message", "round-config", "session-state"):
        target = TARGETS[name]()
        for seed in target.seeds[:40]:
            for position in range(0, min(len(seed), 200), 1):
                data = bytearray(seed)
                data[position:position + 4] = b"\xff\xff\xff\xff"
                _check(name, bytes(data))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # kilobytes on Linux
    assert grown < 512 * 1024, f"peak memory grew by {grown} KiB"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_long_fuzz_campaign(name: str) -> None:
    runs = int(os.environ.get("FEDSECURE_FUZZ_RUNS", "1000000"))
    pytest.importorskip("atheris")
    completed = subprocess.run([sys.executable, str(Path(__file__).parent / "fuzz_campaign.py"), name,
                                f"-runs={runs}", "-rss_limit_mb=4096", "-timeout=10"],
                               capture_output=True, text=True, timeout=6 * 3600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


def test_fedsecure_audit_refuses_a_binary_or_malformed_transcript_in_one_line(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from fedsecure.cli import main
    from fuzz_targets import _transcript_seed

    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 4)
    lines = [json.loads(line) for line in _transcript_seed().decode().splitlines()]
    lines[0]["threat"] = {"colour": "red"}  # a threat model a check cannot read
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text("".join(json.dumps(line) + "\n" for line in lines))
    for path in (binary, malformed):
        assert main(["audit", str(path)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("fedsecure: TranscriptError") and "\n" not in error and "Traceback" not in error


def test_a_checkpoint_declaring_a_huge_model_is_refused_before_it_is_allocated(tmp_path: Path) -> None:
    import io
    import json
    import zipfile

    from numpy.lib import format as npy

    from fedsecure import ConfigurationError
    from fedsecure.fl._federation import read_checkpoint

    def member(shape: tuple[int, ...], dtype: str = "<f8", data: bytes = b"\0" * 64) -> bytes:
        buffer = io.BytesIO()
        npy.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
        return buffer.getvalue() + data

    meta = json.dumps({"version": 1, "fingerprint": {}, "history": []}).encode()
    path = tmp_path / "checkpoint.npz"
    for shape in ((2**44,), (2**20,), (2**31, 2**31)):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("meta.npy", member((len(meta),), "|u1", meta))
            archive.writestr("global.npy", member(shape))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(ConfigurationError, match="declares"):
            read_checkpoint(str(path))
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024


def test_transcripts_with_huge_numbers_or_many_envelopes_are_refused_or_checked_quickly() -> None:
    import io
    import json

    from fedsecure.audit import TranscriptError, parse_transcript, run_checks
    from fedsecure.runtime import TRANSCRIPT_FORMAT, TRANSCRIPT_VERSION

    with pytest.raises(TranscriptError):
        parse_transcript(io.BytesIO(b'{"kind": "round", "x": ' + b"1" * 5000 + b"}\n"))
    # 30,000 envelopes, all withheld but one sender's: the share-binding check is linear, not quadratic.
    count = 30_000
    lines: list[dict] = [{"kind": "round", "format": TRANSCRIPT_FORMAT, "version": TRANSCRIPT_VERSION,
                          "round_id": 0, "protocol": "secagg", "clients": [0, 1], "vector_length": 1,
                          "ring_bits": 8, "threshold": 2, "degree": 2, "encoding_clients": 2}]
    lines += [{"kind": "message", "round_id": 0, "seq": s, "stage": "share-keys", "type": "ShareKeys", "size": 1,
               "sender": s, "fields": {"sender": s, "shares": [{"peer": 1, "envelope": s}]}} for s in range(count)]
    lines += [{"kind": "message", "round_id": 0, "seq": count, "stage": "masked-input", "type": "SharesDelivery",
               "size": 1, "sender": "server", "fields": {"recipient": 1, "shares": []}},
              {"kind": "outcome", "round_id": 0}]
    rounds = parse_transcript(io.BytesIO("\n".join(map(json.dumps, lines)).encode()))
    started = time.perf_counter()
    run_checks(rounds)
    assert time.perf_counter() - started < 5


def test_campaign_findings_stay_fixed() -> None:
    # Inputs the coverage-guided campaign found: each now raises only the declared error.
    import json
    import struct

    from fedsecure import LocalProtocolError
    from fedsecure.protocols import restore_client_session
    from fuzz_targets import _transcripts

    _, _, states = _transcripts()
    config, blob, credentials = next((c, b, k) for c, b, k in states if b"own_shares" in b and b'"own_shares":null'
                                     not in b)
    (size,) = struct.unpack_from("<I", blob)
    header = json.loads(blob[4:4 + size])
    body = blob[4 + size:]
    for broken in (["ab"], [], "xyz", [1, 2], {"a": 1}):
        header["fields"]["own_shares"] = broken
        encoded = json.dumps(header).encode()
        with pytest.raises(LocalProtocolError, match="malformed"):
            restore_client_session(config, struct.pack("<I", len(encoded)) + encoded + body, credentials)


def test_checkpoints_the_campaign_found_are_declared_errors(tmp_path: Path) -> None:
    # Found by the campaign: an .npy header that Python's tokenizer refuses (numpy parses headers with it; its
    # TokenError is no ValueError), and a zip member flagged as encrypted (zipfile raises RuntimeError).
    from fedsecure import ConfigurationError
    from fedsecure.fl._federation import read_checkpoint

    path = tmp_path / "checkpoint.npz"
    for found in ("checkpoint-header-tokenizer.npz", "checkpoint-encrypted-member.npz"):
        path.write_bytes((Path(__file__).parent / "fuzz_regressions" / found).read_bytes())
        with pytest.raises(ConfigurationError, match="not a readable fedsecure checkpoint"):
            read_checkpoint(str(path))
