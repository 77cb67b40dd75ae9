package tee

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/parleyhq/parley/internal/strictjson"
	"slices"
)

// MaxPolicyBytes bounds an encoded appraisal policy.
const MaxPolicyBytes = 64 << 10

// AnyMeasurement, as the only entry of a measurement list, accepts every
// measurement. It must be written out: an empty list accepts none.
const AnyMeasurement = "*"

// Policy is an appraisal policy: which verified evidence is acceptable. A
// platform without a section is refused. Its JSON form is
//
//	{
//	  "allowVirtual": false,
//	  "allowDebug": false,
//	  "sevSnp":  {"measurements": ["<96 hex>", …], "hostData": ["<64 hex>", …], "minimumGuestSvn": 0, "maximumVmpl": 3,
//	              "minimumTcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}},
//	  "tdx":     {"mrtd": ["<96 hex>", …], "rtmrs": [["<96 hex>" ×4], …]},
//	  "virtual": {"measurements": ["<64 hex>" | "*", …], "signers": ["<64 hex>", …]}
//	}
//
// Hex is lowercase. An empty hostData, rtmrs or signers list places no
// constraint; an empty measurements or mrtd list accepts nothing.
type Policy struct {
	// AllowVirtual must be true for virtual evidence to be accepted at all.
	AllowVirtual bool `json:"allowVirtual"`
	// AllowDebug accepts evidence of a debuggable guest. Virtual evidence
	// is always debuggable, so it needs AllowDebug too.
	AllowDebug bool           `json:"allowDebug"`
	SevSnp     *SevSnpPolicy  `json:"sevSnp,omitempty"`
	TDX        *TDXPolicy     `json:"tdx,omitempty"`
	Virtual    *VirtualPolicy `json:"virtual,omitempty"`
}

// SevSnpPolicy constrains SEV-SNP evidence.
type SevSnpPolicy struct {
	Measurements    []string `json:"measurements"`
	HostData        []string `json:"hostData,omitempty"`
	MinimumGuestSVN uint32   `json:"minimumGuestSvn,omitempty"`
	// MaximumVMPL is the least privileged VMPL accepted (0 is the most
	// privileged); nil accepts any.
	MaximumVMPL *uint32 `json:"maximumVmpl,omitempty"`
	// MinimumTCB is the lowest reported TCB accepted, component by
	// component; nil accepts any.
	MinimumTCB *SevSnpTCB `json:"minimumTcb,omitempty"`
}

// SevSnpTCB is the security patch levels of a SEV-SNP TCB version.
type SevSnpTCB struct {
	Bootloader uint8 `json:"bootloader"`
	TEE        uint8 `json:"tee"`
	SNP        uint8 `json:"snp"`
	Microcode  uint8 `json:"microcode"`
}

// TDXPolicy constrains TDX evidence.
type TDXPolicy struct {
	MRTD []string `json:"mrtd"`
	// RTMRs lists accepted sets of the four runtime measurement registers.
	RTMRs [][]string `json:"rtmrs,omitempty"`
}

// VirtualPolicy constrains virtual evidence.
type VirtualPolicy struct {
	Measurements []string `json:"measurements"`
	// Signers are hex SHA-256 of the accepted signing keys' DER
	// SubjectPublicKeyInfo.
	Signers []string `json:"signers,omitempty"`
}

// ParsePolicy decodes and checks a JSON appraisal policy: unknown fields,
// trailing data and malformed hex are refused.
func ParsePolicy(b []byte) (*Policy, error) {
	if len(b) > MaxPolicyBytes {
		return nil, fmt.Errorf("appraisal policy: more than %d bytes", MaxPolicyBytes)
	}
	var p Policy
	if err := strictjson.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("appraisal policy: %w", err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks the hex and the sizes of every value.
func (p *Policy) Validate() error {
	check := func(field string, list []string, size int, wildcard bool) error {
		for _, s := range list {
			if wildcard && s == AnyMeasurement {
				continue
			}
			if err := checkHex(s, size); err != nil {
				return fmt.Errorf("appraisal policy: %s: %w", field, err)
			}
		}
		return nil
	}
	if s := p.SevSnp; s != nil {
		if err := check("sevSnp.measurements", s.Measurements, 48, true); err != nil {
			return err
		}
		if err := check("sevSnp.hostData", s.HostData, 32, false); err != nil {
			return err
		}
		if s.MaximumVMPL != nil && *s.MaximumVMPL > 3 {
			return fmt.Errorf("appraisal policy: sevSnp.maximumVmpl %d is over 3", *s.MaximumVMPL)
		}
	}
	if t := p.TDX; t != nil {
		if err := check("tdx.mrtd", t.MRTD, 48, true); err != nil {
			return err
		}
		for _, set := range t.RTMRs {
			if len(set) != 4 {
				return fmt.Errorf("appraisal policy: tdx.rtmrs: a set has %d registers, want 4", len(set))
			}
			if err := check("tdx.rtmrs", set, 48, false); err != nil {
				return err
			}
		}
	}
	if v := p.Virtual; v != nil {
		if err := check("virtual.measurements", v.Measurements, 32, true); err != nil {
			return err
		}
		if err := check("virtual.signers", v.Signers, 32, false); err != nil {
			return err
		}
	}
	return nil
}

func checkHex(s string, size int) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != size || hex.EncodeToString(b) != s {
		return fmt.Errorf("%q is not %d bytes of lowercase hex", truncateString(s, 20), size)
	}
	return nil
}

func truncateString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Appraise reports whether the verified report r satisfies p; the error
// wraps ErrRefused and names the first unmet condition.
func (p *Policy) Appraise(r *Report) error {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrRefused, r.Platform, fmt.Sprintf(format, args...))
	}
	if r.Debug && !p.AllowDebug {
		return refuse("the guest is debuggable and the policy does not allow debug")
	}
	switch r.Platform {
	case Virtual:
		if !p.AllowVirtual || p.Virtual == nil {
			return refuse("the policy does not opt in to virtual (software) evidence")
		}
		if !listed(p.Virtual.Measurements, r.Measurement, true) {
			return refuse("measurement %x is not allowed", r.Measurement)
		}
		if len(p.Virtual.Signers) > 0 && !slices.Contains(p.Virtual.Signers, r.Signer) {
			return refuse("signer %s is not allowed", r.Signer)
		}
	case SevSnp:
		s := p.SevSnp
		if s == nil {
			return refuse("the policy has no sevSnp section")
		}
		if !listed(s.Measurements, r.Measurement, true) {
			return refuse("launch measurement %x is not allowed", r.Measurement)
		}
		if len(s.HostData) > 0 && !listed(s.HostData, r.HostData, false) {
			return refuse("host data %x is not allowed", r.HostData)
		}
		if svn, _ := r.Claims["x-ms-sevsnpvm-guestsvn"].(uint32); svn < s.MinimumGuestSVN {
			return refuse("guest svn %d is below %d", svn, s.MinimumGuestSVN)
		}
		if vmpl, _ := r.Claims["x-ms-sevsnpvm-vmpl"].(uint32); s.MaximumVMPL != nil && vmpl > *s.MaximumVMPL {
			return refuse("vmpl %d is above %d", vmpl, *s.MaximumVMPL)
		}
		if m := s.MinimumTCB; m != nil {
			for _, c := range []struct {
				claim string
				min   uint8
			}{
				{"x-ms-sevsnpvm-bootloader-svn", m.Bootloader},
				{"x-ms-sevsnpvm-tee-svn", m.TEE},
				{"x-ms-sevsnpvm-snpfw-svn", m.SNP},
				{"x-ms-sevsnpvm-microcode-svn", m.Microcode},
			} {
				if v, _ := r.Claims[c.claim].(uint8); v < c.min {
					return refuse("%s %d is below %d", c.claim, v, c.min)
				}
			}
		}
	case TDX:
		t := p.TDX
		if t == nil {
			return refuse("the policy has no tdx section")
		}
		if !listed(t.MRTD, r.Measurement, true) {
			return refuse("MRTD %x is not allowed", r.Measurement)
		}
		if len(t.RTMRs) > 0 && !slices.ContainsFunc(t.RTMRs, func(set []string) bool { return rtmrsEqual(set, r.RTMRs) }) {
			return refuse("the RTMRs match no allowed set")
		}
	default:
		return fmt.Errorf("%w %q", ErrUnknownPlatform, r.Platform)
	}
	return nil
}

func listed(list []string, v []byte, wildcard bool) bool {
	for _, s := range list {
		if wildcard && s == AnyMeasurement {
			return true
		}
		if b, err := hex.DecodeString(s); err == nil && bytes.Equal(b, v) {
			return true
		}
	}
	return false
}

func rtmrsEqual(set []string, rtmrs [][]byte) bool {
	if len(set) != len(rtmrs) {
		return false
	}
	for i, s := range set {
		if b, err := hex.DecodeString(s); err != nil || !bytes.Equal(b, rtmrs[i]) {
			return false
		}
	}
	return true
}

// Encode returns the canonical JSON of p.
func (p *Policy) Encode() ([]byte, error) { return json.Marshal(p) }
