// Package receipt verifies and builds Azure Confidential Ledger (ACL) write
// receipts, the offline proof that a transaction is in the ledger.
//
// A receipt holds the three digests a transaction's Merkle leaf is the hash
// of ([Leaf]), the audit path from that leaf to a Merkle root, the node's
// ECDSA signature of that root, and the node certificate. [Verify] recomputes
// the root, checks the signature, and checks that the node certificate
// chains to the service certificate through the receipt's service
// endorsements. [VerifyTransactionReceipt] also checks the application
// claims (ACL LedgerEntryV1) against the leaf's claims digest.
//
// The algorithm is the one ACL publishes; real receipts issued by Azure
// verify (see testdata). Every check is on signatures and hashes only:
// certificate validity periods are not checked, since a receipt must stay
// verifiable after its certificates expire.
//
// The package is pure: no I/O, no clock.
//
// # Example
//
//	var tr api.TransactionReceipt
//	if err := json.Unmarshal(body, &tr); err != nil { … }
//	if err := receipt.VerifyTransactionReceipt(&tr, serviceCert); err != nil {
//		// errors.Is(err, receipt.ErrInvalidReceipt)
//	}
package receipt
