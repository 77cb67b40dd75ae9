package tee

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

func u32(v uint32) *uint32 { return &v }

func TestAppraiseSNPSample(t *testing.T) {
	r, err := Verify(snpEvidence(), VerifyOptions{Now: snpNow})
	if err != nil {
		t.Fatal(err)
	}
	m := hex.EncodeToString(r.Measurement)
	hd := hex.EncodeToString(r.HostData)
	other := hex.EncodeToString(make([]byte, 48))
	tcb := SevSnpTCB{
		Bootloader: r.Claims["x-ms-sevsnpvm-bootloader-svn"].(uint8),
		TEE:        r.Claims["x-ms-sevsnpvm-tee-svn"].(uint8),
		SNP:        r.Claims["x-ms-sevsnpvm-snpfw-svn"].(uint8),
		Microcode:  r.Claims["x-ms-sevsnpvm-microcode-svn"].(uint8),
	}
	tests := []struct {
		name   string
		policy Policy
		ok     bool
	}{
		{"no debug refused", Policy{SevSnp: &SevSnpPolicy{Measurements: []string{m}}}, false},
		{"debug allowed", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{Measurements: []string{m}}}, true},
		{"any measurement", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{Measurements: []string{AnyMeasurement}}}, true},
		{"empty measurement list", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{}}, false},
		{"wrong measurement", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{Measurements: []string{other}}}, false},
		{"no snp section", Policy{AllowDebug: true, TDX: &TDXPolicy{MRTD: []string{AnyMeasurement}}}, false},
		{"host data matches", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{Measurements: []string{m}, HostData: []string{hd}}}, true},
		{"host data differs", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{Measurements: []string{m}, HostData: []string{hex.EncodeToString(make([]byte, 31)) + "01"}}}, false},
		{"guest svn too low", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{Measurements: []string{m}, MinimumGuestSVN: 1000}}, false},
		{"vmpl within", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{Measurements: []string{m}, MaximumVMPL: u32(3)}}, true},
		{"tcb at the report's", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{Measurements: []string{m}, MinimumTCB: &tcb}}, true},
		{"bootloader too old", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{Measurements: []string{m}, MinimumTCB: &SevSnpTCB{Bootloader: tcb.Bootloader + 1}}}, false},
		{"microcode too old", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{Measurements: []string{m}, MinimumTCB: &SevSnpTCB{Microcode: tcb.Microcode + 1}}}, false},
		{"snp firmware too old", Policy{AllowDebug: true, SevSnp: &SevSnpPolicy{Measurements: []string{m}, MinimumTCB: &SevSnpTCB{SNP: tcb.SNP + 1}}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.policy.Validate(); err != nil {
				t.Fatalf("Validate = %v", err)
			}
			err := tc.policy.Appraise(r)
			if tc.ok && err != nil {
				t.Errorf("Appraise = %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrRefused) {
				t.Errorf("Appraise = %v, want ErrRefused", err)
			}
		})
	}
}

func TestAppraiseTDXSample(t *testing.T) {
	r, err := Verify(tdxEvidence(), VerifyOptions{Now: tdxNow})
	if err != nil {
		t.Fatal(err)
	}
	mrtd := r.Claims["tdx_mrtd"].(string)
	var rtmrs []string
	for i := range 4 {
		rtmrs = append(rtmrs, hex.EncodeToString(r.RTMRs[i]))
	}
	bad := append([]string{}, rtmrs...)
	bad[3] = hex.EncodeToString(make([]byte, 47)) + "ff"
	tests := []struct {
		name   string
		policy Policy
		ok     bool
	}{
		{"mrtd", Policy{AllowDebug: r.Debug, TDX: &TDXPolicy{MRTD: []string{mrtd}}}, true},
		{"mrtd and rtmrs", Policy{AllowDebug: r.Debug, TDX: &TDXPolicy{MRTD: []string{mrtd}, RTMRs: [][]string{rtmrs}}}, true},
		{"rtmr differs", Policy{AllowDebug: r.Debug, TDX: &TDXPolicy{MRTD: []string{mrtd}, RTMRs: [][]string{bad}}}, false},
		{"wrong mrtd", Policy{AllowDebug: r.Debug, TDX: &TDXPolicy{MRTD: []string{hex.EncodeToString(make([]byte, 48))}}}, false},
		{"no tdx section", Policy{AllowDebug: true}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.Appraise(r)
			if tc.ok != (err == nil) {
				t.Errorf("Appraise = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestVirtualRoundTrip(t *testing.T) {
	key, err := NewVirtualKey()
	if err != nil {
		t.Fatal(err)
	}
	m := sha256.Sum256([]byte("binary"))
	var rd [ReportDataSize]byte
	copy(rd[:], "report data")
	raw, err := VirtualEvidence(key, m[:], rd)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Verify(Evidence{Platform: Virtual, Raw: raw}, VerifyOptions{})
	if err != nil {
		t.Fatalf("Verify(virtual) = %v", err)
	}
	if r.ReportData != rd {
		t.Errorf("report data = %x, want %x", r.ReportData, rd)
	}
	if got := r.Claims["x-parley-virtual"]; got != true {
		t.Errorf("x-parley-virtual = %v, want true", got)
	}
	if got := r.Claims["x-ms-attestation-type"]; got != "virtual" {
		t.Errorf("x-ms-attestation-type = %v, want virtual", got)
	}
	mhex := hex.EncodeToString(m[:])
	tests := []struct {
		name   string
		policy Policy
		ok     bool
	}{
		{"not opted in", Policy{AllowDebug: true, Virtual: &VirtualPolicy{Measurements: []string{mhex}}}, false},
		{"opted in, no debug", Policy{AllowVirtual: true, Virtual: &VirtualPolicy{Measurements: []string{mhex}}}, false},
		{"opted in", Policy{AllowVirtual: true, AllowDebug: true, Virtual: &VirtualPolicy{Measurements: []string{mhex}}}, true},
		{"signer pinned", Policy{AllowVirtual: true, AllowDebug: true, Virtual: &VirtualPolicy{Measurements: []string{mhex}, Signers: []string{r.Signer}}}, true},
		{"other signer", Policy{AllowVirtual: true, AllowDebug: true, Virtual: &VirtualPolicy{Measurements: []string{AnyMeasurement}, Signers: []string{hex.EncodeToString(make([]byte, 32))}}}, false},
		{"opted in, no section", Policy{AllowVirtual: true, AllowDebug: true}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.Appraise(r)
			if tc.ok != (err == nil) {
				t.Errorf("Appraise = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	for i := range raw {
		bad := append([]byte{}, raw...)
		bad[i] ^= 0x01
		if _, err := Verify(Evidence{Platform: Virtual, Raw: bad}, VerifyOptions{}); err == nil {
			t.Errorf("virtual evidence with byte %d flipped verifies", i)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{`{}`, true},
		{`{"allowVirtual":true,"allowDebug":true,"virtual":{"measurements":["*"]}}`, true},
		{`{"sevSnp":{"measurements":["` + hex.EncodeToString(make([]byte, 48)) + `"]}}`, true},
		{`{"sevSnp":{"measurements":["00"]}}`, false},
		{`{"sevSnp":{"measurements":["` + hex.EncodeToString(make([]byte, 47)) + `AB"]}}`, false},
		{`{"tdx":{"mrtd":["*"],"rtmrs":[["*"]]}}`, false},
		{`{"sevSnp":{"measurements":[],"maximumVmpl":4}}`, false},
		{`{"unknown":1}`, false},
		{`{} {}`, false},
		{`[]`, false},
	}
	for _, tc := range tests {
		_, err := ParsePolicy([]byte(tc.in))
		if tc.ok != (err == nil) {
			t.Errorf("ParsePolicy(%s) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestParsePlatform(t *testing.T) {
	for in, want := range map[string]Platform{"SevSnpVm": SevSnp, "sev-snp": SevSnp, "TdxVm": TDX, "tdx": TDX, "Virtual": Virtual} {
		if got, err := ParsePlatform(in); err != nil || got != want {
			t.Errorf("ParsePlatform(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
	if _, err := ParsePlatform("sgx"); !errors.Is(err, ErrUnknownPlatform) {
		t.Errorf("ParsePlatform(sgx) = %v, want ErrUnknownPlatform", err)
	}
}
