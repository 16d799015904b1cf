package audit

import (
	"encoding/hex"
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
	// ReplayIndex maps the same keys to the index of the record, so that a
	// record that its event does not reproduce can be named.
	ReplayIndex map[string]uint64 `json:"replay_index,omitempty"`
	// Seal is the current sealing key; absent while the log is not sealed.
	// It makes this file a secret (mode 0600): whoever reads it can seal
	// records from Next on, though no earlier one.
	Seal *sealState `json:"seal,omitempty"`
}

// sealState is the sealing key the next record is sealed with.
type sealState struct {
	// KeyID and Start name the segment: its verification key and the index
	// of its first record.
	KeyID string `json:"key_id"`
	Start uint64 `json:"start"`
	// Next is the index the key seals: the index after the state's head.
	Next uint64 `json:"next"`
	// Key is k_{Next-Start}, hex.
	Key string `json:"key"`
	// KeyFile is where the verification key was written.
	KeyFile string `json:"key_file,omitempty"`
}

// key decodes the sealing key of a state whose head is index.
func (ss *sealState) key(index uint64) (*sealKey, error) {
	k, err := hex.DecodeString(ss.Key)
	switch {
	case err != nil || len(k) != keyLen:
		return nil, fmt.Errorf("seal.key must be %d hex digits", 2*keyLen)
	case ss.Next != index+1:
		return nil, fmt.Errorf("seal.next is %d but the state's head is %d", ss.Next, index)
	case ss.Start == 0 || ss.Start > ss.Next:
		return nil, fmt.Errorf("seal.start %d is impossible with seal.next %d", ss.Start, ss.Next)
	}
	return &sealKey{key: k, j: ss.Next - ss.Start}, nil
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
	if st.Seal != nil {
		if _, err := st.Seal.key(st.Index); err != nil {
			return nil, fmt.Errorf("state file %s is corrupt: %w", path, err)
		}
	}
	return &st, nil
}

// writeState replaces the state file atomically: a crash leaves the old
// state or the new one, never a mix. The old file (and with it the old
// sealing key) is unlinked once the new one is durable; its blocks are not
// overwritten (see docs/audit.md, Key handling).
func writeState(path string, st *stateFile) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = f.Chmod(0o600) // a leftover .tmp keeps its mode under O_TRUNC
	if err == nil {
		_, err = f.Write(b)
	}
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
