// Package merkle is the one Merkle tree over all ledger transactions, in the
// exact shape used by CCF and Azure Confidential Ledger (ACL) receipts.
//
// # Shape
//
// Leaves are 32-byte SHA-256 values computed by the caller (for a ledger
// transaction, SHA256(writeSetDigest ‖ SHA256(commitEvidence) ‖ claimsDigest)).
// An internal node is SHA256(left ‖ right): unlike RFC 6962 there are no 0x00
// (leaf) or 0x01 (node) domain-separation prefixes, because ACL receipts are
// verified without them. The tree is left-balanced as in RFC 6962: the root of
// n > 1 leaves is
//
//	MTH(D[0:n]) = SHA256(MTH(D[0:k]) ‖ MTH(D[k:n]))
//
// where k is the largest power of two strictly less than n, and the root of a
// single leaf is the leaf itself. A tree of 5 leaves l0..l4 therefore is
//
//	                root = H(n03, l4)
//	               /                 \
//	       n03 = H(n01, n23)          \
//	        /            \             \
//	n01 = H(l0, l1)  n23 = H(l2, l3)    \
//	   /    \          /    \            \
//	  l0    l1        l2    l3           l4
//
// and the audit path of l2 in it is [{right: l3}, {left: n01}, {right: l4}]:
// start from l2, hash l3 on the right, then n01 on the left, then l4 on the
// right, and the result is the root. That list is exactly the "proof" array
// of an ACL receipt (see [Step] and [RootFromPath]).
//
// # Storage
//
// A [Tree] keeps every level of complete, aligned subtrees: level 0 holds the
// leaves, level k the hash of each complete subtree of 2^k leaves starting at a
// multiple of 2^k. For the 5-leaf tree above the levels are [l0 l1 l2 l3 l4],
// [n01 n23] and [n03]. Appending costs one hash amortised; the root, audit
// path and consistency proof of any prefix of the tree combine O(log n) stored
// hashes without recomputing subtrees. The levels take about 64 bytes per leaf
// (32 for the leaf, 32 for all the levels above it together), stored in
// fixed chunks so that growth never copies: 100 million transactions take
// about 6.4 GB.
//
// # Consistency proofs
//
// Beyond ACL, [Tree.Consistency] and [VerifyConsistency] implement the RFC 9162
// §2.1.4 consistency proof over this hashing, so an auditor holding the signed
// root of an older tree can check that a newer signed tree only appended to it.
//
// The package is pure: no I/O, no goroutines. A [Tree] is not safe for
// concurrent use; its owner must serialise calls, including read-only ones
// that race with Append or Truncate.
package merkle
