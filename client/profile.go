package client

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// maxProfileSize bounds a profile file and each PEM file it names.
const maxProfileSize = 1 << 20

// Profile says where a service is and which files hold the certificates to
// reach it: the profile.json `parley dev` writes. Relative paths are
// relative to the profile's directory.
type Profile struct {
	Endpoint string `json:"endpoint"`
	CACert   string `json:"cacert"` // service certificate, PEM
	Cert     string `json:"cert"`   // user certificate, PEM
	Key      string `json:"key"`    // user private key, PEM
}

// LoadProfile reads a profile from path.
func LoadProfile(path string) (*Profile, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	var p Profile
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode profile %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for _, f := range []*string{&p.CACert, &p.Cert, &p.Key} {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(dir, *f)
		}
	}
	return &p, nil
}

// Options reads the profile's PEM files into Options.
func (p *Profile) Options() (Options, error) {
	var o Options
	for _, f := range []struct {
		path string
		dst  *[]byte
		name string
	}{
		{p.CACert, &o.CACertPEM, "cacert"},
		{p.Cert, &o.CertPEM, "cert"},
		{p.Key, &o.KeyPEM, "key"},
	} {
		if f.path == "" {
			return Options{}, fmt.Errorf("profile has no %s", f.name)
		}
		b, err := readFile(f.path)
		if err != nil {
			return Options{}, fmt.Errorf("read %s: %w", f.name, err)
		}
		*f.dst = b
	}
	return o, nil
}

// New returns a client of the profile's endpoint with its certificates.
func (p *Profile) New() (*Client, error) {
	o, err := p.Options()
	if err != nil {
		return nil, err
	}
	return New(p.Endpoint, o)
}

// readFile reads at most maxProfileSize bytes of a file.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxProfileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxProfileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxProfileSize)
	}
	return b, nil
}
