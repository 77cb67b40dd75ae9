package tee

import (
	"io"

	"github.com/google/logger"
)

// go-sev-guest and go-tdx-guest log through github.com/google/logger,
// which writes to stderr by default (for example a warning on every TDX
// verification that the embedded Intel root is used). Parley logs with
// log/slog and reports every verification outcome as an error value, so
// their info and warning output is discarded; their errors still reach
// stderr.
func init() {
	logger.Init("parley-tee", false, false, io.Discard)
}
