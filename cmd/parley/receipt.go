package main

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/receipt"
)

// maxReceiptFile bounds the receipt and certificate files read by
// `parley receipt verify`.
const maxReceiptFile = 1 << 20

func newReceiptCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "receipt",
		Short: "Work with write receipts",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newReceiptVerifyCmd())
	return cmd
}

func newReceiptVerifyCmd() *cobra.Command {
	var serviceCert, endorsementsFile string
	cmd := &cobra.Command{
		Use:   "verify RECEIPT.json --service-cert FILE",
		Short: "Verify a write receipt offline",
		Long: `Verify a write receipt offline against the service certificate, with the
Azure Confidential Ledger algorithm: recompute the transaction's Merkle leaf
and the root its proof leads to, check the node's signature of that root, and
check that the node certificate is endorsed by the service certificate
(through the receipt's service endorsements after a disaster recovery).
Certificate validity periods are not checked.

RECEIPT.json is either a bare receipt or the whole response of
GET /app/transactions/{id}/receipt; in the second case the application
claims, if any, are checked against the receipt's claims digest, and the
transaction id against the commit evidence. Receipts from Parley and from
Azure Confidential Ledger are both accepted, in camelCase or the older
snake_case.

A receipt issued before a disaster recovery carries no endorsements; to check
it against the recovered service's certificate, give --service-endorsements:
a PEM file of the endorsement certificates, oldest first (the
serviceEndorsements of a receipt of the same transaction fetched from the
recovered service, or the "endorsement" of each record in the ledger's
public:ccf.gov.service.previous_identities map). They are used only when the
receipt has none of its own.

Prints one line, "receipt OK: …" or "receipt INVALID: <reason>". Exits 0 if
the receipt is valid, 1 if it is not, and 2 if a file cannot be read or the
command is misused.`,
		Example: `  parley ledger receipt 2.15 > receipt.json
  parley receipt verify receipt.json --service-cert parley-dev/service_cert.pem`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &exitError{code: 2, err: fmt.Errorf("receipt verify: want 1 receipt file, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if serviceCert == "" {
				return &exitError{code: 2, err: errors.New("receipt verify: --service-cert is required")}
			}
			return runReceiptVerify(cmd.OutOrStdout(), args[0], serviceCert, endorsementsFile)
		},
	}
	cmd.Flags().StringVar(&serviceCert, "service-cert", "", "PEM file of the service certificate to verify against (required)")
	cmd.Flags().StringVar(&endorsementsFile, "service-endorsements", "", "PEM file of service endorsements, oldest first, for a receipt issued before a recovery")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: 2, err: err}
	})
	return cmd
}

// receiptReportedError is a verdict already printed: main adds nothing.
type receiptReportedError struct{ err error }

func (e *receiptReportedError) Error() string { return "" }
func (e *receiptReportedError) Unwrap() error { return e.err }

func runReceiptVerify(w io.Writer, receiptPath, certPath, endorsementsPath string) error {
	var endorsements []string
	if endorsementsPath != "" {
		b, err := readReceiptFile(endorsementsPath)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		for rest := b; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if blk.Type == "CERTIFICATE" {
				endorsements = append(endorsements, string(pem.EncodeToMemory(blk)))
			}
		}
		if len(endorsements) == 0 {
			return &exitError{code: 2, err: fmt.Errorf("%s holds no PEM certificate", endorsementsPath)}
		}
	}
	certPEM, err := readReceiptFile(certPath)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	cert, err := identity.ParseCertPEM(certPEM)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("service certificate %s: %w", certPath, err)}
	}
	doc, err := readReceiptFile(receiptPath)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	tr, err := decodeReceiptDoc(doc)
	if err == nil && tr.Receipt != nil && len(tr.Receipt.ServiceEndorsements) == 0 {
		tr.Receipt.ServiceEndorsements = endorsements
	}
	if err == nil {
		err = receipt.VerifyTransactionReceipt(tr, cert)
	}
	if err != nil {
		fmt.Fprintf(w, "receipt INVALID: %v\n", err)
		return &exitError{code: 1, err: &receiptReportedError{err}}
	}
	lc := tr.Receipt.LeafComponents
	view, seqno, _ := receipt.ParseCommitEvidence(lc.CommitEvidence) // checked by Verify
	fmt.Fprintf(w, "receipt OK: transaction %d.%d, node %s", view, seqno, tr.Receipt.NodeID)
	switch n := len(tr.ApplicationClaims); n {
	case 0:
	case 1:
		fmt.Fprint(w, ", 1 application claim matches")
	default:
		fmt.Fprintf(w, ", %d application claims match", n)
	}
	fmt.Fprintln(w)
	return nil
}

// decodeReceiptDoc decodes a bare receipt or a transaction receipt (an
// object with a "receipt" member).
func decodeReceiptDoc(doc []byte) (*api.TransactionReceipt, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if _, ok := top["receipt"]; ok {
		var tr api.TransactionReceipt
		if err := json.Unmarshal(doc, &tr); err != nil {
			return nil, fmt.Errorf("decode transaction receipt: %w", err)
		}
		return &tr, nil
	}
	var r api.Receipt
	if err := json.Unmarshal(doc, &r); err != nil {
		return nil, fmt.Errorf("decode receipt: %w", err)
	}
	return &api.TransactionReceipt{Receipt: &r}, nil
}

func readReceiptFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxReceiptFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxReceiptFile {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, maxReceiptFile)
	}
	return b, nil
}
