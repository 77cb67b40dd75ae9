package tee

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/google/go-sev-guest/abi"
	sevclient "github.com/google/go-sev-guest/client"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevverify "github.com/google/go-sev-guest/verify"
)

// parseVCEK accepts a DER certificate or PEM whose first CERTIFICATE block
// is the VCEK (a VcekCertChain as MAA takes it: VCEK, ASK, ARK). Only the
// VCEK is used: the ASK and ARK always come from go-sev-guest's embedded
// AMD roots, never from the attester.
func parseVCEK(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("no VCEK certificate")
	}
	der := b
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("VCEK PEM block is %q, want CERTIFICATE", blk.Type)
		}
		der = blk.Bytes
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("VCEK: %w", err)
	}
	return c.Raw, nil
}

// snpProduct names the product line from the VCEK's issuer ("SEV-Milan"…).
func snpProduct(vcekDER []byte) (*spb.SevProduct, error) {
	c, err := x509.ParseCertificate(vcekDER)
	if err != nil {
		return nil, fmt.Errorf("VCEK: %w", err)
	}
	switch c.Issuer.CommonName {
	case "SEV-Milan":
		return &spb.SevProduct{Name: spb.SevProduct_SEV_PRODUCT_MILAN}, nil
	case "SEV-Genoa":
		return &spb.SevProduct{Name: spb.SevProduct_SEV_PRODUCT_GENOA}, nil
	case "SEV-Turin":
		return &spb.SevProduct{Name: spb.SevProduct_SEV_PRODUCT_TURIN}, nil
	}
	return nil, fmt.Errorf("VCEK issuer %q names no known product line", c.Issuer.CommonName)
}

func verifySNP(raw, vcek []byte, now time.Time) (*Report, error) {
	if len(raw) != abi.ReportSize {
		return nil, fmt.Errorf("%w: sev-snp report is %d bytes, want %d", ErrMalformed, len(raw), abi.ReportSize)
	}
	rep, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: sev-snp report: %w", ErrMalformed, err)
	}
	// ReportToProto ignores the bytes after the signature's r and s; they
	// must be zero so that no byte of the evidence goes unchecked.
	for _, b := range raw[snpSignatureOffset+2*snpSignatureComponent:] {
		if b != 0 {
			return nil, fmt.Errorf("%w: sev-snp report: reserved signature bytes are not zero", ErrMalformed)
		}
	}
	vcekDER, err := parseVCEK(vcek)
	if err != nil {
		return nil, fmt.Errorf("%w: sev-snp: %w", ErrMalformed, err)
	}
	product, err := snpProduct(vcekDER)
	if err != nil {
		return nil, fmt.Errorf("%w: sev-snp: %w", ErrUnverified, err)
	}
	att := &spb.Attestation{Report: rep, CertificateChain: &spb.CertificateChain{VcekCert: vcekDER}, Product: product}
	if err := sevverify.SnpAttestation(att, &sevverify.Options{DisableCertFetching: true, Now: now, Product: product}); err != nil {
		return nil, fmt.Errorf("%w: sev-snp: %w", ErrUnverified, err)
	}
	pol, err := abi.ParseSnpPolicy(rep.GetPolicy())
	if err != nil {
		return nil, fmt.Errorf("%w: sev-snp guest policy: %w", ErrMalformed, err)
	}
	tcb := kds.DecomposeTCBVersion(kds.TCBVersion(rep.GetReportedTcb()))
	r := &Report{
		Platform:    SevSnp,
		Measurement: rep.GetMeasurement(),
		Debug:       pol.Debug,
		HostData:    rep.GetHostData(),
	}
	copy(r.ReportData[:], rep.GetReportData())
	r.Claims = map[string]any{
		"x-ms-attestation-type":           SevSnp.AttestationType(),
		"x-parley-measurement":            hex.EncodeToString(r.Measurement),
		"x-ms-sevsnpvm-launchmeasurement": hex.EncodeToString(rep.GetMeasurement()),
		"x-ms-sevsnpvm-reportdata":        hex.EncodeToString(rep.GetReportData()),
		"x-ms-sevsnpvm-hostdata":          hex.EncodeToString(rep.GetHostData()),
		"x-ms-sevsnpvm-is-debuggable":     pol.Debug,
		"x-ms-sevsnpvm-smt-allowed":       pol.SMT,
		"x-ms-sevsnpvm-migration-allowed": pol.MigrateMA,
		"x-ms-sevsnpvm-guestsvn":          rep.GetGuestSvn(),
		"x-ms-sevsnpvm-familyId":          hex.EncodeToString(rep.GetFamilyId()),
		"x-ms-sevsnpvm-imageId":           hex.EncodeToString(rep.GetImageId()),
		"x-ms-sevsnpvm-idkeydigest":       hex.EncodeToString(rep.GetIdKeyDigest()),
		"x-ms-sevsnpvm-authorkeydigest":   hex.EncodeToString(rep.GetAuthorKeyDigest()),
		"x-ms-sevsnpvm-reportid":          hex.EncodeToString(rep.GetReportId()),
		"x-ms-sevsnpvm-vmpl":              rep.GetVmpl(),
		"x-ms-sevsnpvm-bootloader-svn":    tcb.BlSpl,
		"x-ms-sevsnpvm-tee-svn":           tcb.TeeSpl,
		"x-ms-sevsnpvm-snpfw-svn":         tcb.SnpSpl,
		"x-ms-sevsnpvm-microcode-svn":     tcb.UcodeSpl,
		"x-ms-sevsnpvm-guest-policy":      rep.GetPolicy(),
		"x-ms-sevsnpvm-report-version":    rep.GetVersion(),
	}
	return r, nil
}

// CollectSNP asks the SEV-SNP guest device (configfs-tsm or /dev/sev-guest)
// for a report binding reportData. It fails where there is no such device.
// The VCEK is not collected: fetch it from AMD's KDS for the report's chip
// id and TCB.
func CollectSNP(reportData [ReportDataSize]byte) ([]byte, error) {
	qp, err := sevclient.GetQuoteProvider()
	if err != nil {
		return nil, fmt.Errorf("sev-snp device: %w", err)
	}
	raw, err := qp.GetRawQuote(reportData)
	if err != nil {
		return nil, fmt.Errorf("sev-snp report: %w", err)
	}
	if len(raw) > abi.ReportSize {
		raw = raw[:abi.ReportSize]
	}
	return raw, nil
}

// The report's signature: r and s, each 72 bytes little-endian, from
// offset 0x2A0; the rest of the report is reserved.
const (
	snpSignatureOffset    = 0x2A0
	snpSignatureComponent = 72
)
