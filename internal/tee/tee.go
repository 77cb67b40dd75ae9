// Package tee is Parley's evidence abstraction: it collects and verifies
// attestation evidence of three platforms and turns verified evidence into
// claims named as Microsoft Azure Attestation (MAA) names them.
//
//   - [Virtual]: software evidence, a JSON document holding the SHA-256 of the
//     running binary and the caller's 64 bytes of report data, signed by a
//     software ECDSA key. It proves nothing about the code that runs: anyone
//     with the key can sign any measurement. It exists for development and CI
//     only; an appraisal [Policy] trusts it only with "allowVirtual": true,
//     and its claims say x-parley-virtual: true.
//   - [SevSnp]: an AMD SEV-SNP attestation report, verified offline with
//     github.com/google/go-sev-guest against the VCEK the caller supplies,
//     which must chain to AMD's ARK and ASK embedded in that module.
//   - [TDX]: an Intel TDX quote (v4), verified offline with
//     github.com/google/go-tdx-guest: the quote signature, the QE report and
//     the PCK chain inside the quote up to Intel's SGX root CA embedded in
//     that module. Collateral (TCB info, QE identity, CRLs) is not fetched.
//
// [Verify] checks authenticity only; [Policy.Appraise] decides whether the
// verified evidence is acceptable (measurements, debug, host data, …).
package tee

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Platform names a kind of evidence.
type Platform string

// Platforms.
const (
	Virtual Platform = "virtual"
	SevSnp  Platform = "sev-snp"
	TDX     Platform = "tdx"
)

// MaxEvidenceBytes bounds raw evidence (and a VCEK certificate) of any
// platform.
const MaxEvidenceBytes = 64 << 10

// ReportDataSize is the size of the report data bound into evidence.
const ReportDataSize = 64

// Errors returned by this package; verification and appraisal errors wrap
// one of them.
var (
	// ErrUnknownPlatform is returned for a platform name that is none of
	// the three.
	ErrUnknownPlatform = errors.New("unknown platform")
	// ErrMalformed is returned when evidence does not parse.
	ErrMalformed = errors.New("malformed evidence")
	// ErrUnverified is returned when evidence does not verify: a signature,
	// a certificate or the chain to the vendor root fails.
	ErrUnverified = errors.New("evidence does not verify")
	// ErrRefused is returned by Policy.Appraise when verified evidence does
	// not satisfy the policy.
	ErrRefused = errors.New("evidence refused by policy")
)

// ParsePlatform accepts Parley's names (virtual, sev-snp, tdx) and MAA's
// endpoint names (Virtual, SevSnpVm, TdxVm), in any case.
func ParsePlatform(s string) (Platform, error) {
	switch strings.ToLower(s) {
	case "virtual":
		return Virtual, nil
	case "sev-snp", "sevsnp", "sevsnpvm", "snp":
		return SevSnp, nil
	case "tdx", "tdxvm":
		return TDX, nil
	}
	if len(s) > 32 {
		s = s[:32] + "…"
	}
	return "", fmt.Errorf("%w %q (virtual, sev-snp or tdx)", ErrUnknownPlatform, s)
}

// AttestationType is the value of the x-ms-attestation-type claim of the
// platform's tokens.
func (p Platform) AttestationType() string {
	switch p {
	case SevSnp:
		return "sevsnpvm"
	case TDX:
		return "tdxvm"
	}
	return string(p)
}

// Evidence is what an attester presents.
type Evidence struct {
	Platform Platform
	// Raw is the evidence: the virtual JSON document, the SEV-SNP
	// attestation report (exactly 1184 bytes), or the TDX v4 quote.
	Raw []byte
	// VCEK is the SEV-SNP report's signing certificate (DER or PEM; with
	// PEM, the first certificate). Unused by the other platforms.
	VCEK []byte
}

// VerifyOptions tune verification.
type VerifyOptions struct {
	// Now is the time at which certificates must be valid; time.Now when
	// zero.
	Now time.Time
}

// Report is verified evidence.
type Report struct {
	Platform Platform
	// Measurement is what identifies the code: the SEV-SNP launch
	// measurement (48 bytes), the TDX MRTD (48 bytes) or the SHA-256 of the
	// binary (virtual).
	Measurement []byte
	// ReportData is the 64 bytes the attester bound into the evidence.
	ReportData [ReportDataSize]byte
	// Debug reports whether the platform allows the host to inspect the
	// guest (SEV-SNP policy bit, TDX TD attribute DEBUG); virtual evidence
	// is always debuggable.
	Debug bool
	// HostData is the SEV-SNP host data (32 bytes), nil elsewhere.
	HostData []byte
	// RTMRs are the TDX runtime measurement registers, nil elsewhere.
	RTMRs [][]byte
	// Signer is, for virtual evidence, the hex SHA-256 of the signing key's
	// DER SubjectPublicKeyInfo.
	Signer string
	// Claims are the evidence's claims named as in MAA tokens.
	Claims map[string]any
}

// Verify checks that ev is authentic: its signatures and certificate chain
// up to the vendor's root (or, for virtual evidence, its software
// signature). It says nothing about whether the evidence is acceptable; see
// Policy.Appraise.
func Verify(ev Evidence, opts VerifyOptions) (*Report, error) {
	if len(ev.Raw) > MaxEvidenceBytes || len(ev.VCEK) > MaxEvidenceBytes {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrMalformed, MaxEvidenceBytes)
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	switch ev.Platform {
	case Virtual:
		return verifyVirtual(ev.Raw)
	case SevSnp:
		return verifySNP(ev.Raw, ev.VCEK, opts.Now)
	case TDX:
		return verifyTDX(ev.Raw, opts.Now)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownPlatform, ev.Platform)
}
