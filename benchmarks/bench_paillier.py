"""Packed Paillier against per-value python-paillier (phe), measured in the same run.

Usage::

    python benchmarks/bench_paillier.py [--dim 100000] [--clients 10] [--key-bits 2048 3072]
                                        [--ring-bits 12 20 32] [--phe-sample 30] [--threshold]
                                        [--json benchmarks/results/paillier.json]

For each key size and encoding (the ring size sets the bits of one quantised value, hence the
slots per plaintext) it measures, on one client's update of ``dim`` parameters: packing plus
encryption (one core), without and with the proof of plaintext knowledge every contribution
carries, checking that proof (what the server and every approving client do per contribution),
bytes per parameter on the wire (proof included), and decryption of the aggregate of ``clients``
updates by the key holder (CRT, two threads), without and with the randomness that makes the total
verifiable, and the server's check of it. Per-value ``phe`` is timed on
``phe-sample`` values with the same key and extrapolated to ``dim``: ``public_key.encrypt(float)``
as a phe user would call it, and ``private_key.decrypt``. With ``--threshold`` it also times the
dealer (safe primes) and one holder's partial decryption of the aggregate, without and with Shoup's
proof of correctness, and the server's check of that proof.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np
import phe

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_secagg import machine  # noqa: E402

from fedsecure.crypto import (  # noqa: E402
    PlaintextKnowledgeProof,
    verify_decryption,
    verify_partial_decryption,
    verify_plaintext_knowledge,
    PaillierDecryptor,
    PaillierEncryptor,
    ciphertexts_to_bytes,
    combine_partial_decryptions,
    deal_threshold_paillier,
    generate_paillier_keypair,
    multiply_ciphertexts,
)
from fedsecure.encoding import ClipMode, EncodingConfig, Quantizer, SlotLayout  # noqa: E402


def _timed(function: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def _phe_per_value(public: phe.PaillierPublicKey, private: phe.PaillierPrivateKey, sample: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)  # noqa: csprng-ok (benchmark data)
    values = rng.uniform(-1, 1, size=sample).tolist()
    encrypted, seconds = _timed(lambda: [public.encrypt(v) for v in values])
    _, decrypt_seconds = _timed(lambda: [private.decrypt(e) for e in encrypted])
    return seconds / sample, decrypt_seconds / sample


def bench(key_bits: int, ring_bits: int, dim: int, clients: int, phe_sample: int, threshold: bool,
          keypair: tuple[Any, Any]) -> dict[str, Any]:
    public, private = keypair
    encoding = EncodingConfig.fit_scale(dimension=dim, clients=clients, clip=1.0, ring_bits=ring_bits,
                                        clip_mode=ClipMode.PER_COORDINATE)
    layout = SlotLayout.create(max_coordinate=encoding.max_coordinate, clients=clients,
                               plaintext_bits=int(public.n).bit_length() - 1)
    quantizer = Quantizer(encoding)
    rng = np.random.default_rng(1)  # noqa: csprng-ok (benchmark data)
    signed = [encoding.ring.to_signed(quantizer.encode(rng.uniform(-1, 1, size=dim)).values) for _ in range(clients)]
    encryptor, table_seconds = _timed(lambda: PaillierEncryptor(public))
    packed, pack_seconds = _timed(lambda: layout.pack(signed[0]))
    ciphertexts, encrypt_seconds = _timed(lambda: encryptor.encrypt(packed))
    (proven, proof), proven_seconds = _timed(lambda: encryptor.encrypt_with_proof(packed, b"bench-context"))
    _, verify_seconds = _timed(lambda: verify_plaintext_knowledge(public, proven, proof, b"bench-context"))
    wire = len(ciphertexts_to_bytes(ciphertexts, public)) + PlaintextKnowledgeProof.size(public)
    columns = [ciphertexts] + [encryptor.encrypt(layout.pack(s)) for s in signed[1:]]
    aggregate = multiply_ciphertexts(columns, public)
    decryptor = PaillierDecryptor(private)
    plaintexts, decrypt_seconds = _timed(lambda: decryptor.decrypt(aggregate))
    (_, randomness), verifiable_seconds = _timed(lambda: decryptor.decrypt_with_randomness(aggregate))
    _, check_seconds = _timed(lambda: verify_decryption(public, aggregate, plaintexts, randomness))
    total, unpack_seconds = _timed(lambda: layout.unpack_sum(plaintexts, length=dim, contributors=clients))
    exact = bool(np.array_equal(total, np.sum(signed, axis=0)))
    phe_encrypt, phe_decrypt = _phe_per_value(public, private, phe_sample)
    ours = pack_seconds + encrypt_seconds
    record: dict[str, Any] = {
        "key_bits": key_bits, "ring_bits": ring_bits, "value_bits": layout.value_bits, "slot_bits": layout.slot_bits,
        "slots": layout.slots, "ciphertexts": len(ciphertexts), "dim": dim, "clients": clients, "exact": exact,
        "encryptor_table_s": table_seconds, "encrypt_s": ours, "encrypt_with_proof_s": pack_seconds + proven_seconds,
        "proof_cost_ratio": (pack_seconds + proven_seconds) / ours, "verify_proof_s": verify_seconds,
        "bytes_per_param": wire / dim,
        "decrypt_aggregate_s": decrypt_seconds + unpack_seconds,
        "decrypt_with_randomness_s": verifiable_seconds + unpack_seconds,
        "verifiable_decrypt_ratio": (verifiable_seconds + unpack_seconds) / (decrypt_seconds + unpack_seconds),
        "server_check_total_s": check_seconds,
        "phe_encrypt_per_value_s": phe_encrypt, "phe_encrypt_extrapolated_s": phe_encrypt * dim,
        "phe_decrypt_extrapolated_s": phe_decrypt * dim, "phe_bytes_per_param": 2 * key_bits / 8,
        "speedup_encrypt_vs_phe": phe_encrypt * dim / ours,
        "speedup_encrypt_with_proof_vs_phe": phe_encrypt * dim / (pack_seconds + proven_seconds),
        "speedup_decrypt_vs_phe": phe_decrypt * dim / (decrypt_seconds + unpack_seconds),
    }
    print(f"{key_bits}-bit key, {ring_bits}-bit ring ({layout.slots} slots of {layout.slot_bits} bits, "
          f"{len(ciphertexts)} ciphertexts): encrypt {ours:.2f} s (phe per value {phe_encrypt * dim:.0f} s, "
          f"x{record['speedup_encrypt_vs_phe']:.0f}), {wire / dim:.2f} B/param (phe {2 * key_bits // 8}), "
          f"decrypt aggregate {record['decrypt_aggregate_s']:.2f} s (phe {phe_decrypt * dim:.0f} s), "
          f"exact {exact}", flush=True)
    print(f"  with the proof of plaintext knowledge: encrypt {record['encrypt_with_proof_s']:.2f} s "
          f"(x{record['proof_cost_ratio']:.2f} of plain, x{record['speedup_encrypt_with_proof_vs_phe']:.0f} faster "
          f"than phe), checking it {verify_seconds:.2f} s; decrypt with randomness "
          f"{record['decrypt_with_randomness_s']:.2f} s (x{record['verifiable_decrypt_ratio']:.2f}), the server's "
          f"check {check_seconds:.2f} s", flush=True)
    if threshold:
        holders = list(range(clients))
        deals = [_timed(lambda: deal_threshold_paillier(key_bits, holders, clients // 2 + 1)) for _ in range(3)]
        (key, shares), _ = deals[0]
        threshold_encryptor = PaillierEncryptor(key.public_key)
        t_columns = [threshold_encryptor.encrypt(layout.pack(s)) for s in signed]
        t_aggregate = multiply_ciphertexts(t_columns, key.public_key)
        partials = {}
        partial_seconds = []
        proven_seconds_list = []
        check_seconds_list = []
        for holder in holders[: key.threshold]:
            partials[holder], seconds = _timed(lambda: shares[holder].partial_decrypt(t_aggregate))
            partial_seconds.append(seconds)
            (proven_partials, partial_proof), seconds = _timed(
                lambda: shares[holder].partial_decrypt_with_proof(t_aggregate, b"bench-context"))
            proven_seconds_list.append(seconds)
            _, seconds = _timed(lambda: verify_partial_decryption(key, holder, t_aggregate, proven_partials,
                                                                  partial_proof, b"bench-context"))
            check_seconds_list.append(seconds)
        combined, combine_seconds = _timed(lambda: combine_partial_decryptions(key, partials))
        record.update({
            "deal_s": [seconds for _, seconds in deals],
            "partial_decrypt_s": statistics.median(partial_seconds),
            "partial_decrypt_with_proof_s": statistics.median(proven_seconds_list),
            "partial_proof_ratio": statistics.median(proven_seconds_list) / statistics.median(partial_seconds),
            "verify_partial_s": statistics.median(check_seconds_list),
            "combine_s": combine_seconds,
            "threshold_exact": bool(np.array_equal(
                layout.unpack_sum(combined, length=dim, contributors=clients), np.sum(signed, axis=0))),
            "decryption_threshold": key.threshold,
        })
        print(f"  threshold {key.threshold}-of-{clients}: dealing {', '.join(f'{s:.1f}' for s in record['deal_s'])} s, "
              f"one partial decryption {record['partial_decrypt_s']:.1f} s (with proof "
              f"{record['partial_decrypt_with_proof_s']:.1f} s, x{record['partial_proof_ratio']:.2f}; checking it "
              f"{record['verify_partial_s']:.2f} s), combining {combine_seconds:.1f} s, "
              f"exact {record['threshold_exact']}", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--key-bits", type=int, nargs="+", default=[2048, 3072])
    parser.add_argument("--ring-bits", type=int, nargs="+", default=[12, 20, 32])
    parser.add_argument("--phe-sample", type=int, default=30)
    parser.add_argument("--threshold", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    records = []
    for key_bits in args.key_bits:
        keypair, seconds = _timed(lambda: generate_paillier_keypair(key_bits))
        print(f"phe key generation, {key_bits} bits: {seconds:.2f} s", flush=True)
        for ring_bits in args.ring_bits:
            records.append(bench(key_bits, ring_bits, args.dim, args.clients, args.phe_sample,
                                 args.threshold and ring_bits == args.ring_bits[0], keypair) | {"keygen_s": seconds})
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine(), "records": records}, handle, indent=1)


if __name__ == "__main__":
    main()
