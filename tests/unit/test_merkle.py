"""The RFC 6962 Merkle tree (`domain.merkle`) against the test vectors Certificate Transparency
publishes, and audit paths for every leaf of every small tree, sizes not powers of two
included."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from holdfast.domain import merkle

# Source: github.com/transparency-dev/merkle, proof/verify_test.go (`leaves`, `roots`,
# `inclusionProofs`; the same data as the RFC 6962 tests of google/certificate-transparency).
# LEAF_DATA are the leaves' input bytes; ROOTS[n - 1] is the tree hash of the first n of them.
LEAF_DATA = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, 0-based here; the source numbers leaves from 1), tree size, audit path.
INCLUSION_PROOFS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
EMPTY_TREE = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
LEAVES = [merkle.leaf(bytes.fromhex(data)) for data in LEAF_DATA]


def test_the_empty_tree_hash():
    assert merkle.root([]).hex() == EMPTY_TREE


@pytest.mark.parametrize("size", range(1, len(ROOTS) + 1))
def test_roots_match_the_published_vectors(size):
    assert merkle.root(LEAVES[:size]).hex() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_PROOFS)
def test_audit_paths_match_the_published_vectors(index, size, path):
    assert [p.hex() for p in merkle.audit_path(LEAVES[:size], index)] == path
    siblings = [bytes.fromhex(p) for p in path]
    assert merkle.root_from_path(LEAVES[index], index, size, siblings).hex() == ROOTS[size - 1]


def corruptions(index: int, size: int, path: list[bytes]) -> list[tuple[int, int, list[bytes]]]:
    """The probes of the same source's corruptInclusionProof, as (index, size, path)."""
    some = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
    root = merkle.root(LEAVES[:size])
    probes = [
        (index - 1, size, path),
        (index + 1, size, path),
        (index ^ 2, size, path),
        (index, size * 2, path),
        (index, size // 2, path),
        (index, size, [*path, root]),
        (index, size, [root, *path]),
        (index, size, [*path, some]),
    ]
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((index, size, flipped))
    if path:
        probes.append((index, size, path[:-1]))
    if len(path) > 1:
        probes.append((index, size, [path[0], some, *path[1:]]))
    return probes


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_PROOFS)
def test_corrupted_published_proofs_fail(index, size, path):
    siblings = [bytes.fromhex(p) for p in path]
    root = merkle.root(LEAVES[:size])
    for probe_index, probe_size, probe_path in corruptions(index, size, siblings):
        try:
            reached = merkle.root_from_path(LEAVES[index], probe_index, probe_size, probe_path)
        except ValueError:
            continue
        assert reached != root, (probe_index, probe_size, [p.hex() for p in probe_path])
    wrong_leaf = merkle.leaf(b"WrongLeaf")
    assert merkle.root_from_path(wrong_leaf, index, size, siblings) != root


def rfc6962_path(leaves: list[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) exactly as RFC 6962 §2.1.1 writes it (recursive)."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if index < k:
        return [*rfc6962_path(leaves[:k], index), merkle.root(leaves[k:])]
    return [*rfc6962_path(leaves[k:], index - k), merkle.root(leaves[:k])]


@pytest.mark.parametrize("size", range(1, 40))
def test_every_leaf_of_small_trees_is_proven(size):
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(size)]
    root = merkle.root(leaves)
    for index in range(size):
        path = merkle.audit_path(leaves, index)
        assert path == rfc6962_path(leaves, index)
        assert merkle.root_from_path(leaves[index], index, size, path) == root
        for other in range(size):  # the path of one leaf proves no other position
            if other != index:
                with contextlib.suppress(ValueError):
                    assert merkle.root_from_path(leaves[index], other, size, path) != root


@given(st.integers(min_value=1, max_value=5_100), st.data())
def test_paths_of_checkpoint_sized_trees_verify(size, data):
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    leaves = [i.to_bytes(32, "big") for i in range(size)]
    path = merkle.audit_path(leaves, index)
    assert merkle.root_from_path(leaves[index], index, size, path) == merkle.root(leaves)
    assert len(path) <= (size - 1).bit_length()


@pytest.mark.parametrize(
    ("index", "size", "path"),
    [(0, 0, []), (1, 1, []), (-1, 2, []), (0, 2, []), (0, 1, [b"\0" * 32]), (0, 2, [b"\0"])],
)
def test_impossible_paths_are_refused(index, size, path):
    with pytest.raises(ValueError):
        merkle.root_from_path(b"\0" * 32, index, size, path)
    if size and not 0 <= index < size:
        with pytest.raises(ValueError):
            merkle.audit_path([b"\0" * 32] * size, index)
