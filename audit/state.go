package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const stateVersion = 1

// stateFile is what the sink keeps next to the log (Path + ".state"). The
// log is the record of truth; the state says how far it is accounted for:
// the head and byte length of the log when the state was written, the
// highest outbox sequence fully processed, the open mass-delete bursts, and
// the records a replay must not write again.
type stateFile struct {
	Version      int           `json:"version"`
	Index        uint64        `json:"index"`
	Hash         string        `json:"hash"`
	End          int64         `json:"end"`
	ProcessedSeq uint64        `json:"processed_seq"`
	Detector     detectorState `json:"detector"`
	// Replay maps keys of records written after the previous state (by a
	// batch whose state was never saved) to the sequence of the event that
	// wrote them; a redelivery of that event skips them.
	Replay map[string]uint64 `json:"replay,omitempty"`
}

// readState returns nil, nil when there is no state file.
func readState(path string) (*stateFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("state file %s has version %d, want %d", path, st.Version, stateVersion)
	}
	if st.Index > 0 && !isHex64(st.Hash) || st.Index == 0 && st.Hash != Genesis || st.End < 0 {
		return nil, fmt.Errorf("state file %s names an impossible head %d:%s at byte %d", path, st.Index, st.Hash, st.End)
	}
	return &st, nil
}

// writeState replaces the state file atomically: a crash leaves the old
// state or the new one, never a mix.
func writeState(path string, st *stateFile) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if e := f.Close(); err == nil {
		err = e
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
