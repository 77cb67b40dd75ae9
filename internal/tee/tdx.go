package tee

import (
	"encoding/hex"
	"fmt"
	"time"

	tdxabi "github.com/google/go-tdx-guest/abi"
	tdxclient "github.com/google/go-tdx-guest/client"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	tdxverify "github.com/google/go-tdx-guest/verify"
)

// tdAttributesDebug is bit 0 of TDATTRIBUTES (TUD.DEBUG).
const tdAttributesDebug = 1

func verifyTDX(raw []byte, now time.Time) (*Report, error) {
	q, err := tdxabi.QuoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: tdx quote: %w", ErrMalformed, err)
	}
	q4, ok := q.(*tdxpb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("%w: tdx quote is not version 4", ErrMalformed)
	}
	// The quote must be exactly its encoding: no trailing bytes that no
	// check covers.
	back, err := tdxabi.QuoteToAbiBytes(q4)
	if err != nil || string(back) != string(raw) {
		return nil, fmt.Errorf("%w: tdx quote does not re-encode to the same bytes", ErrMalformed)
	}
	// Bytes after the quote's signed data are covered by no signature:
	// zero padding is accepted, anything else refused.
	for _, c := range q4.GetExtraBytes() {
		if c != 0 {
			return nil, fmt.Errorf("%w: tdx quote has %d unsigned trailing bytes", ErrMalformed, len(q4.GetExtraBytes()))
		}
	}
	if err := tdxverify.TdxQuote(q4, &tdxverify.Options{Now: now}); err != nil {
		return nil, fmt.Errorf("%w: tdx: %w", ErrUnverified, err)
	}
	b := q4.GetTdQuoteBody()
	attrs := b.GetTdAttributes()
	debug := len(attrs) > 0 && attrs[0]&tdAttributesDebug != 0
	r := &Report{
		Platform:    TDX,
		Measurement: b.GetMrTd(),
		Debug:       debug,
		RTMRs:       b.GetRtmrs(),
	}
	copy(r.ReportData[:], b.GetReportData())
	dbgstat := "disabled-since-boot"
	if debug {
		dbgstat = "enabled"
	}
	r.Claims = map[string]any{
		"x-ms-attestation-type":   TDX.AttestationType(),
		"x-parley-measurement":    hex.EncodeToString(r.Measurement),
		"tdx_mrtd":                hex.EncodeToString(b.GetMrTd()),
		"tdx_mrseam":              hex.EncodeToString(b.GetMrSeam()),
		"tdx_mrsignerseam":        hex.EncodeToString(b.GetMrSignerSeam()),
		"tdx_mrconfigid":          hex.EncodeToString(b.GetMrConfigId()),
		"tdx_mrowner":             hex.EncodeToString(b.GetMrOwner()),
		"tdx_mrownerconfig":       hex.EncodeToString(b.GetMrOwnerConfig()),
		"tdx_report_data":         hex.EncodeToString(b.GetReportData()),
		"tdx_seam_attributes":     hex.EncodeToString(b.GetSeamAttributes()),
		"tdx_td_attributes":       hex.EncodeToString(attrs),
		"tdx_td_attributes_debug": debug,
		"tdx_xfam":                hex.EncodeToString(b.GetXfam()),
		"tdx_tee_tcb_svn":         hex.EncodeToString(b.GetTeeTcbSvn()),
		"dbgstat":                 dbgstat,
	}
	for i, m := range b.GetRtmrs() {
		r.Claims[fmt.Sprintf("tdx_rtmr%d", i)] = hex.EncodeToString(m)
	}
	return r, nil
}

// CollectTDX asks the TDX guest (configfs-tsm) for a quote binding
// reportData. It fails where there is no TDX guest.
func CollectTDX(reportData [ReportDataSize]byte) ([]byte, error) {
	qp, err := tdxclient.GetQuoteProvider()
	if err != nil {
		return nil, fmt.Errorf("tdx device: %w", err)
	}
	raw, err := tdxclient.GetRawQuote(qp, reportData)
	if err != nil {
		return nil, fmt.Errorf("tdx quote: %w", err)
	}
	return raw, nil
}
