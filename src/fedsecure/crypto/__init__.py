"""Cryptographic primitives ("hazmat"): thin layers over ``cryptography`` and ``gmpy2``.

These are sharp tools. The protocols in :mod:`fedsecure.protocols` combine them
safely; use them directly only if you know why the protocol needs each step.
"""

from ._envelope import ENVELOPE_OVERHEAD, open_envelope, seal
from ._kdf import Purpose, derive_key, seed_commitment
from ._keys import PUBLIC_KEY_BYTES, KeyAgreementKey, key_fingerprint, validate_public_key
from ._paillier import (
    MIN_SECURE_KEY_BITS,
    PaillierDecryptor,
    PaillierEncryptor,
    PaillierKeyShare,
    ThresholdPaillierKey,
    ciphertext_bytes,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    combine_partial_decryptions,
    deal_threshold_paillier,
    generate_paillier_keypair,
    multiply_ciphertexts,
    safe_prime,
    verify_partial_decryption,
)
from ._paillier_proofs import (
    CHALLENGE_BITS,
    PartialDecryptionProof,
    PlaintextKnowledgeProof,
    multi_power,
    verify_decryption,
    verify_plaintext_knowledge,
)
from ._signing import SIGNATURE_BYTES, VERIFY_KEY_BYTES, SigningKey, verify_signature
from ._prg import MaskExpander, expand_mask
from ._shamir import (
    FIELD_PRIME,
    SECRET_BYTES,
    SHARE_BYTES,
    lagrange_coefficients_at_zero,
    reconstruct_secret,
    share_from_bytes,
    share_to_bytes,
    split_secrets,
)

__all__ = [
    "SIGNATURE_BYTES",
    "VERIFY_KEY_BYTES",
    "SigningKey",
    "verify_signature",
    "MIN_SECURE_KEY_BITS",
    "PaillierDecryptor",
    "PaillierEncryptor",
    "PaillierKeyShare",
    "ThresholdPaillierKey",
    "ciphertext_bytes",
    "ciphertexts_from_bytes",
    "ciphertexts_to_bytes",
    "combine_partial_decryptions",
    "deal_threshold_paillier",
    "generate_paillier_keypair",
    "multiply_ciphertexts",
    "safe_prime",
    "verify_partial_decryption",
    "CHALLENGE_BITS",
    "PartialDecryptionProof",
    "PlaintextKnowledgeProof",
    "multi_power",
    "verify_decryption",
    "verify_plaintext_knowledge",
    "ENVELOPE_OVERHEAD",
    "FIELD_PRIME",
    "KeyAgreementKey",
    "MaskExpander",
    "PUBLIC_KEY_BYTES",
    "Purpose",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "derive_key",
    "expand_mask",
    "key_fingerprint",
    "lagrange_coefficients_at_zero",
    "open_envelope",
    "reconstruct_secret",
    "seal",
    "seed_commitment",
    "share_from_bytes",
    "share_to_bytes",
    "split_secrets",
    "validate_public_key",
]
