"""RFC 6962 Merkle trees over SHA-256: the tree hash, audit paths, and their verification.

    leaf hash     = H(0x00 || data)          (the ledger hashes JCS(entry record) this way)
    node(l, r)    = H(0x01 || l || r)
    MTH([])       = H("")
    MTH([d0])     = leaf hash of d0
    MTH(D[0:n])   = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two below n

An audit path (RFC 6962 §2.1.1, "inclusion proof" in RFC 9162 §2.1.3) is the list of sibling
hashes from a leaf up to the root; `root_from_path` is RFC 9162 §2.1.3.2's verification, which
also refuses a path of the wrong length for (index, size). Functions here take leaf *hashes*;
`tests/unit/test_merkle.py` checks them against the published RFC 6962 test vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_BYTES = 32


def leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """The tree hash, bottom-up: pairs left to right, an odd last node moves up unchanged
    (the same tree as RFC 6962's recursive split at the largest power of two)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)
    while len(level) > 1:
        paired = [node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def _split(size: int) -> int:
    """The largest power of two strictly below `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def audit_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, leaves) of RFC 6962 §2.1.1: siblings from the leaf up, nearest first."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    path: list[bytes] = []
    low, high = 0, len(leaves)  # the subtree leaves[low:high] holding the leaf
    while high - low > 1:
        k = _split(high - low)
        if index - low < k:
            path.append(root(leaves[low + k : high]))
            high = low + k
        else:
            path.append(root(leaves[low : low + k]))
            low += k
    path.reverse()
    return path


def root_from_path(leaf_hash: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root that `path` leads to from leaf `index` of a tree of `size` leaves (RFC 9162
    §2.1.3.2). ValueError if the path cannot belong to such a leaf: too long, too short, an
    index outside the tree, or a hash that is not 32 bytes."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    if len(leaf_hash) != HASH_BYTES or any(len(p) != HASH_BYTES for p in path):
        raise ValueError("hashes must be 32 bytes")
    fn, sn, hashed = index, size - 1, leaf_hash
    for sibling in path:
        if sn == 0:
            raise ValueError(f"the path is longer than a leaf of a {size}-leaf tree needs")
        if fn & 1 or fn == sn:
            hashed = node(sibling, hashed)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            hashed = node(hashed, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError(f"the path is shorter than a leaf of a {size}-leaf tree needs")
    return hashed
