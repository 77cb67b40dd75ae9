package storage

import (
	"fmt"
	"path/filepath"

	"github.com/parleyhq/parley/internal/vfs"
)

// ArchiveDirPrefix starts the name of the subdirectory [Log.Reset] moves a
// replaced ledger's chunks into; [Open] and [Scan] ignore it.
const ArchiveDirPrefix = "archived_before_"

// Reset empties the log so that its next entry is first: a node that
// installs a snapshot of the state at first-1 continues its ledger from
// there. The chunks it held are not deleted (the ledger is the audit
// trail) but moved, oldest first, into the subdirectory
// archived_before_<first>, which Open ignores; a crash part way leaves a
// suffix of the old chunks in place, which the caller's next Reset (it
// holds the snapshot durably before calling) moves too. Everything is
// durable when Reset returns. The hard state is kept.
func (l *Log) Reset(first uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if first == 0 {
		return fmt.Errorf("reset ledger: first index 0")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fail(l.resetLocked(first))
}

func (l *Log) resetLocked(first uint64) error {
	if l.w != nil {
		if err := l.flushLocked(); err != nil {
			return err
		}
		l.w.Close()
		l.w, l.flushed, l.fileDirty = nil, 0, false
	}
	if len(l.chunks) > 0 {
		archive := filepath.Join(l.dir, fmt.Sprintf("%s%d", ArchiveDirPrefix, first))
		if err := vfs.MkdirAllDurable(l.fsys, archive, 0o750); err != nil {
			return fmt.Errorf("create %s: %w", archive, err)
		}
		for _, c := range l.chunks {
			l.readers.drop(c)
			if err := l.fsys.Rename(l.path(c), filepath.Join(archive, c.name.String())); err != nil {
				return fmt.Errorf("archive chunk %s: %w", c.name, err)
			}
		}
		if err := l.syncDir(siteReset, archive); err != nil {
			return fmt.Errorf("fsync %s: %w", archive, err)
		}
		if err := l.syncDir(siteReset, l.dir); err != nil {
			return fmt.Errorf("fsync ledger directory: %w", err)
		}
	}
	l.chunks, l.terms, l.commitCursor = nil, nil, 0
	l.first, l.last, l.committed = first, first-1, first-1
	return nil
}
